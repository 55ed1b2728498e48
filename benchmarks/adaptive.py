"""Adaptive attacks against BaRT, and learned BPDA approximators (issue: adaptive and black-box attacks).

    python benchmarks/adaptive.py [--n 1000] [--eot 10] [--quick] [--part a|b|both]

Part A — the shipped BaRT model (pretrained("mnist-cnn-bart"), a Defended model whose barrage is re-drawn at
every call): robust accuracy at eps 0.3 under naive PGD-40 (gradients of the real defense, which has
non-differentiable steps), under PGD-40 through bpda(model) (one draw, surrogate gradients), and through
eot(bpda(model), n) (the adaptive attack). bastion detects the randomized model and never stops early on it, so
every attack runs all 40 steps. Accuracy is always judged by the real defended model (one random barrage per
image, as deployed), on held-out mnist-5k images.

Part B — learned BPDA approximators: for JPEG (quality 30) and colour-precision reduction (4 levels) in front of
the standard mnist-cnn, train a small conv net g to mimic the transform (train_surrogate on mnist-5k train),
report its mean absolute error to the real transform (vs the identity's), and the success of PGD-20 through
BPDA with g, with the identity, and with the transform's built-in smooth surrogate, at eps 0.1 and 0.2.
Writes benchmarks/results/adaptive.json (both parts), adaptive_a.json or adaptive_b.json (one part).
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import heldout, write
from torch import nn

from bastion.attacks import PGD, bpda, eot
from bastion.data import load_dataset
from bastion.defenses import Defended
from bastion.defenses.bart import JPEG, BaRT, ColorPrecision
from bastion.models import pretrained
from bastion.training import train_surrogate


def judged(model, x_adv, y, batch=500):
    with torch.no_grad():
        return float(torch.cat([(model(x_adv[i:i + batch]).argmax(1) == y[i:i + batch]) for i in range(0, len(y), batch)]).float().mean())


def attack_acc(atk, craft, judge, x, y, keys, batch=250):
    t0 = time.perf_counter()
    advs = []
    for i in range(0, len(y), batch):
        r = atk(craft, x[i:i + batch], y[i:i + batch], generator=torch.Generator().manual_seed(0), keys=keys[i:i + batch])
        advs.append(r.x_adv)
    xa = torch.cat(advs)
    return judged(judge, xa, y), time.perf_counter() - t0


def part_a(n: int, eot_n: int) -> dict:
    data = heldout(n)
    x, y, keys = data.images, data.labels, data.indices
    model = pretrained("mnist-cnn-bart")
    pgd = PGD(eps=0.3, steps=40, step_size=0.01)  # on a randomized model bastion never stops early
    out = {"n": n, "model": "mnist-cnn-bart", "bart": model.defense.to_dict(), "eot_n": eot_n, "attack": pgd.to_dict()}
    model.reseed(0)
    out["clean_accuracy"] = judged(model, x, y)
    for label, craft in [("naive", model), ("bpda", bpda(model)), (f"eot{eot_n}_bpda", eot(bpda(model), n=eot_n))]:
        model.reseed(1)
        acc, sec = attack_acc(pgd, craft, model, x, y, keys)
        out[f"pgd40_{label}"] = {"accuracy": acc, "seconds": sec}
        print(label, acc, round(sec, 1), flush=True)
    naive, adaptive = out["pgd40_naive"]["accuracy"], out[f"pgd40_eot{eot_n}_bpda"]["accuracy"]
    out["adaptive_over_naive"] = adaptive / naive if naive else None
    out["bar_adaptive_cuts_by_half"] = adaptive <= naive / 2
    return out


def part_b(n: int, quick: bool) -> dict:
    data = heldout(n)
    x, y, keys = data.images, data.labels, data.indices
    train = load_dataset("mnist-5k", "train")
    base = pretrained("mnist-cnn")
    out = {}
    for name, transform in [("jpeg_q30", JPEG(quality=(30, 30))), ("color_precision_4", ColorPrecision(levels=(4, 4), shared_prob=1.0))]:
        defense = BaRT(k=1, groups=[transform]).eval()
        defended = Defended(defense, base).eval()
        t0 = time.perf_counter()
        g, rep = train_surrogate(defense, train, epochs=2 if quick else 20)
        res = {"surrogate": rep.to_dict(), "train_seconds": time.perf_counter() - t0,
               "clean_accuracy": judged(defended, x, y)}
        for eps in (0.1, 0.2):
            pgd = PGD(eps=eps, steps=20, step_size=2.5 * eps / 20)
            for label, craft in [("identity", bpda(defended, surrogate=nn.Identity())),
                                 ("builtin_surrogate", bpda(defended)),
                                 ("learned", bpda(defended, surrogate=g))]:
                acc, sec = attack_acc(pgd, craft, defended, x, y, keys)
                res[f"pgd20_eps{eps}_{label}"] = {"accuracy": acc, "success_rate": 1 - acc, "seconds": sec}
                print(name, eps, label, acc, flush=True)
        out[name] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eot", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--part", choices=["a", "b", "both"], default="both")
    args = ap.parse_args()
    n = 100 if args.quick else args.n
    result = {}
    if args.part in ("a", "both"):
        result["bart"] = part_a(n, args.eot)
    if args.part in ("b", "both"):
        result["learned_bpda"] = part_b(n, args.quick)
    print(write("adaptive_quick.json" if args.quick else f"adaptive{'' if args.part == 'both' else '_' + args.part}.json", result))


if __name__ == "__main__":
    main()

"""FGSM time against a hand-written FGSM loop (issue #22: at most 1.5x).

    python benchmarks/fgsm_speed.py [--n 1000] [--rounds 15] [--threads 1,2]

Writes benchmarks/results/fgsm_speed.json. On the shipped ``mnist-cnn`` and ``n`` held-out images, one round
times, in an order that alternates between rounds:

* ``hand``: the five-line FGSM a user would write (parameters frozen, as bastion does): one forward and
  backward pass of the cross-entropy, the signed step, the clip into [0, 1];
* ``hand_judged``: the same plus the forward pass at the result that tells which points succeeded (what
  bastion's result carries);
* ``bastion``: ``FGSM(eps=0.3)(model, x, y)``, everything included (input checks, the model probe, the
  gradient pass, the verdict, the norms).

Reported for each torch thread count of ``--threads``: the median seconds of each, and bastion's ratio to
``hand`` both as the median of the per-round ratios and as the ratio of the medians (the bar applies to both).

Where the time goes (cProfile of 5 calls on 1,000 images, one thread): the gradient pass is the hand-written
loop's own forward and backward pass (98% of bastion's crafting time); the verdict's forward pass at the result
adds about a third of it; the input checks, the 8-input probe, the norms and the threat-model check add about 2%.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _common import heldout, write

from bastion.attacks import FGSM
from bastion.models import pretrained

EPS = 0.3


def hand(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    return (x + EPS * g.sign()).clamp(0, 1)


def hand_judged(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x_adv = hand(model, x, y)
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rounds: int) -> dict:
    atk = FGSM(eps=EPS)
    runners = {
        "hand": lambda: hand(model, x, y),
        "hand_judged": lambda: hand_judged(model, x, y),
        "bastion": lambda: atk(model, x, y).x_adv,
    }
    for p in model.parameters():  # the hand-written loops freeze the parameters, as bastion does
        p.requires_grad_(False)
    same = bool(torch.equal(runners["hand"](), runners["bastion"]()))  # bastion's FGSM is the hand-written one
    for _ in range(2):  # warm-up
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {k: [] for k in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t0)
    for p in model.parameters():
        p.requires_grad_(True)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_round = [b / h for b, h in zip(times["bastion"], times["hand"], strict=True)]
    per_round_judged = [b / h for b, h in zip(times["bastion"], times["hand_judged"], strict=True)]
    return {
        "same_x_adv_as_hand": same, "seconds": times, "median_seconds": med,
        "ratio_median_of_rounds": statistics.median(per_round),
        "ratio_of_medians": med["bastion"] / med["hand"],
        "ratio_judged_median_of_rounds": statistics.median(per_round_judged),
        "ratio_judged_of_medians": med["bastion"] / med["hand_judged"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts, each measured in turn")
    args = ap.parse_args()
    data = heldout(args.n)
    x, y = data.images, data.labels
    model = pretrained("mnist-cnn")
    out: dict = {"benchmark": "fgsm_speed", "n": args.n, "rounds": args.rounds, "model": "mnist-cnn", "eps": EPS,
                 "bar": "<= 1.5 (bastion / hand, both ratios)", "by_threads": {}}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        r = measure(model, x, y, args.rounds)
        out["by_threads"][str(threads)] = r
        print(threads, "threads:", {k: round(v, 4) for k, v in r["median_seconds"].items()},
              {k: round(v, 3) for k, v in r.items() if k.startswith("ratio")}, "same:", r["same_x_adv_as_hand"])
    out["worst_ratio"] = max(max(r["ratio_median_of_rounds"], r["ratio_of_medians"]) for r in out["by_threads"].values())
    print(write("fgsm_speed.json", out))


if __name__ == "__main__":
    main()

"""AutoAttack in bastion against a reference implementation, and APGD-CE against PGD (issue #22).

    python benchmarks/autoattack.py agreement [--model mnist-cnn-adv] [--n 1000] [--eps 0.3] [--steps 10]
                                              [--reference torchattacks|fra31] [--out NAME]
    python benchmarks/autoattack.py apgd-vs-pgd [--n 1000] [--bart-n 200] [--eot 8]

agreement: bastion's ``Evaluation.autoattack(eps)`` (APGD-CE -> APGD-T (9 targets) -> FAB-T -> Square 5,000
queries, a cascade, worst case per image) and the reference's standard AutoAttack on the same held-out images,
with the same number of iterations: ``torchattacks.AutoAttack(version="standard")`` (which runs its APGD, APGD-T
and FAB with torchattacks' default of 10 steps: use ``--steps 10``; with another ``--steps`` the same four
torchattacks attacks are built with that many), or the original implementation of Croce & Hein
(github.com/fra31/auto-attack, ``--reference fra31``: imported from a copy of its snapshot made in a temporary
folder; set ``AUTOATTACK_SNAPSHOT`` to its git directory). Neither is a dependency of bastion: install torchattacks
with ``pip install --no-deps torchattacks``. The images are processed in batches of 250, bastion and the reference
alternating which goes first, so that the time ratio is measured interleaved on the same machine load. For every
image bastion calls robust and the reference breaks, the script records which of the reference's attacks breaks
it alone, and whether bastion breaks it with other seeds.

apgd-vs-pgd: robust accuracy of APGD-CE (100 steps, 1 restart) and PGD-100 (step 2.5 eps / 100, random start,
1 restart) at eps 0.3 on every shipped model (mnist-cnn-bart through eot(bpda(model)), judged over 8 draws).

Both run with one torch thread by default (``--threads``), the same for bastion and the reference. Writes
benchmarks/results/autoattack-<model>-<steps>.json (and a .partial file after each batch) or apgd_vs_pgd.json.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import heldout, write
from torch import nn

from bastion._model import describe_model
from bastion.attacks import APGD, PGD, bpda, eot
from bastion.eval import Evaluation
from bastion.models import pretrained, resolve_model

SNAPSHOT = Path(os.environ.get("AUTOATTACK_SNAPSHOT", "/work/.mirror/fra31+auto-attack/repo"))


def commit() -> str | None:
    """The checkout's commit, with ``+changes`` when src/ differs from it."""
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../src"], capture_output=True, text=True,
                               check=True, cwd=here).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


# ---- the references -------------------------------------------------------------------------------------
def torchattacks_autoattack(model: nn.Module, eps: float, steps: int, seed: int) -> Any:
    import torchattacks as ta

    if steps == 10:  # exactly torchattacks' AutoAttack(version="standard") (its attacks' default: 10 steps)
        return ta.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)
    return ta.MultiAttack([  # the same four attacks, configured as its AutoAttack does, with `steps` steps
        ta.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed),
        ta.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=10, seed=seed),
        ta.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True, n_classes=10, seed=seed),
        ta.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=seed),
    ])


def torchattacks_parts(model: nn.Module, eps: float, steps: int, seed: int) -> dict[str, Any]:
    import torchattacks as ta

    return {"apgd-ce": ta.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed),
            "apgd-t": ta.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=10, seed=seed),
            "fab-t": ta.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True, n_classes=10,
                            seed=seed),
            "square": ta.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=seed)}


def fra31_import(tmp: str) -> Any:
    """The original AutoAttack package, extracted from its snapshot into ``tmp`` (never installed)."""
    archive = subprocess.run(["git", "--git-dir", str(SNAPSHOT), "archive", "HEAD", "autoattack"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    sys.path.insert(0, tmp)
    import autoattack

    return autoattack


def fra31_autoattack(module: Any, model: nn.Module, eps: float, steps: int, seed: int) -> Any:
    adversary = module.AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", seed=seed, verbose=False)
    for atk in (adversary.apgd, adversary.apgd_targeted):  # its checkpoints are set from n_iter at construction
        atk.n_iter = atk.n_iter_orig = steps
        atk.n_iter_2, atk.n_iter_min = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1)
        atk.size_decr = max(int(0.03 * steps), 1)
    adversary.fab.n_iter = steps
    return adversary


def run_reference(kind: str, ref: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "fra31":
        return ref.run_standard_evaluation(x, y, bs=len(y))
    return ref(x, y)


def robust_under(model: nn.Module, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Per image: still classified correctly, or the reference's point leaves the eps-ball (then it does not count)."""
    with torch.no_grad():
        ok = model(x_adv).argmax(1) == y
    inside = (x_adv - x).flatten(1).abs().amax(1) <= eps + 1e-5
    in_box = (x_adv.flatten(1).amin(1) >= -1e-6) & (x_adv.flatten(1).amax(1) <= 1 + 1e-6)
    return ok | ~inside | ~in_box


# ---- agreement ------------------------------------------------------------------------------------------
def agreement(args: argparse.Namespace) -> None:
    started_at = commit()
    model = resolve_model(args.model)
    data = heldout(args.n)
    x_all, y_all, keys = data.images, data.labels, data.indices
    stem = Path(args.model).parent.name if args.model.endswith(".safetensors") else args.model
    name = args.out or f"autoattack-{stem}-{args.steps}.json"
    tmp = tempfile.TemporaryDirectory()
    module = fra31_import(tmp.name) if args.reference == "fra31" else None
    ev = Evaluation.autoattack(args.eps, steps=args.steps, checks=False, batch_size=args.batch_size, seed=args.seed)
    n = len(y_all)
    bastion_robust = torch.zeros(n, dtype=torch.bool)
    bastion_first: list[str | None] = [None] * n
    ref_robust = torch.zeros(n, dtype=torch.bool)
    ref_adv = torch.zeros_like(x_all)
    seconds = {"bastion": 0.0, "reference": 0.0}
    batches = []
    for bi, s in enumerate(range(0, n, args.batch_size)):
        sl = slice(s, min(s + args.batch_size, n))
        x, y = x_all[sl], y_all[sl]
        order = ["bastion", "reference"] if bi % 2 == 0 else ["reference", "bastion"]
        took = {}
        for who in order:
            t0 = time.perf_counter()
            if who == "bastion":
                report = ev.run(model, data.subset(torch.arange(sl.start, sl.stop)), keep_per_image=True)
                took[who] = time.perf_counter() - t0
                per = report.per_image
                assert per is not None
                first = per["broken_by"][f"linf@{args.eps}"]
                clean = torch.tensor(per["clean"]) >= 0.5
                bastion_robust[sl] = clean & torch.tensor([f is None for f in first])
                bastion_first[sl] = first
            else:
                ref = (fra31_autoattack(module, model, args.eps, args.steps, args.seed) if module is not None
                       else torchattacks_autoattack(model, args.eps, args.steps, args.seed))
                xa = run_reference(args.reference, ref, x.clone(), y.clone()).detach()
                took[who] = time.perf_counter() - t0
                ref_adv[sl] = xa
                ref_robust[sl] = robust_under(model, xa, x, y, args.eps)
            seconds[who] += took[who]
        batches.append({"images": sl.stop - sl.start, "order": order, **{f"{k}_seconds": v for k, v in took.items()},
                        "bastion_robust": int(bastion_robust[sl].sum()), "reference_robust": int(ref_robust[sl].sum())})
        print(f"batch {bi}: {batches[-1]}", flush=True)
        write(f"{name}.partial", {"args": vars(args), "batches": batches})  # a long run keeps what it measured

    missed = (bastion_robust & ~ref_robust).nonzero().squeeze(1).tolist()
    extra = (~bastion_robust & ref_robust).nonzero().squeeze(1).tolist()
    details = explain(model, args, x_all, y_all, keys, ref_adv, missed) if missed else []
    counts: dict[str, int] = {}
    for f in bastion_first:
        if f is not None:
            counts[f] = counts.get(f, 0) + 1
    out = {
        "model": Path(args.model).parent.name if args.model.endswith(".safetensors") else args.model,
        "model_description": describe_model(model), "n": n, "eps": args.eps, "steps": args.steps, "seed": args.seed,
        "reference": ("torchattacks " + __import__("torchattacks").__version__ if args.reference == "torchattacks"
                      else f"fra31/auto-attack {subprocess.run(['git', '--git-dir', str(SNAPSHOT), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}"),
        "reference_config": ("torchattacks.AutoAttack(norm='Linf', version='standard', n_classes=10)" if
                             args.reference == "torchattacks" and args.steps == 10 else
                             f"standard: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square 5000, {args.steps} steps"),
        "bastion_commit": started_at, "torch_threads": torch.get_num_threads(),
        "bastion_robust_accuracy": float(bastion_robust.float().mean()),
        "reference_robust_accuracy": float(ref_robust.float().mean()),
        "difference_pp": 100 * float(bastion_robust.float().mean() - ref_robust.float().mean()),
        "bastion_broken_first_by": counts,
        "bastion_seconds": seconds["bastion"], "reference_seconds": seconds["reference"],
        "time_ratio_bastion_over_reference": seconds["bastion"] / seconds["reference"],
        "batches": batches,
        "robust_in_bastion_broken_by_reference": details,
        "broken_by_bastion_robust_in_reference": [int(data.indices[i]) for i in extra],
    }
    print(f"bastion {out['bastion_robust_accuracy']:.1%} ({seconds['bastion']:.0f} s) vs reference "
          f"{out['reference_robust_accuracy']:.1%} ({seconds['reference']:.0f} s); {len(missed)} images robust in "
          f"bastion only, {len(extra)} in the reference only -> {write(name, out)}")
    tmp.cleanup()


def explain(model: nn.Module, args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor, keys: torch.Tensor,
            ref_adv: torch.Tensor, missed: list[int]) -> list[dict[str, Any]]:
    """For images bastion calls robust and the reference breaks: the reference's point (class, distance, margin),
    which reference attack breaks the image alone, and whether bastion's cascade breaks it with other seeds."""
    idx = torch.tensor(missed)
    xm, ym = x[idx], y[idx]
    with torch.no_grad():
        logits = model(ref_adv[idx])
    alone: dict[str, list[bool]] = {}
    if args.reference == "torchattacks":
        for name, atk in torchattacks_parts(model, args.eps, args.steps, args.seed).items():
            xa = atk(xm.clone(), ym.clone()).detach()
            alone[name] = (~robust_under(model, xa, xm, ym, args.eps)).tolist()
    seeds: dict[int, list[bool]] = {}
    for seed in (1, 2, 3):
        ev = Evaluation.autoattack(args.eps, steps=args.steps, checks=False, seed=seed)
        rep = ev.run(model, heldout(args.n).subset(idx))
        assert rep.per_image is not None
        seeds[seed] = [f is not None for f in rep.per_image["broken_by"][f"linf@{args.eps}"]]
    out = []
    for j, i in enumerate(missed):
        z = logits[j]
        other = z.clone()
        other[ym[j]] = -math.inf
        out.append({"image": int(keys[i]), "label": int(ym[j]), "reference_class": int(z.argmax()),
                    "reference_linf": float((ref_adv[i] - x[i]).abs().max()),
                    "reference_margin": float(other.max() - z[ym[j]]),
                    "reference_attack_alone_breaks": {k: v[j] for k, v in alone.items()},
                    "bastion_breaks_with_seed": {str(s): v[j] for s, v in seeds.items()}})
    return out


# ---- APGD-CE vs PGD-100 ---------------------------------------------------------------------------------
def apgd_vs_pgd(args: argparse.Namespace) -> None:
    started_at = commit()
    results: dict[str, Any] = {}
    apgd, pgd = APGD(eps=0.3, steps=100), PGD(eps=0.3, steps=100)
    from bastion._model import declared_randomized
    from bastion.models import PRETRAINED, weights_path

    for name in [n for n in PRETRAINED if weights_path(n).exists()]:  # every shipped model
        model = pretrained(name)
        bart = bool(declared_randomized(model))
        data = heldout(args.bart_n if bart else args.n)
        craft = eot(bpda(model), n=args.eot) if bart else model
        row: dict[str, Any] = {"n": len(data), "crafted_on": f"eot(bpda({name}), n={args.eot})" if bart else name}
        for label, atk in (("apgd_ce", apgd), ("pgd100", pgd)):
            ev = Evaluation(suite=[atk], eps_grid=[0.3], checks=False, batch_size=250, seed=args.seed,
                            adaptive={"eot(bpda)": craft} if bart else {})
            t0 = time.perf_counter()
            rep = ev.run(model, data)
            mode = "adaptive:eot(bpda)" if bart else "naive"
            acc = next(r.accuracy for r in rep.rows if r.mode == mode)
            row[label] = {"robust_accuracy": acc, "seconds": time.perf_counter() - t0, "draws": rep.draws}
            print(name, label, row[label], flush=True)
        row["apgd_at_most_pgd"] = row["apgd_ce"]["robust_accuracy"] <= row["pgd100"]["robust_accuracy"]
        results[name] = row
    out = {"eps": 0.3, "apgd": apgd.to_dict(), "pgd": pgd.to_dict(), "models": results, "bastion_commit": started_at}
    print(f"-> {write('apgd_vs_pgd.json', out)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    a = sub.add_parser("agreement")
    a.add_argument("--model", default="mnist-cnn-adv")
    a.add_argument("--n", type=int, default=1000)
    a.add_argument("--eps", type=float, default=0.3)
    a.add_argument("--steps", type=int, default=10)
    a.add_argument("--reference", choices=("torchattacks", "fra31"), default="torchattacks")
    a.add_argument("--batch-size", type=int, default=250)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default=None)
    b = sub.add_parser("apgd-vs-pgd")
    b.add_argument("--n", type=int, default=1000)
    b.add_argument("--bart-n", type=int, default=200)
    b.add_argument("--eot", type=int, default=8)
    b.add_argument("--seed", type=int, default=0)
    for q in (a, b):
        q.add_argument("--threads", type=int, default=1,
                       help="torch threads (1: on a shared 2-core machine two threads wait on each other)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    agreement(args) if args.part == "agreement" else apgd_vs_pgd(args)


if __name__ == "__main__":
    main()

"""Transfer attacks against the "hide the probabilities" defense (Papernot et al. 2017) and between models.

    python benchmarks/transfer.py [--quick] [--target mnist-cnn] [--sources mnist-cnn-gap,logreg,mnist-cnn]
                                  [--runs 2] [--lams 0.1,0.2] [--rounds 7] [--arch mnist-cnn] [--no-substitute]

Data (disjoint by construction, checked below):
  * evaluation: ``load_dataset("mnist-5k", "test")``, 1,000 images, 100 per class (``--quick``: every 5th, 200);
  * the attacker's seed set: 15 images per class drawn from ``load_dataset("mnist-5k", "train")`` (150 images).
Both are MNIST training images 0-5847, never seen by the shipped models (trained on train[5848:]).

Measured, for ``T = pretrained(--target)`` and ``H = HideProbabilities(T)``:
  1. clean accuracy of T and H; the fraction of evaluation images where the input gradient of the loss of
     H is exactly zero; naive white-box PGD (eps 0.3, 40 steps of 0.01) on H (and on T for reference);
  2. Papernot et al.'s substitute attack on H: a substitute (mnist-cnn architecture) trained from H's labels
     only (<= 6,400 label queries, 150 seed images, 7 substitute epochs), for lambda = 0.1 (the paper's) and
     0.2; then FGSM (cross-entropy and margin loss) and PGD (40 steps of 0.01, no early stop) at eps 0.3
     crafted on it and evaluated on H; queries, substitute accuracy (on the attacker's own labelled data and
     on the evaluation images), agreement with the target, seconds; ``--runs`` independent trainings each;
  3. plain transfer from each shipped source model in ``--sources`` (same attacks) to T (and H).

Writes ``benchmarks/results/transfer.json`` (default target, full run), else
``transfer[-<target>][-plain | -sub-<arch>][-quick].json`` (``-plain``: ``--no-substitute``; ``-sub-<arch>``:
a substitute architecture other than mnist-cnn).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import Attack
from bastion.attacks.fgsm import FGSM
from bastion.attacks.pgd import PGD
from bastion.attacks.transfer import TransferAttack
from bastion.data import load_dataset
from bastion.defenses import HideProbabilities
from bastion.models import PRETRAINED, pretrained, weights_path
from bastion.training.substitute import SubstituteTraining, pick_seed_set

EPS = 0.3
RESULTS = Path(__file__).resolve().parent / "results"


def transfer_attacks() -> dict[str, Attack]:
    """The attacks crafted on a source/substitute. PGD runs all 40 steps (no early stop at the source's
    boundary: an example that barely crosses the source's boundary rarely crosses the target's)."""
    return {
        "fgsm": FGSM(eps=EPS),  # cross-entropy, as in the paper
        "fgsm_margin": FGSM(eps=EPS, loss="margin"),  # the Carlini-Wagner margin instead of cross-entropy
        "pgd": PGD(eps=EPS, steps=40, step_size=0.01, early_stop=False),
    }


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch: int = 500) -> Tensor:
    return torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])


def zero_grad_fraction(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of inputs whose cross-entropy input gradient is exactly zero."""
    xs = x.detach().requires_grad_(True)
    params = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        (g,) = torch.autograd.grad(F.cross_entropy(model(xs), y, reduction="sum"), xs)
    finally:
        for p, f in zip(model.parameters(), params, strict=True):
            p.requires_grad_(f)
    return float((g.reshape(g.shape[0], -1).abs().amax(1) == 0).float().mean())


def run_attack(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, seed: int,
               also: dict[str, nn.Module] | None = None) -> dict[str, Any]:
    """Run ``attack`` on ``model``; ``also`` evaluates the same adversarial inputs on other models."""
    res = attack(model, x, y, generator=torch.Generator().manual_seed(seed))
    s = res.summary()
    extra = {f"robust_accuracy_{k}": float((predict(m, res.x_adv) == y).float().mean()) for k, m in (also or {}).items()}
    return {
        "attack": attack.to_dict(),
        "robust_accuracy": s["robust_accuracy"],
        "success_rate": s["success_rate"],
        "mean_linf": s["mean_linf"],
        "max_linf": float(res.norms["linf"].max()),
        "target_queries_by_attack": int(res.queries.sum()),
        "seconds": res.seconds,
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 evaluation images, 1 run, 4 rounds")
    ap.add_argument("--target", default="mnist-cnn", help=f"shipped target model ({', '.join(PRETRAINED)})")
    ap.add_argument("--sources", default="mnist-cnn-gap,logreg,mnist-cnn",
                    help="comma-separated shipped models to transfer from (skipped if not shipped)")
    ap.add_argument("--runs", type=int, default=None,
                    help="independent substitute trainings per lambda (default 2; quick 1)")
    ap.add_argument("--lams", default=None,
                    help="augmentation steps lambda to compare (default '0.1,0.2': the paper's and a larger one; "
                         "quick '0.2')")
    ap.add_argument("--rounds", type=int, default=None, help="substitute epochs rho (default 7, quick 4)")
    ap.add_argument("--max-queries", type=int, default=6400)
    ap.add_argument("--arch", default="mnist-cnn", help="substitute architecture (default mnist-cnn)")
    ap.add_argument("--no-substitute", action="store_true", help="skip the substitute attack (plain transfer only)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1 is fastest on a loaded 2-core machine)")
    ap.add_argument("--out", default=None, help="output JSON path")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()

    test = load_dataset("mnist-5k", "test")
    if args.quick:
        test = test.subset(list(range(0, len(test), 5)), split="test[::5]")
    pool = load_dataset("mnist-5k", "train")
    seed_set = pick_seed_set(pool, 15, generator=torch.Generator().manual_seed(0))
    overlap = len(set(seed_set.indices.tolist()) & set(test.indices.tolist()))
    x, y = test.images, test.labels

    target = pretrained(args.target)
    hidden = HideProbabilities(target).eval()
    y_target = predict(target, x)
    out: dict[str, Any] = {
        "benchmark": "transfer",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "target": args.target,
        "data": {
            "evaluation": {"dataset": "mnist-5k", "split": test.split, "n": len(test)},
            "seed_set": {"dataset": "mnist-5k", "split": "train", "n": len(seed_set), "per_class": 15,
                         "selection": "pick_seed_set(..., 15, generator=manual_seed(0))"},
            "overlap_seed_vs_evaluation": overlap,
        },
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
    }

    # 1. the defense and the naive white-box attack
    naive = PGD(eps=EPS, steps=40, step_size=0.01)
    print(f"[{args.target}] clean accuracy ...", flush=True)
    out["defense"] = {
        "clean_accuracy_target": float((y_target == y).float().mean()),
        "clean_accuracy_hidden": float((predict(hidden, x) == y).float().mean()),
        "labels_identical": bool(torch.equal(predict(hidden, x), y_target)),
        "zero_input_gradient_fraction_hidden": zero_grad_fraction(hidden, x, y),
        "zero_input_gradient_fraction_target": zero_grad_fraction(target, x, y),
        "naive_pgd_on_hidden": run_attack(naive, hidden, x, y, seed=0),
        # without the random start the zero gradient leaves every input where it was
        "naive_pgd_no_random_start_on_hidden": run_attack(replace(naive, random_start=False), hidden, x, y, seed=0),
        "white_box_pgd_on_target": run_attack(naive, target, x, y, seed=0),
    }
    d = out["defense"]
    print(f"  clean {d['clean_accuracy_hidden']:.3f}  zero-grad {d['zero_input_gradient_fraction_hidden']:.3f}  "
          f"naive PGD on hidden: robust {d['naive_pgd_on_hidden']['robust_accuracy']:.3f} "
          f"(no random start {d['naive_pgd_no_random_start_on_hidden']['robust_accuracy']:.3f})  "
          f"white-box PGD on target: robust {d['white_box_pgd_on_target']['robust_accuracy']:.3f}", flush=True)

    # 2. the substitute attack (label-only) against the hidden-probabilities model
    if not args.no_substitute:
        runs = args.runs if args.runs is not None else (1 if args.quick else 2)
        rounds = args.rounds if args.rounds is not None else (4 if args.quick else 7)
        lams = [float(v) for v in (args.lams or ("0.2" if args.quick else "0.1,0.2")).split(",")]
        # the attacker's own labelled data outside the seed set: lets it judge its substitute without queries
        seed_idx = set(seed_set.indices.tolist())
        own = pool.subset([i for i, k in enumerate(pool.indices.tolist()) if k not in seed_idx], split="train-seed")

        def monitor(m: nn.Module) -> dict[str, float]:
            p = predict(m, x)
            return {
                "attacker_data_accuracy": float((predict(m, own.images) == own.labels).float().mean()),
                "test_accuracy": float((p == y).float().mean()),
                "agreement": float((p == y_target).float().mean()),
            }

        configs = []
        for lam in lams:
            cfg = SubstituteTraining(rounds=rounds, lam=lam, max_queries=args.max_queries, arch=args.arch)
            rows = []
            for r in range(runs):
                gseed = 1000 + r
                print(f"  substitute lam={lam} run {r + 1}/{runs}: training ({cfg.rounds} rounds, "
                      f"<= {cfg.max_queries} label queries)", flush=True)
                sub = cfg.train(hidden, seed_set.images, generator=torch.Generator().manual_seed(gseed),
                                monitor=monitor)
                last = sub.history[-1]
                row: dict[str, Any] = {
                    "run": r,
                    "generator_seed": gseed,
                    "label_queries": sub.queries,
                    "train_seconds": sub.seconds,
                    "substitute_attacker_data_accuracy": last["attacker_data_accuracy"],
                    "substitute_test_accuracy": last["test_accuracy"],
                    "agreement_with_target": last["agreement"],
                    "history": list(sub.history),
                    "attacks": {},
                }
                print(f"    queries {sub.queries}, substitute acc {last['test_accuracy']:.3f} (own data "
                      f"{last['attacker_data_accuracy']:.3f}), agreement {last['agreement']:.3f}, "
                      f"train {sub.seconds:.0f}s", flush=True)
                for name, atk in transfer_attacks().items():
                    row["attacks"][name] = run_attack(sub.transfer(atk), hidden, x, y, seed=r,
                                                      also={"target_unhidden": target, "substitute": sub.model})
                    print(f"    {name}: robust accuracy of the hidden model "
                          f"{row['attacks'][name]['robust_accuracy']:.3f}", flush=True)
                rows.append(row)
            configs.append({
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                "runs": rows,
                "robust_accuracy_mean": {
                    name: sum(rw["attacks"][name]["robust_accuracy"] for rw in rows) / len(rows)
                    for name in transfer_attacks()
                },
                "substitute_test_accuracy_mean": sum(rw["substitute_test_accuracy"] for rw in rows) / len(rows),
                "max_label_queries": max(rw["label_queries"] for rw in rows),
            })
        out["substitute"] = {
            "seed_images": len(seed_set),
            "attacker_own_data": {"dataset": "mnist-5k", "split": "train minus the seed set", "n": len(own)},
            "attacks": {k: a.to_dict() for k, a in transfer_attacks().items()},
            "by_lambda": configs,
        }

    # 3. plain transfer from models the attacker has
    plain: dict[str, Any] = {}
    for src_name in [s for s in args.sources.split(",") if s]:
        if src_name not in PRETRAINED or not weights_path(src_name).exists():
            plain[src_name] = {"skipped": f"{src_name} is not shipped in this checkout"}
            print(f"  plain transfer from {src_name}: skipped (not shipped)", flush=True)
            continue
        source = pretrained(src_name)
        entry: dict[str, Any] = {
            "source_clean_accuracy": float((predict(source, x) == y).float().mean()),
            "source_agreement_with_target": float((predict(source, x) == y_target).float().mean()),
            "same_as_target": src_name == args.target,
            "attacks": {},
        }
        for name, atk in transfer_attacks().items():
            entry["attacks"][name] = run_attack(TransferAttack(source=source, attack=atk), target, x, y, seed=0,
                                                also={"hidden": hidden, "source": source})
            print(f"  plain transfer {src_name} -> {args.target}, {name}: robust accuracy "
                  f"{entry['attacks'][name]['robust_accuracy']:.3f}", flush=True)
        plain[src_name] = entry
    out["plain_transfer"] = plain
    out["seconds_total"] = time.perf_counter() - t_all

    if args.out:
        path = Path(args.out)
    else:
        stem = "transfer" if args.target == "mnist-cnn" else f"transfer-{args.target}"
        if args.no_substitute:
            stem += "-plain"
        elif args.arch != "mnist-cnn":
            stem += f"-sub-{args.arch}"
        path = RESULTS / f"{stem}{'-quick' if args.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path} ({out['seconds_total']:.0f}s)")


if __name__ == "__main__":
    main()

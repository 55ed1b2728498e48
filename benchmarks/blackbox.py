"""Black-box attacks against white-box references on the shipped MNIST CNN.

Bar A: Square (score-only, 5,000 queries, Linf eps 0.3) on 1,000 held-out images vs white-box PGD
       (eps 0.3, 40 steps of 0.01): robust accuracies should be within 5 percentage points.
Bar B: HopSkipJump (label-only, <= 5,000 queries, L2) on 100 held-out images: 100% misclassified, median
       L2 at most 1.5x that of the white-box minimum-norm attack (MinNormPGD) on the same images.
Also:  HopSkipJump against HideProbabilities(mnist-cnn) on the same 100 images (a label-only attack does
       not care that the probabilities are hidden).

Images: evenly spaced indices of ``load_dataset("mnist-5k", "all")`` (never seen by the shipped weights,
which were trained on MNIST train[5848:]); the per-sample RNG keys are those indices.

    python benchmarks/blackbox.py            # full run (~30-40 min on 2 shared cores)
    python benchmarks/blackbox.py --quick    # small smoke run -> benchmarks/results/blackbox-quick.json

The script measures and records; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from bastion.attacks import PGD
from bastion.attacks.base import AttackResult
from bastion.attacks.hopskipjump import HopSkipJump
from bastion.attacks.min_norm import MinNormPGD
from bastion.attacks.square import Square
from bastion.data import load_dataset
from bastion.defenses.masking import HideProbabilities
from bastion.models import pretrained

RESULTS = Path(__file__).resolve().parent / "results"


def evenly_spaced(n: int, total: int) -> torch.Tensor:
    return torch.linspace(0, total - 1, n).round().long()


def stats(res: AttackResult) -> dict[str, Any]:
    q = res.queries.double()
    l2 = res.norms["l2"]
    return {
        "n": int(res.y.shape[0]),
        "clean_accuracy": float((res.pred_clean == res.y).double().mean()),
        "robust_accuracy": float(res.robust.double().mean()),
        "success_rate": float(res.success.double().mean()),
        "median_queries": float(q.median()),
        "mean_queries": float(q.mean()),
        "max_queries_used": int(res.queries.max()),
        "median_queries_successful": float(q[res.success].median()) if bool(res.success.any()) else None,
        "median_l2": float(l2.median()),
        "mean_l2": float(l2.mean()),
        "max_linf": float(res.norms["linf"].max()),
        "seconds": round(res.seconds, 2),
    }


def run(atk: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, keys: torch.Tensor, label: str) -> AttackResult:
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {type(atk).__name__} on {x.shape[0]} images ...", flush=True)
    res = atk(model, x, y, generator=torch.Generator().manual_seed(0), keys=keys)
    s = stats(res)
    print(f"    robust acc {s['robust_accuracy']:.4f}  success {s['success_rate']:.4f}  median L2 {s['median_l2']:.4f}  "
          f"median queries {s['median_queries']:.0f}  max queries {s['max_queries_used']}  {s['seconds']:.1f}s", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few images and queries (smoke run)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is much faster for many small batches on a shared machine)")
    ap.add_argument("--model", default="mnist-cnn", help="shipped model to attack")
    ap.add_argument("--square-only", action="store_true",
                    help="only Square vs PGD (bar A), e.g. on mnist-cnn-adv where the two are not both at 0%%")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    n_a, q_a = (100, 1000) if args.quick else (1000, 5000)
    n_b, q_b = (10, 1000) if args.quick else (100, 5000)
    out = RESULTS / ("blackbox-quick.json" if args.quick else "blackbox.json")

    ds = load_dataset("mnist-5k", "all")
    model = pretrained(args.model)

    # ---------------------------------------------------------------- Bar A: Square vs PGD (Linf 0.3)
    ia = evenly_spaced(n_a, len(ds.labels))
    xa, ya = ds.images[ia], ds.labels[ia]
    square = Square(eps=0.3, max_queries=q_a)
    pgd = PGD(eps=0.3, steps=40, step_size=0.01)
    r_sq = run(square, model, xa, ya, ia, "bar A")
    r_pgd = run(pgd, model, xa, ya, ia, "bar A")
    s_sq, s_pgd = stats(r_sq), stats(r_pgd)
    gap_pp = 100.0 * (s_sq["robust_accuracy"] - s_pgd["robust_accuracy"])
    bar_a = {
        "images": {"dataset": "mnist-5k", "split": "all", "indices": f"linspace(0, 4999, {n_a}).round()"},
        "square": {"config": square.to_dict(), **s_sq},
        "pgd": {"config": pgd.to_dict(), **s_pgd},
        "robust_accuracy_gap_pp": gap_pp,
        "bar": "square robust accuracy within 5 pp of PGD's",
        "meets_bar": abs(gap_pp) <= 5.0,
    }
    if args.square_only:
        path = RESULTS / f"blackbox-square-{args.model}.json"
        path.write_text(json.dumps({"benchmark": "blackbox (Square vs PGD only)", "model": args.model,
                                    "bar_a_square_vs_pgd": bar_a, "loadavg_at_end": os.getloadavg()}, indent=2) + "\n")
        print(f"square robust acc {s_sq['robust_accuracy']:.4f} vs PGD {s_pgd['robust_accuracy']:.4f} "
              f"(gap {gap_pp:+.2f} pp); wrote {path}")
        return

    # ---------------------------------------------------------------- Bar B: HopSkipJump vs MinNormPGD (L2)
    ib = evenly_spaced(n_b, len(ds.labels))
    xb, yb = ds.images[ib], ds.labels[ib]
    hsj = HopSkipJump(max_queries=q_b, norm="l2")
    ref = MinNormPGD()
    r_hsj = run(hsj, model, xb, yb, ib, "bar B")
    r_ref = run(ref, model, xb, yb, ib, "bar B")
    hidden = HideProbabilities(model).eval()
    r_hid = run(hsj, hidden, xb, yb, ib, "HideProbabilities")
    s_hsj, s_ref, s_hid = stats(r_hsj), stats(r_ref), stats(r_hid)
    ratio = s_hsj["median_l2"] / s_ref["median_l2"] if s_ref["median_l2"] > 0 else None
    per_image = (r_hsj.norms["l2"] / r_ref.norms["l2"].clamp_min(1e-12))
    bar_b = {
        "images": {"dataset": "mnist-5k", "split": "all", "indices": f"linspace(0, 4999, {n_b}).round()"},
        "hopskipjump": {"config": hsj.to_dict(), **s_hsj},
        "min_norm_pgd": {"config": ref.to_dict(), **s_ref},
        "median_l2_ratio": ratio,
        "per_image_l2_ratio_median": float(per_image.median()),
        "per_image_l2": {
            "hopskipjump": [round(float(v), 5) for v in r_hsj.norms["l2"]],
            "min_norm_pgd": [round(float(v), 5) for v in r_ref.norms["l2"]],
        },
        "bar": "hopskipjump misclassifies 100% with median L2 <= 1.5x min-norm PGD's",
        "meets_bar": s_hsj["success_rate"] == 1.0 and ratio is not None and ratio <= 1.5,
    }
    hide = {
        "model": "HideProbabilities(pretrained('mnist-cnn'))",
        "hopskipjump": {"config": hsj.to_dict(), **s_hid},
        "median_l2_ratio_to_undefended_hsj": s_hid["median_l2"] / s_hsj["median_l2"] if s_hsj["median_l2"] else None,
        "same_adversarial_examples_as_undefended": bool(torch.equal(r_hid.x_adv, r_hsj.x_adv)),
    }

    report = {
        "benchmark": "blackbox",
        "quick": args.quick,
        "model": "pretrained('mnist-cnn')",
        "bar_a_square_vs_pgd": bar_a,
        "bar_b_hsj_vs_min_norm": bar_b,
        "hsj_vs_hide_probabilities": hide,
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bar A: square robust acc {s_sq['robust_accuracy']:.4f} vs PGD {s_pgd['robust_accuracy']:.4f} "
          f"(gap {gap_pp:+.2f} pp) -> {'met' if bar_a['meets_bar'] else 'NOT met'}")
    print(f"bar B: HSJ success {s_hsj['success_rate']:.3f}, median L2 {s_hsj['median_l2']:.4f} vs min-norm "
          f"{s_ref['median_l2']:.4f} (ratio {ratio if ratio is None else round(ratio, 3)}) -> "
          f"{'met' if bar_b['meets_bar'] else 'NOT met'}")
    print(f"HideProbabilities: HSJ success {s_hid['success_rate']:.3f}, median L2 {s_hid['median_l2']:.4f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""The lecture's claim that weight decay and dropout do not help against adversarial examples, measured on the
shipped models trained for it.

    python benchmarks/regularization_baselines.py [--n 1000]

The models (each trained 6 epochs on MNIST train[5848:]; its exact command is in its weights' metadata and in the
JSON): ``mnist-cnn`` (Adam, the plain baseline), ``mnist-cnn-dropout`` (the same with dropout 0.5),
``mnist-cnn-sgd`` and ``mnist-cnn-sgd-wd`` (SGD with momentum 0.9, learning rate 0.05, cosine schedule, weight
decay 0 and 5e-4: the usual setting, where weight decay does regularize: the weight norm drops), and
``mnist-cnn-adv`` (PGD adversarial training) for scale. Each is evaluated on ``--n`` held-out mnist-5k images under
FGSM and PGD-40 at eps 0.1 / 0.2 / 0.3. A regularizer "helps" at an eps when it raises robust accuracy over its
own baseline by more than the 95% interval of the difference (a paired comparison on the same images). Writes
benchmarks/results/regularization_baselines.json.
"""

from __future__ import annotations

import argparse
import math

import torch
from _common import heldout, write

from bastion.attacks import FGSM, PGD
from bastion.models import pretrained

#: regularized model -> its unregularized baseline (same optimizer and schedule)
PAIRS = {"mnist-cnn-dropout": "mnist-cnn", "mnist-cnn-sgd-wd": "mnist-cnn-sgd"}
MODELS = ("mnist-cnn", "mnist-cnn-dropout", "mnist-cnn-sgd", "mnist-cnn-sgd-wd", "mnist-cnn-adv")
EPS = (0.1, 0.2, 0.3)


def robust(model, x, y) -> dict[str, torch.Tensor]:
    out = {"clean": model(x).argmax(1) == y}
    for eps in EPS:
        out[f"fgsm_{eps}"] = FGSM(eps=eps)(model, x, y).robust
        out[f"pgd40_{eps}"] = PGD(eps=eps, steps=40, step_size=eps / 30)(
            model, x, y, generator=torch.Generator().manual_seed(0)).robust
    return out


def paired(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Difference of two accuracies on the same images, with a 95% normal interval of the paired difference."""
    d = a.double() - b.double()
    half = 1.96 * float(d.std(unbiased=True)) / math.sqrt(d.numel()) if d.numel() > 1 else float("inf")
    return {"difference": float(d.mean()), "ci95_half_width": half}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    data = heldout(args.n)
    x, y = data.images, data.labels
    per: dict[str, dict[str, torch.Tensor]] = {}
    results = {}
    for name in MODELS:
        model = pretrained(name)
        with torch.no_grad():
            weight_norm = float(torch.cat([p.reshape(-1) for p in model.parameters()]).norm())
        per[name] = robust(model, x, y)
        training = getattr(model, "meta", None)
        results[name] = {"weight_norm": weight_norm, **{k: float(v.float().mean()) for k, v in per[name].items()},
                         "command": (training.training.get("command") if training is not None else None)}
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in results[name].items()}, flush=True)
    verdicts = {}
    for reg, base in PAIRS.items():
        rows = {}
        for key in per[reg]:
            if key == "clean":
                continue
            c = paired(per[reg][key], per[base][key])
            c["helps"] = c["difference"] > c["ci95_half_width"]
            rows[key] = c
        helps = [k for k, c in rows.items() if c["helps"] and c["difference"] >= 0.05]
        verdicts[reg] = {
            "baseline": base, "by_attack": rows,
            "weight_norm_ratio": results[reg]["weight_norm"] / results[base]["weight_norm"],
            "claim": "holds" if not helps else "does not hold",
            "meaning": ("no attack setting where the regularizer raises robust accuracy by 5 points or more beyond "
                        "noise" if not helps else f"it raises robust accuracy by 5+ points at {', '.join(helps)}"),
        }
        print(reg, "vs", base, verdicts[reg]["claim"], flush=True)
    print(write("regularization_baselines.json", {"args": vars(args), "n": args.n, "results": results,
                                                   "verdicts": verdicts}))


if __name__ == "__main__":
    main()

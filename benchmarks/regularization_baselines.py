"""The seed's claim that weight decay and dropout do not help against adversarial examples, measured.

    python benchmarks/regularization_baselines.py [--epochs 6] [--n 1000]

Trains mnist-cnn three ways with the same recipe as the shipped model (MNIST train[5848:], Adam 0.002,
one-cycle, seed 0): plain, with weight decay (AdamW 5e-4... set by --wd), and with dropout 0.5 — then evaluates
each, and the adversarially trained mnist-cnn-adv if shipped, under FGSM and PGD-40 at eps 0.1/0.2/0.3 on
held-out mnist-5k images. Writes benchmarks/results/regularization_baselines.json.
"""

from __future__ import annotations

import argparse

import torch
from _common import SHARED, heldout, write

from bastion.attacks import FGSM, PGD
from bastion.data import load_dataset
from bastion.errors import WeightsError
from bastion.models import create_model, pretrained
from bastion.training import TrainConfig, accuracy, fit


def evaluate(model, data) -> dict:
    x, y = data.images, data.labels
    out = {"clean": accuracy(model, data)}
    for eps in (0.1, 0.2, 0.3):
        out[f"fgsm_{eps}"] = float(FGSM(eps=eps)(model, x, y).robust.float().mean())
        out[f"pgd40_{eps}"] = float(PGD(eps=eps, steps=40, step_size=eps / 30)(model, x, y,
                                    generator=torch.Generator().manual_seed(0)).robust.float().mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--dropout", type=float, default=0.5)
    args = ap.parse_args()
    train = load_dataset("mnist", "train[5848:]", data_dir=SHARED)
    test = load_dataset("mnist", "test", data_dir=SHARED)
    data = heldout(args.n)
    results = {}
    variants = {"plain": ({}, 0.0), f"weight_decay_{args.wd}": ({}, args.wd), f"dropout_{args.dropout}": ({"dropout": args.dropout}, 0.0)}
    for name, (opts, wd) in variants.items():
        model = create_model("mnist-cnn", seed=0, **opts)
        fit(model, train, config=TrainConfig(epochs=args.epochs, lr=0.002, weight_decay=wd, seed=0))
        results[name] = {"test_accuracy": accuracy(model, test), **evaluate(model, data)}
        print(name, results[name], flush=True)
    try:
        adv = pretrained("mnist-cnn-adv")
        results["mnist-cnn-adv (shipped)"] = {"test_accuracy": accuracy(adv, test), **evaluate(adv, data)}
    except WeightsError:
        results["mnist-cnn-adv (shipped)"] = "not shipped"
    print(write("regularization_baselines.json", {"args": vars(args), "n": args.n, "results": results}))


if __name__ == "__main__":
    main()

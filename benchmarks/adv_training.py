"""Adversarial training from scratch on full MNIST: time to robust accuracy, per epoch (issue: adversarial training).

    python benchmarks/adv_training.py --recipe fgsm-rs --epochs 10 [--quick]
    python benchmarks/adv_training.py --recipe pgd --epochs 4 --steps 7 --alpha 0.1

Trains mnist-cnn on MNIST train[5848:] (from ../shared/data/mnist) with ``bastion.training.fit`` and the
AdversarialTraining objective, and after every epoch records wall time, clean accuracy and PGD-20 accuracy
(eps 0.3, step 0.025) on the first 1,000 MNIST test images. Wall and CPU (process) seconds are both
recorded: on a shared machine the wall time inflates, the CPU time much less. Writes
benchmarks/results/adv_training_<recipe>.json and a plot adv_training.png with every recipe run so far.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import RESULTS, SHARED, write

from bastion.attacks import PGD
from bastion.data import load_dataset
from bastion.models import create_model
from bastion.training import TrainConfig, accuracy, fit
from bastion.training.adversarial import AdversarialTraining


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="fgsm-rs", choices=["fgsm-rs", "pgd", "trades"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--ramp", type=float, default=0.0)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="2 epochs on 10,000 images (a smoke run)")
    args = ap.parse_args()

    train = load_dataset("mnist", "train[5848:]", data_dir=SHARED)
    test = load_dataset("mnist", "test", data_dir=SHARED).take(1000)
    if args.quick:
        train, args.epochs = train.take(10_000), 2
    model = create_model("mnist-cnn", seed=0, hidden=args.hidden)
    objective = AdversarialTraining(recipe=args.recipe, eps=0.3, alpha=args.alpha, steps=args.steps, epochs=args.epochs,
                                    ramp_epochs=args.ramp)
    pgd = PGD(eps=0.3, steps=20, step_size=0.025)
    t_start, c_start = time.perf_counter(), time.process_time()
    curve = []

    def measure(m, epoch, metrics, history):
        t_train = time.perf_counter() - t_start - sum(c["eval_seconds"] for c in curve)
        c_train = time.process_time() - c_start - sum(c["eval_cpu_seconds"] for c in curve)
        t0, c0 = time.perf_counter(), time.process_time()
        rob = float(pgd(m, test.images, test.labels, generator=torch.Generator().manual_seed(0)).robust.float().mean())
        clean = accuracy(m, test)
        curve.append({"epoch": epoch + 1, "train_seconds": t_train, "train_cpu_seconds": c_train,
                      "clean_accuracy": clean, "pgd20_accuracy": rob,
                      "eval_seconds": time.perf_counter() - t0, "eval_cpu_seconds": time.process_time() - c0})
        print(curve[-1], flush=True)
        return {"pgd20_accuracy": rob}

    fit(model, train, config=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr),
        objective=objective, callbacks=[measure], monitor="pgd20_accuracy")
    name = f"adv_training_{args.recipe}{'_quick' if args.quick else ''}.json"
    write(name, {"args": vars(args), "torch_threads": torch.get_num_threads(), "objective": objective.to_dict(), "n_train": len(train), "curve": curve})
    plot()


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for path in sorted(RESULTS.glob("adv_training_*.json")):
        if "quick" in path.name:
            continue
        d = json.loads(path.read_text())
        c = d["curve"]
        if "train_cpu_seconds" in c[0] and d.get("torch_threads") == 1:  # CPU time: robust to a shared machine
            x, how = [p["train_cpu_seconds"] / 60 for p in c], "CPU time, 1 thread"
        else:
            x, how = [p["train_seconds"] / 60 for p in c], "wall time"
        ax.plot(x, [p["pgd20_accuracy"] for p in c], "o-", label=f"{d['args']['recipe']} ({how}; PGD-20, 1k test)")
    shipped = RESULTS / "mnist-cnn-adv-training.json"
    if shipped.exists():  # the per-epoch record of the run that produced the shipped weights (bastion train)
        ep = json.loads(shipped.read_text())["epochs"]
        t = [sum(e["seconds"] for e in ep[: i + 1]) / 60 for i in range(len(ep))]
        ax.plot(t, [e["val_robust_acc"] for e in ep], "s--", label="pgd-5, shipped run (wall time, 2 threads; PGD-10, 512 test)")
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("PGD accuracy, eps 0.3 (MNIST test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(RESULTS / "adv_training.png", dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()

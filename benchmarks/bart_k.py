"""Why the shipped ``mnist-cnn-bart`` uses k=2: clean accuracy through BaRT(k) for k = 0..5.

Three classifiers, all ``mnist-cnn`` fine-tuned on barrages with the shipped recipe (README, "Reproducing
the shipped weights"), differing only in ``--k`` and ``--epochs``:

* ``k=2``, 2 epochs: the classifier inside ``pretrained("mnist-cnn-bart")``;
* ``k=5``, 2 epochs, and ``k=5``, 6 epochs: the same command with ``--k 5`` (this script trains them into
  ``runs/`` when those folders have no model yet; about 1 minute per epoch on 2 cores).

Each is evaluated on the 10,000 MNIST test images through a BaRT(k) barrage for k = 0 (no barrage) to 5,
one fixed-seed draw per image. Needs full MNIST (../shared/data/mnist).

    python benchmarks/bart_k.py

Writes benchmarks/results/bart_k.json.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bart_accuracy import clean_accuracy  # noqa: E402

from bastion._wrap import innermost  # noqa: E402
from bastion.data import load_dataset  # noqa: E402
from bastion.defenses.bart import BaRT  # noqa: E402
from bastion.defenses.base import Defended  # noqa: E402
from bastion.models import load_model, pretrained  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
SHARED = ROOT.parent / "shared" / "data"
#: name -> (k, epochs, run folder) of the classifiers this script trains
TRAINED = {"trained_k5_2ep": (5, 2, ROOT / "runs" / "mnist-cnn-bart-k5"),
           "trained_k5_6ep": (5, 6, ROOT / "runs" / "mnist-cnn-bart-k5-e6")}


def train_command(k: int, epochs: int, out: Path) -> list[str]:
    """The shipped model's training command (README) with another ``--k`` and ``--epochs``."""
    return [sys.executable, "-m", "bastion", "train", "--defense", "bart", "--k", str(k), "--init", "mnist-cnn",
            "--model", "mnist-cnn", "--data", "mnist", "--split", "train[5848:]", "--val-split", "test",
            "--data-dir", os.path.relpath(SHARED, ROOT), "--epochs", str(epochs), "--batch-size", "256",
            "--lr", "0.001", "--out", os.path.relpath(out, ROOT), "--quiet"]  # relative to ROOT, the cwd


def main() -> None:
    test = load_dataset("mnist", "test", data_dir=SHARED)
    x, y = test.images, test.labels
    classifiers = {"trained_k2_2ep (shipped)": innermost(pretrained("mnist-cnn-bart"))}
    commands = {}
    for name, (k, epochs, out) in TRAINED.items():
        cmd = train_command(k, epochs, out)
        commands[name] = "bastion " + " ".join(cmd[3:])
        if not (out / "model.safetensors").exists():
            print(f"training {name}:", commands[name], flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
        classifiers[name] = load_model(out / "model.safetensors")
    rows: dict[str, dict[str, float]] = {}
    for name, clf in classifiers.items():
        clf.eval()
        rows[name] = {"k0": clean_accuracy(clf, x, y, batch=1000)}
        for k in range(1, 6):
            t0 = time.perf_counter()
            rows[name][f"k{k}"] = clean_accuracy(Defended(BaRT(k=k), clf, seed=k), x, y, batch=1000)
            print(f"{name}: through BaRT(k={k}) {rows[name][f'k{k}']:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    out = {"benchmark": "bart_k", "data": "mnist:test", "images": int(x.shape[0]), "torch": torch.__version__,
           "python": platform.python_version(), "train_commands": commands,
           "accuracy_through_bart_k": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bart_k.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

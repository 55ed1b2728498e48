"""Accuracy of the shipped BaRT model: clean (through the barrage) on MNIST test, and under naive attacks.

    python benchmarks/bart_accuracy.py [--quick]

* clean accuracy of ``pretrained("mnist-cnn-bart")`` (one random barrage per image and call) on the 10,000
  MNIST test images, and of the undefended ``mnist-cnn``;
* robust accuracy under naive FGSM (eps 0.3) and PGD (eps 0.3, 40 steps of 0.01) on the first 1,000 test
  images, for both models. "Naive" means the attacks differentiate straight through the defended model as it
  is (autograd through the real barrage: no BPDA, no EOT). bastion detects that the BaRT model is randomized,
  so PGD runs all 40 steps (no early stopping) and each adversarial point is judged over 8 fresh barrages:
  robust accuracy is the mean share of correct draws. This is the paper's kind of evaluation and is known to
  overestimate robustness; adaptive (BPDA/EOT) evaluations are reported elsewhere.

Needs full MNIST (../shared/data/mnist); ``--quick`` uses 1,000 clean and 200 attacked images. Writes
benchmarks/results/bart_accuracy.json. Runs on one thread (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from bastion.attacks import FGSM, PGD
from bastion.data import load_dataset
from bastion.models import pretrained

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@torch.no_grad()
def clean_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    correct = 0
    for i in range(0, x.shape[0], batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / x.shape[0]


def robust_accuracy(attack, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> dict:  # noqa: ANN001
    robust, success, seconds = 0.0, 0, 0.0
    g = torch.Generator().manual_seed(0)
    for i in range(0, x.shape[0], batch):
        keys = torch.arange(i, min(i + batch, x.shape[0]))
        res = attack(model, x[i : i + batch], y[i : i + batch], generator=g, keys=keys)
        robust += float(res.robust_share.sum())  # the share of judging draws still correct (1 draw if deterministic)
        success += int(res.success.sum())
        seconds += res.seconds
    return {"robust_accuracy": robust / x.shape[0], "success_rate": success / x.shape[0], "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    test = load_dataset("mnist", "test", data_dir=SHARED)
    n_clean, n_attack = (1000, 200) if args.quick else (len(test), 1000)
    x, y = test.images[:n_clean], test.labels[:n_clean]
    xa, ya = test.images[:n_attack], test.labels[:n_attack]
    models = {"mnist-cnn-bart": pretrained("mnist-cnn-bart"), "mnist-cnn": pretrained("mnist-cnn")}
    attacks = {"fgsm_eps0.3": FGSM(eps=0.3), "pgd_eps0.3_40x0.01": PGD(eps=0.3, steps=40, step_size=0.01)}
    out: dict = {"benchmark": "bart_accuracy", "quick": args.quick, "data": "mnist:test", "clean_images": n_clean,
                 "attacked_images": n_attack, "torch": torch.__version__, "python": platform.python_version(),
                 "bart": models["mnist-cnn-bart"].defense.to_dict(),
                 "training": models["mnist-cnn-bart"].meta.training, "models": {}}
    for name, model in models.items():
        t0 = time.perf_counter()
        row: dict = {"clean_accuracy": clean_accuracy(model, x, y), "clean_seconds": time.perf_counter() - t0}
        print(f"{name}: clean accuracy {row['clean_accuracy']:.4f} on {n_clean} test images", flush=True)
        for aname, atk in attacks.items():
            row[aname] = robust_accuracy(atk, model, xa, ya)
            print(f"{name}: {aname} robust accuracy {row[aname]['robust_accuracy']:.4f} on {n_attack} images "
                  f"({row[aname]['seconds']:.0f}s)", flush=True)
        out["models"][name] = row
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bart_accuracy.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

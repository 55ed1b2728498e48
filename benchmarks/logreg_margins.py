"""Why FGSM breaks the shipped softmax regression at small eps: the logit-gap shift against the margins.

    python benchmarks/logreg_margins.py

For a linear model the gap between the logits of classes i and j moves by at most ``eps * ||w_i - w_j||_1``
under an Linf perturbation of size eps (FGSM reaches it for the pair it pushes). The shipped ``logreg``
normalizes inside (``(x - mean) / std``), so in pixel units the weights are ``w / std``. Writes
``benchmarks/results/logreg_margins.json``: the median over class pairs of that L1 norm (normalized and pixel
units), the shift it gives at eps 0.05, and the clean logit margins (top-1 minus top-2) on the held-out
mnist-5k images.
"""

from __future__ import annotations

import itertools
import statistics

import torch
from _common import write

from bastion.data import load_dataset
from bastion.models import pretrained


def main() -> None:
    model = pretrained("logreg")
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    (fc,) = linear
    w = fc.weight.detach().double()
    std = float(model.meta.std[0])
    l1 = [float((w[i] - w[j]).abs().sum()) for i, j in itertools.combinations(range(w.shape[0]), 2)]
    med = statistics.median(l1)
    data = load_dataset("mnist-5k", "all")
    with torch.no_grad():
        top2 = model(data.images).topk(2, dim=1).values
    margins = (top2[:, 0] - top2[:, 1]).double()
    out = {
        "benchmark": "logreg_margins",
        "model": "logreg",
        "std": std,
        "median_pair_l1_normalized": med,
        "median_pair_l1_pixels": med / std,
        "logit_gap_shift_at_eps_0.05": 0.05 * med / std,
        "clean_margin_median": float(margins.median()),
        "clean_margin_p90": float(margins.quantile(0.9)),
        "images": len(data),
    }
    print(out)
    write("logreg_margins.json", out)


if __name__ == "__main__":
    main()

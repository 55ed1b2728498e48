"""Figure: one image through each BaRT group, and ten random barrages of it (plus an MNIST digit).

    python benchmarks/bart_figure.py [--quick]

Writes benchmarks/results/bart_transforms.png. Row 1: scikit-image's ``chelsea`` photo (resized to
96x96) and the same image through each of the ten groups (one random draw each). Row 2: ten random k=5
barrages of that image, titled with their groups in order. Row 3: an MNIST test digit and ten k=5
barrages of it (grayscale: colour groups are skipped).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from skimage import data  # noqa: E402

from bastion.data import load_dataset  # noqa: E402
from bastion.defenses.bart import BaRT  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SHORT = {"color_precision": "precision", "jpeg": "jpeg", "swirl": "swirl", "noise": "noise", "fft": "fft",
         "zoom": "zoom", "color_space": "colorspace", "contrast": "contrast", "greyscale": "grey", "denoise": "denoise"}


def show(ax, img: torch.Tensor, title: str) -> None:  # noqa: ANN001
    a = img.detach().clamp(0, 1)
    if a.shape[0] == 1:
        ax.imshow(a[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(a.permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=6)
    ax.axis("off")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="same figure (it is fast)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    photo = F.interpolate(photo[:, :, :, 75:375], size=(96, 96), mode="area")
    digit = load_dataset("mnist-5k", "test").images[:1]
    bart = BaRT(k=5)
    g = torch.Generator().manual_seed(args.seed)

    fig, axes = plt.subplots(3, 11, figsize=(14, 4.6))
    show(axes[0, 0], photo[0], "original")
    for j, t in enumerate(bart.transforms):
        show(axes[0, j + 1], t(photo, generator=g)[0], t.name)
    for row, img, label in ((1, photo, "original"), (2, digit, "MNIST digit")):
        show(axes[row, 0], img[0], label)
        for b in range(10):
            y, draw = bart(img, generator=g, return_params=True)
            names = [SHORT[n] for n in draw.groups_of(0)]
            show(axes[row, b + 1], y[0], " > ".join(names[:3]) + "\n> " + " > ".join(names[3:]))
    fig.suptitle("BaRT (Raff et al. 2019). Row 1: one random draw of each group. Row 2: ten random k=5 "
                 "barrages of the photo. Row 3: ten k=5 barrages of a digit (colour groups skipped).", fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bart_transforms.png"
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

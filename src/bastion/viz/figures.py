"""Figures (matplotlib, Agg backend): predictions, attack triptychs, accuracy curves, CAM panels, the toy
decision boundary. Every function returns a ``Figure``; :func:`png_bytes` renders one."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from bastion.eval.report import RobustnessReport  # noqa: E402


def png_bytes(fig: Figure, *, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _img(t: Tensor) -> np.ndarray:
    a = t.detach().cpu().float()
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()


def _show(ax: plt.Axes, t: Tensor) -> None:
    a = _img(t)
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set(xticks=[], yticks=[])


def prediction_grid(images: Tensor, labels: Tensor, logits: Tensor, classes: Sequence[str], *, cols: int = 8) -> Figure:
    """A grid of images titled "pred (confidence)", red where the prediction is wrong."""
    n = images.shape[0]
    rows = (n + cols - 1) // cols
    probs = torch.softmax(logits.float(), 1)
    conf, pred = probs.max(1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        _show(ax, images[i])
        ok = int(pred[i]) == int(labels[i])
        ax.set_title(f"{classes[int(pred[i])]} ({float(conf[i]):.0%})", fontsize=8, color="black" if ok else "red")
    fig.suptitle("predictions (red = wrong)", fontsize=9)
    return fig


def image_row(images: Tensor, captions: Sequence[str]) -> Figure:
    """Images side by side, each with a (wrapped) caption under it: e.g. one input through several draws of a
    randomized defense."""
    n = images.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.6), squeeze=False)
    for ax, im, cap in zip(axes[0], images, captions, strict=True):
        _show(ax, im)
        ax.set_xlabel("\n".join(textwrap.wrap(cap, 22)) or "(none)", fontsize=6.5)
    return fig


def triptych(
    x: Tensor, x_adv: Tensor, logits: Tensor, logits_adv: Tensor, classes: Sequence[str], *,
    y: Tensor | None = None, titles: Sequence[str] | None = None,
    captions: tuple[Sequence[str], Sequence[str]] | None = None,
) -> Figure:
    """Rows of original | perturbation (magnified) | adversarial, each with its top prediction and confidence
    (``giant panda 57.7%`` | ... | ``gibbon 99.3%``); a colour perturbation is drawn in colour around mid-grey.
    ``captions`` (clean, adversarial) replace the confidence lines (a randomized model's share of draws, or
    nothing for a model that outputs only its label)."""
    n = x.shape[0]
    p, pa = torch.softmax(logits.float(), 1), torch.softmax(logits_adv.float(), 1)
    fig, axes = plt.subplots(n, 3, figsize=(5.4, 2.1 * n), squeeze=False)
    for i in range(n):
        c0, k0 = p[i].max(0)
        c1, k1 = pa[i].max(0)
        _show(axes[i, 0], x[i])
        axes[i, 0].set_title(f"{classes[int(k0)]}\n{float(c0):.1%}" if captions is None else captions[0][i], fontsize=8)
        d = (x_adv[i] - x[i]).detach().cpu().float()
        m = float(d.abs().max()) or 1.0
        if d.shape[0] == 3:  # colour: the perturbation itself, mid-grey = 0 (the classic panda figure)
            axes[i, 1].imshow((0.5 + 0.5 * d / m).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            axes[i, 1].imshow(d.mean(0).numpy(), cmap="seismic", vmin=-m, vmax=m, interpolation="nearest")
            axes[i, 1].set_xlabel("red: brighter, blue: darker", fontsize=7)
        axes[i, 1].set(xticks=[], yticks=[])
        axes[i, 1].set_title(f"perturbation (max |change| {m:.3f})", fontsize=8)
        _show(axes[i, 2], x_adv[i])
        wrong = y is not None and int(k1) != int(y[i])
        axes[i, 2].set_title(f"{classes[int(k1)]}\n{float(c1):.1%}" if captions is None else captions[1][i], fontsize=8,
                             color="red" if wrong else "black")
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
    return fig


def accuracy_curves(report: RobustnessReport, *, title: str = "accuracy vs eps") -> Figure:
    """Accuracy against eps for each attack (solid: naive, dashed: adaptive) and the worst case of each threat
    model (norm). Attacks without a radius (JSMA, minimum-norm attacks) have no curve: they are in the table."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    styles = {"naive": "-"}
    all_norms: list[str | None] = []
    for mode in report.modes():
        ls = styles.get(mode, "--")
        norms = report.norms(mode)
        all_norms += [nm for nm in norms if nm not in all_norms]
        tag = (lambda nm: f" ({nm})") if len(norms) > 1 else (lambda nm: "")
        for attack in report.attacks(mode):
            pts = report.curve(attack, mode)
            if not pts:
                continue
            eps, acc = zip(*pts, strict=True)
            ax.plot((0.0, *eps), (report.clean_accuracy, *acc), ls, marker="o", ms=3,
                    label=f"{attack}" + ("" if mode == "naive" else f" [{mode}]"))
        for nm in norms:
            worst = report.worst(mode, nm)
            if worst and sum(report.norm_of(a, mode) == nm and bool(report.curve(a, mode))
                             for a in report.attacks(mode)) > 1:
                eps, acc = zip(*worst, strict=True)
                ax.plot((0.0, *eps), (report.clean_accuracy, *acc), ls, color="black", lw=5, alpha=0.25, zorder=1,
                        label="worst case" + tag(nm) + ("" if mode == "naive" else f" [{mode}]"))
    names = {"linf": "Linf", "l2": "L2", "l1": "L1", "l0": "L0"}
    ax.set_xlabel("eps (" + ", ".join(names.get(nm or "", str(nm)) for nm in all_norms if nm) + ")"
                  if any(all_norms) else "eps")
    ax.set(ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:  # e.g. a suite of JSMA only: its rows are in the table
        ax.text(0.5, 0.5, "no attack with a radius eps: see the table", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def cam_panel(images: Tensor, adv: Tensor, maps: dict[str, Tensor], *, row_titles: Sequence[str] | None = None) -> Figure:
    """For each example: clean image, adversarial image, then each map (already upsampled, in [0,1]) overlaid.

    ``maps`` is ordered ``{column title: (B, H, W)}``; titles starting with "adv" overlay on the adversarial image.
    """
    n = images.shape[0]
    cols = 2 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.7 * cols, 1.8 * n), squeeze=False)
    for i in range(n):
        _show(axes[i, 0], images[i])
        _show(axes[i, 1], adv[i])
        if i == 0:
            axes[i, 0].set_title("clean", fontsize=8)
            axes[i, 1].set_title("adversarial", fontsize=8)
        for j, (title, m) in enumerate(maps.items()):
            ax = axes[i, 2 + j]
            base = adv[i] if title.startswith("adv") else images[i]
            ax.imshow(_img(base), cmap="gray", vmin=0, vmax=1)
            shown_map = ax.imshow(m[i].detach().cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set(xticks=[], yticks=[])
            if i == 0:
                ax.set_title(title, fontsize=8)
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=8)
    if maps:
        bar = fig.colorbar(shown_map, ax=axes[:, 2:].ravel().tolist(), shrink=0.6, pad=0.02)
        bar.set_label("attention (0: none, 1: the strongest in the row)", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    return fig


def toy_boundary(model: nn.Module, points: Tensor, labels: Tensor, adversarial: dict[float, Tensor]) -> Figure:
    """The seed's red/blue picture: decision regions of a 2-D classifier, the points, and where FGSM moves
    them for each eps (arrows from the original to the adversarial point)."""
    cols = len(adversarial)
    fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols, 3.2), squeeze=False)
    g = torch.linspace(0, 1, 200)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    with torch.no_grad():
        region = model(grid).argmax(1).reshape(200, 200).numpy()
    colors = np.array(["tab:red", "tab:blue"])
    for ax, (eps, adv) in zip(axes[0], adversarial.items(), strict=True):
        ax.contourf(gx.numpy(), gy.numpy(), region, levels=[-0.5, 0.5, 1.5], colors=["#f8d0d0", "#d0dcf8"])
        ax.contour(gx.numpy(), gy.numpy(), region, levels=[0.5], colors="k", linewidths=1)
        p, a = points.numpy(), adv.numpy()
        ax.scatter(p[:, 0], p[:, 1], c=colors[labels.numpy()], s=8)
        if eps > 0:
            with torch.no_grad():
                flipped = (model(adv).argmax(1) != labels).numpy()
            ax.quiver(p[:, 0], p[:, 1], a[:, 0] - p[:, 0], a[:, 1] - p[:, 1], angles="xy", scale_units="xy", scale=1,
                      width=0.004, color=np.where(flipped, "black", "gray"))
            ax.set_title(f"FGSM eps={eps:g}: {flipped.mean():.0%} flipped", fontsize=9)
        else:
            ax.set_title("clean", fontsize=9)
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
        ax.set_xlabel("feature 1", fontsize=8)
        ax.set_ylabel("feature 2", fontsize=8)
    return fig


def loss_slice(t: Tensor, curves: dict[str, Tensor], *, title: str = "") -> Figure:
    """Losses along a line through an input (``x + t * direction``): one curve per model (e.g. a label-only model's
    flat steps against a substitute's smooth slope)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    for label, values in curves.items():
        ax.plot(t.numpy(), values.numpy(), label=label)
    ax.axvline(0.0, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("t (step along the sign of the substitute's gradient)")
    ax.set_ylabel("cross-entropy of the true class")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return fig

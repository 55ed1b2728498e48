"""Learned BPDA approximations: a small network trained to mimic an input defense (Athalye, Carlini & Wagner
2018, "Obfuscated Gradients Give a False Sense of Security", https://arxiv.org/abs/1802.00420).

``bpda(defended, surrogate=g)`` (:func:`bastion.attacks.bpda`) then runs the real defense forward and ``g``
backward.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion._checks import eval_mode, frozen, shown
from bastion.data.base import ImageDataset
from bastion.defenses.base import InputDefense
from bastion.errors import ConfigError
from bastion.progress import Progress, no_progress
from bastion.training.loop import StepContext, TrainConfig, fit

log = logging.getLogger(__name__)


class SurrogateNet(nn.Module):
    """A small residual conv net ``g(x) = x + r(x)`` trained to mimic an input transformation
    (:func:`train_surrogate` zero-initialises the last layer, so training starts from the identity)."""

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


@dataclass(frozen=True)
class SurrogateReport:
    """How closely a trained surrogate mimics the defense, on held-out data."""

    mae: float
    mae_identity: float
    epochs: int
    n_train: int
    n_val: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def train_surrogate(
    defense: InputDefense,
    data: ImageDataset,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 2e-3,
    width: int = 32,
    depth: int = 4,
    val_fraction: float = 0.1,
    loss: str = "l1",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Progress = no_progress,
) -> tuple[SurrogateNet, SurrogateReport]:
    """Train a small conv net ``g`` to approximate the defense ``f`` on ``data``.

    This is the learned BPDA approximation of Athalye et al.: "define a new network g(x) and train it to
    approximate f(x)". Returns the surrogate (eval mode, parameters frozen) and a report of its mean
    absolute error to the real transform on held-out images, next to the identity approximation's.

    ``loss="l1"`` (default) matches the reported error: most pixels of a quantizing or compressing transform
    come out exactly (or almost) unchanged, and a squared loss trades those exact pixels for smaller errors
    spread everywhere, which can leave g further from f than the identity. ``"mse"`` is the alternative.
    """
    if data.images.ndim != 4:
        raise ConfigError("train_surrogate needs image data (N, C, H, W)")
    if loss not in ("l1", "mse"):
        raise ConfigError(f"train_surrogate loss must be 'l1' or 'mse', got {shown(loss)}")
    criterion = F.l1_loss if loss == "l1" else F.mse_loss
    n_val = max(1, int(len(data) * val_fraction))
    train_ds, val_ds = data.subset(slice(n_val, None)), data.subset(slice(0, n_val))
    with torch.random.fork_rng(devices=[]):  # the initialisation draws from torch's global RNG: left untouched
        torch.manual_seed(seed)
        g = SurrogateNet(channels=data.images.shape[1], width=width, depth=depth)
        for p in g.body[-1].parameters():  # g starts as the identity (the plain BPDA approximation) and improves on it
            nn.init.zeros_(p)
    gen = torch.Generator().manual_seed(seed)

    def objective(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        with torch.no_grad(), frozen(defense):
            target = defense(x, generator=gen)
        return criterion(model(x), target), {}

    with eval_mode(defense):  # the defense runs in eval mode; the caller's mode flags are restored after
        fit(g, train_ds, config=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed),
            objective=objective, device=device, progress=progress)
        g.eval().requires_grad_(False)
        with torch.no_grad():
            xv = val_ds.images.to(device)
            fv = defense(xv, generator=torch.Generator().manual_seed(seed + 1))
            mae = float((g(xv) - fv).abs().mean())
            mae_id = float((xv - fv).abs().mean())
    log.info("surrogate: MAE %.4f (identity %.4f)", mae, mae_id)
    return g, SurrogateReport(mae=mae, mae_identity=mae_id, epochs=epochs, n_train=len(train_ds), n_val=n_val)


__all__ = ["train_surrogate", "SurrogateNet", "SurrogateReport"]

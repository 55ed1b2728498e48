"""Per-sample attack losses (to be maximised)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from bastion._checks import shown

LOSSES = ("ce", "margin")


def _other_max(logits: Tensor, cls: Tensor) -> Tensor:
    """max over classes j != cls of logits_j."""
    masked = logits.scatter(1, cls[:, None], float("-inf"))
    return masked.amax(1)


def attack_loss(name: str, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Per-sample loss, shape (B,), that an attack maximises.

    ``ce``: cross-entropy of the true class (untargeted) or minus that of the target (targeted).
    ``margin`` (Carlini-Wagner): ``max_{j!=y} z_j - z_y`` (untargeted) or ``z_t - max_{j!=t} z_j``.
    """
    if name == "ce":
        if target is None:
            return F.cross_entropy(logits, y, reduction="none")
        return -F.cross_entropy(logits, target, reduction="none")
    if name == "margin":
        if target is None:
            return _other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)
        return logits.gather(1, target[:, None]).squeeze(1) - _other_max(logits, target)
    raise ValueError(f"unknown loss {shown(name)}; valid: {LOSSES}")

"""Per-sample attack losses (to be maximised)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from bastion._checks import shown
from bastion.errors import ConfigError

LOSSES = ("ce", "margin", "dlr")


def _other_max(logits: Tensor, cls: Tensor) -> Tensor:
    """max over classes j != cls of logits_j."""
    return logits.scatter(1, cls[:, None], float("-inf")).amax(1)


def _own(logits: Tensor, cls: Tensor) -> Tensor:
    return logits.gather(1, cls[:, None]).squeeze(1)


def dlr_loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """The Difference of Logits Ratio of Croce & Hein 2020 (https://arxiv.org/abs/2003.01690), per sample.

    With the logits sorted in decreasing order ``z_(1) >= z_(2) >= ...``:

    * untargeted: ``-(z_y - max_{j!=y} z_j) / (z_(1) - z_(3))`` (needs 3 classes or more);
    * targeted towards ``t``: ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)`` (needs 4 classes or more).

    Dividing by a difference of logits makes the loss invariant to shifting and rescaling the logits, so a
    model cannot hide behind large or saturated outputs as it can with the cross-entropy.
    """
    k = 3 if target is None else 4
    if logits.shape[1] < k:
        raise ConfigError(f"the DLR loss needs at least {k} classes{' with a target' if target is not None else ''}, "
                          f"this model has {logits.shape[1]}: use loss='ce' or 'margin'")
    top = logits.topk(k, dim=1).values
    if target is None:
        return -(_own(logits, y) - _other_max(logits, y)) / (top[:, 0] - top[:, 2] + 1e-12)
    return -(_own(logits, y) - _own(logits, target)) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def attack_loss(name: str, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Per-sample loss, shape (B,), that an attack maximises.

    ``ce``: cross-entropy of the true class (untargeted) or minus that of the target (targeted).
    ``margin`` (Carlini-Wagner): ``max_{j!=y} z_j - z_y`` (untargeted) or ``z_t - max_{j!=t} z_j``.
    ``dlr``: the Difference of Logits Ratio (:func:`dlr_loss`), untargeted or targeted.
    """
    if name == "ce":
        if target is None:
            return F.cross_entropy(logits, y, reduction="none")
        return -F.cross_entropy(logits, target, reduction="none")
    if name == "margin":
        if target is None:
            return _other_max(logits, y) - _own(logits, y)
        return _own(logits, target) - _other_max(logits, target)
    if name == "dlr":
        return dlr_loss(logits, y, target)
    raise ValueError(f"unknown loss {shown(name)}; valid: {LOSSES}")

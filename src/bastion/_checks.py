"""Input validation shared by attacks, defenses, evaluation and training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError, InputRangeError, InputShapeError, LabelError, ModelModeError


def shown(value: Any, *, limit: int = 80) -> str:
    """``value`` for an error message: the repr of plain data (None, booleans, numbers, strings, and short
    lists, tuples and dicts of them), cut to about ``limit`` characters; for anything else a description (a
    tensor's dtype and shape, an object's type), never a repr with a memory address."""
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {len(str(abs(value))) if value.bit_length() < 10_000 else 'thousands of'} digits"
    if not _plain(value):
        kind = type(value).__name__ if type(value).__module__ == "builtins" else (
            f"{type(value).__module__.split('.')[0]} {type(value).__name__}")
        return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def _plain(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return not isinstance(value, int) or isinstance(value, bool) or value.bit_length() <= 64
    if isinstance(value, (list, tuple)) and depth < 3 and len(value) <= 100:
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict) and depth < 3 and len(value) <= 100:
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return False


def check_images(x: Tensor, *, bounds: tuple[float, float] = (0.0, 1.0), name: str = "x") -> None:
    """Check that ``x`` is a floating batch, (N, C, H, W) or (N, D), finite and inside ``bounds``."""
    if not isinstance(x, Tensor):
        raise InputShapeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputShapeError(f"{name} must be a floating tensor (float32 pixels in [0, 1]), got {x.dtype}")
    if x.ndim == 3:
        raise InputShapeError(
            f"{name} has shape {tuple(x.shape)}: expected a batch (N, C, H, W); "
            f"for a single image use {name}.unsqueeze(0)"
        )
    if x.ndim not in (2, 4):
        raise InputShapeError(f"{name} has shape {tuple(x.shape)}: expected (N, C, H, W) images or (N, D) points")
    if x.shape[0] == 0:
        raise InputShapeError(f"{name} is an empty batch")
    finite = torch.isfinite(x.detach())
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise InputRangeError(f"{name} contains {bad} NaN or infinite value(s)")
    lo, hi = bounds
    d = x.detach()
    mn, mx = float(d.min()), float(d.max())
    if mn < lo or mx > hi:
        hint = ""
        if hi == 1.0 and mn >= 0 and 1.5 < mx <= 255.5 and float((d - d.round()).abs().max()) < 0.01:
            hint = " (did you pass 0-255 pixels? divide by 255)"  # whole numbers up to 255
        elif mn < lo:
            hint = " (did you pass normalized inputs? bastion models normalize inside)"
        raise InputRangeError(f"{name} has values in [{_beyond(mn, lo, hi)}, {_beyond(mx, lo, hi)}], outside the "
                              f"bounds [{lo}, {hi}]{hint}")


def _beyond(v: float, lo: float, hi: float) -> str:
    """``v`` with enough significant digits that a value outside [lo, hi] also reads as outside (1.000001 is
    not shown as "1")."""
    for digits in (4, 6, 8, 10, 17):
        text = f"{v:.{digits}g}"
        if lo <= v <= hi or not lo <= float(text) <= hi:
            return text
    return repr(v)


def check_labels(y: Tensor, n: int, *, num_classes: int | None = None, name: str = "y") -> None:
    """Check that ``y`` is an int64 vector of length ``n`` with values in ``[0, num_classes)``."""
    if not isinstance(y, Tensor):
        raise LabelError(f"{name} must be a torch.Tensor of int64 labels, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise LabelError(f"{name} must have dtype torch.int64, got {y.dtype} (use {name}.long())")
    if y.ndim != 1 or y.shape[0] != n:
        raise LabelError(f"{name} has shape {tuple(y.shape)}: expected ({n},), one label per input")
    if num_classes is not None and n > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise LabelError(f"{name} has values in [{lo}, {hi}], outside the {num_classes} classes [0, {num_classes - 1}]")


def check_eval_mode(model: nn.Module) -> None:
    """Refuse a model that is (even partly) in training mode."""
    training = [name or "<model>" for name, m in model.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:3]) + (" ..." if len(training) > 3 else "")
        raise ModelModeError(
            f"the model is in training mode ({shown}); call model.eval() first. "
            "Attacks and evaluation refuse training-mode models because dropout and batch-norm "
            "statistics would change the model under attack."
        )


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set ``requires_grad=False`` on every parameter; restored in ``finally``.

    Gradients are then only computed for inputs, which is faster and leaves no ``.grad``.
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield model
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every module's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, f in flags:
            m.training = f


def as_index(idx: Any, n: int, *, error: type[Exception] = ConfigError, what: str = "select") -> Tensor:
    """``idx`` as an int64 index tensor into ``n`` items: integer indices (in range), or a boolean mask of
    length ``n`` as the positions it selects (cast to integers, a mask would select items 0 and 1).
    Anything else raises ``error``, its message starting with ``what``."""
    t = torch.as_tensor(idx)
    if t.numel() == 0 and t.ndim == 1:  # an empty list arrives as float
        return torch.zeros(0, dtype=torch.long, device=t.device)
    if t.dtype == torch.bool:
        if t.shape != (n,):
            raise error(f"{what}: a boolean mask over {n} items must have shape ({n},), got {tuple(t.shape)}")
        return t.nonzero().squeeze(1)
    if t.is_floating_point() or t.is_complex() or t.ndim != 1:
        raise error(f"{what} takes a 1-D tensor of integer indices or a boolean mask, got {t.dtype} of shape "
                    f"{tuple(t.shape)}")
    t = t.to(torch.long)
    if t.numel() and (int(t.min()) < -n or int(t.max()) >= n):
        raise error(f"{what}: index out of range for {n} items (min {int(t.min())}, max {int(t.max())})")
    return t

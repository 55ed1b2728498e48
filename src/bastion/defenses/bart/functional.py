"""Pure, batched helpers shared by the BaRT transforms (no randomness, no state)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def soft_round(z: Tensor) -> Tensor:
    """A smooth stand-in for ``round``: ``round(z) + (z - round(z))**3`` (Shin & Song, 2017).

    Its value is within 0.125 of ``round(z)`` and its derivative ``3 (z - round(z))**2`` is non-zero almost
    everywhere, which is what BPDA needs through quantisation steps (colour precision, JPEG).
    """
    r = torch.round(z).detach()
    return r + (z - r) ** 3


def dispatch(
    x: Tensor,
    kinds: Tensor,
    ops: Sequence[Callable[[Tensor, Tensor], Tensor] | None],
) -> Tensor:
    """Apply ``ops[k](x[idx], idx)`` to the images whose ``kinds`` equal ``k``; ``None`` leaves them as they are.

    The loop runs over the (few) kinds, never over images; results are written back out of place with
    ``index_copy`` so autograd flows through every branch. ``idx`` lets an op select its own parameters.
    """
    out = x
    kinds = kinds.to(x.device)
    for k, op in enumerate(ops):
        if op is None:
            continue
        idx = (kinds == k).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        out = out.index_copy(0, idx, op(x.index_select(0, idx), idx).to(x.dtype))
    return out


def group_by(values: Tensor) -> list[tuple[int, Tensor]]:
    """``[(value, indices)]`` for each distinct integer in ``values`` (for ops whose kernel size is per sample)."""
    out = []
    for v in torch.unique(values).tolist():
        out.append((int(v), (values == v).nonzero().squeeze(1)))
    return out


def quantile_linear(flat: Tensor, q: Tensor) -> Tensor:
    """Per-row quantiles with numpy's default ('linear') interpolation, one sort per row.

    Args:
        flat: (B, N) values.
        q: (B,) or (B, Q) quantiles in [0, 1].

    Returns:
        (B,) or (B, Q): the quantiles of each row.
    """
    s, _ = torch.sort(flat, dim=1)
    n = flat.shape[1]
    qq = q.to(flat.dtype).reshape(flat.shape[0], -1)
    pos = qq * (n - 1)
    lo = pos.floor().clamp(0, n - 1).long()
    hi = (lo + 1).clamp(max=n - 1)
    frac = pos - lo.to(flat.dtype)
    a, b = s.gather(1, lo), s.gather(1, hi)
    out = a + (b - a) * frac
    return out.reshape(q.shape)


def nonzero_median(v: Tensor) -> Tensor:
    """Per-row median of the non-zero entries (numpy's median: mean of the two middle values); 0 if none.

    Args:
        v: (B, N) non-negative values.
    """
    m = (v != 0).sum(1)
    inf = torch.full_like(v, float("inf"))
    s, _ = torch.sort(torch.where(v != 0, v, inf), dim=1)
    lo = ((m - 1).clamp(min=0) // 2)[:, None]
    hi = (m // 2).clamp(max=v.shape[1] - 1)[:, None]
    med = 0.5 * (s.gather(1, lo)[:, 0] + s.gather(1, hi)[:, 0])
    return torch.where(m > 0, med, torch.zeros_like(med))

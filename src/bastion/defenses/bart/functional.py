"""Pure, batched helpers shared by the BaRT transforms (no randomness, no state)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor


def soft_round(z: Tensor) -> Tensor:
    """A smooth stand-in for ``round``: ``round(z) + (z - round(z))**3`` (Shin & Song, 2017).

    Its value is within 0.125 of ``round(z)`` and its derivative ``3 (z - round(z))**2`` is non-zero almost
    everywhere, which is what BPDA needs through quantisation steps (colour precision, JPEG).
    """
    r = torch.round(z).detach()
    return r + (z - r) ** 3


def by_key(x: Tensor, keys: Tensor, fn: Callable[[Tensor, int, Tensor], Tensor]) -> Tensor:
    """``fn(x[idx], k, idx)`` for each distinct integer ``k`` of ``keys`` (``idx``: the images whose key is ``k``, for
    ``fn`` to select their parameters), put back in image order: a loop over the (few) keys, never over images.

    Results go back by an out-of-place ``index_copy`` so autograd flows through every branch (without autograd,
    in place into one copy of the batch)."""
    keys = keys.to(x.device)
    n = x.shape[0]
    inplace = not (torch.is_grad_enabled() and x.requires_grad)
    out = None
    for k in torch.unique(keys).tolist():
        idx = (keys == k).nonzero().squeeze(1)
        if idx.numel() == n:  # the whole batch has this key: no gather/scatter
            return fn(x, int(k), idx).to(x.dtype)
        ys = fn(x.index_select(0, idx), int(k), idx).to(x.dtype)
        if inplace:  # no autograd: one copy of the batch, written in place
            out = x.clone() if out is None else out
            out.index_copy_(0, idx, ys)
        else:
            out = (x if out is None else out).index_copy(0, idx, ys)
    return x if out is None else out


def dispatch(x: Tensor, kinds: Tensor, ops: Sequence[Callable[[Tensor, Tensor], Tensor]]) -> Tensor:
    """Apply ``ops[k](x[idx], idx)`` to the images whose ``kinds`` equal ``k`` (see :func:`by_key`)."""
    return by_key(x, kinds, lambda xs, k, idx: ops[k](xs, idx))


def per_sample(v: Tensor, x: Tensor) -> Tensor:
    """A (n,) parameter as an (n, 1, 1, 1) tensor of ``x``'s dtype and device (broadcasts over C, H, W)."""
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def sort_rows(v: Tensor) -> Tensor:
    """The values of each row of ``v`` (B, N) in ascending order (NumPy's vectorised sort on the CPU, same values
    as ``torch.sort``; ``torch.sort`` when a gradient is needed or elsewhere)."""
    if v.device.type == "cpu" and v.dtype in (torch.float32, torch.float64) and not (
        torch.is_grad_enabled() and v.requires_grad
    ):
        return torch.from_numpy(np.sort(v.detach().contiguous().numpy(), axis=1))
    return torch.sort(v, dim=1).values


def quantile_linear(flat: Tensor, q: Tensor) -> Tensor:
    """Per-row quantiles with numpy's default ('linear') interpolation, one sort per row.

    Args:
        flat: (B, N) values.
        q: (B,) or (B, Q) quantiles in [0, 1].

    Returns:
        (B,) or (B, Q): the quantiles of each row.
    """
    n = flat.shape[1]
    qq = q.to(flat.dtype).reshape(flat.shape[0], -1)
    pos = qq * (n - 1)
    lo = pos.floor().clamp(0, n - 1).long()
    hi = (lo + 1).clamp(max=n - 1)
    frac = pos - lo.to(flat.dtype)
    if flat.shape[0] == 0 or n == 0:
        return (qq * 0).reshape(q.shape)
    if flat.device.type == "cpu" and not (torch.is_grad_enabled() and flat.requires_grad):
        s = sort_rows(flat)  # NumPy's vectorised sort: faster than partial sorts on the CPU
        a, b = s.gather(1, lo), s.gather(1, hi)
        return (a + (b - a) * frac).reshape(q.shape)
    # only the order statistics of ranks lo..hi are needed: per quantile column, the k smallest (or largest)
    # values (a partial sort, exact values) when that is well under the full sort
    cols = []
    for j in range(qq.shape[1]):
        lj, hj = lo[:, j : j + 1], hi[:, j : j + 1]
        k_small, k_large = int(hj.max()) + 1, n - int(lj.min())
        if min(k_small, k_large) > n // 4:
            s = sort_rows(flat)
            a, b = s.gather(1, lj), s.gather(1, hj)
        elif k_small <= k_large:
            s = torch.topk(flat, k_small, dim=1, largest=False, sorted=True).values
            a, b = s.gather(1, lj), s.gather(1, hj)
        else:  # descending: rank r is entry n - 1 - r
            s = torch.topk(flat, k_large, dim=1, largest=True, sorted=True).values
            a, b = s.gather(1, n - 1 - lj), s.gather(1, n - 1 - hj)
        cols.append(a + (b - a) * frac[:, j : j + 1])
    out = torch.cat(cols, 1)
    return out.reshape(q.shape)


def nonzero_median(v: Tensor) -> Tensor:
    """Per-row median of the non-zero entries (numpy's median: mean of the two middle values); 0 if none.

    Args:
        v: (B, N) non-negative values.
    """
    m = (v != 0).sum(1)
    inf = torch.full_like(v, float("inf"))
    s = sort_rows(torch.where(v != 0, v, inf))
    lo = ((m - 1).clamp(min=0) // 2)[:, None]
    hi = (m // 2).clamp(max=v.shape[1] - 1)[:, None]
    med = 0.5 * (s.gather(1, lo)[:, 0] + s.gather(1, hi)[:, 0])
    return torch.where(m > 0, med, torch.zeros_like(med))

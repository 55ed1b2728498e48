"""Contrast change: histogram equalisation, adaptive equalisation or contrast stretching (BaRT group 8).

* ``equalize``: scikit-image's ``exposure.equalize_hist`` with a random number of bins (paper: 40..256):
  one histogram over all the image's values between its min and max, the normalised cumulative histogram
  evaluated at each value by linear interpolation between bin centres. Batched with ``scatter_add``.
* ``clahe``: contrast-limited adaptive equalisation (``kornia.enhance.equalize_clahe``, per channel) with a
  random clip limit among (0.01, 0.02, 0.03, 0.04) (scikit-image units: fraction of a tile's pixels; the
  paper's range) and a random tile grid among ``grids``. kornia takes one clip limit and grid per call, so
  the images are grouped by their (clip, grid) pair: a loop over at most a dozen values, not over images.
* ``stretch``: ``exposure.rescale_intensity`` between random low and high percentiles (paper: 1..4 and
  96..99).

The value of each map jumps where a pixel crosses a bin edge or a percentile, so the group declares
``grad = "approx"``: the surrogate for ``equalize``/``stretch`` is their autograd gradient (the local slope
of the lookup table, statistics held fixed) and ``clahe`` passes the gradient straight through.
Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from kornia.enhance import equalize_clahe
from torch import Tensor

from bastion.defenses.bart.base import (
    Params,
    RandomTransform,
    check_choices,
    check_range,
    expect,
    randint,
    uniform,
)
from bastion.defenses.bart.functional import dispatch, quantile_linear
from bastion.errors import ConfigError

KINDS = ("equalize", "clahe", "stretch")
CLIP_LIMITS = (0.01, 0.02, 0.03, 0.04)


@dataclass(frozen=True)
class ContrastParams(Params):
    """Per image: ``kind`` (index into :data:`KINDS`); ``nbins`` (equalize); ``clip`` (index into
    :data:`CLIP_LIMITS`) and ``grid`` (tiles per side) for clahe; ``low``/``high`` percentiles (stretch)."""

    kind: Tensor
    nbins: Tensor
    clip: Tensor
    grid: Tensor
    low: Tensor
    high: Tensor


def equalize_hist(x: Tensor, nbins: Tensor) -> Tensor:
    """scikit-image's ``equalize_hist`` for each image of ``x`` (N, C, H, W) with its own number of bins."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    nb = nbins.to(x.device)
    nbf = nb.to(x.dtype)
    lo, hi = flat.min(1).values, flat.max(1).values
    flat_img = hi <= lo  # numpy widens an empty range to +-0.5
    lo = torch.where(flat_img, lo - 0.5, lo)
    hi = torch.where(flat_img, hi + 0.5, hi)
    width = (hi - lo) / nbf
    with torch.no_grad():
        idx = torch.floor((flat - lo[:, None]) / width[:, None]).long()
        idx = torch.minimum(idx.clamp(min=0), (nb - 1)[:, None])
        hist = torch.zeros(n, int(nb.max()), dtype=torch.float64, device=x.device)
        hist.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
        cdf = (hist.cumsum(1) / flat.shape[1]).to(x.dtype)
    pos = (flat - lo[:, None]) / width[:, None] - 0.5
    pos = torch.minimum(pos.clamp(min=0), (nbf - 1)[:, None])
    k0 = pos.detach().floor().long()
    k1 = torch.minimum(k0 + 1, (nb - 1)[:, None])
    c0, c1 = cdf.gather(1, k0), cdf.gather(1, k1)
    return (c0 + (c1 - c0) * (pos - k0.to(x.dtype))).reshape(x.shape)


def stretch(x: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """scikit-image's ``rescale_intensity`` between the ``low`` and ``high`` percentiles of each image."""
    flat = x.reshape(x.shape[0], -1)
    q = quantile_linear(flat, torch.stack([low, high], 1).to(x) / 100)
    plo, phi = q[:, 0].view(-1, 1, 1, 1), q[:, 1].view(-1, 1, 1, 1)
    span = phi - plo
    ok = span > 1e-12
    out = (torch.minimum(torch.maximum(x, plo), phi) - plo) / torch.where(ok, span, torch.ones_like(span))
    return torch.where(ok, out, x)


def clahe(x: Tensor, clip: Tensor, grid: Tensor) -> Tensor:
    """Adaptive equalisation via kornia, grouped by (clip limit, grid) so each kornia call is batched."""
    out = x
    combos = clip.to(x.device) * 1000 + grid.to(x.device)
    for v in torch.unique(combos).tolist():
        idx = (combos == v).nonzero().squeeze(1)
        c, gsize = CLIP_LIMITS[int(v) // 1000], int(v) % 1000
        # kornia's clip limit is relative to the mean bin count (256 bins): scikit-image's c -> 256 * c
        res = equalize_clahe(x.index_select(0, idx), clip_limit=256.0 * c, grid_size=(gsize, gsize))
        out = out.index_copy(0, idx, res.to(x.dtype))
    return out


class Contrast(RandomTransform):
    """Random contrast change.

    Args:
        kinds: the variants to draw from (uniformly), a subset of :data:`KINDS`.
        nbins: (min, max) histogram bins of ``equalize``.
        grids: tile grids (tiles per side) of ``clahe``.
        low: (min, max) low percentile of ``stretch``; high: (min, max) high percentile.
    """

    name = "contrast"
    grad = "approx"
    channels = (1, 3)

    def __init__(self, *, kinds: tuple[str, ...] = KINDS, nbins: tuple[int, int] = (40, 256),
                 grids: tuple[int, ...] = (2, 4), low: tuple[float, float] = (1.0, 4.0),
                 high: tuple[float, float] = (96.0, 99.0)) -> None:
        super().__init__()
        self.kinds = check_choices("kinds", kinds, KINDS)
        lo, hi = (int(v) for v in nbins)
        if not 2 <= lo <= hi <= 4096:
            raise ConfigError(f"nbins must satisfy 2 <= min <= max <= 4096, got {nbins!r}")
        self.nbins = (lo, hi)
        self.grids = tuple(int(v) for v in grids)
        if not self.grids or any(not 1 <= v <= 64 for v in self.grids):
            raise ConfigError(f"grids must be a non-empty list of tile counts in 1..64, got {grids!r}")
        self.low = check_range("low", low, 0.0, 100.0)
        self.high = check_range("high", high, 0.0, 100.0)
        if self.low[1] >= self.high[0]:
            raise ConfigError(f"low percentiles must stay below high ones, got low={low!r}, high={high!r}")

    def config(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "nbins": list(self.nbins), "grids": list(self.grids),
                "low": list(self.low), "high": list(self.high)}

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> ContrastParams:
        g = generator
        allowed = torch.tensor([KINDS.index(k) for k in self.kinds])
        grids = torch.tensor(self.grids)
        return ContrastParams(
            kind=allowed[torch.randint(0, len(allowed), (n,), generator=g)],
            nbins=randint(n, *self.nbins, g),
            clip=torch.randint(0, len(CLIP_LIMITS), (n,), generator=g),
            grid=grids[torch.randint(0, len(grids), (n,), generator=g)],
            low=uniform(n, *self.low, g), high=uniform(n, *self.high, g),
        ).to(device or "cpu")

    def _run(self, x: Tensor, p: ContrastParams, *, surrogate: bool) -> Tensor:
        def cl(xs: Tensor, i: Tensor) -> Tensor:
            out = clahe(xs.detach() if surrogate else xs, p.clip[i], p.grid[i])
            return xs + (out - xs).detach() if surrogate else out

        return dispatch(x, p.kind, [
            lambda xs, i: equalize_hist(xs, p.nbins[i]),
            cl,
            lambda xs, i: stretch(xs, p.low[i], p.high[i]),
        ]).clamp(0.0, 1.0)

    def transform(self, x: Tensor, p: Params) -> Tensor:
        return self._run(x, expect(p, ContrastParams).to(x.device), surrogate=False)

    def apply_surrogate(self, x: Tensor, p: Params) -> Tensor:
        return self._run(x, expect(p, ContrastParams).to(x.device), surrogate=True)

"""Contrast change: histogram equalisation, adaptive equalisation or contrast stretching (BaRT group 8).

* ``equalize``: scikit-image's ``exposure.equalize_hist`` with a random number of bins (paper: 40..256):
  one histogram over all the image's values between its min and max, the normalised cumulative histogram
  evaluated at each value by linear interpolation between bin centres. Batched with ``scatter_add``.
* ``clahe``: contrast-limited adaptive equalisation (``kornia.enhance.equalize_clahe``, per channel) with a
  random clip limit among (0.01, 0.02, 0.03, 0.04) (scikit-image units: fraction of a tile's pixels; the
  paper's range) and a random tile grid among ``grids``, batched by grid: the values of ``equalize_clahe`` on
  each image alone (the tests check).
* ``stretch``: ``exposure.rescale_intensity`` between random low and high percentiles (paper: 1..4 and
  96..99).

The value of each map jumps where a pixel crosses a bin edge or a percentile, so the group declares
``grad = "approx"``: the surrogate for ``equalize``/``stretch`` is their autograd gradient (the local slope
of the lookup table, statistics held fixed) and ``clahe`` passes the gradient straight through.
Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kornia.enhance import equalize_clahe

try:  # kornia's CLAHE pieces (private): its batched version with one clip limit per image, its tiles and LUTs
    from kornia.enhance.equalization import _compute_luts, _compute_tiles
    from kornia.enhance.equalization import _equalize_clahe as _equalize_clahe_per_image
except ImportError:  # pragma: no cover - other kornia versions: the per-clip loop over the public function
    _equalize_clahe_per_image = _compute_luts = _compute_tiles = None  # type: ignore[assignment]
from torch import Tensor

from bastion._checks import shown
from bastion.defenses.bart.base import (
    Draws,
    Params,
    RandomTransform,
    check_choices,
    check_int_range,
    check_ints,
    check_range,
    expect,
)
from bastion.defenses.bart.functional import by_key, dispatch, quantile_linear
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
    """Adaptive equalisation via kornia, grouped by grid (and by clip limit when kornia takes a scalar one) so
    each kornia call is batched."""
    return by_key(x, grid, lambda xs, gsize, idx: _clahe_grid(xs, clip.to(x.device).index_select(0, idx), gsize))


def _clahe_grid(x: Tensor, clip: Tensor, gsize: int) -> Tensor:
    # kornia's clip limit is relative to the mean bin count (256 bins): scikit-image's c -> 256 * c
    if _equalize_clahe_per_image is not None:  # one clip limit per image (same arithmetic as a scalar one)
        limits = torch.tensor([256.0 * c for c in CLIP_LIMITS], dtype=torch.float64)[clip.cpu()].to(x.device)
        if x.shape[2] > gsize and x.shape[3] > gsize:
            return _clahe_gathered(x, limits, gsize)
        # kornia stacks (2G)^2 x 4 x C x 256 lookup values per image: chunks keep that stack cache-sized
        step = max(1, 1_600_000 // (16 * gsize * gsize * x.shape[1] * 256))
        if x.shape[0] <= step:
            return _equalize_clahe_per_image(x, limits, (gsize, gsize), False)
        return torch.cat([_equalize_clahe_per_image(x[i : i + step], limits[i : i + step], (gsize, gsize), False)
                          for i in range(0, x.shape[0], step)])
    return by_key(x, clip, lambda xs, c, _: equalize_clahe(xs, clip_limit=256.0 * CLIP_LIMITS[c],
                                                           grid_size=(gsize, gsize)))


def _clahe_gathered(x: Tensor, limits: Tensor, gsize: int) -> Tensor:
    """kornia's ``equalize_clahe`` (its tiles, LUTs and blending arithmetic, value for value) with each pixel's
    four lookups gathered directly from the tiles' LUTs (cheaper on small images than kornia's stacked LUTs).

    Each pixel blends the LUTs of the (up to) four tiles whose centres surround it (the nearest ones on the
    borders, adding exactly 0), with kornia's weights: ``(T - k - 0.5) / T`` for even tiles (``k`` the pixel's
    offset past the previous tile centre), its centre coordinates for odd ones.
    """
    b, c, h, w = x.shape
    th_, tw_ = -(-h // gsize), -(-w // gsize)
    even = th_ % 2 == 0 and tw_ % 2 == 0
    tiles, padded = _compute_tiles(x, (gsize, gsize), even)
    luts = _compute_luts(tiles, clip=limits, diff=False)  # (B, G, G, C, 256)
    th, tw = tiles.shape[-2:]
    hp, wp = padded.shape[-2:]
    lut = luts.to(x.dtype).permute(0, 3, 1, 2, 4).reshape(b, c, gsize * gsize * 256)
    level = (padded * 255).long()

    if even:
        def axis(n: int, t: int) -> tuple[Tensor, Tensor, Tensor]:
            pos = torch.arange(n, device=x.device) - t // 2
            first = torch.div(pos, t, rounding_mode="floor")  # the tile centre at or before the pixel
            weight = torch.arange(t, 0, -1, dtype=x.dtype, device=x.device).sub(0.5).div(t)[pos - first * t]
            return first.clamp(0, gsize - 1), (first + 1).clamp(0, gsize - 1), weight
    else:
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32

        def axis(n: int, t: int) -> tuple[Tensor, Tensor, Tensor]:
            y = (torch.arange(n, device=x.device, dtype=cdt) - (t - 1) / 2) / t
            fl = y.floor()
            wgt = (y - fl).clamp(0, 1)
            wgt = torch.where((y < 0) | (y > gsize - 1), 0, wgt).to(x.dtype)
            return fl.long().clamp(0, gsize - 1), (fl.long() + 1).clamp(0, gsize - 1), wgt

    top, bottom, wv = axis(hp, th)
    left, right, wh = axis(wp, tw)
    rows_t, rows_b = (top * gsize * 256).view(-1, 1), (bottom * gsize * 256).view(-1, 1)
    cols_l, cols_r = (left * 256).view(1, -1), (right * 256).view(1, -1)

    def look(rows: Tensor, cols: Tensor) -> Tensor:
        return lut.gather(2, (level + (rows + cols)).view(b, c, -1)).view(b, c, hp, wp)

    tl, tr, bl, br = look(rows_t, cols_l), look(rows_t, cols_r), look(rows_b, cols_l), look(rows_b, cols_r)
    wh, wv = wh.view(1, 1, 1, -1), wv.view(1, 1, -1, 1)
    if even:
        t = torch.addcmul(tr, wh, torch.sub(tl, tr))
        bot = torch.addcmul(br, wh, torch.sub(bl, br))
        out = torch.addcmul(bot, wv, torch.sub(t, bot)).div(255.0)
    else:
        t = tr + (tl - tr) * (1 - wh)
        bot = br + (bl - br) * (1 - wh)
        out = (t + (bot - t) * wv) / 255.0
    return out[..., :h, :w]


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
    call_cost = 1.6
    options = ("kinds", "nbins", "grids", "low", "high")

    def __init__(self, *, kinds: tuple[str, ...] = KINDS, nbins: tuple[int, int] = (40, 256),
                 grids: tuple[int, ...] = (2, 4), low: tuple[float, float] = (1.0, 4.0),
                 high: tuple[float, float] = (96.0, 99.0)) -> None:
        super().__init__()
        self.kinds = check_choices("kinds", kinds, KINDS)
        self.nbins = check_int_range("nbins", nbins, 2, 4096)
        self.grids = check_ints("grids", grids, 1, 64, "tile counts")
        self.low = check_range("low", low, 0.0, 100.0)
        self.high = check_range("high", high, 0.0, 100.0)
        if self.low[1] >= self.high[0]:
            raise ConfigError(f"low percentiles must stay below high ones, got low={shown(low)}, high={shown(high)}")

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> ContrastParams:
        d = Draws(n, generator)
        return ContrastParams(
            kind=d.pick([KINDS.index(k) for k in self.kinds]), nbins=d.randint(*self.nbins),
            clip=d.pick(range(len(CLIP_LIMITS))), grid=d.pick(self.grids),
            low=d.uniform(*self.low), high=d.uniform(*self.high),
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

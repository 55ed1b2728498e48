"""BaRT: a barrage of random transforms in front of a classifier (Raff et al., CVPR 2019).

For every image, ``k`` transform groups are picked at random (without replacement) and applied in a
random order, each with its own random parameters (https://arxiv.org/abs/1903.08778). The orders of a
whole batch are drawn at once, ``torch.rand(B, N).argsort(1)[:, :k]``; then each batched call transforms
all the images whose next group is the same (:func:`_schedule` picks the calls) and puts the results back in
image order, with no Python loop over images.

A draw (:class:`BarrageDraw`: the orders and every group's parameters) can be returned and replayed
exactly with :meth:`BaRT.apply`. :meth:`BaRT.bpda_forward` runs one draw whose forward value is the real
barrage and whose gradient is that of each group's differentiable surrogate (BPDA, Athalye et al. 2018).

Groups that need colour (``color_space``, ``greyscale``) are skipped on grayscale inputs: ``k`` is then
drawn among the remaining groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bastion._checks import as_index, check_images, shown
from bastion.defenses.bart.base import Params, RandomTransform, fresh_generator
from bastion.defenses.bart.color_precision import ColorPrecision
from bastion.defenses.bart.color_space import ColorSpace
from bastion.defenses.bart.contrast import Contrast
from bastion.defenses.bart.denoise import Denoise
from bastion.defenses.bart.fft import FFTPerturbation
from bastion.defenses.bart.greyscale import Greyscale
from bastion.defenses.bart.jpeg import JPEG
from bastion.defenses.bart.noise import Noise
from bastion.defenses.bart.swirl import Swirl
from bastion.defenses.bart.zoom import Zoom
from bastion.defenses.base import InputDefense
from bastion.errors import ConfigError, InputShapeError, UnknownNameError
from bastion.registry import Registry

#: the ten groups of the paper, in its order
GROUPS: tuple[type[RandomTransform], ...] = (
    ColorPrecision, JPEG, Swirl, Noise, FFTPerturbation, Zoom, ColorSpace, Contrast, Greyscale, Denoise,
)
#: transform group name -> class
TRANSFORMS: Registry[type[RandomTransform]] = Registry("BaRT group", {cls.name: cls for cls in GROUPS})
#: the smallest image side a barrage takes (the default windows and CLAHE tiles need 5; JPEG's blocks are 8)
MIN_SIZE = 8


@dataclass(frozen=True, eq=False)
class BarrageDraw:
    """One draw of a barrage for a batch.

    Attributes:
        names: the groups the draw chose from (those applicable to the batch's channel count), in order.
        order: (B, k) int64, ``names[order[i, s]]`` is the group applied to image ``i`` at step ``s``; -1 marks
            the steps an image does not take (a barrage whose images draw their own number of groups, ``k_range``).
        params: group name -> that group's parameters for the whole batch (B rows; only the rows of the
            images that picked the group are used).
    """

    names: tuple[str, ...]
    order: Tensor
    params: Mapping[str, Params]

    def __len__(self) -> int:
        return int(self.order.shape[0])

    @property
    def k(self) -> int:
        """The most groups any image of the draw goes through."""
        return int(self.order.shape[1])

    @property
    def counts(self) -> Tensor:
        """int64 (B,): how many groups each image goes through."""
        return (self.order >= 0).sum(1)

    def select(self, idx: Tensor | list[int]) -> BarrageDraw:
        """The draw of the images ``idx`` (so ``apply(x[idx], d.select(idx)) == apply(x, d)[idx]``)."""
        i = as_index(idx, self.order.shape[0]).to(self.order.device)
        return BarrageDraw(self.names, self.order.index_select(0, i), {n: p.select(i) for n, p in self.params.items()})

    def to(self, device: torch.device | str) -> BarrageDraw:
        return BarrageDraw(self.names, self.order.to(device), {n: p.to(device) for n, p in self.params.items()})

    def groups_of(self, i: int) -> list[str]:
        """The groups applied to image ``i``, in order."""
        return [self.names[j] for j in self.order[i].tolist() if j >= 0]


def _exact_straight_through(real: Tensor, surrogate: Tensor) -> Tensor:
    """Value of ``real`` bit for bit, gradient of ``surrogate``.

    ``surrogate + (real - surrogate).detach()`` (the textbook form) is off by a rounding error, which a later
    quantising step (colour precision, JPEG) can turn into a whole level; ``s - s.detach()`` is exactly 0.
    """
    return real.detach() + (surrogate - surrogate.detach())


def _build(spec: str | RandomTransform | Mapping[str, Any]) -> RandomTransform:
    if isinstance(spec, RandomTransform):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"a BaRT group is a name, a RandomTransform or a dict with a 'name'; got {shown(spec)}")
    opts = dict(spec)
    name = opts.pop("name")
    cls = TRANSFORMS.get(name)
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()})
    except TypeError as e:
        raise ConfigError(f"bad options for BaRT group {shown(name)}: {e}") from None


#: fixed cost (ms, CPU) of any batched call, on top of the group's own ``call_cost``: the gather and scatter
_CALL_OVERHEAD = 0.15


def _schedule(order: Tensor, call_cost: Sequence[float]) -> list[tuple[int, Tensor]]:
    """The batched calls that run a draw: ``(group, images)`` pairs, in execution order.

    A call takes every image whose *next* group (in its own order, row ``i`` of ``order``) is ``g``, whichever
    step that is for it. Each round runs the group with the lowest fixed cost per waiting image, ``c_g / w_g``
    with ``c_g = call_cost[g] + _CALL_OVERHEAD``, weighted by ``(r_g / w_g) ** 3``, ``r_g`` the images that still
    need the group: a costly group waits until (nearly) all of its images have reached it. The output is the
    slot-by-slot one (within 1e-6, batch-size-dependent kernels; the tests check); only the calls change (a k=5
    barrage over 1,000 MNIST images: 37-39 calls, 2-3 of denoise, against 40 with 5 slot by slot).
    """
    order = order.cpu()
    n = order.shape[0]
    length = (order >= 0).sum(1)  # images may go through fewer groups than others (-1 pads their rows)
    cost = [c + _CALL_OVERHEAD for c in call_cost]
    remaining = torch.bincount(order[order >= 0], minlength=len(cost)).tolist()
    step = torch.zeros(n, dtype=torch.long)
    live = (length > 0).nonzero().squeeze(1)
    calls: list[tuple[int, Tensor]] = []
    while live.numel():
        nxt = order[live, step[live]]
        waiting = torch.bincount(nxt, minlength=len(cost)).tolist()
        g = min((j for j, w in enumerate(waiting) if w),
                key=lambda j: cost[j] / waiting[j] * (remaining[j] / waiting[j]) ** 3)
        idx = live[nxt == g]
        calls.append((g, idx))
        remaining[g] -= idx.numel()
        step[idx] += 1
        live = live[step[live] < length[live]]
    return calls


class BaRT(InputDefense):
    """The barrage of random transforms.

    Args:
        k: groups applied to each image.
        k_range: ``(low, high)``: instead of a fixed ``k``, each image draws its own number of groups, uniformly
            from ``low`` to ``high`` (the paper's "any number of transforms"); ``k`` is then ``high``.
        groups: the groups to draw from: names, :class:`RandomTransform` instances or ``{"name": ..., **options}``
            dicts; None uses all ten with their default (paper-like) parameter ranges.
        n_samples: how many draws :class:`~bastion.defenses.base.Defended` averages the softmax over (it reads
            this attribute when it is not given ``n_samples`` itself).

    Example:
        >>> import torch
        >>> bart = BaRT(k=5)
        >>> x = torch.rand(8, 3, 32, 32)
        >>> y, draw = bart(x, generator=torch.Generator().manual_seed(0), return_params=True)
        >>> bool((bart.apply(x, draw) == y).all())
        True
    """

    randomized = True
    grad = "approx"

    def __init__(
        self,
        k: int = 5,
        groups: Sequence[str | RandomTransform | Mapping[str, Any]] | None = None,
        n_samples: int = 1,
        k_range: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        specs = list(groups) if groups is not None else [cls.name for cls in GROUPS]
        self.transforms = nn.ModuleList([_build(s) for s in specs])
        names = list(self.names)
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"BaRT groups must be distinct and non-empty, got {names}")
        if k_range is not None:
            lo_hi = tuple(k_range) if isinstance(k_range, (tuple, list)) else ()
            if (len(lo_hi) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in lo_hi)
                    or not 1 <= lo_hi[0] <= lo_hi[1] <= len(names)):
                raise ConfigError(f"k_range must be (low, high) with 1 <= low <= high <= {len(names)} (the number of "
                                  f"groups), got {shown(k_range)}")
            k_range = (int(lo_hi[0]), int(lo_hi[1]))
            k = k_range[1]
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(names):
            raise ConfigError(f"k must be an integer in 1..{len(names)} (the number of groups), got {shown(k)}")
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ConfigError(f"n_samples must be a positive integer, got {shown(n_samples)}")
        self.k = k
        self.k_range = k_range
        self.n_samples = n_samples

    @property
    def groups(self) -> list[RandomTransform]:
        """The transform groups, in order."""
        return [t for t in self.transforms if isinstance(t, RandomTransform)]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.groups)

    def group(self, name: str) -> RandomTransform:
        for t in self.groups:
            if t.name == name:
                return t
        raise UnknownNameError(f"this BaRT has no group {shown(name)}; it has {', '.join(self.names)}")

    def applicable(self, channels: int) -> list[RandomTransform]:
        """The groups that apply to images with ``channels`` channels."""
        return [t for t in self.groups if t.supports(channels)]

    def sample(self, n: int, channels: int, *, generator: torch.Generator,
               device: torch.device | str | None = None) -> BarrageDraw:
        """A draw for ``n`` images with ``channels`` channels (random on the CPU, returned on ``device``)."""
        ts = self.applicable(channels)
        if not ts:
            takes = sorted({c for t in self.groups for c in t.channels})
            raise ConfigError(f"no BaRT group transforms {channels}-channel images (they take "
                              f"{' or '.join(map(str, takes))} channels; drop an alpha channel first)")
        if self.k > len(ts):
            raise ConfigError(
                f"k={self.k} but only {len(ts)} of the groups apply to {channels}-channel images "
                f"({', '.join(t.name for t in ts)})"
            )
        order = torch.rand(n, len(ts), generator=generator).argsort(1)[:, : self.k]
        if self.k_range is not None:  # each image's own number of groups; the steps it does not take are -1
            lo, hi = self.k_range
            count = lo + (torch.rand(n, generator=generator) * (hi - lo + 1)).long().clamp(max=hi - lo)
            order = torch.where(torch.arange(self.k)[None] < count[:, None], order, torch.full_like(order, -1))
        params = {t.name: t.sample(n, generator=generator, device=device) for t in ts}
        return BarrageDraw(tuple(t.name for t in ts), order.to(device or "cpu"), params)

    def _run(self, x: Tensor, draw: BarrageDraw, mode: str) -> Tensor:
        if len(draw) != x.shape[0]:
            raise ConfigError(f"the draw is for {len(draw)} images, the batch has {x.shape[0]}")
        if x.ndim != 4:
            raise InputShapeError(f"BaRT transforms images (N, C, H, W); got shape {tuple(x.shape)}")
        if x.dtype not in (torch.float32, torch.float64):  # e.g. the FFT group has no CPU half-precision kernel
            raise InputShapeError(f"BaRT transforms float32 or float64 images, got {x.dtype}: pass x.float()")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise InputShapeError(f"BaRT needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels (its windows and "
                                  f"tiles do not fit smaller ones); got {tuple(x.shape[-2:])}")
        ts = [self.group(n) for n in draw.names]
        unfit = [t.name for t in ts if not t.supports(x.shape[1])]
        if unfit:
            raise ConfigError(f"the draw includes {', '.join(unfit)}, which do not transform {x.shape[1]}-channel "
                              f"images: it was sampled for another channel count; sample one with "
                              f"channels={x.shape[1]}")
        n, k = x.shape[0], draw.k
        if n == 0 or k == 0:
            return x
        # Without autograd, results are written in place into one private copy of the input; with autograd,
        # each call's results go back by an out-of-place (differentiable) index_copy.
        inplace = not (torch.is_grad_enabled() and x.requires_grad)
        if inplace:
            x = x.clone()
        for g, idx in _schedule(draw.order, [t.call_cost for t in ts]):
            t = ts[g]
            idx = idx.to(x.device)
            full = idx.numel() == n
            xs = x if full else x.index_select(0, idx)
            p = draw.params[t.name]
            p = p if full else p.select(idx)
            if mode == "surrogate":
                ys = t.apply_surrogate(xs, p)
            elif mode == "real" or t.grad == "exact":
                ys = t.apply(xs, p)
            else:  # bpda
                ys = _exact_straight_through(t.apply(xs, p), t.apply_surrogate(xs, p))
            ys = ys.to(x.dtype)
            if full:
                x = x.copy_(ys) if inplace else ys
            elif inplace:
                x.index_copy_(0, idx, ys)
            else:
                x = x.index_copy(0, idx, ys)
        return x

    def apply(self, x: Tensor, draw: BarrageDraw | None = None) -> Tensor:  # type: ignore[override]
        """Replay ``draw`` on ``x`` exactly. (With a single callable: ``nn.Module.apply(fn)``.)"""
        if draw is None:
            if callable(x) and not isinstance(x, Tensor):
                return nn.Module.apply(self, x)  # type: ignore[return-value]
            raise ConfigError("BaRT.apply(x, draw) needs a draw; use forward(x) to make one")
        return self._run(x, draw, "real")

    def apply_surrogate(self, x: Tensor, draw: BarrageDraw) -> Tensor:
        """The draw with every group replaced by its differentiable surrogate."""
        return self._run(x, draw, "surrogate")

    def apply_bpda(self, x: Tensor, draw: BarrageDraw) -> Tensor:
        """The draw's real value with, at every step, the gradient of that group's surrogate."""
        return self._run(x, draw, "bpda")

    def _draw(self, x: Tensor, generator: torch.Generator | None) -> BarrageDraw:
        check_images(x.detach())
        if x.ndim != 4:
            raise ConfigError(f"BaRT transforms images (N, C, H, W); got shape {tuple(x.shape)}")
        return self.sample(x.shape[0], x.shape[1], generator=generator or fresh_generator(), device=x.device)

    def forward(  # type: ignore[override]
        self, x: Tensor, *, generator: torch.Generator | None = None, return_params: bool = False
    ) -> Tensor | tuple[Tensor, BarrageDraw]:
        """One random barrage per image (from ``generator``, or fresh OS entropy when None)."""
        draw = self._draw(x, generator)
        y = self.apply(x, draw)
        return (y, draw) if return_params else y

    def surrogate(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return self.apply_surrogate(x, self._draw(x, generator))

    def bpda_forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """One draw: forward value of the real barrage, gradient of the surrogates (per step)."""
        return self.apply_bpda(x, self._draw(x, generator))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able configuration; :meth:`from_dict` rebuilds an equal barrage."""
        d: dict[str, Any] = {"k": self.k, "n_samples": self.n_samples, "groups": [t.to_dict() for t in self.groups]}
        if self.k_range is not None:
            d["k_range"] = list(self.k_range)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BaRT:
        if not isinstance(d, Mapping) or "k" not in d:
            raise ConfigError(f"a BaRT configuration is a dict with 'k' (and 'groups', 'n_samples'); got {shown(d)}")
        k_range = d.get("k_range")
        return cls(k=int(d["k"]), groups=d.get("groups"), n_samples=int(d.get("n_samples", 1)),
                   k_range=tuple(k_range) if isinstance(k_range, list) else k_range)

    def extra_repr(self) -> str:
        return (f"k_range={self.k_range}" if self.k_range is not None else f"k={self.k}") + f", n_samples={self.n_samples}"

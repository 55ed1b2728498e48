"""The contract of a BaRT transform group: sample typed parameters, then apply them, batched and pure.

BaRT (Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778) draws, for every image, a few transform
*groups* and random parameters for each. Following kornia's split (sampler / functional op / module) but
without state on ``self``, a :class:`RandomTransform` has:

* ``sample(n, generator=..., device=...) -> Params``: ``n`` independent draws, as a frozen dataclass of
  tensors whose first dimension is ``n`` (one row per image);
* ``apply(x, params) -> Tensor``: the pure, batched operation (no randomness left: the same ``params`` give
  the same output, so any draw can be replayed, and ``apply(x, p)[i] == apply(x[i:i+1], p.select([i]))[0]``);
* ``apply_surrogate(x, params)``: a differentiable stand-in for BPDA (= ``apply`` when ``grad == "exact"``,
  a smooth approximation when ``"approx"``, the identity when ``"none"``);
* ``forward(x, params=None, *, generator=None)``: sample if needed, then apply.

Subclasses implement ``sample`` and ``transform`` (the op behind ``apply``: ``apply`` itself also keeps
``nn.Module.apply(fn)`` working when called with a single function).

Randomness is drawn on the CPU from an explicit ``torch.Generator`` (generators are CPU objects held by the
:class:`~bastion.defenses.base.Defended` wrapper) and the parameters are then moved to the input's device.
Outputs stay in [0, 1] with the input's shape, dtype and device.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor, nn

from bastion._checks import as_index, shown
from bastion.errors import ConfigError, InputShapeError

GradKind = Literal["exact", "approx", "none"]

P = TypeVar("P", bound="Params")


@dataclass(frozen=True)
class Params:
    """Per-image parameters of one transform: every field is a tensor whose first dimension is ``n``."""

    def __len__(self) -> int:
        first = fields(self)[0].name
        return int(getattr(self, first).shape[0])

    def select(self: P, idx: Tensor | list[int]) -> P:
        """The parameters of the images ``idx`` (an index tensor or list), in that order."""
        i = as_index(idx, len(self))
        return self._map(lambda t: t.index_select(0, i.to(t.device)))

    def rows(self: P, start: int, stop: int) -> P:
        """The parameters of the images ``start:stop`` (views)."""
        return self._map(lambda t: t[start:stop])

    def to(self: P, device: torch.device | str) -> P:
        """The same parameters on ``device``."""
        return self._map(lambda t: t.to(device))

    def _map(self: P, fn: Callable[[Tensor], Tensor]) -> P:
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def as_dict(self) -> dict[str, list[Any]]:
        """JSON-able view (lists), e.g. for logging a draw."""
        return {f.name: getattr(self, f.name).tolist() for f in fields(self)}


def expect(p: Params, cls: type[P]) -> P:
    """``p`` typed as ``cls`` (a transform was given another transform's parameters otherwise)."""
    if not isinstance(p, cls):
        raise ConfigError(f"expected {cls.__name__}, got {type(p).__name__}: parameters of another transform?")
    return p


def fresh_generator() -> torch.Generator:
    """A CPU generator seeded from OS entropy (used when the caller passes none; torch's global RNG untouched)."""
    g = torch.Generator()
    g.seed()
    return g


# ---- sampling helpers (CPU, explicit generator) -----------------------------------------------------------


@dataclass(frozen=True)
class Draws:
    """``n`` independent draws of each kind from the CPU generator ``g`` (what ``sample`` methods draw with)."""

    n: int
    g: torch.Generator

    def uniform(self, lo: float, hi: float) -> Tensor:
        """Floats uniform in [lo, hi] (float64 on the CPU, so values survive dtype round trips exactly)."""
        return lo + (hi - lo) * torch.rand(self.n, generator=self.g, dtype=torch.float64)

    def randint(self, lo: int, hi: int) -> Tensor:
        """Integers uniform in [lo, hi] (inclusive)."""
        return torch.randint(lo, hi + 1, (self.n,), generator=self.g, dtype=torch.long)

    def coin(self, p: float) -> Tensor:
        """Booleans, each True with probability ``p``."""
        return torch.rand(self.n, generator=self.g) < p

    def seeds(self) -> Tensor:
        """Independent 62-bit seeds (for keyed, replayable noise)."""
        return torch.randint(0, 2**62, (self.n,), generator=self.g, dtype=torch.long)

    def pick(self, values: Sequence[int]) -> Tensor:
        """Integers drawn uniformly from ``values``."""
        return torch.tensor(values)[torch.randint(0, len(values), (self.n,), generator=self.g)]


def check_range(name: str, r: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    """Validate a (min, max) sampling range inside [lo, hi]; returns it as floats."""
    try:
        a, b = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a (min, max) pair of numbers, got {shown(r)}") from None
    if not (lo <= a <= b <= hi):
        raise ConfigError(f"{name} must satisfy {lo} <= min <= max <= {hi}, got ({a}, {b})")
    return a, b


def check_int_range(name: str, r: tuple[int, int], lo: int, hi: int | None = None) -> tuple[int, int]:
    """Validate a (min, max) range of integers from ``lo`` (to ``hi`` when given); returns it as ints."""
    a, b = (int(v) for v in r)
    if not (lo <= a <= b and (hi is None or b <= hi)):
        upper = "" if hi is None else f" <= {hi}"
        raise ConfigError(f"{name} must satisfy {lo} <= min <= max{upper}, got {shown(r)}")
    return a, b


def check_ints(name: str, values: tuple[int, ...], lo: int, hi: int, what: str, *,
               odd: bool = False) -> tuple[int, ...]:
    """Validate a non-empty list of integers in ``lo..hi`` (odd ones only when ``odd``); returns it as ints."""
    vals = tuple(int(v) for v in values)
    if not vals or any(not lo <= v <= hi or (odd and v % 2 == 0) for v in vals):
        raise ConfigError(f"{name} must be a non-empty list of {what} in {lo}..{hi}, got {shown(values)}")
    return vals


def check_prob(name: str, p: float) -> float:
    """Validate a probability in [0, 1]; returns it as a float."""
    try:
        q = float(p)
    except (TypeError, ValueError):
        q = math.nan
    if not 0.0 <= q <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {shown(p)}")
    return q


def check_choices(name: str, chosen: tuple[str, ...] | list[str], valid: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a non-empty subset of ``valid`` (order kept as in ``valid``)."""
    chosen = tuple(chosen)
    bad = [c for c in chosen if c not in valid]
    if bad or not chosen:
        raise ConfigError(f"{name} must be a non-empty subset of {valid}, got {shown(chosen)}")
    return tuple(v for v in valid if v in chosen)


class RandomTransform(nn.Module, ABC):
    """A BaRT transform group. Subclasses set the class variables and implement ``sample`` and ``transform``.

    Class variables:
        name: registry name (``"swirl"``, ``"jpeg"``, ...).
        grad: ``"exact"`` (``apply`` is differentiable and ``gradcheck`` passes), ``"approx"`` (``apply`` has no
            useful gradient or a piecewise one; ``apply_surrogate`` is a smooth stand-in) or ``"none"``
            (identity surrogate for BPDA).
        channels: channel counts the group supports (``(1, 3)`` or ``(3,)``: colour-only groups are skipped by
            :class:`~bastion.defenses.bart.BaRT` on grayscale inputs).
        call_cost: the fixed cost of one batched call in milliseconds on a CPU core (what a call costs
            beyond its per-image work: many small kernels, iterations, codec calls; measured with
            ``benchmarks/bart_speed.py``). :class:`~bastion.defenses.bart.BaRT` only uses it to decide in which
            order to run the groups' calls; results do not depend on it.
        options: the constructor's options, attributes of the same names (what :meth:`config` returns).
        chunk_values: :meth:`apply` transforms a batch of more than this many values (images x channels x
            pixels) in chunks of whole images of at most this size (None: always in one piece; for groups whose
            cost is mostly per call). Chunks give the same values and keep temporaries cache-sized on a CPU
            (1,000 RGB 32x32 images ran up to 5x slower in one piece).
    """

    name: ClassVar[str]
    grad: ClassVar[GradKind]
    channels: ClassVar[tuple[int, ...]] = (1, 3)
    call_cost: ClassVar[float] = 1.0
    chunk_values: ClassVar[int | None] = 1 << 19
    options: ClassVar[tuple[str, ...]] = ()

    def supports(self, c: int) -> bool:
        """Whether the group applies to images with ``c`` channels."""
        return c in self.channels

    @abstractmethod
    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> Params:
        """``n`` independent parameter draws (drawn on the CPU from ``generator``, returned on ``device``)."""

    def apply(self, x: Tensor, p: Params | None = None) -> Tensor:  # type: ignore[override]
        """Apply the parameters ``p`` (one row per image) to the batch ``x`` (N, C, H, W) in [0, 1].

        Pure and batched: the same ``p`` give the same output. (Called with a single callable, this is
        ``nn.Module.apply(fn)``, so ``model.apply(init_fn)`` still recurses through a defended model.)
        """
        if p is None:
            if callable(x) and not isinstance(x, Tensor):
                return nn.Module.apply(self, x)  # type: ignore[return-value]
            raise ConfigError(f"{self.name}.apply(x, p) needs parameters; use forward(x) to draw them")
        n = x.shape[0]
        step = n if self.chunk_values is None or n == 0 else max(1, self.chunk_values // x[0].numel())
        if n <= step:
            return self.transform(x, p)
        return torch.cat([self.transform(x[i : i + step], p.rows(i, i + step)) for i in range(0, n, step)])

    @abstractmethod
    def transform(self, x: Tensor, p: Params) -> Tensor:
        """The batched operation behind :meth:`apply` (what subclasses implement)."""

    def apply_surrogate(self, x: Tensor, p: Params) -> Tensor:
        """A differentiable stand-in of :meth:`apply` with the same parameters (for BPDA)."""
        if self.grad == "exact":
            return self.apply(x, p)
        if self.grad == "none":
            return x
        raise NotImplementedError(f"{type(self).__name__} declares grad='approx' and must define apply_surrogate")

    def forward(self, x: Tensor, p: Params | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """Sample parameters if ``p`` is None (from ``generator``, or fresh entropy), then apply them."""
        self.check_input(x)
        if p is None:
            p = self.sample(x.shape[0], generator=generator or fresh_generator(), device=x.device)
        return self.apply(x, p)

    def check_input(self, x: Tensor) -> None:
        """Refuse inputs that are not (N, C, H, W) floating batches with a supported channel count."""
        if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputShapeError(f"{self.name}: expected a floating (N, C, H, W) batch, got {shape}")
        if not self.supports(x.shape[1]):
            raise InputShapeError(
                f"{self.name} supports images with {self.channels} channel(s), got {x.shape[1]}; "
                "BaRT skips it on such inputs"
            )

    def config(self) -> dict[str, Any]:
        """The constructor options (JSON-able); ``type(self)(**t.config())`` rebuilds the transform."""
        values = {k: getattr(self, k) for k in self.options}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.config()}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())

"""The threat model: which perturbations an attacker may make.

One value object supplies random initialisation, the steepest-ascent direction, projection and the
distance for its norm, so no attack needs a Linf and an L2 twin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bastion._checks import shown
from bastion._rng import keyed_normal, keyed_uniform
from bastion.errors import ConfigError

Norm = Literal["linf", "l2", "l1", "l0"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1", "l0")


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def per_sample(v: Tensor, like: Tensor) -> Tensor:
    """A per-sample (B,) tensor shaped to broadcast against ``like`` (B, ...)."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


#: values of ``x_adv - x`` converted to float64 at a time by :func:`perturbation_norms`
_NORM_CHUNK_VALUES = 1 << 20


def perturbation_norms(x_adv: Tensor, x: Tensor) -> dict[str, Tensor]:
    """Per-sample L0 (number of changed features), L1, L2 and Linf of ``x_adv - x`` (each of shape (B,), float64).

    The difference is taken in float64 a few samples at a time (about a million values), so a batch of large
    inputs needs no float64 copy of its own; each sample's norms are the same as in one pass."""
    b = x.shape[0]
    out = {k: torch.empty(b, dtype=torch.float64, device=x.device) for k in ("l0", "l1", "l2", "linf")}
    rows = max(1, _NORM_CHUNK_VALUES // max(1, x[0].numel())) if b else 1
    for i in range(0, b, rows):
        d = _flat(x_adv[i : i + rows].detach() - x[i : i + rows].detach()).to(torch.float64)
        out["l2"][i : i + rows] = d.norm(p=2, dim=1)
        d.abs_()
        out["l1"][i : i + rows] = d.sum(1)
        out["l0"][i : i + rows] = (d > 1e-7).sum(1).to(torch.float64)
        out["linf"][i : i + rows] = d.amax(1)
    return out


def project_l1(delta: Tensor, eps: Tensor) -> Tensor:
    """The Euclidean projection of each row of ``delta`` (B, n) onto the L1 ball of radius ``eps`` (B,) (Duchi
    et al. 2008, "Efficient projections onto the l1-ball for learning in high dimensions": one sort per row)."""
    a = delta.abs()
    eps = eps.to(device=a.device, dtype=a.dtype)
    inside = a.sum(1) <= eps
    mu = a.sort(dim=1, descending=True).values
    cs = mu.cumsum(1)
    k = torch.arange(1, a.shape[1] + 1, device=a.device, dtype=a.dtype)
    # rho: the number of entries that stay non-zero (the last k with mu_k > (cs_k - eps) / k)
    rho = ((mu * k > cs - eps[:, None]) * k).amax(1).clamp_min(1)
    theta = (cs.gather(1, rho.long()[:, None] - 1).squeeze(1) - eps) / rho
    shrunk = delta.sign() * (a - theta[:, None]).clamp_min(0)
    return torch.where(inside[:, None], delta, shrunk)


def project_l0(delta: Tensor, eps: Tensor) -> Tensor:
    """Each row of ``delta`` (B, n) with all but its ``floor(eps)`` (B,) largest entries (in magnitude) set to
    zero; ties go to the lower index, so the result does not depend on the batch."""
    k = eps.to(delta.device).floor().clamp(0, delta.shape[1]).to(torch.int64)
    order = delta.abs().argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(delta.shape[1], device=delta.device).expand_as(order))
    return torch.where(rank < k[:, None], delta, torch.zeros_like(delta))


@dataclass(frozen=True, kw_only=True)
class ThreatModel:
    """A norm ball of radius ``eps`` intersected with the box ``bounds``.

    For ``norm="l0"`` the radius is a number of features (JSMA uses a fraction of them instead). The ``l1`` and
    ``l0`` balls can be projected onto but have no random start or steepest direction (the minimum-norm attack
    FMN moves in L2-normalised steps and projects onto them).
    """

    norm: Norm = "linf"
    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {NORMS}, got {shown(self.norm)}")
        if not isinstance(self.eps, (int, float)) or not self.eps >= 0 or self.eps != self.eps:
            raise ConfigError(f"eps must be a number >= 0, got {shown(self.eps)}")
        lo, hi = self.bounds
        if not lo < hi:
            raise ConfigError(f"bounds must satisfy low < high, got {self.bounds}")

    def random_init(self, x: Tensor, keys: Tensor, *, seed: int, stream: int = 0, eps: Tensor | None = None) -> Tensor:
        """A random point of the ball around ``x`` (uniform in the ball), clipped to the bounds; ``eps`` (B,)
        overrides the radius per sample."""
        shape = tuple(x.shape[1:])
        if self.norm == "linf":
            u = keyed_uniform(keys, shape, seed=seed, stream=stream, dtype=x.dtype)
            radius = self.eps if eps is None else per_sample(eps.to(device=x.device, dtype=x.dtype), x)
            delta = (2.0 * u - 1.0) * radius
        elif self.norm == "l2":
            g = keyed_normal(keys, shape, seed=seed, stream=stream, dtype=x.dtype)
            g = g / per_sample(_flat(g).norm(dim=1).clamp_min(1e-12), g)
            dim = g[0].numel()
            r = keyed_uniform(keys, (1,), seed=seed, stream=stream + 7919, dtype=x.dtype).reshape(-1)
            scale = (self.eps if eps is None else eps.to(device=r.device, dtype=r.dtype)) * r ** (1.0 / dim)
            delta = g * per_sample(scale, g)
        else:
            raise ConfigError(f"random_init is not defined for the {self.norm} threat model")
        return (x + delta.to(x.device)).clamp(*self.bounds)

    def steepest(self, grad: Tensor) -> Tensor:
        """The unit-norm steepest-ascent direction for ``grad`` under this norm."""
        if self.norm == "linf":
            return grad.sign()
        if self.norm == "l2":
            n = _flat(grad).norm(dim=1).clamp_min(1e-12)
            return grad / per_sample(n, grad)
        raise ConfigError(f"steepest is not defined for the {self.norm} threat model")

    def project(self, x_adv: Tensor, x: Tensor, *, eps: Tensor | None = None) -> Tensor:
        """Project ``x_adv`` onto the eps-ball around ``x``, then into the bounds; ``eps`` (B,) overrides the
        radius per sample."""
        delta = x_adv - x
        if self.norm == "linf":
            if eps is None:
                delta = delta.clamp(-self.eps, self.eps)
            else:
                radius = per_sample(eps.to(device=x.device, dtype=x.dtype), x)
                delta = torch.maximum(torch.minimum(delta, radius), -radius)
        elif self.norm == "l2":
            n = _flat(delta).norm(dim=1).clamp_min(1e-12)
            factor = (self.eps / n if eps is None else (eps.to(n.device) / n).to(delta.dtype)).clamp(max=1.0)
            delta = delta * per_sample(factor, delta)
        else:
            radius = torch.full((x.shape[0],), float(self.eps), device=x.device) if eps is None else eps
            flat = _flat(delta)
            flat = project_l1(flat, radius) if self.norm == "l1" else project_l0(flat, radius)
            delta = flat.reshape(delta.shape)
        # Clipping into the box never leaves the ball: x is in the box, so each |delta_i| only shrinks.
        return (x + delta).clamp(*self.bounds)

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-sample distance in this norm, shape (B,)."""
        return perturbation_norms(x_adv, x)[self.norm]

    def contains(self, x_adv: Tensor, x: Tensor, *, atol: float | None = None) -> Tensor:
        """Per-sample bool: inside the ball (``+atol``) and inside the bounds. The default tolerance is float
        rounding at the data's scale and dtype (``x + delta`` near 255 in float32 is off by ~1e-5; in half
        precision near 1 by ~5e-4), plus 1e-6."""
        lo, hi = self.bounds
        if atol is None:
            scale = max(abs(lo), abs(hi), 1.0)
            n = x_adv[0].numel()
            atol = 1e-6 + 4.0 * torch.finfo(x_adv.dtype).eps * scale * (
                math.sqrt(n) if self.norm == "l2" else float(n) if self.norm == "l1" else 1.0)
        flat = _flat(x_adv)
        in_box = (flat >= lo - atol).all(1) & (flat <= hi + atol).all(1)
        return in_box & (self.distance(x_adv, x) <= self.eps + atol)

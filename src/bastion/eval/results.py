"""Per-image results of an evaluation, as tensors, and the one cascade rule.

Every image gets a *share*: the fraction of the model's judging draws that classify it correctly (0 or 1 on a
deterministic model; on a randomized one, e.g. a BaRT barrage, the mean over several calls). Accuracies are
means of shares, so on a randomized model they are the accuracy a user of the model sees on average. An image
counts as *broken* by an attack when fewer than half of the draws classify it correctly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

NORM_NAMES = ("l0", "l2", "linf")


def _nan(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.full((n,), float("nan"), dtype=dtype)


@dataclass
class RowResult:
    """One attack at one radius in one mode (``"naive"``, or ``"adaptive:<label>"``: crafted on an adaptive
    model, judged on the real one): what happened to each image.

    Attributes:
        robust: float64 (N,): share of judging draws still correct after the attack; NaN: not attacked.
        norms: ``"l0"``, ``"l2"``, ``"linf"`` -> float64 (N,) perturbation norms of the broken images (NaN elsewhere).
        queries: int64 (N,) model evaluations the attack spent.
        loss_adv: float64 (N,) cross-entropy at the adversarial input (NaN where not attacked).
    """

    attack: str
    mode: str
    access: str
    eps: float | None
    norm: str | None
    robust: Tensor
    norms: dict[str, Tensor]
    queries: Tensor
    loss_adv: Tensor
    seconds: float = 0.0

    @classmethod
    def empty(cls, n: int, *, attack: str, mode: str, access: str, eps: float | None, norm: str | None) -> RowResult:
        return cls(attack=attack, mode=mode, access=access, eps=eps, norm=norm, robust=_nan(n),
                   norms={k: _nan(n) for k in NORM_NAMES}, queries=torch.zeros(n, dtype=torch.int64), loss_adv=_nan(n))

    @property
    def key(self) -> str:
        return f"{self.mode}/{self.attack}@{self.eps}"

    @property
    def group(self) -> tuple[str, str | None, float | None]:
        """The threat model the row belongs to, within its mode: the cascade runs within one group."""
        return self.mode, self.norm, self.eps

    @property
    def attacked(self) -> Tensor:
        return ~torch.isnan(self.robust)

    @property
    def broken(self) -> Tensor:
        """bool (N,): attacked and classified correctly by fewer than half of the draws."""
        return self.attacked & (torch.nan_to_num(self.robust, nan=1.0) < 0.5)


def worst_case(clean: Tensor, rows: Iterable[RowResult]) -> Tensor:
    """The cascade rule: per image, the lowest share of correct draws over the clean input and every attack of
    ``rows`` that ran on it (float64 (N,)). In a cascade, an attack runs on the images whose worst case so far
    is above 0; a row's accuracy is the mean of the worst case up to and including it."""
    worst = clean.clone()
    for r in rows:
        worst = torch.where(torch.isnan(r.robust), worst, torch.minimum(worst, r.robust))
    return worst


@dataclass
class PerImage:
    """What an evaluation found for each image: clean shares and one :class:`RowResult` per attack run.

    Attributes:
        index: int64 (N,) the images' indices in their source split.
        clean: float64 (N,) share of judging draws that classify the clean image correctly.
        loss_clean: float64 (N,) cross-entropy of the clean image.
        draws: judging draws per image (1 on a deterministic model).
        rows: in execution order.
    """

    index: Tensor
    clean: Tensor
    loss_clean: Tensor
    draws: int = 1
    rows: list[RowResult] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def group(self, row: RowResult, *, upto: bool = True) -> list[RowResult]:
        """The rows of ``row``'s threat model, in execution order (up to and including ``row`` when ``upto``)."""
        out = []
        for r in self.rows:
            if r.group == row.group:
                out.append(r)
            if upto and r is row:
                break
        return out

    def threat_models(self) -> list[tuple[str | None, float]]:
        """The (norm, eps) of the rows with a radius, in execution order (each may span several modes)."""
        return list(dict.fromkeys((r.norm, r.eps) for r in self.rows if r.eps is not None))

    def at(self, norm: str | None, eps: float) -> list[RowResult]:
        """The rows of one threat model, every mode, in execution order."""
        return [r for r in self.rows if r.norm == norm and r.eps == eps]

    def broken_by(self, norm: str | None, eps: float) -> list[str | None]:
        """Per image, the first row of the threat model ``(norm, eps)`` (in execution order, naive rows before
        adaptive ones) that broke it: its attack label, prefixed by its mode when not naive
        (``adaptive:eot20/apgd-ce``); None for images no attack broke (and images the model gets wrong)."""
        out: list[str | None] = [None] * len(self)
        for r in self.at(norm, eps):
            name = r.attack if r.mode == "naive" else f"{r.mode}/{r.attack}"
            for i in r.broken.nonzero().squeeze(1).tolist():
                if out[i] is None:
                    out[i] = name
        return out

    # ---- (de)serialisation: plain JSON (NaN as null) --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index.tolist(),
            "clean": _floats(self.clean),
            "loss_clean": _floats(self.loss_clean),
            "draws": self.draws,
            # derived from the rows (not read back): the first attack that broke each image, per threat model
            "broken_by": {f"{norm}@{eps}": self.broken_by(norm, eps) for norm, eps in self.threat_models()},
            "order": [r.key for r in self.rows],
            "rows": {r.key: {"attack": r.attack, "mode": r.mode, "access": r.access, "eps": r.eps, "norm": r.norm,
                             "robust": _floats(r.robust), **{k: _floats(v) for k, v in r.norms.items()},
                             "queries": r.queries.tolist(), "loss_adv": _floats(r.loss_adv), "seconds": r.seconds}
                     for r in self.rows},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PerImage:
        rows = []
        for key in d["order"]:
            r = d["rows"][key]
            rows.append(RowResult(attack=r["attack"], mode=r["mode"], access=r["access"], eps=r["eps"],
                                  norm=r.get("norm"), robust=_tensor(r["robust"]),
                                  norms={k: _tensor(r[k]) for k in NORM_NAMES}, queries=torch.tensor(r["queries"], dtype=torch.int64),
                                  loss_adv=_tensor(r["loss_adv"]), seconds=float(r["seconds"])))
        return cls(index=torch.tensor(d["index"], dtype=torch.int64), clean=_tensor(d["clean"]),
                   loss_clean=_tensor(d["loss_clean"]), draws=int(d.get("draws", 1)), rows=rows)

    @classmethod
    def merge(cls, parts: Sequence[PerImage]) -> PerImage:
        """Shards of a data set split by :meth:`bastion.distributed.World.shard_dataset` (rank ``r`` holds
        positions ``r, r + size, ...``), given in rank order, merged back into the data set's own order (not by
        source index: a data set taken with ``spread`` is not sorted by it)."""
        size = len(parts)
        position = torch.tensor([r + k * size for r, p in enumerate(parts) for k in range(len(p))], dtype=torch.int64)
        order = torch.argsort(position)

        def cat(ts: list[Tensor]) -> Tensor:
            return torch.cat(ts)[order]

        rows = []
        for j, first in enumerate(parts[0].rows):
            shards = [p.rows[j] for p in parts]
            rows.append(RowResult(
                attack=first.attack, mode=first.mode, access=first.access, eps=first.eps, norm=first.norm,
                robust=cat([s.robust for s in shards]), norms={k: cat([s.norms[k] for s in shards]) for k in NORM_NAMES},
                queries=cat([s.queries for s in shards]), loss_adv=cat([s.loss_adv for s in shards]),
                seconds=max(s.seconds for s in shards)))  # wall time of the slowest process
        return cls(index=cat([p.index for p in parts]), clean=cat([p.clean for p in parts]),
                   loss_clean=cat([p.loss_clean for p in parts]), draws=parts[0].draws, rows=rows)


def _floats(t: Tensor) -> list[float | None]:
    """JSON has no NaN: missing per-image values (not attacked / not broken) are stored as null."""
    return [None if (v != v or math.isinf(v)) else v for v in t.tolist()]


def _tensor(values: list[float | None]) -> Tensor:
    return torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float64)

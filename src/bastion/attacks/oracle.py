"""The query oracle: the only view of a model that a black-box attack gets.

A black-box (score-based or decision-based) attack must not read gradients, parameters or intermediate
activations. :class:`Oracle` wraps a model and offers exactly one operation, a *query*: a batch of inputs
in, probabilities (``output="scores"``) or predicted labels (``output="labels"``) out, computed under
``torch.no_grad()``. Every query is counted per sample, so an attack's query cost is measured, not
estimated, and an optional per-sample budget is enforced.

Python cannot truly hide an object: the model is stored in a private, name-mangled attribute and the
oracle is not an ``nn.Module`` (no ``parameters()``, no ``state_dict()``), but nothing stops code from
digging it out. The point is the API contract: black-box attacks in bastion are written against this
class only, and their tests check that they still run on a model whose backward pass raises.

Example:
    >>> import torch
    >>> from torch import nn
    >>> oracle = Oracle(nn.Linear(4, 3).eval(), output="labels", n=2)
    >>> labels = oracle(torch.zeros(2, 4), torch.tensor([0, 1]))
    >>> oracle.counts.tolist()
    [1, 1]
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from bastion._checks import shown
from bastion._model import forward_in_chunks
from bastion.errors import BastionError, ConfigError, InputShapeError

OracleOutput = Literal["scores", "labels"]


class QueryBudgetError(BastionError):
    """A query would exceed the oracle's per-sample budget (``on_exceed="raise"``)."""


class Oracle:
    """Count-limited, gradient-free access to a classifier.

    Args:
        model: a classifier mapping inputs to logits (or any scores whose softmax / argmax is meaningful).
            It is called as is: the oracle never changes its mode, device or parameters.
        output: ``"scores"`` returns softmax probabilities, ``"labels"`` returns int64 predicted labels.
        n: number of samples the attack works on (the size of :attr:`counts`); when None the counter grows
            to the largest sample index seen.
        budget: optional maximum number of queries per sample.
        on_exceed: what a query over budget does: ``"raise"`` raises :class:`QueryBudgetError` (nothing is
            evaluated or counted); ``"stop"`` evaluates and counts only the rows whose sample is still within
            budget and returns ``NaN`` probabilities / label ``-1`` for the others (see :attr:`exhausted`).

    Probabilities are computed in float64 (softmax of the model's outputs cast to float64): in float32 a
    confident model's top probability rounds to exactly 1.0 and the probability margin becomes flat.

    Shape:
        ``oracle(x, idx)``: ``x`` (Q, ...), ``idx`` int64 (Q,) -> (Q, K) float64 or (Q,) int64.
        Several rows may belong to the same sample (``idx`` may repeat); each row is one query.
    """

    __slots__ = ("__model", "_output", "_budget", "_on_exceed", "_counts", "_k")

    def __init__(
        self,
        model: nn.Module,
        output: OracleOutput = "scores",
        *,
        n: int | None = None,
        budget: int | None = None,
        on_exceed: Literal["raise", "stop"] = "raise",
    ) -> None:
        if output not in ("scores", "labels"):
            raise ConfigError(f"output must be 'scores' or 'labels', got {shown(output)}")
        if on_exceed not in ("raise", "stop"):
            raise ConfigError(f"on_exceed must be 'raise' or 'stop', got {shown(on_exceed)}")
        for name, value in (("budget", budget), ("n", n)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name} must be an integer >= 0 or None, got {shown(value)}")
        self.__model = model
        self._output: OracleOutput = output
        self._budget = budget
        self._on_exceed = on_exceed
        self._counts = torch.zeros(n or 0, dtype=torch.int64)
        self._k: int | None = None

    # ------------------------------------------------------------------ read-only views
    @property
    def output(self) -> OracleOutput:
        """``"scores"`` or ``"labels"``."""
        return self._output

    @property
    def budget(self) -> int | None:
        """The per-sample query budget (None: unlimited)."""
        return self._budget

    @property
    def counts(self) -> Tensor:
        """int64 (n,): queries spent on each sample so far (a copy)."""
        return self._counts.clone()

    @property
    def total(self) -> int:
        """All queries made so far."""
        return int(self._counts.sum())

    def remaining(self, idx: Tensor | None = None) -> Tensor:
        """Queries left for the samples ``idx`` (all samples if None); a huge number when unlimited."""
        counts = self._counts if idx is None else self._counts[idx.to(self._counts.device)]
        if self._budget is None:
            return torch.full_like(counts, 2**62)
        return (self._budget - counts).clamp_min(0)

    @property
    def exhausted(self) -> Tensor:
        """bool (n,): samples that have no query left."""
        return self.remaining() <= 0

    def __repr__(self) -> str:
        return f"Oracle(output={self._output!r}, budget={self._budget}, total_queries={self.total})"

    # ------------------------------------------------------------------ the one operation
    def __call__(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        """Query the model on ``x``; row ``i`` is charged to sample ``idx[i]`` (default ``arange(len(x))``)."""
        if not isinstance(x, Tensor) or x.ndim < 2:
            raise InputShapeError("the oracle takes a batch tensor (Q, ...)")
        q = x.shape[0]
        if idx is None:
            idx = torch.arange(q, device=x.device)
        if not isinstance(idx, Tensor) or idx.shape != (q,) or idx.dtype != torch.int64:
            raise InputShapeError(f"idx must be int64 of shape ({q},), got {getattr(idx, 'shape', idx)}")
        if q == 0:
            return self._empty(x)
        if int(idx.min()) < 0:
            raise InputShapeError("idx holds negative sample indices")
        self._grow(int(idx.max()) + 1, x.device)
        idx = idx.to(self._counts.device)
        keep = None
        if self._budget is not None:
            # rows are charged in order: the k-th row of a sample in this call is its (count + k)-th query
            order = _rank_within_groups(idx)
            over = self._counts[idx] + order + 1 > self._budget
            if bool(over.any()):
                if self._on_exceed == "raise":
                    worst = int(idx[over][0])
                    raise QueryBudgetError(
                        f"sample {worst} would exceed its budget of {self._budget} queries "
                        f"({int(self._counts[worst])} spent)"
                    )
                keep = ~over
        if keep is None:
            out = self._evaluate(x)
            self._counts.index_add_(0, idx, torch.ones_like(idx))
            return out
        rows = keep.nonzero().squeeze(1)
        part = self._evaluate(x[rows.to(x.device)]) if rows.numel() else None
        full = self._empty(x, rows=q)
        if part is not None:
            full[rows.to(full.device)] = part
            self._counts.index_add_(0, idx[rows], torch.ones_like(rows))
        return full

    # ------------------------------------------------------------------ internals
    def _evaluate(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            z = forward_in_chunks(self.__model, x.detach())  # chunks of the queries: bounded memory
        if z.ndim != 2:
            raise InputShapeError(f"the model returned shape {tuple(z.shape)}; expected (Q, classes)")
        self._k = int(z.shape[1])
        if self._output == "labels":
            return z.argmax(1).to(torch.int64)
        return torch.softmax(z.detach().to(torch.float64), dim=1)

    def _empty(self, x: Tensor, rows: int = 0) -> Tensor:
        if self._output == "labels":
            return torch.full((rows,), -1, dtype=torch.int64, device=x.device)
        if rows and self._k is None:
            raise QueryBudgetError("the budget was exhausted before any query: the number of classes is unknown")
        return torch.full((rows, self._k or 0), float("nan"), dtype=torch.float64, device=x.device)

    def _grow(self, n: int, device: torch.device) -> None:
        if self._counts.device != device and self._counts.numel() == 0:
            self._counts = self._counts.to(device)
        if n > self._counts.numel():
            pad = torch.zeros(n - self._counts.numel(), dtype=torch.int64, device=self._counts.device)
            self._counts = torch.cat([self._counts, pad])


def _rank_within_groups(idx: Tensor) -> Tensor:
    """For each position, how many earlier positions hold the same value (0 for the first occurrence)."""
    order = torch.argsort(idx, stable=True)
    sorted_idx = idx[order]
    pos = torch.arange(idx.numel(), device=idx.device)
    is_start = torch.ones_like(sorted_idx, dtype=torch.bool)
    is_start[1:] = sorted_idx[1:] != sorted_idx[:-1]
    start_pos = torch.where(is_start, pos, torch.zeros_like(pos))
    start_pos = torch.cummax(start_pos, dim=0).values
    rank_sorted = pos - start_pos
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank

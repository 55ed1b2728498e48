"""The robustness report: plain data, versioned JSON schema, CSV export.

Schema (``schema_version`` 2)::

    {
      "schema_version": 2,
      "created": ISO-8601 time, "bastion_version": str, "torch_version": str, "command": str | null,
      "model": {...model description...}, "data": {"name", "split", "n", "sha256"},
      "eps_grid": [float], "cascade": bool, "suite": [attack.to_dict()],
      "randomized": bool, "draws": int, "partial": bool, "seed": int | null,
      "clean_accuracy": float,
      "rows": [ {"attack": label, "mode": "naive" | "adaptive:<name>", "access": str, "eps": float | null,
                 "norm": "linf" | "l2" | "l1" | "l0" | null,
                 "accuracy": float, "success_rate": float | null, "attacked": int, "succeeded": int,
                 "l0_mean", "l0_max", "l2_mean", "l2_max", "linf_mean", "linf_max": float | null,
                 "seconds": float, "queries_mean", "loss_clean", "loss_adv": float | null} ],
      "worst_case": [ {"mode": str, "norm": str | null, "eps": float | null, "accuracy": float} ],
      "flags": [ {"code", "severity", "title", "meaning", "advice", "evidence"} ],
      "headline": [ {"name": str, "norm": str | null, "eps": float, "accuracy": float, "clean_accuracy": float,
                     "broken_by": {attack label: int}, "attacks": [attack label]} ] | null,
      "per_image": {"index": [int], "clean": [float], "loss_clean": [float], "draws": int, "order": [row key],
                    "broken_by": {"<norm>@<eps>": [attack label | null]},
                    "rows": {"<row key>": {"robust": [float | null], "l0" / "l2" / "linf": [float | null], ...}}}
                   | null
    }

Each image is judged by ``draws`` calls of the model (1 on a deterministic model; 8 by default on a
``randomized`` one); its per-image value is the share of those draws that classify it correctly (``robust``:
null where the attack did not run on it), and accuracies are means of shares. ``accuracy`` of a row is over
*all* evaluated images; in cascade mode (AutoAttack's protocol) it is the worst case over that attack and the
suite's earlier attacks, since each attack only runs on points still robust within its threat model (the
same norm and eps). An image counts as broken (``succeeded``, and in the norms) when fewer than half of the
draws classify it correctly; a row that attacked no image (the cascade left none) has null success rate,
queries and losses. A minimum-norm attack (CW, DeepFool, FMN, ...) runs once and gets a row at every eps of the
grid, in its own norm (``"l1"`` possible for FMN): an image is broken at that eps when the attack's smallest
adversarial perturbation has norm at most eps; its ``loss_adv`` is the mean over the images whose point lies
inside that eps-ball. Version 1 reports (before draws) are read as deterministic ones.

``headline`` is set by a preset evaluation (:meth:`bastion.eval.Evaluation.autoattack`): per radius, the
preset's number (AutoAttack's robust accuracy: per image the worst case over every attack of the threat model,
in every mode) and how many images each attack broke first (``per_image.broken_by`` names it per image: the
first attack in execution order, naive before adaptive, whose point fewer than half of the draws classify
correctly). Both are optional: reports without them read as before.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Flag:
    """A sanity-check finding: what it means and what to do about it."""

    code: str
    severity: str  # "warning" | "error"
    title: str
    meaning: str
    advice: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    attack: str
    mode: str
    access: str
    eps: float | None
    accuracy: float
    success_rate: float | None
    attacked: int
    succeeded: int
    l0_mean: float | None
    l0_max: float | None
    l2_mean: float | None
    l2_max: float | None
    linf_mean: float | None
    linf_max: float | None
    seconds: float
    queries_mean: float | None
    loss_clean: float | None
    loss_adv: float | None
    norm: str | None = None  # the attack's threat-model norm; rows compare and cascade within (norm, eps)

    @property
    def key(self) -> str:
        return f"{self.mode}/{self.attack}@{self.eps}"


@dataclass
class RobustnessReport:
    model: dict[str, Any]
    data: dict[str, Any]
    eps_grid: list[float]
    cascade: bool
    suite: list[dict[str, Any]]
    clean_accuracy: float
    rows: list[Row]
    worst_case: list[dict[str, Any]]
    flags: list[Flag] = field(default_factory=list)
    per_image: dict[str, Any] | None = None
    created: str = ""
    bastion_version: str = ""
    torch_version: str = ""
    command: str | None = None
    draws: int = 1
    randomized: bool = False
    partial: bool = False  # an interrupted run's results so far (``bastion evaluate --resume`` completes them)
    seed: int | None = None
    headline: list[dict[str, Any]] | None = None
    schema_version: int = SCHEMA_VERSION

    # ---- queries -------------------------------------------------------------------------------------
    def modes(self) -> list[str]:
        return list(dict.fromkeys(r.mode for r in self.rows))

    def attacks(self, mode: str = "naive") -> list[str]:
        return list(dict.fromkeys(r.attack for r in self.rows if r.mode == mode))

    def curve(self, attack: str, mode: str = "naive") -> list[tuple[float, float]]:
        """(eps, accuracy) points of one attack, sorted by eps (attacks without a radius have none)."""
        return sorted((r.eps, r.accuracy) for r in self.rows if r.attack == attack and r.mode == mode and r.eps is not None)

    def norms(self, mode: str = "naive") -> list[str | None]:
        """The threat-model norms of the rows with a radius, in row order."""
        return list(dict.fromkeys(r.norm for r in self.rows if r.mode == mode and r.eps is not None))

    def norm_of(self, attack: str, mode: str = "naive") -> str | None:
        return next((r.norm for r in self.rows if r.attack == attack and r.mode == mode), None)

    def worst(self, mode: str = "naive", norm: str | None = None) -> list[tuple[float, float]]:
        """(eps, worst-case accuracy) within one threat model (``norm``; None: the first norm with a radius)."""
        norm = norm if norm is not None else next(iter(self.norms(mode)), None)
        return sorted((w["eps"], w["accuracy"]) for w in self.worst_case
                      if w["mode"] == mode and w.get("norm") == norm and w["eps"] is not None)

    # ---- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustnessReport:
        version = d.get("schema_version")
        if version not in (1, SCHEMA_VERSION):
            raise ValueError(f"unsupported report schema_version {version!r} (this bastion reads 1 and {SCHEMA_VERSION})")
        d = dict(d)
        if version == 1:
            d = _from_v1(d)
        d["rows"] = [Row(**r) for r in d["rows"]]
        d["flags"] = [Flag(**f) for f in d.get("flags", [])]
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> RobustnessReport:
        return cls.from_dict(json.loads(text))

    def to_csv(self) -> str:
        buf = io.StringIO()
        names = list(asdict(self.rows[0]).keys()) if self.rows else ["attack"]
        w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow(asdict(r))
        return buf.getvalue()


def _from_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A version 1 report (one deterministic draw, 0/1/-1 codes per image) in the version 2 layout."""
    d["schema_version"] = SCHEMA_VERSION
    per = d.get("per_image")
    if per is not None:
        per = dict(per)
        per["clean"] = [float(v) for v in per.pop("clean_correct")]
        per["draws"] = 1
        per["rows"] = {k: {**r, "robust": [None if v == -1 else float(v) for v in r["robust"]]}
                       for k, r in per["rows"].items()}
        d["per_image"] = per
    return d

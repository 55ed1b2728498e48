"""Robustness evaluation: a suite of attacks over an epsilon grid, AutoAttack-style cascade, sanity checks."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion import __version__
from bastion._checks import check_eval_mode, frozen
from bastion.attacks.base import Attack, clean_forward
from bastion.data.base import ImageDataset
from bastion.errors import ConfigError
from bastion.eval.report import RobustnessReport, Row
from bastion.models.classifier import describe_model
from bastion.progress import Progress, no_progress

log = logging.getLogger(__name__)


def _inner(attack: Attack) -> Attack | None:
    """The attack a wrapper runs (``TransferAttack``, ``SubstituteAttack``: their ``attack`` field), else None."""
    inner = getattr(attack, "attack", None)
    return inner if isinstance(inner, Attack) else None


def _field_names(attack: Attack) -> set[str]:
    return {f.name for f in dataclasses.fields(attack)} if dataclasses.is_dataclass(attack) else set()


def with_eps(attack: Attack, eps: float | None) -> Attack:
    """``attack`` at radius ``eps`` (its step size scaled with it); a wrapper (transfer, substitute) gets its
    inner attack replaced; attacks without a radius are returned unchanged."""
    if eps is None or not has_eps(attack):
        return attack
    if "eps" not in _field_names(attack):  # a wrapper whose inner attack has the radius
        inner = _inner(attack)
        assert inner is not None
        return dataclasses.replace(attack, attack=with_eps(inner, eps))  # type: ignore[type-var]
    kwargs: dict[str, Any] = {"eps": eps}
    step_size = getattr(attack, "step_size", None)
    base_eps = getattr(attack, "eps", None)
    if step_size is not None and base_eps:
        kwargs["step_size"] = step_size * eps / base_eps  # keep the relative step
    return dataclasses.replace(attack, **kwargs)  # type: ignore[type-var]


def has_eps(attack: Attack) -> bool:
    """Whether ``attack`` has a radius ``eps`` (its own, or its inner attack's for transfer/substitute)."""
    if "eps" in _field_names(attack):
        return True
    inner = _inner(attack)
    return inner is not None and has_eps(inner)


def attack_norm(attack: Attack) -> str | None:
    """The norm of ``attack``'s threat model (``"linf"``, ``"l2"``, ``"l0"``; a wrapper's is its inner attack's)."""
    return getattr(getattr(attack, "threat", None), "norm", None)


def attack_eps(attack: Attack) -> float:
    """The radius of an attack for which :func:`has_eps` holds."""
    inner = _inner(attack)
    return float(attack.eps) if "eps" in _field_names(attack) else attack_eps(inner)  # type: ignore[arg-type,attr-defined]


def _label(attack: Attack) -> str:
    d = attack.to_dict()
    name = d["attack"]
    if d.get("norm") not in (None, "linf"):
        name += f"-{d['norm']}"
    if d.get("loss") not in (None, "ce"):
        name += f"-{d['loss']}"
    return name


def suite_labels(suite: Sequence[Attack], *, swept: bool) -> list[str]:
    """One distinct row label per suite entry: the attack's name (with a non-default norm or loss); entries
    that share it get the options in which they differ, e.g. ``pgd(steps=20)`` and ``pgd(steps=2)`` (the
    radius left out when ``swept``: every entry then runs at every radius), and ``#2``, ``#3``... when they
    differ in nothing shown."""
    base = [_label(a) for a in suite]
    out = list(base)
    skip = {"attack", "eps"} if swept else {"attack"}
    for name in dict.fromkeys(base):
        idx = [i for i, b in enumerate(base) if b == name]
        if len(idx) < 2:
            continue
        dicts = [suite[i].to_dict() for i in idx]
        keys = [k for k in dict.fromkeys(k for d in dicts for k in d) if k not in skip
                and len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) > 1]
        if keys:
            for i, d in zip(idx, dicts, strict=True):
                out[i] = f"{name}(" + ", ".join(f"{k}={_short(d.get(k))}" for k in keys) + ")"
    total = {lab: out.count(lab) for lab in out}
    seen: dict[str, int] = {}
    for i, lab in enumerate(list(out)):
        if total[lab] > 1:
            seen[lab] = seen.get(lab, 0) + 1
            out[i] = f"{lab}#{seen[lab]}"
    return out


def _short(v: Any) -> str:
    if isinstance(v, dict):  # a nested attack or model description
        return str(v.get("attack") or v.get("arch") or json.dumps(v, sort_keys=True, default=str))
    return str(v)


@dataclass(kw_only=True)
class Evaluation:
    """Evaluate a model's robustness against a suite of attacks.

    Args:
        suite: attacks, in cascade order (cheap first, e.g. FGSM, BIM, PGD). Attacks with a radius ``eps``
            (their own, or their inner attack's for transfer and substitute attacks) are run at every value of
            ``eps_grid`` (their step size scaled with eps); others (JSMA, minimum-norm attacks) once. Each
            entry gets its own rows, labelled by :func:`suite_labels`.
        eps_grid: radii; None runs each attack at its own ``eps``.
        batch_size: images per attack call.
        cascade: run each attack only on points still robust (AutoAttack's protocol; worst case per image).
        seed: seed of all randomness: the attacks' (per image, keyed by the image's index in its source split)
            and, for the run, the own generators of randomized models (e.g. ``Defended``; restored afterwards).
        adaptive: extra attack models, ``{label: module}``: the suite is run again crafting on each module
            (e.g. ``eot(bpda(defended))``) and judging on the real model; rows get mode ``adaptive:<label>``.
        checks: run the sanity checks that flag gradient masking and broken evaluations.
        check_images: how many images the sanity checks use.
    """

    suite: Sequence[Attack]
    eps_grid: Sequence[float] | None = None
    batch_size: int = 256
    cascade: bool = True
    seed: int = 0
    adaptive: Mapping[str, nn.Module] = field(default_factory=dict)
    checks: bool = True
    check_images: int = 64

    def __post_init__(self) -> None:
        if not self.suite:
            raise ConfigError("the evaluation suite is empty")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.eps_grid is not None:
            grid = list(self.eps_grid)
            bad = [e for e in grid if isinstance(e, bool) or not (isinstance(e, (int, float, np.floating, np.integer))
                                                                    and e >= 0 and math.isfinite(e))]
            if bad:
                raise ConfigError(f"eps_grid values must be finite and >= 0, got {bad}")
            grid = [float(e) for e in grid]
            if len(set(grid)) != len(grid):
                raise ConfigError(f"eps_grid has repeated values: {grid}")
            self.eps_grid = grid

    # ------------------------------------------------------------------------------------------------
    def plan(self) -> list[tuple[int, Attack, float | None]]:
        """(attack index, configured attack, eps) in execution order, grouped by eps."""
        eps_values: list[float | None] = list(self.eps_grid) if self.eps_grid is not None else [None]
        out: list[tuple[int, Attack, float | None]] = []
        for e in eps_values:
            for i, a in enumerate(self.suite):
                if has_eps(a):
                    atk = with_eps(a, e)
                    out.append((i, atk, attack_eps(atk)))
        for i, a in enumerate(self.suite):
            if not has_eps(a):
                out.append((i, a, None))
        return out

    def run_shard(
        self,
        model: nn.Module,
        data: ImageDataset,
        *,
        device: str | torch.device = "cpu",
        progress: Progress = no_progress,
    ) -> dict[str, Any]:
        """Per-image results on ``data`` (one shard): the raw material :meth:`aggregate` turns into rows."""
        check_eval_mode(model)
        for m in self.adaptive.values():
            check_eval_mode(m)
        device = torch.device(device)
        n = len(data)
        assert data.indices is not None
        keys_all = data.indices.to(device)
        x_all, y_all = data.images, data.labels
        plan = self.plan()
        labels = suite_labels(self.suite, swept=self.eps_grid is not None)
        modes = ["naive", *[f"adaptive:{k}" for k in self.adaptive]]
        per: dict[str, Any] = {"index": data.indices.tolist(), "rows": {}, "order": []}

        if n == 0:  # an empty shard (more processes than images): no results, but every row, for the gather
            clean_correct = torch.zeros(0, dtype=torch.bool)
            per["clean_correct"], per["loss_clean"] = [], []
        else:
            with frozen(model):
                logits = torch.cat([clean_forward(model, x_all[i : i + self.batch_size].to(device))
                                    for i in range(0, n, self.batch_size)])
            y_dev = y_all.to(device)
            clean_correct = (logits.argmax(1) == y_dev).cpu()
            per["clean_correct"] = clean_correct.to(torch.int8).tolist()
            per["loss_clean"] = F.cross_entropy(logits, y_dev, reduction="none").cpu().tolist()

        total = len(plan) * len(modes)
        done = 0
        for mi, mode in enumerate(modes):
            craft = model if mode == "naive" else self.adaptive[mode.split(":", 1)[1]]
            # the cascade runs within one threat model: (norm, eps); an L2 row never inherits Linf breaks
            robust_now: dict[tuple[str | None, float | None], Tensor] = {}
            for ai, atk, eps in plan:
                norm = attack_norm(atk)
                alive = robust_now.setdefault((norm, eps), clean_correct.clone())
                idx = alive.nonzero().squeeze(1) if self.cascade else torch.arange(n)
                robust = torch.full((n,), -1, dtype=torch.int8)
                norms = {k: torch.full((n,), float("nan"), dtype=torch.float64) for k in ("l0", "l2", "linf")}
                queries = torch.zeros(n, dtype=torch.int64)
                loss_adv = torch.full((n,), float("nan"), dtype=torch.float64)
                seconds = 0.0
                ei = self.eps_grid.index(eps) if (eps is not None and self.eps_grid is not None) else 0
                seed = (self.seed * 1_000_003 + mi * 10_007 + ai * 101 + ei) % (2**63)
                for s in range(0, idx.numel(), self.batch_size):
                    b = idx[s : s + self.batch_size]
                    xb, yb = x_all[b].to(device), y_all[b].to(device)
                    t0 = time.perf_counter()
                    res = atk(craft, xb, yb, generator=torch.Generator().manual_seed(seed), keys=keys_all[b.to(device)])
                    seconds += time.perf_counter() - t0
                    if craft is model:
                        out = res.logits_adv
                    else:
                        with frozen(model), torch.no_grad():
                            out = model(res.x_adv)
                    ok = (out.argmax(1) == yb).cpu()
                    robust[b] = ok.to(torch.int8)
                    broken = ~ok
                    for k in norms:
                        v = res.norms[k].cpu()
                        norms[k][b[broken]] = v[broken]
                    queries[b] = res.queries.cpu()
                    loss_adv[b] = F.cross_entropy(out, yb, reduction="none").double().cpu()
                if self.cascade:
                    alive &= robust != 0
                key = f"{mode}/{labels[ai]}@{eps}"
                per["order"].append(key)
                per["rows"][key] = {
                    "attack": labels[ai], "mode": mode, "access": atk.access, "eps": eps, "norm": norm,
                    "robust": robust.tolist(),
                    **{k: _nan_to_none(v) for k, v in norms.items()}, "queries": queries.tolist(),
                    "loss_adv": _nan_to_none(loss_adv), "seconds": seconds,
                }
                done += 1
                progress("attacks", done, total)
        return per

    def aggregate(self, per: dict[str, Any]) -> tuple[float, list[Row], list[dict[str, Any]]]:
        """Rows and worst-case accuracies from per-image results (of one process or gathered shards)."""
        clean = np.asarray(per["clean_correct"], dtype=bool)
        n = max(len(clean), 1)
        loss_clean = np.asarray(per["loss_clean"], dtype=np.float64)
        rows: list[Row] = []
        worst: dict[tuple[str, str | None, float | None], np.ndarray] = {}
        for key in per["order"]:
            r = per["rows"][key]
            robust = np.asarray(r["robust"], dtype=np.int8)
            group = (r["mode"], r.get("norm"), r["eps"])
            alive = worst.setdefault(group, clean.copy())
            alive &= robust != 0
            # only images the model gets right count as robust (a randomized model can get a misclassified
            # image right under attack)
            acc = float(alive.sum() / n) if self.cascade else float(((robust == 1) & clean).sum() / n)
            attacked = robust != -1
            eligible = attacked & clean
            broken = eligible & (robust == 0)
            def stat(name: str, fn: Any, r: dict[str, Any] = r, mask: np.ndarray = broken) -> float | None:
                v = np.asarray(r[name], dtype=np.float64)[mask]
                return float(fn(v)) if v.size else None
            rows.append(Row(
                attack=r["attack"], mode=r["mode"], access=r["access"], eps=r["eps"], norm=r.get("norm"), accuracy=acc,
                success_rate=float(broken.sum() / eligible.sum()) if eligible.any() else None,
                attacked=int(attacked.sum()),
                succeeded=int(broken.sum()),
                l0_mean=stat("l0", np.mean), l0_max=stat("l0", np.max), l2_mean=stat("l2", np.mean),
                l2_max=stat("l2", np.max), linf_mean=stat("linf", np.mean), linf_max=stat("linf", np.max),
                seconds=float(r["seconds"]),
                queries_mean=float(np.asarray(r["queries"])[attacked].mean()) if attacked.any() else None,
                loss_clean=float(loss_clean[attacked].mean()) if attacked.any() else None,
                loss_adv=float(np.asarray(r["loss_adv"], dtype=np.float64)[attacked].mean()) if attacked.any() else None,
            ))
        worst_case = [{"mode": m, "norm": nm, "eps": e, "accuracy": float(a.sum() / n)} for (m, nm, e), a in worst.items()]
        return float(clean.mean()) if len(clean) else 0.0, rows, worst_case

    def run(
        self,
        model: nn.Module,
        data: ImageDataset,
        *,
        device: str | torch.device = "cpu",
        progress: Progress = no_progress,
        command: str | None = None,
        world: Any = None,
        keep_per_image: bool = True,
    ) -> RobustnessReport:
        """Run the evaluation and return a :class:`RobustnessReport`.

        With ``world`` (a :class:`bastion.distributed.World`), each process evaluates its shard of ``data``
        and rank 0 gathers the per-image results; every process returns the same report.
        """
        if len(data) == 0:
            raise ConfigError("the evaluation data set is empty")
        shard = data if world is None else world.shard_dataset(data)
        if world is not None and getattr(world, "distributed", False) and any(
                bool(getattr(m, "randomized", False)) for m in [model, *self.adaptive.values()]):
            log.warning("a randomized model under %d processes: its random draws depend on the sharding, so the "
                        "numbers are valid but differ from a single-process run", world.size)
        # autograd on even under no_grad()/inference_mode(); randomized models' own generators seeded from
        # ``seed`` for the run (and restored after), so that the same evaluation gives the same numbers
        with torch.inference_mode(False), torch.enable_grad(), _seeded_generators([model, *self.adaptive.values()],
                                                                                  self.seed):
            per = self.run_shard(model, shard, device=device, progress=progress)
            if world is not None:
                per = world.gather_per_image(per)
            clean_acc, rows, worst = self.aggregate(per)
            flags = []
            if self.checks:
                from bastion.eval.checks import run_checks

                flags = run_checks(model, data.spread(self.check_images), rows, adaptive=self.adaptive,
                                   cascade=self.cascade, n=len(per["clean_correct"]), device=device)
        return RobustnessReport(
            model=describe_model(model),
            data={"name": data.name, "split": data.split, "n": len(data), "sha256": data.sha256},
            eps_grid=list(self.eps_grid) if self.eps_grid is not None else [],
            cascade=self.cascade,
            suite=[a.to_dict() for a in self.suite],
            clean_accuracy=clean_acc,
            rows=rows,
            worst_case=worst,
            flags=flags,
            per_image=per if keep_per_image else None,
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            bastion_version=__version__,
            torch_version=torch.__version__,
            command=command,
        )


@contextmanager
def _seeded_generators(modules: Sequence[nn.Module], seed: int) -> Iterator[None]:
    """Seed every ``torch.Generator`` a module holds (a randomized defense's own, e.g. ``Defended.generator``)
    from ``seed`` for the block; their states are restored afterwards."""
    gens: dict[int, torch.Generator] = {}
    for m in modules:
        for sub in m.modules():
            g = getattr(sub, "generator", None)
            if isinstance(g, torch.Generator):
                gens.setdefault(id(g), g)
    states = [(g, g.get_state()) for g in gens.values()]
    try:
        for i, g in enumerate(gens.values()):
            g.manual_seed((seed * 1_000_003 + 7_919 * (i + 1)) % (2**63))
        yield
    finally:
        for g, state in states:
            g.set_state(state)


def _nan_to_none(t: Tensor) -> list[float | None]:
    """JSON has no NaN: missing per-image values (not attacked / not broken) are stored as null."""
    return [None if v != v else v for v in t.tolist()]

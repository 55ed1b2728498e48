"""Robustness evaluation: a suite of attacks over an epsilon grid, AutoAttack-style cascade, sanity checks.

A randomized model (a BaRT barrage, noise injection) is judged over several calls: each image's result is the
share of draws that classify it correctly (:mod:`bastion.eval.results`), and accuracies are means of shares.
"""

from __future__ import annotations

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
from bastion._checks import check_eval_mode, frozen, shown
from bastion._model import DEFAULT_DRAWS, PROBE_SAMPLES, checked_forward, describe_model, is_randomized, judge
from bastion.attacks.base import Attack
from bastion.data.base import ImageDataset
from bastion.errors import ConfigError
from bastion.eval.report import RobustnessReport, Row
from bastion.eval.results import PerImage, RowResult, worst_case
from bastion.progress import Progress, no_progress

log = logging.getLogger(__name__)

#: images per attack call by default (:attr:`Evaluation.batch_size`)
DEFAULT_BATCH = 256
#: the most input values a default batch holds: 55 images of 3x224x224 (about 32 MiB in float32 per copy the
#: attacks keep), 256 MNIST or CIFAR images
BATCH_VALUES = 1 << 23


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
        suite: attacks, in cascade order (cheap first, e.g. FGSM, BIM, PGD). Attacks with a radius (their own,
            or their inner attack's for transfer and substitute attacks: :attr:`Attack.radius`) are run at every
            value of ``eps_grid`` (:meth:`Attack.at_eps`: step sizes scaled with eps); others (JSMA, minimum-norm
            attacks) once. Each entry gets its own rows, labelled by :func:`suite_labels`.
        eps_grid: radii; None runs each attack at its own radius.
        batch_size: images per attack call (and per clean forward pass); what the attacks hold per image (the
            adversarial points, their gradients, the best points so far) grows with it. None (default): 256
            images, or fewer for large inputs, so that a batch holds at most about 8.4 million input values
            (55 images of 3x224x224). Forward and backward passes inside an attack run on smaller chunks
            (:mod:`bastion._model`), whatever the batch size.
        cascade: run each attack only on points still robust (AutoAttack's protocol; worst case per image).
        seed: seed of all randomness: the attacks' (per image, keyed by the image's index in its source split)
            and, for the run, the own generators of randomized models (e.g. ``Defended``; restored afterwards).
        adaptive: extra attack models, ``{label: module}``: the suite is run again crafting on each module
            (e.g. ``eot(bpda(defended))``) and judging on the real model; rows get mode ``adaptive:<label>``.
            Attacks on them need no special settings: early stopping is never used on a randomized model.
        checks: run the sanity checks that flag gradient masking and broken evaluations.
        check_images: how many images the sanity checks use.
        draws: calls of the model that judge each clean and adversarial image; None (default): 1 on a
            deterministic model and 8 on a randomized one, whose accuracy is then the mean share of correct
            draws (the accuracy its users see on average).
    """

    suite: Sequence[Attack]
    eps_grid: Sequence[float] | None = None
    batch_size: int | None = None
    cascade: bool = True
    seed: int = 0
    adaptive: Mapping[str, nn.Module] = field(default_factory=dict)
    checks: bool = True
    check_images: int = 64
    draws: int | None = None

    def __post_init__(self) -> None:
        if not self.suite:
            raise ConfigError("the evaluation suite is empty")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool)
                                            or self.batch_size < 1):
            raise ConfigError(f"batch_size must be an integer >= 1 or None, got {shown(self.batch_size)}")
        if self.draws is not None and (not isinstance(self.draws, int) or isinstance(self.draws, bool)
                                       or self.draws < 1):
            raise ConfigError(f"draws must be an integer >= 1 or None, got {shown(self.draws)}")
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
    def batch_for(self, data: ImageDataset) -> int:
        """Images per attack call on ``data``: ``batch_size``, or by default 256 or as many as make
        :data:`BATCH_VALUES` input values, whichever is fewer (at least one)."""
        if self.batch_size is not None:
            return self.batch_size
        per_image = math.prod(data.images.shape[1:]) if data.images.ndim > 1 else 1
        return max(1, min(DEFAULT_BATCH, BATCH_VALUES // max(1, per_image)))

    def plan(self) -> list[tuple[int, Attack, float | None]]:
        """(attack index, configured attack, eps) in execution order, grouped by eps."""
        eps_values: list[float | None] = list(self.eps_grid) if self.eps_grid is not None else [None]
        out: list[tuple[int, Attack, float | None]] = []
        for e in eps_values:
            for i, a in enumerate(self.suite):
                if a.radius is not None:
                    atk = a if e is None else a.at_eps(e)
                    out.append((i, atk, atk.radius))
        for i, a in enumerate(self.suite):
            if a.radius is None:
                out.append((i, a, None))
        return out

    def judging_draws(self, model: nn.Module, data: ImageDataset, *, device: str | torch.device = "cpu") -> int:
        """The draws that judge each image: ``draws`` if set, else 8 on a randomized model and 1 otherwise."""
        if self.draws is not None:
            return self.draws
        return DEFAULT_DRAWS if _randomized(model, data, device) else 1

    def run_shard(
        self,
        model: nn.Module,
        data: ImageDataset,
        *,
        device: str | torch.device = "cpu",
        progress: Progress = no_progress,
        draws: int = 1,
    ) -> PerImage:
        """Per-image results on ``data`` (one shard), each image judged over ``draws`` calls of the model: the
        raw material :meth:`aggregate` turns into rows."""
        check_eval_mode(model)
        for m in self.adaptive.values():
            check_eval_mode(m)
        device = torch.device(device)
        n = len(data)
        assert data.indices is not None
        keys_all = data.indices.to(device)
        x_all, y_all = data.images, data.labels
        batch = self.batch_for(data)
        plan = self.plan()
        labels = suite_labels(self.suite, swept=self.eps_grid is not None)
        modes = ["naive", *[f"adaptive:{k}" for k in self.adaptive]]
        per = PerImage(index=data.indices.clone().cpu(), clean=torch.zeros(n, dtype=torch.float64),
                       loss_clean=torch.zeros(n, dtype=torch.float64), draws=draws)
        if n:
            with frozen(model):
                for i in range(0, n, batch):
                    xb, yb = x_all[i : i + batch].to(device), y_all[i : i + batch].to(device)
                    checked_forward(model, xb[:PROBE_SAMPLES])  # a clear error for a model that cannot take x
                    logits, preds = judge(model, xb, draws=draws)
                    per.clean[i : i + len(xb)] = (preds == yb).double().mean(0).cpu()
                    per.loss_clean[i : i + len(xb)] = F.cross_entropy(logits, yb, reduction="none").double().cpu()

        total = len(plan) * len(modes)
        done = 0
        for mi, mode in enumerate(modes):
            craft = model if mode == "naive" else self.adaptive[mode.split(":", 1)[1]]
            for ai, atk, eps in plan:
                row = RowResult.empty(n, attack=labels[ai], mode=mode, access=atk.access, eps=eps, norm=atk.threat.norm)
                if self.cascade:  # within one threat model (mode, norm, eps): an L2 row never inherits Linf breaks
                    alive = worst_case(per.clean, [r for r in per.rows if r.group == row.group]) > 0
                    idx = alive.nonzero().squeeze(1)
                else:
                    idx = torch.arange(n)
                ei = self.eps_grid.index(eps) if (eps is not None and self.eps_grid is not None) else 0
                seed = (self.seed * 1_000_003 + mi * 10_007 + ai * 101 + ei) % (2**63)
                for s in range(0, idx.numel(), batch):
                    b = idx[s : s + batch]
                    xb, yb = x_all[b].to(device), y_all[b].to(device)
                    t0 = time.perf_counter()
                    # the attack only crafts; each point is judged once, here, on the model under evaluation
                    c = atk.craft(craft, xb, yb, generator=torch.Generator().manual_seed(seed), keys=keys_all[b.to(device)])
                    with frozen(model):
                        known = c.known_adv if (craft is model and draws == 1) else None
                        out, preds = judge(model, c.x_adv, draws=draws, known=known)
                    row.seconds += time.perf_counter() - t0
                    share = (preds == yb).float().mean(0)
                    share = share.double().cpu()
                    row.robust[b] = share
                    broken = share < 0.5
                    for k, v in row.norms.items():
                        v[b[broken]] = c.norms[k].cpu()[broken]
                    row.queries[b] = c.queries.cpu()
                    row.loss_adv[b] = F.cross_entropy(out, yb, reduction="none").double().cpu()
                per.rows.append(row)
                done += 1
                progress("attacks", done, total)
        return per

    def aggregate(self, per: PerImage) -> tuple[float, list[Row], list[dict[str, Any]]]:
        """Rows and worst-case accuracies from per-image results (of one process or gathered shards)."""
        n = max(len(per), 1)
        clean = per.clean
        correct = clean >= 0.5
        rows: list[Row] = []
        groups: dict[tuple[str, str | None, float | None], RowResult] = {}
        for r in per.rows:
            groups[r.group] = r  # the group's last row
            if self.cascade:
                acc = float(worst_case(clean, per.group(r)).sum() / n)
            else:  # only images the model gets right count (a randomized model can get one right under attack)
                acc = float(torch.minimum(clean, torch.nan_to_num(r.robust, nan=0.0)).sum() / n)
            attacked = r.attacked
            eligible = attacked & correct
            succeeded = eligible & r.broken

            def stat(name: str, fn: Any, r: RowResult = r, mask: Tensor = succeeded) -> float | None:
                v = r.norms[name][mask]
                return float(fn(v)) if v.numel() else None

            some = bool(attacked.any())
            rows.append(Row(
                attack=r.attack, mode=r.mode, access=r.access, eps=r.eps, norm=r.norm, accuracy=acc,
                success_rate=float(succeeded.sum() / eligible.sum()) if bool(eligible.any()) else None,
                attacked=int(attacked.sum()), succeeded=int(succeeded.sum()),
                l0_mean=stat("l0", torch.mean), l0_max=stat("l0", torch.max), l2_mean=stat("l2", torch.mean),
                l2_max=stat("l2", torch.max), linf_mean=stat("linf", torch.mean), linf_max=stat("linf", torch.max),
                seconds=float(r.seconds),
                queries_mean=float(r.queries[attacked].double().mean()) if some else None,
                loss_clean=float(per.loss_clean[attacked].mean()) if some else None,
                loss_adv=float(r.loss_adv[attacked].mean()) if some else None,
            ))
        worst = [{"mode": m, "norm": nm, "eps": e, "accuracy": float(worst_case(clean, per.group(last)).sum() / n)}
                 for (m, nm, e), last in groups.items()]
        return (float(clean.mean()) if len(per) else 0.0), rows, worst

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
        check_eval_mode(model)
        shard = data if world is None else world.shard_dataset(data)
        # autograd on even under no_grad()/inference_mode(); randomized models' own generators seeded from
        # ``seed`` for the run (and restored after), so that the same evaluation gives the same numbers
        with torch.inference_mode(False), torch.enable_grad(), _seeded_generators([model, *self.adaptive.values()],
                                                                                  self.seed):
            randomized = _randomized(model, data, device)
            draws = self.draws if self.draws is not None else (DEFAULT_DRAWS if randomized else 1)
            if world is not None and getattr(world, "distributed", False) and randomized:
                log.warning("a randomized model under %d processes: its random draws depend on the sharding, so the "
                            "numbers are valid but differ from a single-process run", world.size)
            per = self.run_shard(model, shard, device=device, progress=progress, draws=draws)
            if world is not None:
                per = PerImage.merge(world.gather_objects(per))
            clean_acc, rows, worst = self.aggregate(per)
            flags = []
            if self.checks:
                from bastion.eval.checks import run_checks

                flags = run_checks(model, data.spread(self.check_images), rows, adaptive=self.adaptive,
                                   cascade=self.cascade, n=len(per), device=device, draws=draws,
                                   randomized=randomized, batch_size=self.batch_for(data))
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
            per_image=per.to_dict() if keep_per_image else None,
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            bastion_version=__version__,
            torch_version=torch.__version__,
            command=command,
            draws=draws,
            randomized=randomized,
        )


def _randomized(model: nn.Module, data: ImageDataset, device: str | torch.device) -> bool:
    """Whether ``model`` is randomized: declared, else probed on the first images of ``data``."""
    probe = data.images[:PROBE_SAMPLES].to(device) if len(data) else None
    with frozen(model), torch.no_grad():
        return is_randomized(model, probe)


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

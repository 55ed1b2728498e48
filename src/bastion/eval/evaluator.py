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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion import __version__
from bastion._checks import check_eval_mode, frozen, shown
from bastion._model import DEFAULT_DRAWS, PROBE_SAMPLES, checked_forward, describe_model, is_randomized, judge
from bastion.attacks.base import Attack, MinimumNormAttack
from bastion.data import LabelledImages
from bastion.errors import ConfigError
from bastion.eval.report import RobustnessReport, Row
from bastion.eval.results import PerImage, RowResult, worst_case
from bastion.progress import Progress, no_progress
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)

#: images per attack call by default (:attr:`Evaluation.batch_size`)
DEFAULT_BATCH = 256
#: the most input values a default batch holds: 55 images of 3x224x224 (about 32 MiB in float32 per copy the
#: attacks keep), 256 MNIST or CIFAR images
BATCH_VALUES = 1 << 23


def suite_labels(suite: Sequence[Attack], *, swept: bool) -> list[str]:
    """One distinct row label per suite entry: the attack's :attr:`~bastion.attacks.base.Attack.label` (its
    name, with a non-default norm or loss); entries that share it get the options in which they differ, e.g. ``pgd(steps=20)`` and ``pgd(steps=2)`` (the
    radius left out when ``swept``: every entry then runs at every radius), and ``#2``, ``#3``... when they
    differ in nothing shown."""
    base = [a.label for a in suite]
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
            attacks) once. A minimum-norm attack (:class:`~bastion.attacks.base.MinimumNormAttack`: CW, DeepFool,
            FMN, ...) still gets a row at every eps of the grid, in its own norm, from that one run: an image
            counts as broken at ``eps`` when the attack fooled the model with a perturbation of norm at most
            ``eps``. Each entry gets its own rows, labelled by :func:`suite_labels`.
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
        preset: the name of a standard protocol the suite implements (set by :meth:`autoattack`): the report
            then leads with its number per radius (:attr:`RobustnessReport.headline`).
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
    preset: str | None = None

    def __post_init__(self) -> None:
        if not self.suite:
            raise ConfigError("the evaluation suite is empty")
        for name in ("batch_size", "draws"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1 or None, got {shown(value)}")
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

    @classmethod
    def autoattack(
        cls,
        eps: float | Sequence[float],
        norm: Literal["linf", "l2"] = "linf",
        version: Literal["standard", "rand"] = "standard",
        *,
        model: nn.Module | None = None,
        adaptive: Mapping[str, nn.Module] | None = None,
        steps: int = 100,
        restarts: int = 1,
        targets: int = 9,
        queries: int = 5000,
        eot_draws: int = 20,
        bounds: tuple[float, float] = (0.0, 1.0),
        **options: Any,
    ) -> Evaluation:
        """AutoAttack (Croce & Hein 2020, https://arxiv.org/abs/2003.01690) as an evaluation: its attacks run as a
        cascade (each on the images still robust, worst case per image), and the report leads with its robust
        accuracy and which attack broke each image first.

        * ``"standard"``: APGD-CE, then APGD-T (targeted DLR towards each of the ``targets`` classes ranked
          highest after the true one), FAB-T (the same targets), and Square with ``queries`` queries (Linf only:
          bastion has no L2 Square, so the L2 cascade ends with FAB-T).
        * ``"rand"``, for randomized defenses: APGD-CE and APGD-DLR, crafted on ``eot(model, eot_draws)`` (the
          gradient averaged over 20 draws, as AutoAttack's ``rand`` version averages it) next to the naive
          rows; pass ``adaptive`` to craft on other models instead (e.g. ``{"eot20(bpda)": eot(bpda(m), 20)}``
          for a defense without useful gradients). Randomized models are never early-stopped and are judged
          over several draws.

        Args:
            eps: the radius, or several (the cascade runs at each; the headline has one number per radius).
            norm: ``"linf"`` or ``"l2"``.
            version: ``"standard"`` or ``"rand"``.
            model: the model to be evaluated; needed by ``"rand"`` unless ``adaptive`` is given.
            adaptive: models to craft on as well as the model itself (``{label: module}``).
            steps: iterations of APGD and FAB (100 in AutoAttack).
            restarts: APGD-CE's random starts (1 in AutoAttack's standard and rand versions).
            targets: target classes of APGD-T and FAB-T (9).
            queries: Square's query budget (5000).
            eot_draws: draws averaged per gradient in the ``"rand"`` version (20).
            bounds: the valid input range.
            **options: other :class:`Evaluation` options (batch_size, seed, draws, checks, check_images).

        Example:
            >>> report = Evaluation.autoattack(eps=0.3).run(model, data)       # doctest: +SKIP
            >>> report.headline[0]["accuracy"]                                  # doctest: +SKIP
        """
        from bastion.attacks import APGD, FAB, Square, eot

        grid = [eps] if isinstance(eps, (int, float)) else list(eps)
        if not grid:
            raise ConfigError("autoattack needs a radius (eps)")
        if version not in ("standard", "rand"):
            raise ConfigError(f"version must be 'standard' or 'rand', got {shown(version)}")
        for key in ("suite", "eps_grid", "cascade", "preset", "adaptive"):
            if key in options:
                raise ConfigError(f"autoattack sets {key} itself")
        first = grid[0]
        ce = APGD(eps=first, norm=norm, loss="ce", steps=steps, restarts=restarts, bounds=bounds)
        suite: list[Attack]
        crafting = dict(adaptive or {})
        name = f"AutoAttack ({version})"
        if version == "standard":
            suite = [ce, APGD(eps=first, norm=norm, loss="dlr", targets=targets, steps=steps, bounds=bounds),
                     FAB(eps=first, norm=norm, targets=targets, steps=steps, bounds=bounds)]
            if norm == "linf":
                suite.append(Square(eps=first, max_queries=queries, bounds=bounds))
            else:
                name = f"AutoAttack (standard, {norm} without Square)"
                log.warning("bastion's Square attack is Linf only: the %s AutoAttack cascade ends with FAB-T", norm)
        else:
            suite = [ce, APGD(eps=first, norm=norm, loss="dlr", steps=steps, restarts=restarts, bounds=bounds)]
            if not crafting:
                if model is None:
                    raise ConfigError("the rand version crafts on eot(model, n): pass model=... (or adaptive=...)")
                crafting = {f"eot{eot_draws}": eot(model, eot_draws)}
        return cls(suite=suite, eps_grid=grid, cascade=True, adaptive=crafting, preset=name, **options)

    # ------------------------------------------------------------------------------------------------
    def batch_for(self, data: LabelledImages) -> int:
        """Images per attack call on ``data``: ``batch_size``, or by default 256 or as many as make
        :data:`BATCH_VALUES` input values, whichever is fewer (at least one)."""
        if self.batch_size is not None:
            return self.batch_size
        per_image = math.prod(data.input_shape)
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

    def run_shard(self, model: nn.Module, data: LabelledImages, *, device: str | torch.device = "cpu",
                  progress: Progress = no_progress, draws: int = 1, done: PerImage | None = None,
                  on_row: Callable[[PerImage], None] | None = None,
                  generators: Sequence[torch.Generator] = ()) -> PerImage:
        """Per-image results on ``data`` (one shard), each image judged over ``draws`` calls of the model: the
        raw material :meth:`aggregate` turns into rows.

        ``done``: results of an earlier, interrupted run of this evaluation on these images; its rows are taken
        as they are and only the others computed. ``on_row`` is called with the results so far after each row.
        ``generators``: the randomized models' own generators, reseeded from ``seed`` and the row's position
        before the clean pass and each row, so that a row's draws do not depend on which rows ran before it (a
        resumed run gives the numbers of an uninterrupted one)."""
        for m in (model, *self.adaptive.values()):
            check_eval_mode(m)
        device = torch.device(device)
        n = len(data)
        assert data.indices is not None
        batch = self.batch_for(data)
        plan = self.plan()
        labels = suite_labels(self.suite, swept=self.eps_grid is not None)
        modes = ["naive", *[f"adaptive:{k}" for k in self.adaptive]]
        per = PerImage(index=data.indices.clone().cpu(), clean=torch.zeros(n, dtype=torch.float64),
                       loss_clean=torch.zeros(n, dtype=torch.float64), draws=draws)
        earlier: dict[str, RowResult] = {}
        if done is not None:
            if not torch.equal(done.index, per.index) or done.draws != draws:
                raise ConfigError("the earlier results are for other images (or another number of draws): they "
                                  "cannot be resumed; start the evaluation over")
            earlier = {r.key: r for r in done.rows}
            per.clean, per.loss_clean = done.clean.clone(), done.loss_clean.clone()
        _reseed(generators, self.seed, 0)
        if n and done is None:
            with frozen(model):
                for i in range(0, n, batch):
                    xb = data.batch(slice(i, i + batch)).to(device)
                    yb = data.labels[i : i + batch].to(device)
                    checked_forward(model, xb[:PROBE_SAMPLES])  # a clear error for a model that cannot take x
                    logits, preds = judge(model, xb, draws=draws)
                    per.clean[i : i + len(xb)] = (preds == yb).double().mean(0).cpu()
                    per.loss_clean[i : i + len(xb)] = F.cross_entropy(logits, yb, reduction="none").double().cpu()

        total = sum(atk.cost for _, atk, _ in plan) * n * len(modes)
        work = 0
        position = 0
        for mi, mode in enumerate(modes):
            craft = model if mode == "naive" else self.adaptive[mode.split(":", 1)[1]]
            for ai, atk, eps in plan:
                position += 1
                balls = None  # a minimum-norm attack without a radius: one run, a row per eps of the grid
                if eps is None and self.eps_grid is not None and isinstance(atk, MinimumNormAttack):
                    balls = [ThreatModel(norm=atk.threat.norm, eps=e, bounds=atk.threat.bounds) for e in self.eps_grid]
                rows = [RowResult.empty(n, attack=labels[ai], mode=mode, access=atk.access, eps=e, norm=atk.threat.norm)
                        for e in ([b.eps for b in balls] if balls else [eps])]
                if all(r.key in earlier for r in rows):
                    per.rows.extend(earlier[r.key] for r in rows)
                    work += atk.cost * n
                    progress("attacks", work, total)
                    continue
                _reseed(generators, self.seed, position)
                ei = self.eps_grid.index(eps) if (eps is not None and self.eps_grid is not None) else 0
                seed = (self.seed * 1_000_003 + mi * 10_007 + ai * 101 + ei) % (2**63)

                def advance(images: int, atk: Attack = atk) -> None:
                    nonlocal work
                    work += atk.cost * images
                    progress("attacks", work, total)

                self._attack_rows(per, data, atk, rows, balls=balls, craft=craft, model=model, seed=seed,
                                  device=device, draws=draws, advance=advance)
                per.rows.extend(rows)
                if on_row is not None:
                    on_row(per)
        return per

    def _attack_rows(self, per: PerImage, data: LabelledImages, atk: Attack, rows: list[RowResult], *,
                     balls: list[ThreatModel] | None, craft: nn.Module, model: nn.Module, seed: int,
                     device: torch.device, draws: int, advance: Callable[[int], None]) -> None:
        """Fill ``rows`` from one run of ``atk`` crafted on ``craft``, on the images some row still needs (in a
        cascade: still robust in its threat model), each point judged once on ``model``. With ``balls`` (a
        minimum-norm attack's rows, one per eps): where a point lies outside a row's ball, that row keeps the
        image's clean share and has no adversarial loss (NaN); the run's time is shared between the rows."""
        assert data.indices is not None
        n = len(data)
        if self.cascade:  # within one threat model (mode, norm, eps): an L2 row never inherits Linf breaks
            needed = [worst_case(per.clean, [r for r in per.rows if r.group == row.group]) > 0 for row in rows]
        else:
            needed = [torch.ones(n, dtype=torch.bool) for _ in rows]
        idx = torch.stack(needed).any(0).nonzero().squeeze(1)
        keys_all = data.indices.to(device)
        batch = self.batch_for(data)
        for s in range(0, idx.numel(), batch):
            b = idx[s : s + batch]
            xb, yb = data.batch(b).to(device), data.labels[b].to(device)
            t0 = time.perf_counter()
            c = atk.craft(craft, xb, yb, generator=torch.Generator().manual_seed(seed), keys=keys_all[b.to(device)])
            with frozen(model):
                known = c.known_adv if (craft is model and draws == 1) else None
                out, preds = judge(model, c.x_adv, draws=draws, known=known)
            seconds = time.perf_counter() - t0
            share = (preds == yb).float().mean(0).double().cpu()
            loss = F.cross_entropy(out, yb, reduction="none").double().cpu()
            for i, (row, need) in enumerate(zip(rows, needed, strict=True)):
                inside = balls[i].contains(c.x_adv, xb).cpu() if balls else torch.ones_like(share, dtype=torch.bool)
                sel = need[b]
                rb = b[sel]
                row.robust[rb] = torch.where(inside, share, per.clean[b])[sel]
                broken = (inside & (share < 0.5))[sel]
                for k, v in row.norms.items():
                    v[rb[broken]] = c.norms[k].cpu()[sel][broken]
                row.queries[rb] = c.queries.cpu()[sel]
                row.loss_adv[rb] = torch.where(inside, loss, torch.full_like(loss, float("nan")))[sel]
                row.seconds += seconds / len(rows)
            advance(len(b))
        advance(n - idx.numel())  # the images no row needed

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
                loss_adv=_mean_known(r.loss_adv[attacked]),
            ))
        worst = [{"mode": m, "norm": nm, "eps": e, "accuracy": float(worst_case(clean, per.group(last)).sum() / n)}
                 for (m, nm, e), last in groups.items()]
        return (float(clean.mean()) if len(per) else 0.0), rows, worst

    def headline(self, per: PerImage) -> list[dict[str, Any]] | None:
        """The preset's number per radius: accuracy under the worst case over every row of the threat model
        (every mode), and how many images each attack broke first (None without a preset)."""
        if self.preset is None:
            return None
        n = max(len(per), 1)
        out = []
        for norm, eps in per.threat_models():
            rows = per.at(norm, eps)
            first = per.broken_by(norm, eps)
            labels = [r.attack if r.mode == "naive" else f"{r.mode}/{r.attack}" for r in rows]
            out.append({"name": self.preset, "norm": norm, "eps": eps,
                        "accuracy": float(worst_case(per.clean, rows).sum() / n),
                        "clean_accuracy": float(per.clean.sum() / n),
                        "broken_by": {lab: first.count(lab) for lab in labels}, "attacks": labels})
        return out

    def run(
        self,
        model: nn.Module,
        data: LabelledImages,
        *,
        device: str | torch.device = "cpu",
        progress: Progress = no_progress,
        command: str | None = None,
        world: Any = None,
        keep_per_image: bool = True,
        resume: RobustnessReport | None = None,
        on_partial: Callable[[RobustnessReport], None] | None = None,
    ) -> RobustnessReport:
        """Run the evaluation and return a :class:`RobustnessReport`.

        With ``world`` (a :class:`bastion.distributed.World`), each process evaluates its shard of ``data``
        and rank 0 gathers the per-image results; every process returns the same report.

        ``resume``: the (partial) report of an earlier run of this same evaluation on the same data, e.g. one
        interrupted with Ctrl-C: its rows are kept and only the missing ones computed; the result equals an
        uninterrupted run's. ``on_partial`` is called with a partial report (``partial=True``, no sanity checks
        yet) after each row, so that a caller can save what is done (one process only).
        """
        if len(data) == 0:
            raise ConfigError("the evaluation data set is empty")
        check_eval_mode(model)
        distributed = world is not None and getattr(world, "distributed", False)
        if distributed and (resume is not None or on_partial is not None):
            raise ConfigError("resuming and saving partial results work in one process, not under torchrun")
        shard = data if world is None else world.shard_dataset(data)
        done = None
        if resume is not None:
            self.check_resumable(resume, model, data)
            done = PerImage.from_dict(resume.per_image) if resume.per_image is not None else None
        gens = _generators([model, *self.adaptive.values()])
        states = [g.get_state() for g in gens]
        # autograd on even under no_grad()/inference_mode(); randomized models' own generators seeded from
        # ``seed`` for each row (and restored after), so that the same evaluation gives the same numbers
        try:
            with torch.inference_mode(False), torch.enable_grad():
                randomized = _randomized(model, data, device)
                draws = self.draws if self.draws is not None else (DEFAULT_DRAWS if randomized else 1)
                if distributed and randomized:
                    log.warning("a randomized model under %d processes: its random draws depend on the sharding, so "
                                "the numbers are valid but differ from a single-process run", world.size)

                def partial(per: PerImage) -> None:
                    if on_partial is not None:
                        on_partial(self._report(model, data, per, [], draws, randomized, command, keep_per_image=True,
                                                partial=True))

                per = self.run_shard(model, shard, device=device, progress=progress, draws=draws, done=done,
                                     on_row=partial if on_partial is not None else None, generators=gens)
                if world is not None:
                    per = PerImage.merge(world.gather_objects(per))
                flags = []
                if self.checks:
                    from bastion.eval.checks import run_checks

                    _reseed(gens, self.seed, 10**6)
                    _, rows, _ = self.aggregate(per)
                    flags = run_checks(model, data.spread(self.check_images).load(), rows, adaptive=self.adaptive,
                                       cascade=self.cascade, n=len(per), device=device, draws=draws,
                                       randomized=randomized, batch_size=self.batch_for(data))
        finally:
            for g, state in zip(gens, states, strict=True):
                g.set_state(state)
        return self._report(model, data, per, flags, draws, randomized, command, keep_per_image=keep_per_image)

    def _report(self, model: nn.Module, data: LabelledImages, per: PerImage, flags: list[Any], draws: int,
                randomized: bool, command: str | None, *, keep_per_image: bool, partial: bool = False,
                ) -> RobustnessReport:
        clean_acc, rows, worst = self.aggregate(per)
        return RobustnessReport(
            **self._identity(model, data),
            clean_accuracy=clean_acc,
            rows=rows,
            worst_case=worst,
            flags=flags,
            headline=self.headline(per),
            per_image=per.to_dict() if keep_per_image else None,
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            bastion_version=__version__,
            torch_version=torch.__version__,
            command=command,
            draws=draws,
            randomized=randomized,
            partial=partial,
        )

    def _identity(self, model: nn.Module, data: LabelledImages) -> dict[str, Any]:
        """What a report records of the evaluation, its data and model (a resumed run's must be the same)."""
        return {"suite": [a.to_dict() for a in self.suite], "eps_grid": list(self.eps_grid or []),
                "cascade": self.cascade, "seed": self.seed,
                "data": {"name": data.name, "split": data.split, "n": len(data), "sha256": data.sha256},
                "model": describe_model(model)}

    def check_resumable(self, earlier: RobustnessReport, model: nn.Module, data: LabelledImages) -> None:
        """Refuse to resume from a report of another evaluation: other attacks, radii, cascade, seed, data or
        model (the message names what differs)."""
        mine = self._identity(model, data)
        changed = [k for k in mine if json.dumps(mine[k], sort_keys=True, default=str)
                   != json.dumps(getattr(earlier, k), sort_keys=True, default=str)]
        if changed:
            raise ConfigError(f"the earlier results are of another evaluation (other {', '.join(changed)}): they cannot "
                              "be resumed; run the same command as before, or start over in another folder")
        if earlier.per_image is None:
            raise ConfigError("the earlier results hold no per-image results: they cannot be resumed")


def _generators(modules: Sequence[nn.Module]) -> list[torch.Generator]:
    """Every ``torch.Generator`` the modules hold (a randomized defense's own, e.g. ``Defended.generator``)."""
    gens: dict[int, torch.Generator] = {}
    for m in modules:
        for sub in m.modules():
            g = getattr(sub, "generator", None)
            if isinstance(g, torch.Generator):
                gens.setdefault(id(g), g)
    return list(gens.values())


def _reseed(gens: Sequence[torch.Generator], seed: int, position: int) -> None:
    for i, g in enumerate(gens):
        g.manual_seed((seed * 1_000_003 + 7_919 * (i + 1) + 104_729 * position) % (2**63))


def _mean_known(v: Tensor) -> float | None:
    """The mean of the values that are not NaN (None when there are none): a minimum-norm attack's row has no
    adversarial loss for the images whose point lies outside its eps-ball."""
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else None


def _randomized(model: nn.Module, data: LabelledImages, device: str | torch.device) -> bool:
    """Whether ``model`` is randomized: declared, else probed on the first images of ``data`` (not empty)."""
    with frozen(model), torch.no_grad():
        return is_randomized(model, data.batch(slice(0, PROBE_SAMPLES)).to(device))

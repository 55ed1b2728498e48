"""Sanity checks that flag gradient masking and broken evaluations.

After Carlini et al. 2019, "On Evaluating Adversarial Robustness" (https://arxiv.org/abs/1902.06705), and
AutoAttack's checks (Croce & Hein 2020). Each check returns :class:`Flag` values that say what the finding
means and what to do; an evaluation without flags is not proof of robustness, but a flag is a strong hint
that the numbers overstate it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion._checks import frozen
from bastion._model import evaluations_per_input, forward_in_chunks, grad_in_chunks, judge, log_mean_softmax
from bastion.data.base import ImageDataset
from bastion.eval.report import Flag, Row

#: accuracy differences below this are treated as noise (absolute, plus a binomial allowance)
TOLERANCE = 0.01
#: ``loss-not-increasing`` fires when an attack's mean loss stays within this fraction of the clean one
_LOSS_RTOL = 1e-3


def _noise(acc: float, n: int) -> float:
    return TOLERANCE + 2.0 * math.sqrt(max(acc * (1 - acc), 1e-4) / max(n, 1))


#: each flag's severity, what it means and what to do (its title and evidence come with each finding)
_FLAGS: dict[str, tuple[str, str, str]] = {
    "randomized-outputs": (
        "error", "The model gives different outputs for the same input, so a single gradient is a noisy sample and "
                 "gradient attacks underestimate what an attacker can do.",
        "Evaluate with Expectation over Transformation: add eot(model, n=16) (and bpda(...) for non-differentiable "
        "steps) to the evaluation's adaptive attacks (bastion's attacks never stop early on a randomized model, and "
        "judge it over several draws)."),
    "onehot-outputs": (
        "error", "The model returns one-hot labels: its output is piecewise constant, its gradient zero, and gradient "
                 "attacks fail for that reason alone (gradient masking), not because the decision is robust.",
        "Attack it with label-only or transfer attacks (HopSkipJump, a substitute model) or attack the underlying "
        "model's logits."),
    "probability-outputs": (
        "error", "The model returns probabilities; cross-entropy on them saturates and gradients vanish.",
        "Return logits (or log-probabilities) for evaluation; use the margin loss."),
    "zero-gradients": (
        "error", "The loss gradient w.r.t. the input vanishes (shattered or masked gradients): gradient attacks "
                 "cannot make progress, whatever the true robustness.",
        "Use BPDA for non-differentiable components, the margin loss for saturated outputs, or gradient-free "
        "attacks (Square, HopSkipJump, transfer)."),
    "unbounded-attack-fails": (
        "error", "With eps = 1 any input can be turned into any other image, so accuracy must fall to about 0. If "
                 "it does not, the attack is not working (gradient masking or a bug), and every number at smaller "
                 "eps is suspect.",
        "Fix the attack before trusting the evaluation: adaptive attacks (BPDA/EOT), gradient-free attacks, more "
        "steps, the margin loss."),
    "non-monotone-eps": (
        "warning", "A larger budget contains every smaller one, so accuracy cannot really increase with eps; the "
                   "attack fails to find points it could reach.",
        "Use more steps/restarts, a step size relative to eps, and check for gradient masking."),
    "loss-not-increasing": (
        "error", "A working attack raises the model's loss on the true class; if it stays flat the attack is not "
                 "getting a usable gradient.",
        "Inspect gradients (zero or noisy?), use BPDA/EOT or gradient-free attacks."),
    "single-step-beats-iterative": (
        "warning", "An iterative attack should be at least as strong as one step in the same direction. If FGSM "
                   "wins, the iterative attack is stuck (gradient masking, bad step size).",
        "Check step sizes and steps, use restarts and the margin loss, try BPDA/EOT."),
    "blackbox-beats-whitebox": (
        "error", "An attack with less information should not be stronger than one with gradients. The white-box "
                 "gradients are uninformative (gradient masking).",
        "Treat the black-box number as the upper bound on robustness; build an adaptive white-box attack "
        "(BPDA/EOT) before claiming robustness."),
    "weaker-than-eot-baseline": (
        "error", "The model is randomized, and a 40-step PGD loop on the softmax averaged over several draws, run by "
                 "the checks themselves, does far better than every attack of the evaluation: their numbers "
                 "overstate the model's robustness.",
        "Attack the model through eot(...) (and bpda(...) for non-differentiable steps) with every step run "
        "(early_stop=False), more draws and more steps; treat the plain loop's number as the upper bound."),
}


def _flag(code: str, title: str, evidence: dict[str, Any], *, severity: str | None = None) -> Flag:
    """The finding ``code`` of :data:`_FLAGS` (``severity``: other than its usual one)."""
    usual, meaning, advice = _FLAGS[code]
    return Flag(code=code, severity=severity or usual, title=title, meaning=meaning, advice=advice, evidence=evidence)


def check_outputs(model: nn.Module, data: ImageDataset, *, adaptive: bool, device: torch.device | str) -> list[Flag]:
    """Randomized outputs, probability outputs and one-hot (label-only) outputs."""
    flags = []
    x = data.images.to(device)
    with frozen(model), torch.no_grad():
        a, b = forward_in_chunks(model, x), forward_in_chunks(model, x)
    if not adaptive and not torch.allclose(a, b, atol=1e-5):
        changed = float((a.argmax(1) != b.argmax(1)).float().mean())
        flags.append(_flag("randomized-outputs", "Randomized model evaluated without EOT",
                           {"max_output_change": float((a - b).abs().max()), "prediction_flip_rate": changed}))
    rows_sum = a.sum(1)
    if bool((a >= 0).all()) and torch.allclose(rows_sum, torch.ones_like(rows_sum), atol=1e-4):
        evidence = {"row_sum_mean": float(rows_sum.mean())}
        flags.append(_flag("onehot-outputs", "Label-only (one-hot) outputs", evidence)
                     if bool(((a == 0) | (a == 1)).all()) else
                     _flag("probability-outputs", "Probability outputs instead of logits", evidence))
    return flags


def check_gradients(model: nn.Module, data: ImageDataset, *, device: torch.device | str, threshold: float = 0.1,
                    adaptive: bool = False) -> list[Flag]:
    """A large share of inputs whose loss gradient is exactly zero (an error; a warning when the evaluation
    has adaptive attacks, which exist to get around exactly that: their rows are then the ones to read)."""
    x = data.images.to(device)
    y = data.labels.to(device)

    def loss(xs: Tensor, rows: slice) -> tuple[Tensor, Tensor]:
        logits = model(xs)
        return logits, F.cross_entropy(logits, y[rows], reduction="none")

    with frozen(model):
        # chunks of the batch: bounded memory on large images
        _, _, g = grad_in_chunks(loss, x, per_sample=evaluations_per_input(model))
    share = float((g.reshape(len(x), -1).abs().amax(1) == 0).float().mean())
    if share > threshold:
        return [_flag("zero-gradients", f"{share:.0%} of inputs have an exactly zero gradient",
                      {"zero_gradient_share": share}, severity="warning" if adaptive else None)]
    return []


def check_unbounded(model: nn.Module, data: ImageDataset, *, device: torch.device | str, threshold: float = 0.1,
                    crafting: Mapping[str, nn.Module] | None = None, draws: int | None = None,
                    batch_size: int | None = None) -> list[Flag]:
    """An unbounded attack (Linf eps = 1, which can reach any image) must bring accuracy to about 0: PGD on the
    model itself, else PGD crafted on each of the evaluation's adaptive models (``crafting``) and judged on
    the model; the lowest accuracy counts. ``batch_size``: images per attack call (None: all at once)."""
    from bastion.attacks import PGD

    x, y = data.images.to(device), data.labels.to(device)
    pgd = PGD(eps=1.0, steps=20, step_size=0.1, restarts=1)
    step = batch_size or len(x)

    def naive() -> tuple[Tensor, int]:
        """PGD on the model in batches of ``step`` images (keyed by position: the same as one call): the shares
        of correct judging draws, and how many draws judged them."""
        shares, used = [], 1
        for i in range(0, len(x), step):
            res = pgd(model, x[i : i + step], y[i : i + step], generator=torch.Generator().manual_seed(0),
                      draws=draws, keys=torch.arange(i, min(i + step, len(x)), device=x.device))
            shares.append(res.robust_share)
            used = res.draws
        return torch.cat(shares), used

    def transferred(m: nn.Module, judge_draws: int) -> Tensor:
        """PGD crafted on ``m`` (in batches), judged on the model: its shares of correct draws."""
        shares = []
        for i in range(0, len(x), step):
            xb, yb = x[i : i + step], y[i : i + step]
            x_adv = pgd.craft(m, xb, yb, generator=torch.Generator().manual_seed(0),
                              keys=torch.arange(i, i + len(xb), device=x.device)).x_adv
            with frozen(model):
                _, preds = judge(model, x_adv, draws=judge_draws)
            shares.append((preds == yb).float().mean(0))
        return torch.cat(shares)

    share, used = naive()
    acc = float(share.mean())
    by_mode = {"naive": acc}
    for label, m in (crafting or {}).items():
        if acc <= threshold:
            break
        by_mode[f"adaptive:{label}"] = float(transferred(m, used).mean())
        acc = min(by_mode.values())
    if acc > threshold:
        return [_flag("unbounded-attack-fails", f"PGD at eps=1 leaves {acc:.0%} accuracy",
                      {"accuracy_at_eps_1": acc, "by_mode": by_mode, "n": len(x)})]
    return []


def check_rows(rows: Sequence[Row], *, n: int, cascade: bool = False) -> list[Flag]:
    """Checks on the results themselves: single-step vs iterative, black-box vs white-box, monotonicity,
    loss increase. Rows are compared within one threat model (mode, norm, eps).

    Without ``cascade`` each row's accuracy is its attack's own, and a weaker attack (FGSM; a score, label or
    transfer attack) must not end below the stronger ones. In a cascade a row's accuracy is the worst case so
    far, so that comparison says nothing; instead, a weaker attack that runs *after* a stronger one must not
    break more than noise of the images the stronger attacks left (its ``succeeded`` count). The suite's
    usual order (FGSM first) leaves FGSM nothing to be compared with: its check needs ``cascade=False`` or
    the iterative attacks first.
    """
    flags: list[Flag] = []
    by_mode: dict[str, list[Row]] = {}
    for r in rows:
        by_mode.setdefault(r.mode, []).append(r)
    for mode, rs in by_mode.items():
        groups = list(dict.fromkeys((r.norm, r.eps) for r in rs if r.eps is not None))
        for norm, eps in groups:
            at = [r for r in rs if r.eps == eps and r.norm == norm]
            where = f"eps={eps:g}" + (f" ({norm})" if norm not in (None, "linf") else "")
            flags += _compare(at, n=n, cascade=cascade, mode=mode, where=where, eps=eps)
        for attack in dict.fromkeys(r.attack for r in rs if r.eps is not None):
            curve = sorted((r.eps, r.accuracy) for r in rs if r.attack == attack and r.eps is not None)
            for (e0, a0), (e1, a1) in zip(curve, curve[1:], strict=False):
                if a1 > a0 + _noise(a0, n):
                    flags.append(_flag("non-monotone-eps", f"{attack}: accuracy rises from eps={e0:g} to eps={e1:g} "
                                       f"({mode})", {"eps": [e0, e1], "accuracy": [a0, a1]}))
        for r in rs:
            # relative: on a robust model a working attack at small eps raises the mean loss only a little
            # (mnist-cnn-adv, PGD at eps 0.05: 0.0161 -> 0.0167), which an absolute margin of 1e-3 called a failure
            if (r.eps and r.access == "white-box" and r.loss_adv is not None and r.loss_clean is not None
                    and r.loss_adv <= r.loss_clean * (1 + _LOSS_RTOL) + 1e-7):
                flags.append(_flag("loss-not-increasing", f"{r.attack} at eps={r.eps:g} did not increase the loss "
                                   f"({mode})", {"loss_clean": r.loss_clean, "loss_adv": r.loss_adv}))
    return flags


def _compare(at: list[Row], *, n: int, cascade: bool, mode: str, where: str, eps: float) -> list[Flag]:
    """The weaker-beats-stronger checks among the rows of one threat model, in execution order."""
    flags: list[Flag] = []
    def single_step_flag(evidence: dict[str, Any]) -> Flag:
        return _flag("single-step-beats-iterative", f"FGSM beats iterative attacks at {where} ({mode})", evidence)
    def blackbox_flag(r: Row, evidence: dict[str, Any]) -> Flag:
        return _flag("blackbox-beats-whitebox", f"{r.attack} ({r.access}) beats the white-box attacks at {where} "
                     f"({mode})", evidence)
    def is_iterative(r: Row) -> bool:
        return _base_name(r.attack) in ("bim", "pgd", "apgd", "fab") and r.access == "white-box"
    def is_single(r: Row) -> bool:
        return _base_name(r.attack) == "fgsm"
    def is_blackbox(r: Row) -> bool:
        return r.access in ("score", "label", "transfer")
    if not cascade:
        single, iterative = [r for r in at if is_single(r)], [r for r in at if is_iterative(r)]
        if single and iterative:
            s, it = min(r.accuracy for r in single), min(r.accuracy for r in iterative)
            if s + _noise(it, n) < it:
                flags.append(single_step_flag({"eps": eps, "fgsm_accuracy": s, "iterative_accuracy": it}))
        white = [r.accuracy for r in at if r.access == "white-box"]
        if white:
            best_white = min(white)
            for r in at:
                if is_blackbox(r) and r.accuracy + _noise(best_white, n) < best_white:
                    flags.append(blackbox_flag(r, {"eps": eps, "attack_accuracy": r.accuracy,
                                                   "white_box_accuracy": best_white}))
        return flags
    for i, r in enumerate(at):
        before = at[:i]
        stronger = [b for b in before if is_iterative(b)] if is_single(r) else (
            [b for b in before if b.access == "white-box"] if is_blackbox(r) else [])
        if not stronger:
            continue
        left = before[-1].accuracy  # the worst-case accuracy the earlier attacks left
        added = r.succeeded / max(n, 1)  # images this weaker attack broke that every earlier one missed
        if added > _noise(left, n):
            evidence = {"eps": eps, "broken_after_stronger_attacks": added, "accuracy_left_by_them": left,
                        "stronger_attacks": [b.attack for b in stronger]}
            flags.append(single_step_flag(evidence) if is_single(r) else blackbox_flag(r, evidence))
    return flags


def check_eot_baseline(model: nn.Module, data: ImageDataset, rows: Sequence[Row], *, device: torch.device | str,
                       draws: int, steps: int = 40, samples: int = 8) -> list[Flag]:
    """On a randomized model, a plain Expectation-over-Transformation PGD loop, written here independently of
    bastion's attacks: ``steps`` signed-gradient steps of the cross-entropy of the softmax averaged over
    ``samples`` draws, through the model as it is, at the largest Linf radius of ``rows`` (step 2.5 eps /
    steps, from the clean image), judged over ``draws`` calls. If every mode's best row at that radius leaves
    accuracy far above what this loop leaves, the evaluation's attacks are weaker than the simplest adaptive
    attack (e.g. stopped early under one random draw)."""
    radii = [r.eps for r in rows if r.eps and r.norm == "linf"]
    if not radii:
        return []
    eps = max(radii)
    x0, y = data.images.to(device), data.labels.to(device)
    alpha = 2.5 * eps / steps
    x = x0.clone()

    def mean_draws_loss(xs: Tensor, rows: slice) -> tuple[Tensor, Tensor]:
        rep = xs.repeat(samples, *([1] * (xs.ndim - 1)))
        out = log_mean_softmax(model(rep).reshape(samples, xs.shape[0], -1))
        return out, F.cross_entropy(out, y[rows], reduction="none")

    with frozen(model):
        for _ in range(steps):
            # chunks of the batch, each evaluated ``samples`` times: bounded memory on large images
            _, _, g = grad_in_chunks(mean_draws_loss, x, per_sample=samples * evaluations_per_input(model))
            if not bool(g.any()):  # no gradient anywhere: no step would move
                break
            x = torch.minimum(torch.maximum(x + alpha * g.sign(), x0 - eps), x0 + eps).clamp(0.0, 1.0)
        _, preds = judge(model, x.detach(), draws=draws)
    baseline = float((preds == y).float().mean())
    best: dict[str, float] = {}
    for r in rows:
        if r.eps == eps and r.norm == "linf":
            best[r.mode] = min(best.get(r.mode, 1.0), r.accuracy)
    strongest = min(best.values())
    margin = max(0.1, 2 * _noise(baseline, len(x0)))
    if strongest <= baseline + margin:
        return []
    return [_flag("weaker-than-eot-baseline",
                  f"The attacks leave {strongest:.0%} at eps={eps:g}; a plain EOT-PGD loop leaves {baseline:.0%}",
                  {"eps": eps, "eot_pgd_accuracy": baseline, "best_accuracy_by_mode": best, "n": len(x0),
                   "steps": steps, "samples": samples, "draws": draws})]


def run_checks(
    model: nn.Module,
    data: ImageDataset,
    rows: Sequence[Row],
    *,
    adaptive: Mapping[str, nn.Module] | bool = False,
    cascade: bool = False,
    n: int | None = None,
    device: torch.device | str = "cpu",
    draws: int = 1,
    randomized: bool = False,
    batch_size: int | None = None,
) -> list[Flag]:
    """All checks; ``data`` is a small batch (e.g. 64 images) for the model-level checks, ``n`` the number of
    evaluated images behind ``rows`` (default: the most any row attacked). ``adaptive``: the evaluation's
    adaptive attack models (``{label: module}``), used by the model-level checks (True: some exist, not given).
    ``randomized``: the model is randomized (its rows judged over ``draws`` calls); the EOT-baseline check then
    runs too. ``batch_size``: images per attack call of the checks (None: all of ``data`` at once); forward and
    backward passes are chunked in any case. Runs with autograd on, also when called under ``torch.no_grad()``
    or ``inference_mode()``."""
    crafting = dict(adaptive) if isinstance(adaptive, Mapping) else {}
    with torch.inference_mode(False), torch.enable_grad():
        if data.images.is_inference():
            data = dataclasses.replace(data, images=data.images.clone(), labels=data.labels.clone())
        flags = check_outputs(model, data, adaptive=bool(adaptive), device=device)
        flags += check_gradients(model, data, device=device, adaptive=bool(adaptive))
        flags += check_unbounded(model, data, device=device, crafting=crafting, draws=draws, batch_size=batch_size)
        if randomized:
            flags += check_eot_baseline(model, data, rows, device=device, draws=max(draws, 2))
    n = n if n is not None else max((r.attacked for r in rows), default=0)
    flags += check_rows(rows, n=n, cascade=cascade)
    return flags


def _base_name(label: str) -> str:
    """The attack's registry name in a row label (``pgd-l2``, ``pgd(steps=2)``, ``fgsm#2`` -> pgd, pgd, fgsm)."""
    return re.split(r"[-(#]", label, maxsplit=1)[0]

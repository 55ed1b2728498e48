"""``bastion demo``: the lecture's story on the embedded held-out data and the shipped models.

It runs small experiments (:mod:`bastion.demo.experiments`), checks each of the lecture's claims against their
numbers (:mod:`bastion.demo.claims`), and writes one self-contained report (:mod:`bastion.demo.report`):
``report.html``, ``results.json`` (every number and every verdict) and ``predictions.png``. Nothing is cached or
typed in: every number comes from this run. A section whose model is not shipped in this version says so.

After each section the demo writes what it has: ``results.json`` marked ``"partial": true``, and
``demo-partial.json`` (the finished sections' numbers, verdicts and rendered HTML), from which ``resume=True``
(``bastion demo --resume``) continues. A resumed demo runs only the sections still missing and gives the numbers
of an uninterrupted one (each section seeds its own randomness); ``demo-partial.json`` is removed when the demo
completes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from bastion import __version__
from bastion._outputs import OutputFolder, finite_json, nonfinite_message
from bastion.defenses import Defended
from bastion.demo import claims as rules
from bastion.demo import experiments as ex
from bastion.demo import report as rep
from bastion.demo.claims import Claim
from bastion.errors import ConfigError
from bastion.models import pretrained
from bastion.progress import Progress, no_progress
from bastion.viz.html import HtmlReport, paragraph, verdict

log = logging.getLogger(__name__)

#: what a section of the demo gives: its numbers for results.json, its title and HTML parts, the claims it checked
SectionResult = tuple[dict[str, Any], tuple[str, list[str]], list[Claim]]

heldout = ex.heldout
#: what an interrupted demo leaves for ``resume`` (removed when the demo completes)
PARTIAL = "demo-partial.json"
#: the files the demo writes
DEMO_OUTPUTS = ("report.html", "results.json", "predictions.png", PARTIAL)
#: the sections' relative costs (seconds on an idle 2-core machine, measured by benchmarks/demo_time.py), for the
#: estimate of the time left before a section has run
SECTION_WEIGHTS = {"standard model": 1, "gradient attacks": 12, "JSMA vs FGSM": 4, "adversarial training": 25,
                   "weight decay and dropout": 6, "BaRT": 30, "hide the probabilities": 25,
                   "class activation maps": 2, "linear models": 4}


def run_demo(
    out: str | os.PathLike[str], *, n: int = 200, seed: int = 0, device: str = "cpu",
    progress: Progress = no_progress, command: str | None = None, overwrite: bool = False, resume: bool = False,
) -> dict[str, Any]:
    """Run the demo on ``n`` held-out images and write ``out/report.html``, ``out/results.json`` and
    ``out/predictions.png``. ``resume``: finish a demo an interruption stopped in ``out`` (the same ``n``, ``seed``
    and ``device``), running only its missing sections; without a partial demo in ``out``, run from the start.

    Raises:
        OutputError: before any work, when ``out`` holds these files from an earlier run (pass
            ``overwrite=True`` to replace them) or cannot hold them.
        ConfigError: ``resume`` on a partial demo run with another ``n``, ``seed``, ``device`` or bastion version.
    """
    t_start = time.perf_counter()
    folder = OutputFolder(out, DEMO_OUTPUTS, overwrite=overwrite or resume).check()
    setting = demo_setting(n=n, seed=seed, device=device)
    earlier = partial_demo(out, setting) if resume else None
    lab = ex.Lab(data=heldout(n), device=device, seed=seed, progress=no_progress)
    standard = pretrained("mnist-cnn", device=device)
    classes = ex.classes_of(standard)
    x, y = lab.x, lab.y
    results: dict[str, Any] = {"bastion_version": __version__, "torch_version": torch.__version__, "n": n,
                               "seed": seed, "command": command, "threads": torch.get_num_threads(),
                               "sections": {}, "claims": [], "seconds_per_section": {}}
    page = HtmlReport("bastion demo: adversarial examples end to end",
                      f"{n} held-out MNIST images (mnist-5k, never seen by the shipped models), {device}, seed {seed}")
    sections: list[tuple[str, list[str]]] = []
    claims: list[Claim] = []
    grid_png = b""
    std_pgd: list[float] = []

    def not_shipped(title: str, model: str) -> SectionResult:
        return {"available": False}, (title, [verdict(f"{model} is not shipped in this version.", "info")]), []

    def s_standard() -> SectionResult:
        nonlocal grid_png
        s = ex.standard(lab, standard)
        title, parts, grid_png = rep.standard(s, x, y, classes)
        return {"model": "mnist-cnn", "accuracy_mnist5k_all": s.accuracy_all,
                "test_accuracy_recorded": s.recorded_test_accuracy}, (title, parts), []

    def s_gradient() -> SectionResult:
        g = ex.gradient_attacks(lab, standard)
        std_pgd.append(ex.row(g.report, "pgd", 0.3))
        return {"clean_accuracy": g.report.clean_accuracy, "rows": [r.__dict__ for r in g.report.rows],
                "flags": [f.code for f in g.report.flags]}, rep.gradient(g, x, y, classes), []

    def s_sparse() -> SectionResult:
        s = ex.jsma_vs_fgsm(lab, standard)
        by = {r["attack"]: r for r in s.rows}
        f, j = by["fgsm"], by["jsma"]
        v, why = rules.jsma_vs_fgsm(fgsm_seconds=f["seconds_per_image"], jsma_seconds=j["seconds_per_image"],
                                    fgsm_l0=f["l0"], jsma_l0=j["l0"], fgsm_l2=f["l2"], jsma_l2=j["l2"],
                                    fgsm_linf=f["linf"], jsma_linf=j["linf"])
        c = Claim("jsma_vs_fgsm", "FGSM is faster; JSMA perturbs fewer pixels and stays closer to the original",
                  f"mnist-cnn, {s.n} held-out images, untargeted FGSM eps 0.3 and JSMA (gamma 0.145)",
                  {"FGSM ms/image": 1000 * f["seconds_per_image"], "JSMA ms/image": 1000 * j["seconds_per_image"],
                   "FGSM L0": f["l0"], "JSMA L0": j["l0"], "FGSM L2": f["l2"], "JSMA L2": j["l2"],
                   "FGSM Linf": f["linf"], "JSMA Linf": j["linf"]}, v, why)
        return {"n": s.n, "rows": s.rows}, rep.sparse(s, c, x, y, classes), [c]

    def s_trained() -> SectionResult:
        models = ex.adversarial_training(lab, standard)
        cs = []
        for t in models:
            v, why = rules.only_against_original_examples(transferred=t.transferred, white_box=t.white_box,
                                                          clean=t.clean)
            recipe = (t.training or {}).get("recipe", "?")
            cs.append(Claim(f"adversarial_training_{t.name}",
                            "adversarial training only helps against adversarial examples crafted on the original model",
                            f"{t.name} ({recipe} training), {t.report.data['n']} held-out images, PGD-40 at eps 0.3",
                            {"clean": t.clean, "PGD from mnist-cnn": t.transferred, "PGD on itself": t.white_box,
                             "FGSM on itself": t.white_box_fgsm}, v, why))
        kept = ("clean", "white_box", "white_box_fgsm", "transferred", "transferred_fgsm")
        numbers = {t.name: {k: getattr(t, k) for k in kept} | {"rows": [r.__dict__ for r in t.report.rows],
                                                               "flags": [f.code for f in t.report.flags]}
                   for t in models} | {"available": [t.name for t in models]}
        return numbers, rep.trained(models, cs, std_pgd[0] if std_pgd else None), cs

    def s_regularized() -> SectionResult:
        models = {m.name: m for m in ex.regularization(lab)}
        cs = []
        for base, reg, label, setting in (
                ("mnist-cnn-sgd", "mnist-cnn-sgd-wd", "weight decay", "SGD + momentum, weight decay 5e-4 vs none"),
                ("mnist-cnn", "mnist-cnn-dropout", "dropout", "Adam, dropout 0.5 vs none")):
            if base in models and reg in models:
                b, r = models[base], models[reg]
                v, why = rules.regularizer_does_not_help(base=b.pgd, regularized=r.pgd)
                cs.append(Claim(f"{label.replace(' ', '_')}_does_not_help", f"{label} does not help against "
                                "adversarial examples", f"mnist-cnn, {setting}, PGD-20 at eps 0.1, held-out images",
                                {"PGD without": b.pgd, "PGD with": r.pgd, "FGSM 0.3 without": b.fgsm,
                                 "FGSM 0.3 with": r.fgsm, "weight norm without": b.weight_norm,
                                 "weight norm with": r.weight_norm}, v, why))
        numbers = {name: dataclasses.asdict(m) for name, m in models.items()}
        return numbers, rep.regularized(list(models.values()), cs), cs

    def s_bart() -> SectionResult:
        model = ex.optional_model("mnist-cnn-bart", device)
        if not isinstance(model, Defended):
            return not_shipped("6. BaRT", "mnist-cnn-bart")
        b = ex.bart(lab, model)
        ci = rules.wilson(b.adaptive_pgd, b.n * b.draws)
        v, why = rules.randomness_stops_attacks(naive=b.naive_pgd, adaptive=b.adaptive_pgd, clean=b.clean, adaptive_ci=ci)
        c = Claim("bart_stops_attacks", "a barrage of random transforms stops PGD and FGSM",
                  f"mnist-cnn-bart (k={b.k}), {b.n} held-out images x {b.draws} draws, eps 0.3",
                  {"clean": b.clean, "naive FGSM": b.naive_fgsm, "naive PGD": b.naive_pgd,
                   "EOT+BPDA PGD": b.adaptive_pgd}, v, why)
        return ({k: v for k, v in dataclasses.asdict(b).items() if k != "views"} | {"adaptive_ci95": list(ci)},
                rep.barrage(b, c), [c])

    def s_masked() -> SectionResult:
        m = ex.hide_probabilities(lab, standard)
        v, why = rules.masking_is_not_a_defense(naive=m.naive_pgd, substitute=m.substitute_pgd)
        c = Claim("hiding_probabilities", "hiding the probabilities (returning only the label) does not protect the "
                  "model: it only hides the gradient", f"HideProbabilities(mnist-cnn), {m.n} held-out images, eps 0.3, "
                  f"a substitute trained from {m.queries:,} label queries",
                  {"clean": m.clean, "naive PGD": m.naive_pgd, "substitute FGSM": m.substitute_fgsm,
                   "substitute PGD": m.substitute_pgd}, v, why)
        numbers = {k: v for k, v in dataclasses.asdict(m).items() if not k.startswith("slice_")}
        return numbers, rep.masked(m, c), [c]

    def s_cams() -> SectionResult:
        model = ex.optional_model("mnist-cnn-gap", device)
        if model is None:
            return not_shipped("8. Class activation maps", "mnist-cnn-gap")
        c = ex.cams(lab, model)
        numbers = {"model": "mnist-cnn-gap", "n": int(c.x.shape[0]), "success_rate": c.success_rate}
        return numbers, rep.cam_section(c), []

    def s_linear() -> SectionResult:
        lin = ex.linear_models(lab)
        v, why = rules.linear_table(measured=lin.logreg_error, quoted=ex.LECTURE_LOGREG_ERROR)
        c = Claim("logreg_table", "logistic regression under FGSM: error 2.9% at eps 0, 7.6% at 0.2, 22.6% at 0.5",
                  "the shipped softmax regression (logreg) on the 5,000 held-out mnist-5k images",
                  {f"error at {e:g}": lin.logreg_error[e] for e in sorted(ex.LECTURE_LOGREG_ERROR)
                   if e in lin.logreg_error}, v, why)
        return {"logreg_error": {str(k): v for k, v in lin.logreg_error.items()},
                "toy_error": {str(k): v for k, v in lin.toy_error.items()}}, rep.linear(lin, c), [c]

    plan: list[tuple[str, str, Callable[[], SectionResult]]] = [
        ("standard model", "standard_model", s_standard),
        ("gradient attacks", "gradient_attacks", s_gradient),
        ("JSMA vs FGSM", "jsma_vs_fgsm", s_sparse),
        ("adversarial training", "adversarial_training", s_trained),
        ("weight decay and dropout", "regularization", s_regularized),
        ("BaRT", "bart", s_bart),
        ("hide the probabilities", "hide_probabilities", s_masked),
        ("class activation maps", "class_activation_maps", s_cams),
        ("linear models", "linear_models", s_linear),
    ]
    earlier_seconds = 0.0
    if earlier is not None:  # the sections an interrupted run finished, as it left them
        results["sections"], results["seconds_per_section"] = earlier["sections"], earlier["seconds_per_section"]
        results["resumed_sections"] = list(earlier["sections"])
        earlier_seconds = sum(earlier["seconds_per_section"].values())
        sections.extend((title, parts) for title, parts in earlier["html"])
        claims.extend(Claim(**c) for c in earlier["claims"])
        std_pgd.extend(earlier["std_pgd"])
        grid_png = base64.b64decode(earlier["predictions_png"])
    total = sum(SECTION_WEIGHTS[name] for name, _, _ in plan)
    done = sum(SECTION_WEIGHTS[name] for name, key, _ in plan if key in results["sections"])
    progress("demo", done, total)
    for name, key, fn in plan:
        if key in results["sections"]:
            continue
        t0 = time.perf_counter()
        results["sections"][key], section, checked = fn()
        sections.append(section)
        claims.extend(checked)
        results["seconds_per_section"][name] = time.perf_counter() - t0
        done += SECTION_WEIGHTS[name]
        log.info("section %s: %.1fs", name, time.perf_counter() - t0)
        results["claims"] = [dataclasses.asdict(c) for c in claims]
        if done < total:  # what is finished survives an interruption
            folder.write_json("results.json", results | {"partial": True})
            folder.write_text(PARTIAL, finite_json(setting | {
                "sections": results["sections"], "seconds_per_section": results["seconds_per_section"],
                "claims": results["claims"], "html": sections, "std_pgd": std_pgd,
                "predictions_png": base64.b64encode(grid_png).decode()}, indent=None)[0])
        progress("demo", done, total)
    seconds = time.perf_counter() - t_start + earlier_seconds  # a resumed demo counts its earlier sections' time
    results["seconds"] = seconds
    page.section("What the lecture claims, and what this run measured", rep.claims_table(claims),
                 paragraph("Each verdict is computed from the numbers in its row by a rule written in "
                           "bastion.demo.claims; the sections below show how each number was measured.", "note"))
    for title, parts in sections:
        page.section(title, *parts)
    resumed = (f" (resumed after an interruption: {len(results['resumed_sections'])} sections came from the earlier "
               "run)") if earlier is not None else ""
    page.add(paragraph(f"Total time {seconds:.0f} s on {torch.get_num_threads()} thread(s){resumed}.", "note"))
    html = page.render(command=command, versions={"bastion": __version__, "torch": torch.__version__})
    where = folder.write_json("results.json", results)
    if where:
        log.warning("%s", nonfinite_message(str(folder.path("results.json")), where))
    folder.write_text("report.html", html)
    folder.write_bytes("predictions.png", grid_png)
    folder.path(PARTIAL).unlink(missing_ok=True)
    return {"report": str(folder.path("report.html")), "results": str(folder.path("results.json")),
            "seconds": seconds}


def demo_setting(*, n: int, seed: int, device: str) -> dict[str, Any]:
    """What a partial demo must share with the run that finishes it."""
    return {"bastion_version": __version__, "n": n, "seed": seed, "device": device}


def partial_demo(out: str | os.PathLike[str], setting: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What an interrupted demo left in ``out`` (its finished sections under ``"sections"``), or None when
    there is none. With ``setting``, refuse one run with other options.

    Raises:
        ConfigError: the file is not a partial demo, or was run with other options than ``setting``.
    """
    path = OutputFolder(out, DEMO_OUTPUTS).path(PARTIAL)
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        keys = {"sections", "seconds_per_section", "claims", "html", "std_pgd", "predictions_png"}
        if not isinstance(state, dict) or not keys <= state.keys():
            raise ValueError("fields are missing")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be resumed: it is not a partial bastion demo ({e}); pass --overwrite "
                          "to start over") from None
    other = {k: (state.get(k), v) for k, v in (setting or {}).items() if state.get(k) != v}
    if other:
        said = ", ".join(f"{k} {was!r} (now {now!r})" for k, (was, now) in other.items())
        raise ConfigError(f"the partial demo in {out} was run with {said}: run it with the same options to finish "
                          "it, or pass --overwrite to start over")
    return state


__all__ = ["run_demo", "demo_setting", "partial_demo", "heldout", "DEMO_OUTPUTS"]

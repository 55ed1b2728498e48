"""A self-contained HTML report: one file, images embedded as data URIs, inline CSS, no network access,
readable on a phone."""

from __future__ import annotations

import base64
import html
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from bastion.eval.report import Flag, RobustnessReport
from bastion.viz.figures import accuracy_curves, png_bytes

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:0 1rem 3rem;color:#1d2330;
background:#fafbfc;line-height:1.45}
main{max-width:60rem;margin:auto}
h1{font-size:1.6rem;margin:1.2rem 0 .2rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #dde}
h3{font-size:1.05rem}
.sub{color:#556;margin-top:0}
img{max-width:100%;height:auto;background:#fff;border:1px solid #e4e6eb;border-radius:4px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0;background:#fff}
th,td{border:1px solid #dfe2e8;padding:.25rem .5rem;text-align:right}th{background:#f0f2f6}
td:first-child,th:first-child{text-align:left}
.verdict{padding:.8rem 1rem;border-radius:6px;margin:1rem 0;font-weight:500}
.good{background:#e3f6e8;border:1px solid #9bd3ad}.bad{background:#fde7e7;border:1px solid #eaa}
.warn{background:#fff4d6;border:1px solid #e8cf7d}.info{background:#e7eefc;border:1px solid #a9bde8}
.flag{border-left:4px solid #c33;background:#fff;padding:.5rem .8rem;margin:.5rem 0}
.flag.warning{border-color:#d9a300}
code,pre{background:#f0f2f6;border-radius:3px;padding:.1rem .3rem;font-size:.85rem}
pre{padding:.6rem;overflow-x:auto;white-space:pre-wrap}
.note{color:#556;font-size:.9rem}
"""


def esc(x: Any) -> str:
    return html.escape(str(x))


def img(fig: Figure | bytes, alt: str) -> str:
    data = fig if isinstance(fig, bytes) else png_bytes(fig)
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def fmt(v: Any, digits: int = 3) -> str:
    return num(v, digits) if v is None or isinstance(v, float) else esc(v)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def paragraph(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def verdict(text: str, level: str = "info") -> str:
    return f'<div class="verdict {esc(level)}">{esc(text)}</div>'


def flags_html(flags: Sequence[Flag]) -> str:
    if not flags:
        return paragraph("No sanity-check flags: no sign of gradient masking or a broken evaluation was found "
                         "(which is not proof of robustness).", "note")
    return "".join(f'<div class="flag {esc(f.severity)}"><b>{esc(f.title)}</b> <code>{esc(f.code)}</code><br>'
                   f"{esc(f.meaning)}<br><i>What to do:</i> {esc(f.advice)}</div>" for f in flags)


def pct(v: float | None, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage ("97.5%"), "–" when there is none."""
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def num(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


#: what the less obvious columns of :func:`rows_table` mean, shown under it
ROWS_NOTE = ("accuracy: share of all evaluated images still classified correctly (the worst case over the cascade's "
             "attacks so far); success: share of the attacked images broken; L0: pixels changed, L2 and Linf: size "
             "of the perturbation, means over the broken images; queries: model calls the attack itself made per "
             "attacked image (PGD-40 run to the end: 41, its 40 gradient steps and one forward pass; less on average "
             "where early stopping ended the run of an image already broken); bastion's own evaluations of the clean "
             "input and of the result are not counted.")


def rows_table(report: RobustnessReport, *, mode: str | None = None) -> str:
    rows = [r for r in report.rows if mode is None or r.mode == mode]
    return table(
        ["attack", "mode", "norm", "eps", "accuracy", "success", "L0 mean", "L2 mean", "Linf mean", "seconds",
         "queries"],
        [(r.attack, r.mode, r.norm, num(r.eps, 3), pct(r.accuracy), pct(r.success_rate), num(r.l0_mean, 1),
          num(r.l2_mean, 3), num(r.linf_mean, 3), num(r.seconds, 1), num(r.queries_mean, 1)) for r in rows],
    ) + paragraph(ROWS_NOTE, "note")


@dataclass
class HtmlReport:
    """Collects sections and renders one self-contained page."""

    title: str
    subtitle: str = ""
    blocks: list[str] = field(default_factory=list)

    def add(self, *parts: str) -> HtmlReport:
        self.blocks.extend(parts)
        return self

    def section(self, title: str, *parts: str) -> HtmlReport:
        return self.add(f"<h2>{esc(title)}</h2>", *parts)

    def render(self, *, command: str | None = None, versions: dict[str, str] | None = None) -> str:
        prov = ""
        if command or versions:
            v = ", ".join(f"{k} {val}" for k, val in (versions or {}).items())
            prov = ("<h2>Provenance</h2>" + (f"<p>Command: <code>{esc(command)}</code></p>" if command else "")
                    + (f'<p class="note">{esc(v)}; Python {esc(platform.python_version())} on {esc(platform.machine())}</p>'))
        return (
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{esc(self.title)}</h1><p class=\"sub\">{esc(self.subtitle)}</p>"
            + "".join(self.blocks) + prov + "</main></body></html>"
        )


def model_label(description: dict) -> str:
    """``"mnist-cnn"``, or with a defense ``"mnist-cnn with BaRT (k=2)"``, from a model description
    (:func:`bastion._model.describe_model`): the defense belongs in the title of what was evaluated."""
    base = str(description.get("arch", description.get("class", "model")))
    defense = description.get("defense")
    if not isinstance(defense, dict):
        return base
    name = str(defense.get("defense", "a defense"))
    if "k" in defense:
        name += f" (k={defense['k']})"
    return f"{base} with {name}"


def evaluation_html(report: RobustnessReport, *, title: str = "bastion robustness report",
                    extra: Sequence[str] = ()) -> str:
    """The report page of ``bastion evaluate``: verdict, curves, tables, flags, provenance."""
    page = HtmlReport(title, f"{model_label(report.model)} on {report.data['name']} "
                             f"({report.data['split']}, n={report.data['n']})")
    page.add(*headline_html(report), summary_verdict(report))
    page.section("Accuracy against epsilon", img(accuracy_curves(report), "accuracy vs eps"))
    page.section("Results", rows_table(report),
                 table(["mode", "norm", "eps", "worst-case accuracy"],
                       [(w["mode"], w.get("norm"), num(w["eps"], 3), pct(w["accuracy"])) for w in report.worst_case]))
    page.add(*extra)
    page.section("Sanity checks", flags_html(report.flags))
    return page.render(command=report.command, versions={"bastion": report.bastion_version, "torch": report.torch_version})


def headline_html(report: RobustnessReport) -> list[str]:
    """A preset's number first (AutoAttack's robust accuracy per radius), with how many images each attack of
    the cascade broke first; nothing for an evaluation without a preset."""
    if not report.headline:
        return []
    parts = []
    for h in report.headline:
        where = f"eps={h['eps']:g}" + (f" ({h['norm']})" if h.get("norm") not in (None, "linf") else "")
        parts.append(verdict(f"{h['name']}: robust accuracy {h['accuracy']:.1%} at {where} "
                             f"(clean {h['clean_accuracy']:.1%})", "good" if h["accuracy"] > 0.5 else "warn"))
        parts.append(table(["attack (in cascade order)", "images it broke first"],
                           [(a, h["broken_by"].get(a, 0)) for a in h["attacks"]]))
    parts.append(paragraph(
        "The headline is the worst case per image over every attack below: each attack runs only on the images "
        "still standing, and an image counts as broken by the first attack that fooled the model (the per-image "
        "record is in results.json, per_image.broken_by). The rows further down show each attack on its own turn "
        "of the cascade.", "note"))
    return parts


def summary_verdict(report: RobustnessReport) -> str:
    # the first threat model with a radius (the suite's first norm): eps values of different norms do not compare
    norm = next(iter(report.norms()), None)
    worst = [w for w in report.worst_case if w["eps"] is not None and w.get("norm") == norm]
    errors = [f for f in report.flags if f.severity == "error"]
    if not worst:
        return verdict(f"Clean accuracy {report.clean_accuracy:.1%}.", "info")
    top = max(worst, key=lambda w: (w["eps"], w["mode"] != "naive"))
    modes = {w["mode"] for w in worst if w["eps"] == top["eps"]}
    lowest = min(w["accuracy"] for w in worst if w["eps"] == top["eps"])
    where = f"{norm} eps" if norm and len(report.norms()) > 1 else "eps"
    text = (f"Clean accuracy {report.clean_accuracy:.1%}; worst-case accuracy at {where}={top['eps']:g} "
            f"over {len(modes)} attack mode(s): {lowest:.1%}.")
    if errors:
        return verdict(text + f" {len(errors)} sanity check(s) failed: these numbers likely overstate robustness.", "bad")
    return verdict(text, "good" if lowest > 0.5 else "warn")

"""The demo's report: HTML for each experiment's results and the table of the lecture's claims.

Only presentation: the numbers come from :mod:`bastion.demo.experiments`, the verdicts from
:mod:`bastion.demo.claims`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from bastion.attacks import AttackResult
from bastion.demo.claims import Claim, wilson
from bastion.demo.experiments import (
    LECTURE_LOGREG_ERROR,
    Barrage,
    Cams,
    GradientAttacks,
    Linear,
    Masked,
    Regularized,
    Sparse,
    Standard,
    Trained,
)
from bastion.viz.figures import (
    accuracy_curves,
    cam_panel,
    image_row,
    loss_slice,
    png_bytes,
    prediction_grid,
    toy_boundary,
    triptych,
)
from bastion.viz.html import esc, flags_html, img, paragraph, pct, rows_table, table, verdict

_LEVEL = {"holds": "good", "does not hold": "bad", "depends": "warn"}


def claims_table(claims: Sequence[Claim]) -> str:
    """One row per claim: what the lecture says, where it was measured, the numbers, and the verdict."""
    rows = []
    for c in claims:
        nums = "; ".join(f"{k} {pct(v) if 0 <= v <= 1 else f'{v:.3g}'}" for k, v in c.numbers.items())
        rows.append(f"<tr><td>{esc(c.claim)}</td><td>{esc(c.setting)}</td><td>{esc(nums)}</td>"
                    f"<td class='{_LEVEL[c.verdict]}'><b>{esc(c.verdict)}</b>: {esc(c.why)}</td></tr>")
    return ("<div class='scroll'><table><tr><th>the lecture says</th><th>setting</th><th>measured</th>"
            "<th>verdict</th></tr>" + "".join(rows) + "</table></div>")


def claim_verdict(c: Claim) -> str:
    return verdict(f"The lecture says: \u201c{c.claim}\u201d \u2014 {c.verdict}: {c.why}.", _LEVEL[c.verdict])


def _naive_flags(flags: list[str]) -> str:
    return paragraph("Sanity checks on the naive evaluation: " + (", ".join(flags) or "none") + ".", "note")


def _first_image(examples: dict[str, AttackResult], names: list[str], x: torch.Tensor, y: torch.Tensor,
                 classes: Sequence[str]) -> Figure:
    """A triptych of the first image under each attack of ``names``."""
    return triptych(torch.cat([x[:1]] * len(names)).cpu(), torch.cat([examples[a].x_adv[:1] for a in names]).cpu(),
                    torch.cat([examples[a].logits_clean[:1] for a in names]).cpu(),
                    torch.cat([examples[a].logits_adv[:1] for a in names]).cpu(), classes,
                    y=torch.cat([y[:1]] * len(names)).cpu(), titles=[a.upper() for a in names])


def standard(s: Standard, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str]) -> tuple[str, list[str], bytes]:
    grid = png_bytes(prediction_grid(x[:24].cpu(), y[:24].cpu(), s.logits.cpu(), classes))
    return ("1. A standard classifier", [
        paragraph(f"The shipped mnist-cnn classifies {s.accuracy_all:.2%} of the 5,000 held-out mnist-5k images "
                  f"correctly (its recorded MNIST test accuracy: {s.recorded_test_accuracy})."),
        img(grid, "predictions")], grid)


def gradient(g: GradientAttacks, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str]) -> tuple[str, list[str]]:
    rep = g.report
    fig = _first_image(g.examples, [n for n in ("fgsm", "bim", "pgd") if n in g.examples], x, y, classes)
    pgd03 = next(r for r in rep.rows if r.attack == "pgd" and r.eps == 0.3)
    return ("2. Breaking it with gradient attacks", [
        verdict(f"PGD-40 at eps=0.3 leaves {pgd03.accuracy:.1%} accuracy (clean {rep.clean_accuracy:.1%}).",
                "bad" if pgd03.accuracy < 0.1 else "warn"),
        img(accuracy_curves(rep, title="mnist-cnn: accuracy vs eps"), "accuracy curves"),
        rows_table(rep),
        "<h3>Original | perturbation (magnified) | adversarial, eps=0.3</h3>",
        img(fig, "triptych"),
        "<h3>Sanity checks</h3>", flags_html(rep.flags)])


def sparse(s: Sparse, claim: Claim, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str]) -> tuple[str, list[str]]:
    fig = _first_image(s.examples, [r["attack"] for r in s.rows], x, y, classes)
    rows = [(r["attack"], pct(r["success_rate"]), f"{r['seconds_per_image'] * 1000:.1f}", f"{r['l0']:.1f}",
             f"{r['l2']:.2f}", f"{r['linf']:.2f}") for r in s.rows]
    return ("3. JSMA against FGSM: fast and dense, or slow and sparse?", [
        paragraph(f"Measured on {s.n} held-out images (untargeted)."),
        table(["attack", "success", "ms / image", "L0 (pixels changed)", "L2", "Linf"], rows),
        claim_verdict(claim), img(fig, "same digit, each attack")])


def trained(models: Sequence[Trained], claims: Sequence[Claim], standard_pgd: float | None) -> tuple[str, list[str]]:
    if not models:
        return ("4. Adversarial training", [verdict("No adversarially trained model is shipped in this version.",
                                                     "info")])
    parts = [paragraph(
        "Two ways of training on adversarial examples: PGD examples from a random start (Madry et al. 2018, "
        "mnist-cnn-adv) and one FGSM step from the clean image with the true label (Goodfellow et al. 2015, "
        "mnist-cnn-fgsm). Each is attacked white-box (FGSM and PGD-40 on itself) and with examples crafted on the "
        f"standard mnist-cnn (all 40 PGD steps), on {models[0].report.data['n']} held-out images; the standard model "
        f"itself keeps {pct(standard_pgd)} under PGD-40 at 0.3.")]
    rows = [(t.name, pct(t.clean), pct(t.white_box_fgsm), pct(t.white_box), pct(t.transferred_fgsm),
             pct(t.transferred)) for t in models]
    parts.append(table(["model", "clean", "FGSM on itself", "PGD-40 on itself", "FGSM from mnist-cnn",
                        "PGD-40 from mnist-cnn"], rows))
    for t, c in zip(models, claims, strict=True):
        parts += [f"<h3>{esc(t.name)}</h3>", claim_verdict(c),
                  img(accuracy_curves(t.report, title=f"{t.name}: accuracy vs eps"), f"{t.name} curves"),
                  "<h3>Sanity checks</h3>", flags_html(t.report.flags)]
    return ("4. Adversarial training", parts)


def regularized(models: Sequence[Regularized], claims: Sequence[Claim]) -> tuple[str, list[str]]:
    if not claims:
        return ("5. Weight decay and dropout", [verdict("The regularized models are not shipped in this version.",
                                                         "info")])
    rows = [(m.name, pct(m.clean), pct(m.fgsm), pct(m.pgd), f"{m.weight_norm:.1f}") for m in models]
    return ("5. Weight decay and dropout", [
        paragraph("mnist-cnn trained with and without each regularizer, everything else equal: weight decay 5e-4 "
                  "with SGD and momentum 0.9 (where it does shrink the weights: see their norm), and dropout 0.5 "
                  "with Adam (the shipped mnist-cnn's recipe). The training commands are in `bastion models`."),
        table(["model", "clean", "FGSM 0.3", "PGD-20 0.1", "weight norm"], rows),
        *[claim_verdict(c) for c in claims]])


def barrage(b: Barrage, claim: Claim) -> tuple[str, list[str]]:
    lo, hi = wilson(b.adaptive_pgd, b.n * b.draws)
    return ("6. BaRT under naive and adaptive attacks", [
        paragraph(f"mnist-cnn-bart puts a random barrage of {b.k} transforms in front of the classifier. Every "
                  f"accuracy is the share of {b.draws} draws of the barrage that classify the image correctly, on "
                  f"{b.n} held-out images (fewer than elsewhere: the adaptive attack runs the barrage "
                  f"{b.eot_samples} times a step). No attack stops early on a randomized model."),
        table(["attack (eps=0.3)", "accuracy"], [
            ("none (clean, through the barrage)", pct(b.clean)),
            ("FGSM, naive", pct(b.naive_fgsm)),
            (f"PGD-{b.steps}, naive (gradients of the barrage as it is)", pct(b.naive_pgd)),
            (f"PGD-{b.steps} through eot(bpda(model), n={b.eot_samples})",
             f"{pct(b.adaptive_pgd)} (95% interval {pct(lo)}-{pct(hi)})")]),
        claim_verdict(claim),
        _naive_flags(b.flags),
        paragraph("What the barrage does: one held-out image through six draws, each naming the transforms it "
                  "applied, in order."),
        img(image_row(b.views, [" > ".join(g) for g in b.view_groups]), "barrage draws")])


def masked(m: Masked, claim: Claim) -> tuple[str, list[str]]:
    fig = loss_slice(m.slice_t, {"the defended model (labels only)": m.slice_defended,
                                 "the attacker's substitute": m.slice_substitute},
                     title="loss along one image's substitute-gradient direction")
    return ("7. Hiding the probabilities is not a defense", [
        paragraph("HideProbabilities returns only the top class (one-hot scores). Gradients vanish, so naive PGD "
                  "appears to fail; the decision boundary has not moved. The attacker here sees labels only: it "
                  f"trains its own substitute from {m.queries:,} label queries (Papernot et al. 2017: a seed of "
                  "150 images it owns, Jacobian-based augmentation), then transfers examples crafted on it. The "
                  f"substitute agrees with the defended model on {m.substitute_agreement:.0%} of the held-out images."),
        table(["attack (eps=0.3)", "accuracy"], [("none (clean)", pct(m.clean)),
                                                 ("PGD-40, naive (gradients of the one-hot output: zero)", pct(m.naive_pgd)),
                                                 ("FGSM crafted on the substitute", pct(m.substitute_fgsm)),
                                                 ("PGD-40 crafted on the substitute", pct(m.substitute_pgd))]),
        claim_verdict(claim),
        img(fig, "loss slices"),
        paragraph("The defended model's loss is flat (no gradient) with a jump where its label changes; the "
                  "substitute's is smooth, and its slope points to the same jump.", "note"),
        _naive_flags(m.flags)])


def cam_section(c: Cams) -> tuple[str, list[str]]:
    return ("8. Where the model looks: CAM on clean and adversarial inputs", [
        paragraph("CAM (sum_k w_k A_k) of mnist-cnn-gap for the true class on the clean image, and for the true and "
                  "the adversarial class on the PGD image (eps=0.3). The perturbation moves the evidence."),
        img(cam_panel(c.x, c.x_adv, c.maps, row_titles=c.titles), "cam panels")])


def linear(lin: Linear, claim: Claim) -> tuple[str, list[str]]:
    eps = sorted(set(lin.logreg_error) | set(LECTURE_LOGREG_ERROR))
    rows = [(f"{e:g}", pct(LECTURE_LOGREG_ERROR.get(e)), pct(lin.logreg_error.get(e)), pct(lin.toy_error.get(e)))
            for e in eps]
    return ("9. Linear models: the lecture's table and the toy picture", [
        table(["eps", "the lecture's table (error)", "softmax regression on MNIST (logreg, 5,000 held-out)",
               "2-D toy (two clusters)"], rows),
        claim_verdict(claim),
        paragraph("Why MNIST differs: under FGSM a linear model's logit gap between classes i and j moves by "
                  "eps * ||w_i - w_j||_1, summed over all 784 pixels. For the shipped model that sum is about 400 in "
                  "pixel units, so eps 0.05 already moves the gap by about 20, four times the median clean margin. "
                  "The 2-D toy has two features, so the same eps moves its logits far less: its errors grow slowly, "
                  "as in the lecture's table."),
        img(toy_boundary(lin.toy_model, lin.toy_points, lin.toy_labels, lin.toy_adversarial), "toy boundary")])

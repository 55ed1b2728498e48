"""The demo's experiments: small functions that measure and return plain results (no HTML, no verdicts).

Every number the demo shows comes from one of these, run on held-out images (mnist-5k, never seen by the shipped
models). The sizes (images, steps, draws) are chosen to fit the demo's time budget on a 2-core CPU; where an
experiment uses fewer images than the rest, its result says how many, and the report shows an interval.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion._model import judge
from bastion._wrap import innermost
from bastion.attacks import BIM, FGSM, JSMA, PGD, Attack, AttackResult, bpda, eot
from bastion.data import load_dataset
from bastion.data.base import ImageDataset
from bastion.defenses import Defended, HideProbabilities
from bastion.errors import WeightsError
from bastion.eval import Evaluation, RobustnessReport
from bastion.models import Classifier, create_model, pretrained
from bastion.progress import Progress, no_progress
from bastion.training import SubstituteTraining, TrainConfig, accuracy, fit, pick_seed_set

#: the radii of the accuracy-vs-eps curves (Linf, pixels in [0, 1])
EPS_GRID = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
#: the lecture's table for logistic regression under FGSM: eps -> error
LECTURE_LOGREG_ERROR = {0.0: 0.029, 0.2: 0.076, 0.5: 0.226}


def heldout(n: int) -> ImageDataset:
    """``n`` images of mnist-5k (held out from every shipped model's training data), evenly spaced over the
    label-sorted file and in an order where every prefix holds every digit (:meth:`ImageDataset.spread`)."""
    return load_dataset("mnist-5k", "all").spread(n)


def training_of(model: nn.Module) -> dict[str, Any]:
    """What the weights file of a shipped model records of its training (the classifier inside a defense)."""
    inner = innermost(model)
    return dict(inner.meta.training) if isinstance(inner, Classifier) else {}


def classes_of(model: nn.Module) -> tuple[str, ...]:
    inner = innermost(model)
    return inner.classes if isinstance(inner, Classifier) else tuple(str(i) for i in range(10))


def optional_model(name: str, device: str) -> nn.Module | None:
    """A shipped model, or None when this version does not ship it."""
    try:
        return pretrained(name, device=device)
    except WeightsError:
        return None


def _shipped(names: tuple[str, ...], device: str) -> Iterator[tuple[str, nn.Module]]:
    """The models of ``names`` this version ships, with their names."""
    for name in names:
        m = optional_model(name, device)
        if m is not None:
            yield name, m


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _flags(lab: Lab, model: nn.Module) -> list[str]:
    """The sanity-check flags of ``model`` on (up to) 64 of the images, without the adaptive checks."""
    from bastion.eval.checks import check_outputs

    return [f.code for f in check_outputs(model, lab.data.take(64), adaptive=False, device=lab.device)]


@dataclass
class Lab:
    """What every experiment shares: the held-out images, the device, the seed and the progress callback."""

    data: ImageDataset
    device: str = "cpu"
    seed: int = 0
    progress: Progress = no_progress

    @property
    def x(self) -> Tensor:
        return self.data.images.to(self.device)

    @property
    def y(self) -> Tensor:
        return self.data.labels.to(self.device)

    def gen(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def attack(self, atk: Attack, model: nn.Module, n: int | None = None, **kw: Any) -> AttackResult:
        """``atk`` on the first ``n`` images (all by default), keyed by their indices in mnist-5k."""
        assert self.data.indices is not None
        return atk(model, self.x[:n], self.y[:n], generator=self.gen(), keys=self.data.indices[:n].to(self.device), **kw)

    def evaluate(self, model: nn.Module, suite: list[Attack], *, eps: tuple[float, ...] = EPS_GRID, n: int | None = None,
                 adaptive: dict[str, nn.Module] | None = None, cascade: bool = False) -> RobustnessReport:
        ev = Evaluation(suite=suite, eps_grid=list(eps), cascade=cascade, seed=self.seed, batch_size=500,
                        adaptive=adaptive or {})
        return ev.run(model, self.data.take(n), device=self.device, progress=self.progress)


def suite(eps: float = 0.3) -> list[Attack]:
    """FGSM, BIM (10 steps of eps/10) and PGD (40 steps of 0.01, random start): the lecture's three."""
    return [FGSM(eps=eps), BIM(eps=eps, steps=10), PGD(eps=eps, steps=40, step_size=0.01)]


def row(report: RobustnessReport, attack: str, eps: float, mode: str = "naive") -> float:
    """The accuracy of one row of an evaluation."""
    return next(r.accuracy for r in report.rows if r.attack == attack and r.eps == eps and r.mode == mode)


# ---- 1-2. the standard model and the gradient attacks ---------------------------------------------------------

@dataclass
class Standard:
    accuracy_all: float
    recorded_test_accuracy: Any
    logits: Tensor  # of the first 24 held-out images


def standard(lab: Lab, model: nn.Module) -> Standard:
    full = load_dataset("mnist-5k", "all")
    with torch.no_grad():
        logits = model(lab.x[:24])
    inner = innermost(model)
    recorded = inner.meta.metrics.get("val_acc") if isinstance(inner, Classifier) else None
    return Standard(accuracy(model, full, device=lab.device), recorded, logits)


@dataclass
class GradientAttacks:
    report: RobustnessReport
    examples: dict[str, AttackResult]  # attack name -> its result on the first 4 images at eps 0.3


def gradient_attacks(lab: Lab, model: nn.Module) -> GradientAttacks:
    rep = lab.evaluate(model, suite())
    examples = {a.name: lab.attack(a, model, n=4) for a in suite()}
    return GradientAttacks(rep, examples)


# ---- 3. JSMA against FGSM --------------------------------------------------------------------------------------

@dataclass
class Sparse:
    n: int
    rows: list[dict[str, Any]]  # attack, success_rate, seconds_per_image, l0, l2, linf
    examples: dict[str, AttackResult]


def jsma_vs_fgsm(lab: Lab, model: nn.Module, n: int = 20) -> Sparse:
    rows, examples = [], {}
    for atk in [*suite(), JSMA()]:
        res = lab.attack(atk, model, n=n)
        s = res.summary()
        rows.append({"attack": atk.name, "success_rate": s["success_rate"], "seconds_per_image": res.seconds / n,
                     "l0": s["mean_l0"], "l2": s["mean_l2"], "linf": s["mean_linf"]})
        examples[atk.name] = res
    return Sparse(n, rows, examples)


# ---- 4. adversarial training ------------------------------------------------------------------------------------

@dataclass
class Trained:
    """An adversarially trained model against attacks on itself and examples crafted on the standard model."""

    name: str
    report: RobustnessReport
    clean: float
    white_box: float  # PGD-40 at 0.3 on the trained model itself
    white_box_fgsm: float  # FGSM at 0.3 on itself
    transferred: float  # PGD-40 examples crafted on the standard model
    transferred_fgsm: float
    training: dict[str, Any] = field(default_factory=dict)


def adversarial_training(lab: Lab, standard_model: nn.Module, names: tuple[str, ...] = ("mnist-cnn-adv", "mnist-cnn-fgsm"),
                         n: int = 100) -> list[Trained]:
    out = []
    # examples crafted once on the standard model, with every step run (transfer never stops early)
    pgd_src = lab.attack(PGD(eps=0.3, steps=40, step_size=0.01, early_stop=False), standard_model, n=n).x_adv
    fgsm_src = lab.attack(FGSM(eps=0.3), standard_model, n=n).x_adv
    for name, m in _shipped(names, lab.device):
        rep = lab.evaluate(m, suite(), eps=(0.1, 0.2, 0.3), n=n)
        tr, trf = _accuracy(m, pgd_src, lab.y[:n]), _accuracy(m, fgsm_src, lab.y[:n])
        out.append(Trained(name, rep, rep.clean_accuracy, row(rep, "pgd", 0.3), row(rep, "fgsm", 0.3), tr, trf,
                           dict(training_of(m).get("defense") or {})))
    return out


# ---- 5. weight decay and dropout ---------------------------------------------------------------------------------

@dataclass
class Regularized:
    name: str
    clean: float
    fgsm: float  # FGSM at 0.3
    pgd: float  # PGD-20 at 0.1
    weight_norm: float
    command: str


def regularization(lab: Lab, names: tuple[str, ...] = ("mnist-cnn", "mnist-cnn-dropout", "mnist-cnn-sgd",
                                                         "mnist-cnn-sgd-wd"), n: int = 100) -> list[Regularized]:
    out = []
    for name, m in _shipped(names, lab.device):
        clean = _accuracy(m, lab.x[:n], lab.y[:n])
        fgsm = float(lab.attack(FGSM(eps=0.3), m, n=n).robust_share.mean())
        pgd = float(lab.attack(PGD(eps=0.1, steps=20), m, n=n).robust_share.mean())
        norm = float(torch.cat([p.detach().reshape(-1) for p in m.parameters()]).norm())
        out.append(Regularized(name, clean, fgsm, pgd, norm, str(training_of(m).get("command", ""))))
    return out


# ---- 6. BaRT -----------------------------------------------------------------------------------------------------

@dataclass
class Barrage:
    n: int
    draws: int
    clean: float
    naive_fgsm: float
    naive_pgd: float
    adaptive_pgd: float
    eot_samples: int
    steps: int
    k: int
    flags: list[str]
    views: Tensor  # (V, C, H, W): one image through V draws of the barrage
    view_groups: list[list[str]]  # the groups each draw applied, in order


def bart(lab: Lab, model: Defended, n: int = 40, eot_samples: int = 8, steps: int = 20) -> Barrage:
    """Naive FGSM and PGD through the model as it is, and PGD through ``eot(bpda(model))`` (the adaptive attack
    of Athalye et al.), judged over 8 draws of the barrage. No attack stops early on a randomized model."""
    k = min(n, len(lab.data))
    model.reseed(lab.seed)
    _, preds = judge(model, lab.x[:k], draws=8)
    clean = float((preds == lab.y[:k]).float().mean())
    pgd = PGD(eps=0.3, steps=steps, step_size=2.5 * 0.3 / steps)
    naive_fgsm = float(lab.attack(FGSM(eps=0.3), model, n=k).robust_share.mean())
    naive = float(lab.attack(pgd, model, n=k).robust_share.mean())
    x_adv = lab.attack(pgd, eot(bpda(model), n=eot_samples), n=k, draws=1).x_adv
    _, preds = judge(model, x_adv, draws=8)
    adaptive = float((preds == lab.y[:k]).float().mean())
    flags = _flags(lab, model)
    with torch.no_grad():  # what the barrage does: one image through six draws
        views, draw = model.defense(lab.x[:1].expand(6, -1, -1, -1), generator=torch.Generator().manual_seed(lab.seed),
                                    return_params=True)
    groups = [[draw.names[int(j)] for j in row if int(j) >= 0] for row in draw.order]
    return Barrage(k, 8, clean, naive_fgsm, naive, adaptive, eot_samples, steps, int(getattr(model.defense, "k", 0)),
                   flags, views.cpu(), groups)


# ---- 7. hiding the probabilities ---------------------------------------------------------------------------------

@dataclass
class Masked:
    n: int
    clean: float
    naive_pgd: float
    substitute_fgsm: float
    substitute_pgd: float
    queries: int
    substitute_agreement: float
    slice_t: Tensor  # the line through one image along the substitute's gradient sign
    slice_defended: Tensor  # the defended model's loss (one-hot outputs) along it
    slice_substitute: Tensor  # the substitute's loss along it
    flags: list[str]


#: the substitute the demo's attacker trains (Papernot et al. 2017; fewer rounds and epochs than the benchmark's
#: 6,400 queries, to fit the demo's time)
DEMO_SUBSTITUTE = SubstituteTraining(rounds=4, lam=0.2, epochs_per_round=6, max_queries=2400)


def hide_probabilities(lab: Lab, model: nn.Module, n: int = 100) -> Masked:
    """Naive PGD on ``HideProbabilities(model)`` against an attacker who trains a substitute from label queries
    only (seed images from mnist-5k's training split, which the evaluation images are not in) and transfers
    FGSM and PGD examples from it."""
    hidden = HideProbabilities(model).eval()
    k = min(n, len(lab.data))
    clean = _accuracy(hidden, lab.x[:k], lab.y[:k])
    naive = float(lab.attack(PGD(eps=0.3, steps=40, step_size=0.01), hidden, n=k).robust_share.mean())
    seeds = pick_seed_set(load_dataset("mnist-5k", "train"), 15, generator=lab.gen()).images.to(lab.device)
    sub = DEMO_SUBSTITUTE.train(hidden, seeds, generator=lab.gen(), device=lab.device)
    fg = float(lab.attack(sub.transfer(FGSM(eps=0.3)), hidden, n=k).robust_share.mean())
    pg = float(lab.attack(sub.transfer(PGD(eps=0.3, steps=40, step_size=0.01)), hidden, n=k).robust_share.mean())
    with torch.no_grad():
        agree = float((sub.model(lab.x[:k]).argmax(1) == hidden(lab.x[:k]).argmax(1)).float().mean())
    t, defended, substitute = _loss_slice(hidden, sub.model, lab.x[:1], lab.y[:1])
    return Masked(k, clean, naive, fg, pg, sub.queries, agree, t, defended, substitute, _flags(lab, hidden))


def _loss_slice(defended: nn.Module, substitute: nn.Module, x: Tensor, y: Tensor,
                span: float = 0.3, points: int = 61) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy of both models along ``x + t * sign(grad of the substitute's loss)``, t in [-span, span]:
    flat steps for the one-hot model (its gradient is zero), a smooth slope for the substitute."""
    xr = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(substitute(xr), y), xr)
    t = torch.linspace(-span, span, points)
    xs = (x + t.reshape(-1, 1, 1, 1).to(x) * g.sign()).clamp(0, 1)
    ys = y.expand(points)
    with torch.no_grad():
        probs = defended(xs).clamp(1e-6, 1)  # one-hot scores: the loss of a label-only model is 0 or ~14
        d = F.nll_loss(probs.log(), ys, reduction="none")
        s = F.cross_entropy(substitute(xs), ys, reduction="none")
    return t, d.cpu(), s.cpu()


# ---- 8. where the model looks -------------------------------------------------------------------------------------

@dataclass
class Cams:
    x: Tensor
    x_adv: Tensor
    maps: dict[str, Tensor]
    titles: list[str]
    success_rate: float


def cams(lab: Lab, model: nn.Module, k: int = 4) -> Cams:
    from bastion.viz import cam, upsample

    res = lab.attack(PGD(eps=0.3, steps=40, step_size=0.01), model, n=k)
    x, y = lab.x[:k], lab.y[:k]
    size = (x.shape[2], x.shape[3])
    maps = {
        "clean, true class": upsample(cam(model, x, class_idx=y), size).cpu(),
        "adv, true class": upsample(cam(model, res.x_adv, class_idx=y), size).cpu(),
        "adv, adversarial class": upsample(cam(model, res.x_adv, class_idx=res.pred_adv), size).cpu(),
    }
    classes = classes_of(model)
    titles = [f"{classes[int(a)]} -> {classes[int(b)]}" for a, b in zip(y, res.pred_adv, strict=True)]
    return Cams(x.cpu(), res.x_adv.cpu(), maps, titles, float(res.success.float().mean()))


# ---- 9. linear models -----------------------------------------------------------------------------------------------

@dataclass
class Linear:
    logreg_error: dict[float, float]  # eps -> FGSM error of the shipped logreg on mnist-5k (all 5,000)
    toy_error: dict[float, float]  # eps -> FGSM error of the 2-D toy
    toy_model: nn.Module
    toy_points: Tensor
    toy_labels: Tensor
    toy_adversarial: dict[float, Tensor]


LINEAR_EPS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def linear_models(lab: Lab) -> Linear:
    logreg = pretrained("logreg", device=lab.device)
    full = load_dataset("mnist-5k", "all")
    x, y = full.images.to(lab.device), full.labels.to(lab.device)
    err = {e: 1.0 - (float(FGSM(eps=e)(logreg, x, y).robust_share.mean()) if e else accuracy(logreg, full))
           for e in LINEAR_EPS}
    train = load_dataset("blobs2d", "train")
    toy = create_model("blobs-logreg", seed=lab.seed)
    fit(toy, train, config=TrainConfig(epochs=30, batch_size=64, lr=0.1, schedule="constant", seed=lab.seed))
    pts, lab_ = train.images[:120], train.labels[:120]
    test = load_dataset("blobs2d", "test")
    toy_err, adv = {}, {0.0: pts}
    for e in LINEAR_EPS:
        toy_err[e] = 1.0 - (float(FGSM(eps=e)(toy, test.images, test.labels).robust_share.mean()) if e
                            else accuracy(toy, test))
        if e in (0.05, 0.1, 0.2):
            adv[e] = FGSM(eps=e)(toy, pts, lab_).x_adv
    return Linear(err, toy_err, toy, pts, lab_, adv)

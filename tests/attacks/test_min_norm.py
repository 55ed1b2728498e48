"""The minimum-norm attacks CW, DeepFool and FMN: closed forms on affine models, strength against fixed-radius
PGD, and soundness on randomized models."""

import pytest
import torch
from torch import nn

from bastion.attacks import ATTACKS, CW, FMN, PGD, DeepFool, HopSkipJump, MinimumNormAttack, MinNormPGD
from bastion.attacks.base import Task
from bastion.attacks.min_norm import Smallest
from bastion.data import load_dataset
from bastion.errors import ConfigError
from bastion.models import pretrained
from bastion.threat import ThreatModel, project_l0, project_l1

WIDE = (-10.0, 10.0)  # bounds that the closed forms never reach: the box plays no part


def affine(seed: int = 0, d: int = 64, k: int = 10, scale: float = 0.3) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, d, generator=g) * scale)
        lin.bias.copy_(torch.randn(k, generator=g))
    return nn.Sequential(nn.Flatten(), lin).eval()


def inputs(n: int = 16, seed: int = 1) -> torch.Tensor:
    return 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def hyperplanes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the affine model z = Wx + b: f_k = z_k - z_y, w_k = W_k - W_y, per sample (B, K) and (B, K, D)."""
    lin = model[1]
    with torch.no_grad():
        z = model(x)
        w = lin.weight[None] - lin.weight[y][:, None]
    f = z - z.gather(1, y[:, None])
    return f, w, z


def minimal_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact smallest L2 distance to a misclassification of an affine model (no box): the distance to the
    nearest hyperplane z_k = z_y."""
    f, w, _ = hyperplanes(model, x, y)
    dist = f.abs() / w.norm(dim=2).clamp_min(1e-12)
    dist.scatter_(1, y[:, None], float("inf"))
    return dist.amin(1).double()


def test_registered_as_minimum_norm_attacks_without_budget():
    for name in ("cw", "deepfool", "fmn", "min-norm", "hsj"):
        entry = ATTACKS.get(name)
        atk = entry.build()
        assert entry.budget is None and isinstance(atk, MinimumNormAttack) and atk.radius is None
        assert atk.threat.eps == float("inf") and atk.at_eps(0.3) is atk
    assert [FMN(norm=n).minimized_norm for n in ("l0", "l1", "l2", "linf")] == ["l0", "l1", "l2", "linf"]
    assert CW().minimized_norm == "l2" and DeepFool(norm="linf").minimized_norm == "linf"
    assert isinstance(MinNormPGD(), MinimumNormAttack) and isinstance(HopSkipJump(), MinimumNormAttack)


@pytest.mark.parametrize("make", [lambda: CW(steps=0), lambda: CW(lr=0), lambda: CW(confidence=-1),
                                  lambda: CW(abort_early=1), lambda: DeepFool(norm="l1"),
                                  lambda: DeepFool(candidates=1), lambda: DeepFool(overshoot=-0.1),
                                  lambda: FMN(norm="l3"), lambda: FMN(gamma=1.5), lambda: FMN(step_size=0)])
def test_bad_configuration_raises(make):
    with pytest.raises(ConfigError):
        make()


def test_cw_finds_the_distance_to_the_decision_hyperplane_of_an_affine_model():
    model, x = affine(), inputs(12)
    y = model(x).argmax(1).detach()
    d = minimal_l2(model, x, y)
    f, w, _ = hyperplanes(model, x, y)
    k = (f.abs() / w.norm(dim=2)).scatter(1, y[:, None], float("inf")).argmin(1)
    closest = x + (d[:, None] * w[torch.arange(12), k] / w[torch.arange(12), k].norm(dim=1, keepdim=True)).reshape(
        x.shape).float()
    assert float(closest.min()) > 0 and float(closest.max()) < 1  # the box plays no part: d is the answer
    res = CW(steps=300, search_steps=9, lr=0.005, initial_const=1.0)(model, x, y)
    assert bool(res.success.all())
    ratio = res.norms["l2"] / d
    # never below the exact minimum (a lower bound on any misclassification), and within 1% of it
    assert float(ratio.min()) >= 1 - 1e-4
    assert float(ratio.max()) <= 1.01, ratio


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_first_step_is_the_closed_form_linear_step(norm):
    model, x = affine(seed=2), inputs(16, seed=3)
    y = model(x).argmax(1).detach()
    f, w, _ = hyperplanes(model, x, y)
    wf = w.double()
    dual = wf.norm(dim=2) if norm == "l2" else wf.abs().sum(2)
    dist = f.double().abs() / dual
    dist.scatter_(1, y[:, None], float("inf"))
    nearest = dist.argmin(1)
    rows = torch.arange(16)
    wl = wf[rows, nearest]
    size = dist[rows, nearest] + 1e-4
    step = wl / wl.norm(dim=1, keepdim=True) if norm == "l2" else wl.sign()
    expected = (x.double() + 1.02 * (size[:, None] * step).reshape(x.shape)).float()
    res = DeepFool(norm=norm, steps=1, overshoot=0.02, bounds=WIDE)(model, x, y)
    # on an affine model the linearisation is exact: one step crosses the nearest boundary
    assert bool(res.success.all())
    torch.testing.assert_close(res.x_adv, expected, atol=2e-5, rtol=0)
    if norm == "l2":  # and its length is the exact distance (times the overshoot)
        torch.testing.assert_close(res.norms["l2"], 1.02 * (minimal_l2(model, x, y) + 1e-4), atol=1e-4, rtol=1e-4)


def test_deepfool_fools_every_image_of_mnist_cnn():
    data = load_dataset("mnist-5k", "test").spread(40)
    model = pretrained("mnist-cnn")
    for norm in ("l2", "linf"):
        res = DeepFool(norm=norm)(model, data.images, data.labels)
        assert bool(res.success.all()), norm
        right = res.pred_clean == data.labels  # those needed a perturbation; the others are returned as they are
        assert bool((res.norms[norm][right] > 0).all()) and bool((res.norms[norm][~right] == 0).all())


def test_deepfool_stays_in_the_box_and_keeps_its_sum_equal_to_the_step_taken():
    """On binary pixels (every feature at a bound) the clipped DeepFool still gets past the boundary."""
    model, x = affine(seed=4), torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(5)).round()
    y = model(x).argmax(1).detach()  # binary pixels: every feature at a bound
    res = DeepFool(steps=50)(model, x, y)
    assert bool(res.success.all())
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1


@pytest.mark.parametrize("norm, eps", [("l2", 1.5), ("linf", 0.15)])
def test_fmn_reaches_smaller_perturbations_than_fixed_radius_pgd(norm, eps):
    data = load_dataset("mnist-5k", "test").spread(20)
    model, x, y = pretrained("mnist-cnn"), data.images, data.labels
    pgd = PGD(eps=eps, norm=norm, steps=40)(model, x, y)
    fmn = FMN(norm=norm, steps=100)(model, x, y)
    both = pgd.success & fmn.success
    assert bool(pgd.success.any())
    assert bool(fmn.success[pgd.success].all())  # wherever PGD succeeds inside the ball, FMN succeeds too
    assert float(fmn.norms[norm][both].median()) < float(pgd.norms[norm][both].median())
    assert float((fmn.norms[norm][pgd.success] <= eps + 1e-6).double().mean()) >= 0.9


def test_fmn_l0_and_l1_change_few_features():
    data = load_dataset("mnist-5k", "test").spread(10)
    model, x, y = pretrained("mnist-cnn"), data.images, data.labels
    l0 = FMN(norm="l0", steps=100)(model, x, y)
    l1 = FMN(norm="l1", steps=100)(model, x, y)
    l2 = FMN(norm="l2", steps=100)(model, x, y)
    assert bool(l0.success.all()) and bool(l1.success.all())
    assert float(l0.norms["l0"].median()) < float(l2.norms["l0"].median()) / 5
    assert float(l1.norms["l1"].median()) < float(l2.norms["l1"].median())


def test_l1_and_l0_projections():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(6, 50, generator=g, dtype=torch.float64)
    eps = torch.tensor([0.5, 1.0, 2.0, 5.0, 100.0, 0.0], dtype=torch.float64)
    p = project_l1(d, eps)
    norms = p.abs().sum(1)
    assert bool((norms <= eps + 1e-9).all()) and torch.equal(p[4], d[4])  # inside: unchanged
    for i in range(4):  # on the sphere, and the Euclidean projection: no point of the ball is closer
        assert float(norms[i]) == pytest.approx(float(eps[i]), rel=1e-9)
        other = torch.randn(200, 50, generator=g, dtype=torch.float64)
        other = other / other.abs().sum(1, keepdim=True) * float(eps[i]) * torch.rand(200, 1, generator=g,
                                                                                         dtype=torch.float64)
        assert float((other - d[i]).norm(dim=1).min()) >= float((p[i] - d[i]).norm()) - 1e-9
    k = torch.tensor([0, 1, 3, 50, 7, 2], dtype=torch.float64)
    q = project_l0(d, k)
    assert ((q != 0).sum(1)).tolist() == [0, 1, 3, 50, 7, 2]
    for i in range(6):
        kept = q[i] != 0
        assert bool((d[i][kept].abs().min() >= d[i][~kept].abs().max()) if 0 < int(kept.sum()) < 50 else True)
    x = torch.full((2, 1, 4, 4), 0.5)
    ball = ThreatModel(norm="l1", eps=1.0)
    out = ball.project(x + torch.randn(2, 1, 4, 4, generator=g), x)
    assert bool(ball.contains(out, x).all())


class Flickering(nn.Module):
    """A randomized 2-class model (it says so) that flickers where attacks look and nowhere else: in a gradient pass
    (inputs that require grad) 30% of the draws, from its own generator, say class 1 whatever the input; without
    gradients (the draws that judge) it is the affine score itself. So a success seen in an attack's own forward
    pass means nothing, and the verdict is exact: class 1 beyond the hyperplane, at L2 distance 1 from the
    inputs used below."""

    randomized = True

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 1)
        with torch.no_grad():
            self.lin.weight.fill_(0.25)
            self.lin.bias.fill_(-1.0)
        self.g = torch.Generator().manual_seed(0)

    def forward(self, x):
        s = self.lin(x.flatten(1))
        logits = torch.cat([s, -s], 1)
        if not x.requires_grad:
            return logits
        flicker = torch.rand(s.shape, generator=self.g) < 0.3
        return torch.where(flicker, torch.tensor([-5.0, 5.0]), logits)


@pytest.mark.parametrize("make, least", [(lambda: DeepFool(steps=20), 0.9), (lambda: FMN(steps=30), 0.5),
                                         (lambda: CW(steps=60, search_steps=3, lr=0.05, initial_const=1.0), 0.2)])
def test_on_a_randomized_model_only_confirmed_successes_become_results(make, least):
    """A success seen under one random draw stops nothing and is not the result until the judging draws confirm
    it. Without that, DeepFool would stop at x on a flicker (30% of the inputs) and FMN and CW would return the
    smallest point some flicker called adversarial, which the verdict then calls a failure."""
    model = Flickering().eval()
    x = torch.full((24, 1, 4, 4), 0.5)
    y = torch.zeros(24, dtype=torch.int64)
    res = make()(model, x, y)
    assert float(res.clean_share.mean()) == 1.0
    # every point returned is a real success; an input without one comes back unchanged
    assert torch.equal(res.success, res.norms["l2"] > 0)
    assert bool((res.norms["l2"][res.success] >= 1 - 1e-3).all())
    assert float(res.success.double().mean()) >= least


def test_smallest_keeps_unconfirmed_successes_out_of_the_result():
    x = torch.zeros(3, 4)
    task = Task(x=x, y=torch.zeros(3, dtype=torch.int64), target=None, keys=torch.arange(3), seed=0, num_classes=2,
                randomized=True, may_stop_early=False, draws=4)

    class Says(nn.Module):  # every draw predicts the class ``cls``
        def __init__(self, cls: int):
            super().__init__()
            self.cls = cls

        def forward(self, v):
            return nn.functional.one_hot(torch.full((v.shape[0],), self.cls), 2).float() * 5

    best = Smallest.start(task)
    idx, ok = torch.arange(3), torch.tensor([True, True, False])
    one = torch.ones(3, dtype=torch.float64)
    # one draw said "fooled", the draws that judge say class 0 (the label): not a result
    assert not bool(best.offer(Says(0), task, idx, x + 1, one, ok, torch.zeros(3, 2)).any())
    assert not bool(best.found.any()) and torch.equal(best.x, x) and best.queries.tolist() == [4, 4, 0]
    assert best.offer(Says(1), task, idx, x + 1, one, ok, torch.zeros(3, 2)).tolist() == [True, True, False]
    assert best.found.tolist() == [True, True, False] and best.queries.tolist() == [8, 8, 0]
    # a larger point is not judged at all
    assert not bool(best.offer(Says(1), task, idx, x + 2, 2 * one, ok, torch.zeros(3, 2)).any())
    assert best.queries.tolist() == [8, 8, 0] and torch.equal(best.x[0], x[0] + 1)

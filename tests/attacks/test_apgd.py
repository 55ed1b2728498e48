"""APGD (Croce & Hein 2020): the update against a slow per-sample loop, the DLR losses, the schedule, strength."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from bastion.attacks import APGD
from bastion.attacks.apgd import apgd_walk, checkpoints
from bastion.attacks.descent import misclassified, named_loss
from bastion.attacks.losses import dlr_loss
from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from tests.conftest import tiny_cnn


def paper_checkpoints(n: int) -> list[int]:
    """w_j = ceil(p_j n), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), p_j <= 1."""
    p = [Fraction(0), Fraction(22, 100)]
    while (nxt := p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100))) <= 1:
        p.append(nxt)
    return sorted({math.ceil(q * n) for q in p[1:]})


@pytest.mark.parametrize("n", [1, 3, 5, 10, 37, 50, 100, 250])
def test_checkpoints_are_the_papers(n):
    assert checkpoints(n) == paper_checkpoints(n)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def loop_reference(model, x0, y, *, eps, norm, loss, steps, start, target=None):
    """APGD on one sample, written out step by step: returns the iterates x^(1..steps) and the step sizes."""
    def value_grad(x):
        x = x.clone().requires_grad_(True)
        z = model(x)
        if loss == "ce":
            v = F.cross_entropy(z, y) if target is None else -F.cross_entropy(z, target)
        else:
            zs = z[0].sort(descending=True).values
            if target is None:
                other = max(z[0, j] for j in range(z.shape[1]) if j != int(y))
                v = -(z[0, y[0]] - other) / (zs[0] - zs[2] + 1e-12)
            else:
                v = -(z[0, y[0]] - z[0, target[0]]) / (zs[0] - 0.5 * (zs[2] + zs[3]) + 1e-12)
        (g,) = torch.autograd.grad(v, x)
        return float(v.detach()), g

    def project(v):
        if norm == "linf":
            v = torch.min(torch.max(v, x0 - eps), x0 + eps)
        else:
            d = v - x0
            length = float(d.norm())
            if length > eps:
                d = d * (eps / length)
            v = x0 + d
        return v.clamp(0.0, 1.0)

    def direction(g):
        return g.sign() if norm == "linf" else g / max(float(g.norm()), 1e-12)

    marks = set(paper_checkpoints(steps))
    x = start.clone()
    f, g = value_grad(x)
    best_x, best_f, best_g = x, f, g
    eta, prev = 2 * eps, x
    rises, last_mark, halved_before, best_before = 0, 0, False, f
    iterates, sizes = [], []
    for k in range(steps):
        a = 1.0 if k == 0 else 0.75
        z = project(x + eta * direction(g))
        x, prev = project(x + a * (z - x) + (1 - a) * (x - prev)), x
        iterates.append(x)
        sizes.append(eta)
        f_new, g = value_grad(x)
        rises += f_new > f
        f = f_new
        if f > best_f:
            best_x, best_f, best_g = x, f, g
        if k + 1 in marks:
            halve = rises < 0.75 * (k + 1 - last_mark) or (not halved_before and best_f <= best_before)
            if halve:
                eta, x, g, f = eta / 2, best_x, best_g, best_f
            halved_before, best_before, rises, last_mark = halve, best_f, 0, k + 1
    return iterates, sizes


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.8)])
@pytest.mark.parametrize("loss, targeted", [("ce", False), ("dlr", False), ("dlr", True), ("ce", True)])
def test_iterates_equal_a_per_sample_loop(norm, eps, loss, targeted):
    model = tiny_cnn(seed=5).double()
    g = torch.Generator().manual_seed(11)
    x = torch.rand(5, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 5, 7, 9])
    target = (y + 4) % 10 if targeted else None
    keys = torch.tensor([4, 8, 15, 16, 23])
    threat = ThreatModel(norm=norm, eps=eps)
    steps = 50
    seen: dict[int, list[torch.Tensor]] = {i: [] for i in range(5)}
    sizes: dict[int, list[float]] = {i: [] for i in range(5)}

    def hook(i, idx, xs, step):
        for row, j in enumerate(idx.tolist()):
            seen[j].append(xs[row].clone())
            sizes[j].append(float(step[row]))

    apgd_walk(model, x, named_loss(loss, y, target), misclassified(y, target), threat=threat, steps=steps, keys=keys,
              seed=7, stream=3, early_stop=False, on_iterate=hook)
    start = threat.random_init(x, keys, seed=7, stream=3)
    halvings = 0
    for i in range(5):
        ref, ref_sizes = loop_reference(model, x[i : i + 1], y[i : i + 1], eps=eps, norm=norm, loss=loss, steps=steps,
                                        start=start[i : i + 1], target=None if target is None else target[i : i + 1])
        assert len(seen[i]) == steps
        for k in range(steps):
            torch.testing.assert_close(seen[i][k], ref[k][0], atol=1e-9, rtol=0, msg=f"sample {i}, iterate {k + 1}")
        assert sizes[i] == pytest.approx(ref_sizes)
        halvings += ref_sizes[-1] < 2 * eps
    assert halvings > 0  # the schedule was exercised


def test_attack_returns_the_first_success_else_the_highest_loss_point():
    model = tiny_cnn(seed=2)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1).detach()
    res = APGD(eps=0.05, steps=20)(model, x, y)
    stopped = res.queries < 21
    assert bool((res.success | ~stopped).all())  # a sample that stopped early stopped at a success
    res_full = APGD(eps=0.05, steps=20, early_stop=False)(model, x, y)
    assert bool((res_full.success >= res.success).all())
    assert bool((res_full.queries == 21).all())


def test_dlr_losses():
    z = torch.tensor([[4.0, 1.0, 3.0, 0.0, -2.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    # untargeted: -(z_y - max_{j!=y} z_j) / (z_(1) - z_(3)) = -(4 - 3) / (4 - 1)
    assert float(dlr_loss(z, y)) == pytest.approx(-1 / 3)
    # targeted: -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2) = -(4 - 3) / (4 - 0.5)
    assert float(dlr_loss(z, y, t)) == pytest.approx(-1 / 3.5)
    # misclassified: positive
    assert float(dlr_loss(z, torch.tensor([2]))) == pytest.approx(1 / 3)
    # shifting and scaling the logits changes nothing
    zz = torch.randn(8, 10, generator=torch.Generator().manual_seed(1))
    yy, tt = torch.arange(8) % 10, (torch.arange(8) + 3) % 10
    for loss_t in (None, tt):
        torch.testing.assert_close(dlr_loss(3.0 * zz + 7.0, yy, loss_t), dlr_loss(zz, yy, loss_t))
    with pytest.raises(ConfigError, match="at least 4 classes"):
        dlr_loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([1, 2]))


def test_apgd_t_targets_the_classes_ranked_next_and_counts_any_misclassification():
    model = tiny_cnn(seed=4)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1).detach()
    res = APGD(eps=0.3, steps=10, loss="dlr", targets=3)(model, x, y)
    assert res.target is None and bool(res.success.all())
    assert bool((res.pred_adv != y).all())
    # more targets than wrong classes: capped at K - 1
    assert bool((APGD(eps=0.0, steps=2, loss="dlr", targets=20)(model, x, y).queries == 1 + 9 * 3).all())


@pytest.mark.parametrize("bad", [{"steps": 0}, {"targets": -1}, {"rho": 1.5}, {"momentum": -0.1}, {"loss": "hinge"},
                                 {"restarts": 0}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError):
        APGD(eps=0.3, **bad)


def test_labels_follow_autoattack():
    assert APGD(eps=0.3).label == "apgd-ce"
    assert APGD(eps=0.3, loss="dlr").label == "apgd-dlr"
    assert APGD(eps=0.3, loss="dlr", targets=9).label == "apgd-t"
    assert APGD(eps=1.0, norm="l2").label == "apgd-ce-l2"


def test_randomized_model_walks_every_step():
    from tests.attacks.test_randomized import Noisy

    model = Noisy(tiny_cnn(seed=1), sigma=0.2).eval()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    res = APGD(eps=0.3, steps=8, restarts=2)(model, x, torch.tensor([0, 1, 2]))
    # every step of both restarts (9 evaluations each), and each restart's last iterate judged over 8 draws
    from bastion._model import DEFAULT_DRAWS

    assert bool((res.queries == 2 * (9 + DEFAULT_DRAWS)).all())


def test_on_a_randomized_model_the_walk_keeps_its_own_path(monkeypatch):
    """Noisy loss values pick a lucky point as the best: on a randomized model APGD returns the last iterate and a
    halving continues from the current point; on a deterministic one it keeps the best point and goes back to it."""
    import bastion.attacks.apgd as apgd_module
    from tests.attacks.test_randomized import Noisy

    seen = []
    walk = apgd_module.apgd_walk

    def spy(*args, **kwargs):
        seen.append((kwargs["last_iterate"], kwargs["restart_from_best"]))
        return walk(*args, **kwargs)

    monkeypatch.setattr(apgd_module, "apgd_walk", spy)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    APGD(eps=0.3, steps=5)(Noisy(tiny_cnn(seed=1), sigma=0.2).eval(), x, y)
    APGD(eps=0.3, steps=5)(tiny_cnn(seed=1).eval(), x, y)
    assert seen == [(True, False), (False, True)]


@pytest.fixture(scope="module")
def mnist():
    from bastion.data import load_dataset
    from bastion.models import pretrained

    ds = load_dataset("mnist-5k", "all").spread(16)
    return pretrained("mnist-cnn"), ds.images, ds.labels


def test_apgd_breaks_mnist_cnn_at_eps_03(mnist):
    model, x, y = mnist
    res = APGD(eps=0.3, steps=100)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert float(res.robust.float().mean()) == 0.0
    assert float(res.norms["linf"].max()) <= 0.3 + 1e-6

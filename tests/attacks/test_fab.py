"""FAB-T (Croce & Hein 2020): the projection onto a hyperplane inside the box, and the attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.attacks import FAB
from bastion.attacks.fab import boundary_step
from bastion.errors import ConfigError
from tests.conftest import tiny_cnn


def l2_reference(p: np.ndarray, w: np.ndarray, c: float) -> np.ndarray:
    """min |d|_2 with w.d = c and 0 <= p + d <= 1, by bisection on the multiplier mu: d = clip(mu w, -p, 1 - p)."""
    def reach(mu: float) -> float:
        return float(w @ np.clip(mu * w, -p, 1 - p))
    sign = 1.0 if c >= 0 else -1.0
    lo, hi = 0.0, 1.0
    while sign * reach(sign * hi) < abs(c) and hi < 1e12:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sign * reach(sign * mid) < abs(c) else (lo, mid)
    return np.clip(sign * hi * w, -p, 1 - p)


def random_problem(g: torch.Generator, d: int = 7):
    p = torch.rand(1, d, generator=g, dtype=torch.float64)
    w = torch.randn(1, d, generator=g, dtype=torch.float64)
    w[0, 0] = 0.0  # a feature the hyperplane ignores
    p[0, 1], p[0, 2] = 1.0, 0.0  # features at the bounds
    b = (w * torch.rand(1, d, generator=g, dtype=torch.float64)).sum(1)  # a hyperplane that meets the box
    return p, w, b


def test_linf_step_is_the_smallest_and_lands_on_the_hyperplane():
    from scipy.optimize import linprog

    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        p, w, b = random_problem(g)
        d = boundary_step(p, w, b, bounds=(0.0, 1.0), norm="linf")
        assert abs(float((w * (p + d)).sum() - b)) < 1e-9
        assert float((p + d).min()) >= 0 and float((p + d).max()) <= 1
        P, W, c = p[0].numpy(), w[0].numpy(), float(b - (w * p).sum())
        n = len(P)
        # min t s.t. |d_i| <= t, w.d = c, -p <= d <= 1 - p
        res = linprog(np.r_[np.zeros(n), 1.0], A_ub=np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]]),
                      b_ub=np.zeros(2 * n), A_eq=np.r_[W, 0.0][None], b_eq=[c],
                      bounds=[(-P[i], 1 - P[i]) for i in range(n)] + [(0, None)])
        assert float(d.abs().max()) == pytest.approx(res.fun, abs=1e-9)


def test_l2_step_is_the_smallest_and_lands_on_the_hyperplane():
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        p, w, b = random_problem(g)
        d = boundary_step(p, w, b, bounds=(0.0, 1.0), norm="l2")
        assert abs(float((w * (p + d)).sum() - b)) < 1e-9
        ref = l2_reference(p[0].numpy(), w[0].numpy(), float(b - (w * p).sum()))
        np.testing.assert_allclose(d[0].numpy(), ref, atol=1e-7)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_hyperplane_out_of_reach_gives_the_closest_corner(norm):
    p = torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([10.0])  # w.z <= 1 on the box
    d = boundary_step(p, w, b.double(), bounds=(0.0, 1.0), norm=norm)
    torch.testing.assert_close(p + d, torch.tensor([[1.0, 0.0, 0.9]], dtype=torch.float64))
    # a batch row on the hyperplane already does not move
    d0 = boundary_step(p, w, (w * p).sum(1), bounds=(0.0, 1.0), norm=norm)
    assert float(d0.abs().max()) == 0.0


@pytest.fixture(scope="module")
def mnist():
    from bastion.data import load_dataset
    from bastion.models import pretrained

    ds = load_dataset("mnist-5k", "all").spread(12)
    return pretrained("mnist-cnn"), ds.images, ds.labels


def test_fab_t_breaks_mnist_cnn_within_eps(mnist):
    model, x, y = mnist
    res = FAB(eps=0.3, steps=20, targets=3)(model, x, y)
    assert float(res.robust.float().mean()) <= 0.1
    assert float(res.norms["linf"].max()) <= 0.3 + 1e-6
    # FAB looks for the closest point: far closer than the budget
    assert float(res.norms["linf"][res.success].median()) < 0.2


def test_unbroken_points_move_towards_the_boundary(mnist):
    model, x, y = mnist
    res = FAB(eps=0.02, steps=10, targets=2)(model, x, y)
    assert float(res.success.float().mean()) < 0.5  # too small a budget
    unbroken = ~res.success
    moved = res.norms["linf"][unbroken]
    assert bool((moved > 0).all()) and float(moved.max()) <= 0.02 + 1e-6
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy
        assert float(ce(model(res.x_adv[unbroken]), y[unbroken])) > float(ce(model(x[unbroken]), y[unbroken]))


def test_a_given_target_replaces_the_ranking():
    model = tiny_cnn(seed=6)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1).detach()
    t = (y + 5) % 10
    res = FAB(eps=1.0, steps=30)(model, x, y, target=t)
    assert bool(((res.pred_adv == t) == res.success).all()) and bool(res.success.any())


@pytest.mark.parametrize("bad", [{"steps": 0}, {"targets": 0}, {"alpha_max": 2.0}, {"beta": -1.0}, {"eta": 0.0},
                                 {"norm": "l1"}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError):
        FAB(eps=0.3, **bad)

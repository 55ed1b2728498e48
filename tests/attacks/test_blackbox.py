"""Black-box attacks (Square: score-only; HopSkipJump: label-only), their query oracle, and the white-box
minimum-norm reference (MinNormPGD)."""

import pytest
import torch
from torch import nn

from bastion._rng import seed_from
from bastion.attacks import PGD
from bastion.attacks.hopskipjump import HopSkipJump, _HSJRun
from bastion.attacks.min_norm import MinNormPGD, project_l2
from bastion.attacks.oracle import Oracle, QueryBudgetError
from bastion.attacks.square import Square, probability_loss, square_fraction
from bastion.data import load_dataset
from bastion.defenses.masking import HideProbabilities
from bastion.errors import ConfigError, InputShapeError
from bastion.models import pretrained
from tests.conftest import tiny_cnn


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These attacks make thousands of tiny forward passes; on a shared 2-core machine two OpenMP threads
    per process make each one ~15x slower (measured: 9 s vs 0.6 s for one Square run), so run on one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """Random 8x8 inputs labelled with the tiny model's own predictions (all correctly classified)."""
    model = tiny_cnn(seed=seed)
    x = torch.rand(n, 1, 8, 8, generator=gen(seed + 100))
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y, model


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):  # type: ignore[override]
        return z.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        raise RuntimeError("a gradient was requested from a black-box model")


class GradientTrap(nn.Module):
    """A model whose backward pass raises: a black-box attack must still run on it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NoBackward.apply(self.model(x))


@pytest.fixture(scope="module")
def mnist_cnn_batch():
    ds = load_dataset("mnist-5k", "all")
    idx = torch.arange(0, 5000, 157)[:32]
    model = pretrained("mnist-cnn")
    x, y = ds.images[idx], ds.labels[idx]
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return model, x[ok], y[ok]


# --------------------------------------------------------------------------------------------- Oracle
def test_oracle_counts_each_row_exactly_including_repeated_indices():
    model = tiny_cnn()
    oracle = Oracle(model, "scores", n=4)
    x = torch.rand(7, 1, 8, 8, generator=gen())
    oracle(x[:3], torch.tensor([0, 2, 2]))
    oracle(x[3:], torch.tensor([2, 3, 3, 0]))
    assert oracle.counts.tolist() == [2, 0, 3, 2]
    assert oracle.total == 7
    oracle.counts[0] = 100  # a copy: the caller cannot reset the counter
    assert oracle.counts.tolist() == [2, 0, 3, 2]


def test_oracle_returns_probabilities_or_labels_without_gradients():
    model = tiny_cnn()
    x = torch.rand(5, 1, 8, 8, generator=gen(1)).requires_grad_(True)
    probs = Oracle(model, "scores")(x)
    labels = Oracle(model, "labels")(x)
    with torch.no_grad():
        logits = model(x)
    assert probs.dtype == torch.float64 and not probs.requires_grad and probs.grad_fn is None
    torch.testing.assert_close(probs.sum(1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(probs, logits.double().softmax(1))
    assert labels.dtype == torch.int64 and torch.equal(labels, logits.argmax(1))
    assert all(p.grad is None for p in model.parameters())


def test_oracle_exposes_no_model_parameters_or_module():
    oracle = Oracle(tiny_cnn(), "labels")
    assert not isinstance(oracle, nn.Module)
    for attr in ("model", "parameters", "state_dict", "forward", "__dict__", "_model"):
        assert not hasattr(oracle, attr), attr
    assert "Sequential" not in repr(oracle)


def test_oracle_budget_raise_and_stop():
    model = tiny_cnn()
    x = torch.rand(3, 1, 8, 8, generator=gen(2))
    strict = Oracle(model, "labels", n=3, budget=2)
    strict(x, torch.tensor([0, 1, 1]))
    with pytest.raises(QueryBudgetError):
        strict(x[:2], torch.tensor([1, 2]))  # sample 1 would make its third query
    assert strict.counts.tolist() == [1, 2, 0]  # nothing was charged by the refused call
    assert strict.remaining().tolist() == [1, 0, 2]

    soft = Oracle(model, "scores", n=3, budget=1, on_exceed="stop")
    out = soft(x, torch.tensor([0, 0, 2]))
    assert soft.counts.tolist() == [1, 0, 1]
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).all() and torch.isfinite(out[2]).all()
    assert soft.exhausted.tolist() == [True, False, True]
    labels = Oracle(model, "labels", n=1, budget=0, on_exceed="stop")(x[:1], torch.tensor([0]))
    assert labels.tolist() == [-1]


def test_oracle_rejects_bad_configuration():
    with pytest.raises(ConfigError):
        Oracle(tiny_cnn(), "logits")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Oracle(tiny_cnn(), budget=-1)
    with pytest.raises(InputShapeError):
        Oracle(tiny_cnn())(torch.rand(2, 1, 8, 8), torch.tensor([0, 1], dtype=torch.int32))


# --------------------------------------------------------------------------------------------- Square
def test_square_schedule_halves_at_rescaled_fractions():
    assert square_fraction(0, 10000, 0.8) == 0.8
    assert square_fraction(11, 10000, 0.8) == 0.4
    assert square_fraction(9000, 10000, 0.8) == pytest.approx(0.8 / 512)
    # with a 1,000-iteration budget the first halving comes after iteration 1 (10 / 10,000 of the run)
    assert square_fraction(1, 1000, 0.8) == 0.8 and square_fraction(2, 1000, 0.8) == 0.4


def test_probability_margin_loss_sign_means_success():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    torch.testing.assert_close(probability_loss("margin", probs, y, None), torch.tensor([0.5, -0.3], dtype=torch.float64))
    t = torch.tensor([1, 1])
    torch.testing.assert_close(probability_loss("margin", probs, y, t), torch.tensor([0.5, -0.3], dtype=torch.float64))


def test_square_stays_in_linf_ball_and_bounds_and_respects_budget():
    x, y, model = tiny_batch(8)
    res = Square(eps=0.05, max_queries=60)(model, x, y, generator=gen())
    assert float(res.norms["linf"].max()) <= 0.05 + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert int(res.queries.max()) <= 60
    # unbroken samples spent the whole budget; broken ones stopped early
    assert bool((res.queries[~res.success] == 60).all())
    assert bool((res.queries[res.success] < 60).all())


def test_square_queries_only_unbroken_samples():
    x, y, model = tiny_batch(4)
    y = y.clone()
    y[0] = (y[0] + 1) % 10  # already misclassified: one clean query, nothing else
    res = Square(eps=0.3, max_queries=50)(model, x, y, generator=gen())
    assert int(res.queries[0]) == 1 and bool(res.success[0])
    assert torch.equal(res.x_adv[0], x[0])


def test_square_is_deterministic_and_batch_equals_single_examples():
    x, y, model = tiny_batch(6, seed=1)
    atk = Square(eps=0.05, max_queries=40)
    keys = torch.tensor([11, 3, 7, 19, 2, 5])
    a = atk(model, x, y, generator=gen(4), keys=keys)
    b = atk(model, x, y, generator=gen(4), keys=keys)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    c = atk(model, x, y, generator=gen(5), keys=keys)
    assert not torch.equal(a.x_adv, c.x_adv)
    for i in range(6):
        s = atk(model, x[i : i + 1], y[i : i + 1], generator=gen(4), keys=keys[i : i + 1])
        assert torch.equal(s.x_adv[0], a.x_adv[i]), i
        assert int(s.queries[0]) == int(a.queries[i])


def test_square_never_needs_gradients():
    x, y, model = tiny_batch(4)
    trapped = GradientTrap(model).eval()
    with pytest.raises(RuntimeError, match="gradient"):  # the trap works ...
        PGD(eps=0.1, steps=2)(trapped, x, y)
    res = Square(eps=0.1, max_queries=30)(trapped, x, y, generator=gen())  # ... and Square never springs it
    plain = Square(eps=0.1, max_queries=30)(model, x, y, generator=gen())
    assert torch.equal(res.x_adv, plain.x_adv)


def test_square_targeted_hits_the_target():
    x, y, model = tiny_batch(6, seed=2)
    res = Square(eps=0.3, max_queries=200)(model, x, y, target="random", generator=gen())
    assert res.target is not None
    assert bool((res.pred_adv[res.success] == res.target[res.success]).all())
    assert float(res.success.float().mean()) >= 0.5


def test_square_rejects_bad_configuration_and_flat_inputs():
    for kw in ({"eps": -0.1}, {"eps": 0.1, "p_init": 1.5}, {"eps": 0.1, "loss": "hinge"}, {"eps": 0.1, "max_queries": 0}):
        with pytest.raises(ConfigError):
            Square(**kw)
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    with pytest.raises(InputShapeError):
        Square(eps=0.1)(model, torch.rand(2, 4), torch.tensor([0, 1]))


def test_square_breaks_most_points_of_the_shipped_cnn(mnist_cnn_batch):
    model, x, y = mnist_cnn_batch
    res = Square(eps=0.3, max_queries=300)(model, x, y, generator=gen())
    assert float(res.success.float().mean()) >= 0.9
    assert float(res.norms["linf"].max()) <= 0.3 + 1e-6
    assert int(res.queries.max()) <= 300


# --------------------------------------------------------------------------------------------- HopSkipJump
def test_hsj_threat_is_unbounded_and_contains_everything():
    threat = HopSkipJump().threat
    assert threat.eps == float("inf") and threat.norm == "l2"
    x = torch.zeros(2, 1, 4, 4)
    assert bool(threat.contains(torch.ones_like(x), x).all())
    assert HopSkipJump(norm="linf").threat.norm == "linf"


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_hsj_misclassifies_and_shrinks_the_distance_from_its_start(norm):
    x, y, model = tiny_batch(6, seed=3)
    atk = HopSkipJump(max_queries=800, norm=norm)
    res = atk(model, x, y, generator=gen(7))
    assert bool(res.success.all())
    assert int(res.queries.max()) <= 800
    # replay the start: same seed, same keys -> same start point and first boundary point
    run = _HSJRun(atk, Oracle(model, "labels", n=6), x, y, None, keys=torch.arange(6), seed=seed_from(gen(7)),
                  pool=None)
    idx = torch.arange(6)
    found, start = run.find_starts(idx)
    assert bool(found.all())
    d0 = run.dist(run.binary_search(idx, start), x)
    d = res.norms[norm].to(d0.dtype)
    assert bool((d <= d0 + 1e-6).all())
    assert float((d / d0).median()) < 0.7


def test_hsj_respects_the_query_budget_and_is_deterministic():
    x, y, model = tiny_batch(5, seed=4)
    atk = HopSkipJump(max_queries=150)
    keys = torch.tensor([4, 8, 15, 16, 23])
    a = atk(model, x, y, generator=gen(1), keys=keys)
    b = atk(model, x, y, generator=gen(1), keys=keys)
    assert int(a.queries.max()) <= 150
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    for i in (0, 3):
        s = atk(model, x[i : i + 1], y[i : i + 1], generator=gen(1), keys=keys[i : i + 1])
        assert torch.equal(s.x_adv[0], a.x_adv[i])


def test_hsj_is_label_only_so_hiding_probabilities_changes_nothing():
    x, y, model = tiny_batch(4, seed=5)
    atk = HopSkipJump(max_queries=300)
    plain = atk(model, x, y, generator=gen())
    hidden = atk(HideProbabilities(model).eval(), x, y, generator=gen())
    trapped = atk(GradientTrap(model).eval(), x, y, generator=gen())
    assert torch.equal(plain.x_adv, hidden.x_adv) and torch.equal(plain.x_adv, trapped.x_adv)
    assert bool(hidden.success.all())


def test_hsj_targeted_with_a_pool_of_starting_points():
    x, y, model = tiny_batch(6, seed=6)
    pool = torch.rand(40, 1, 8, 8, generator=gen(99))
    atk = HopSkipJump(max_queries=400, starting_points=pool, init_tries=0)
    target = (y + 1) % 10
    with torch.no_grad():
        pool_labels = model(pool).argmax(1)
    reachable = torch.isin(target, pool_labels)
    res = atk(model, x, y, target=target, generator=gen())
    assert bool((res.success == reachable).all())  # a start exists exactly when the pool has the class
    assert bool((res.pred_adv[res.success] == target[res.success]).all())
    assert torch.equal(res.x_adv[~reachable], x[~reachable])  # no start: returned unchanged
    with pytest.raises(InputShapeError):
        HopSkipJump(starting_points=torch.rand(3, 1, 4, 4))(model, x, y)


def test_hsj_rejects_bad_configuration():
    for kw in ({"norm": "l1"}, {"max_queries": 0}, {"gamma": 0.0}, {"starting_points": torch.full((2, 1, 8, 8), 2.0)}):
        with pytest.raises((ConfigError, InputShapeError, ValueError)):
            HopSkipJump(**kw)


@pytest.mark.slow
def test_hsj_on_the_shipped_cnn(mnist_cnn_batch):
    model, x, y = mnist_cnn_batch
    res = HopSkipJump(max_queries=1000)(model, x[:6], y[:6], generator=gen())
    assert bool(res.success.all())
    assert int(res.queries.max()) <= 1000
    assert float(res.norms["l2"].median()) < 4.0


# --------------------------------------------------------------------------------------------- MinNormPGD
def test_project_l2_per_sample_radii():
    x = torch.zeros(3, 1, 2, 2) + 0.5
    far = x + 0.4
    out = project_l2(far, x, torch.tensor([0.1, 0.2, 10.0], dtype=torch.float64), (0.0, 1.0))
    n = (out - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(n, torch.tensor([0.1, 0.2, 0.8]))


def test_min_norm_succeeds_with_smaller_norms_than_fixed_eps_pgd():
    x, y, model = tiny_batch(8, seed=7)
    fixed = PGD(eps=1.5, steps=20, norm="l2")(model, x, y, generator=gen())
    assert bool(fixed.success.any())
    res = MinNormPGD(steps=20, search_steps=6)(model, x, y)
    assert bool(res.success.all())
    assert res.queries.dtype == torch.int64 and int(res.queries.min()) > 0
    ok = fixed.success
    assert float(res.norms["l2"][ok].median()) < float(fixed.norms["l2"][ok].median())
    assert float(res.norms["l2"][ok].mean()) < float(fixed.norms["l2"][ok].mean())


def test_min_norm_reports_zero_for_already_misclassified_points():
    x, y, model = tiny_batch(3, seed=8)
    y = (y + 1) % 10
    res = MinNormPGD(steps=5, search_steps=2)(model, x, y)
    assert torch.equal(res.x_adv, x) and bool(res.success.all())
    # one evaluation (the first step's forward pass, which finds them misclassified at x), then no search
    assert int(res.queries.max()) == 1


@pytest.mark.slow
def test_min_norm_on_the_shipped_cnn_beats_fixed_eps_pgd(mnist_cnn_batch):
    model, x, y = mnist_cnn_batch
    x, y = x[:8], y[:8]
    fixed = PGD(eps=3.0, steps=40, norm="l2")(model, x, y, generator=gen())
    res = MinNormPGD(steps=50, search_steps=8)(model, x, y)
    assert bool(res.success.all())
    ok = fixed.success
    assert float(res.norms["l2"][ok].median()) < float(fixed.norms["l2"][ok].median())


def test_hsj_batch_equals_single_examples_when_features_are_not_a_multiple_of_16():
    # torch's CPU normal sampler fills blocks of 16: unpadded, a sample's directions depended on how many
    # its batch neighbours needed (17 of 64 five-feature points came out different)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(10)
        model[0].bias.sub_(model[0].weight.sum(1) / 2)
    x = torch.rand(32, 5, generator=gen(7))
    with torch.no_grad():
        y = model(x).argmax(1)
    atk = HopSkipJump(max_queries=150, init_evals=20)
    keys = torch.arange(32)
    batch = atk(model, x, y, generator=gen(0), keys=keys)
    singles = torch.cat([atk(model, x[i : i + 1], y[i : i + 1], generator=gen(0), keys=keys[i : i + 1]).x_adv
                         for i in range(32)])
    torch.testing.assert_close(batch.x_adv, singles, atol=1e-5, rtol=1e-5)

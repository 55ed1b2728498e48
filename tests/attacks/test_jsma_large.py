"""JSMA's large-input mode: a budget in features, several pairs per Jacobian, the search restricted to the most
salient features (the paper's rule on small inputs is checked against a loop reference in test_jsma.py)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.attacks.jsma import JSMA, L0Count, best_pairs, greedy_pairs, greedy_pairs_opposed, top_features
from bastion.errors import ConfigError
from tests.conftest import tiny_cnn

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def random_pixels(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """The baseline: ``k`` features per image chosen at random, set to 1 (what JSMA's increase variant does to
    the features it picks)."""
    flat = x.reshape(x.shape[0], -1).clone()
    order = torch.rand(flat.shape, generator=torch.Generator().manual_seed(seed)).argsort(1)
    flat.scatter_(1, order[:, :k], 1.0)
    return flat.reshape(x.shape)


@pytest.fixture(scope="module")
def rgb_case():
    model = tiny_cnn(seed=0, input_shape=(3, 32, 32))
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("targeted", [False, True])
def test_large_input_mode_keeps_its_pixel_budget_and_beats_random_pixels(rgb_case, targeted):
    """1% of a 3x32x32 image (30 features) in 3 Jacobian evaluations: never more changed features than the
    budget, and far more successes than the same number of random pixels."""
    model, x, y = rgb_case
    budget = 30
    atk = JSMA.large_input(budget, steps=3, candidates=64)
    assert atk.per_step == 5 and atk.threat.budget(x[0].numel()) == budget and isinstance(atk.threat, L0Count)
    res = atk(model, x, y, target="random" if targeted else None, generator=torch.Generator().manual_seed(1))
    assert float(res.norms["l0"].max()) <= budget
    assert bool(atk.threat.contains(res.x_adv, x).all())
    assert int(res.queries.max()) <= 4  # at most 3 steps (ceil(30 / 10)) and the evaluation that stops them
    rates = []
    for seed in range(3):
        with torch.no_grad():
            pred = model(random_pixels(x, budget, seed)).argmax(1)
        rates.append(float((pred == res.target if targeted else pred != y).float().mean()))
    baseline = max(rates)
    jsma = float(res.success.float().mean())
    assert jsma >= baseline + 0.3, (jsma, rates)
    assert jsma >= (0.35 if targeted else 0.8)


@given(seed=st.integers(0, 2**31 - 1), budget=st.integers(1, 40), per_step=st.integers(1, 6),
       candidates=st.sampled_from([None, 2, 5, 64]), pairs=st.booleans(), output=st.sampled_from(["logits", "probs"]),
       variant=st.sampled_from(["increase", "decrease"]), theta=st.sampled_from([1.0, 0.3]))
@SETTINGS
def test_budget_in_features_is_never_exceeded(seed, budget, per_step, candidates, pairs, output, variant, theta):
    model = tiny_cnn(seed=seed % 7, input_shape=(3, 4, 4), classes=5)
    x = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    y = model(x).argmax(1)
    atk = JSMA(max_features=budget, per_step=per_step, candidates=candidates, pairs=pairs, output=output,
               variant=variant, theta=theta)
    res = atk(model, x, y, target=(y + 1) % 5)
    assert bool((res.norms["l0"] <= min(budget, 48)).all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert bool(atk.threat.contains(res.x_adv, x).all())


def test_several_pairs_per_jacobian_are_really_taken():
    model = tiny_cnn(seed=3, input_shape=(3, 8, 8))
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    one = JSMA(max_features=40, per_step=1)(model, x, y, target=(y + 1) % 10)
    four = JSMA(max_features=40, per_step=4)(model, x, y, target=(y + 1) % 10)
    # a step changes up to 8 features: a sample that moved needs about a quarter of the Jacobians
    moved = four.norms["l0"] > 8
    assert bool(moved.any())
    assert bool((four.norms["l0"][moved] > 2 * (four.queries[moved] - 1)).all())
    assert int(four.queries.sum()) < int(one.queries.sum())


# ---------------------------------------------------------------- the greedy searches


def brute_best(a, b, domain):
    """Best score of the paper's pair rule per row, by enumeration."""
    n = a.shape[1]
    sa, sb = a[:, :, None] + a[:, None, :], b[:, :, None] + b[:, None, :]
    ok = (sa > 0) & (sb < 0) & domain[:, :, None] & domain[:, None, :] & ~torch.eye(n, dtype=torch.bool)
    return torch.where(ok, -sa * sb, torch.zeros((), dtype=a.dtype)).reshape(a.shape[0], -1).max(1).values


def scores_of(a, b, pairs):
    rows = torch.arange(a.shape[0])[:, None]
    p, q = pairs[..., 0], pairs[..., 1]
    return -(a[rows, p] + a[rows, q]) * (b[rows, p] + b[rows, q])


def inputs(seed, n, rows=5):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, n, generator=g, dtype=torch.float64)
    b = torch.randn(rows, n, generator=g, dtype=torch.float64) - 0.7 * a
    domain = torch.rand(rows, n, generator=g) < 0.8
    return a, b, domain


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 40), m=st.integers(1, 6))
@SETTINGS
def test_greedy_pairs_is_the_exact_search_repeated(seed, n, m):
    """Each pick is the exhaustive search's best pair among the features not picked yet: with every feature a
    candidate (the table) or none (repeated exact searches), the same picks."""
    a, b, domain = inputs(seed, n)
    exact, found = greedy_pairs(a, b, domain, m)
    table, found_t = greedy_pairs(a, b, domain, m, candidates=n, chunk_elements=50)
    assert torch.equal(found, found_t)
    torch.testing.assert_close(scores_of(a, b, exact)[found], scores_of(a, b, table)[found], rtol=0, atol=0)
    p1, q1, f1 = best_pairs(a, b, domain)
    assert torch.equal(found[:, 0], f1)
    torch.testing.assert_close(scores_of(a, b, exact[:, :1])[f1, 0], scores_of(a, b, torch.stack((p1, q1), 1)[:, None])[f1, 0])
    left = domain.clone()
    for j in range(exact.shape[1]):
        rows = found[:, j].nonzero().squeeze(1)
        expected = brute_best(a, b, left)
        assert torch.equal(found[:, j], expected > 0)
        torch.testing.assert_close(scores_of(a, b, exact)[rows, j], expected[rows], rtol=0, atol=0)
        p, q = exact[rows, j, 0], exact[rows, j, 1]
        assert bool((p != q).all()) and bool((left[rows, p] & left[rows, q]).all())
        left[rows, p] = False
        left[rows, q] = False
    assert bool((found[:, 1:] <= found[:, :-1]).all())  # picks are made in order


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(4, 60), k=st.integers(2, 30))
@SETTINGS
def test_candidate_search_finds_the_papers_pair_when_certified(seed, n, k):
    """Restricted to the top-k features by the pair bound, a pick is the exhaustive search's pair whenever its
    score is at least the largest bound left out; it is never better than the exhaustive one."""
    a, b, domain = inputs(seed, n)
    pairs, found = greedy_pairs(a, b, domain, 1, candidates=k)
    best = brute_best(a, b, domain)
    got = torch.where(found[:, 0], scores_of(a, b, pairs)[:, 0], torch.zeros((), dtype=a.dtype))
    assert bool((got <= best + 1e-12).all())
    am, bm = a.masked_fill(~domain, float("-inf")), b.masked_fill(~domain, float("inf"))
    bound = ((am + am.amax(1, keepdim=True)).clamp_min(0) * (-(bm + bm.amin(1, keepdim=True))).clamp_min(0))
    bound = bound.masked_fill(~domain, 0)
    left_out = bound.sort(1, descending=True).values[:, k] if k < n else torch.zeros(a.shape[0], dtype=a.dtype)
    certified = found[:, 0] & (got >= left_out)
    torch.testing.assert_close(got[certified], best[certified], rtol=0, atol=0)
    assert bool((found[:, 0] | (best == 0) | (k < n)).all())


def test_candidate_search_can_miss_the_papers_pair():
    """What the restriction gives up: the best pair joins two specialists, feature 0 (large alpha, no beta)
    and feature 1 (large -beta, no alpha): score 10 * 10.5 = 105. Feature 2, moderate in both, has the largest
    bound (16 * 16.5) and pairs worse with either (96, 99); with two candidates (features 2 and 0) the search
    cannot see feature 1, finds 96, and its certificate (96 >= feature 1's bound of 205) does not hold."""
    a = torch.tensor([[10.0, 0.0, 6.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, -10.5, -6.0]], dtype=torch.float64)
    domain = torch.ones(1, 3, dtype=torch.bool)
    p, q, found = best_pairs(a, b, domain)
    assert bool(found) and {int(p), int(q)} == {0, 1}
    pairs, ok = greedy_pairs(a, b, domain, 1, candidates=2)
    assert bool(ok[0, 0]) and set(pairs[0, 0].tolist()) == {0, 2}
    assert float(scores_of(a, b, pairs)[0, 0]) == 96.0
    assert torch.equal(greedy_pairs(a, b, domain, 1, candidates=3)[0][0, 0].sort().values, torch.tensor([0, 1]))


def test_greedy_opposed_and_single_picks():
    a = torch.tensor([[0.5, 3.0, -1.0, 2.0, 1.0, -4.0]])
    domain = torch.tensor([[True, True, True, True, False, True]])
    pairs, found = greedy_pairs_opposed(a, domain, 3)
    assert pairs[0, 0].tolist() == [1, 3] and pairs[0, 1].tolist() == [0, 2]
    assert found.tolist() == [[True, False, False]]  # 0.5 - 1 < 0: the second pair is invalid
    b = torch.tensor([[-1.0, -0.1, -5.0, 1.0, -9.0, -1.0]])
    p, ok = top_features(a, b, domain, 3)
    assert p[0, :2].tolist() == [0, 1] and ok.tolist() == [[True, True, False]]  # S = [0.5, 0.3, 0, 0, -, 0]


@pytest.mark.parametrize("make", [
    lambda: JSMA(max_features=0), lambda: JSMA(max_features=2.5), lambda: JSMA(per_step=0),
    lambda: JSMA(candidates=1), lambda: JSMA.large_input(10, steps=0), lambda: L0Count(eps=0.5),
])
def test_bad_large_input_options_raise(make):
    with pytest.raises(ConfigError):
        make()


def test_large_input_preset_spends_its_budget_in_about_steps_jacobians():
    atk = JSMA.large_input(1505)  # 1% of a 3x224x224 image
    assert atk.max_features == 1505 and atk.per_step == 16 and atk.candidates is not None
    assert JSMA.large_input(1505, steps=10, pairs=False).per_step == 151
    assert atk.threat.budget(3 * 224 * 224) == 1505 and atk.threat.budget(100) == 100

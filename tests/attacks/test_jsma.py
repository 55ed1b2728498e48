"""JSMA: budget, bounds, the paper's rule (against a slow loop-based reference), and success on a trained model."""

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.attacks.jsma import (
    JSMA,
    L0Fraction,
    best_features,
    best_pairs,
    best_pairs_opposed,
    max_changed_features,
)
from bastion.errors import ConfigError
from tests.conftest import tiny_cnn

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- a slow, obviously-correct reference


def reference_jsma(model, x, y, target, *, theta=1.0, gamma=0.145, pairs=True, increase=True, probs=False,
                   away=False, per_step=1, max_features=None, candidates=None):
    """Papernot et al. 2016 for ONE input, written with plain loops: the full Jacobian row by row (one
    backward pass per class), every pair of the search domain visited in index order, the first strictly
    best pair kept. Returns (x_adv, number of Jacobian evaluations).

    The large-input options, as plainly: ``max_features`` replaces the budget ``floor(gamma * n)``;
    ``per_step`` picks are made from one Jacobian, each the best among the features not picked yet in the
    step; ``candidates`` restricts every search to the features with the largest pair bound (call it with
    no ties in that bound, or with ``candidates >= n``)."""
    shape = x.shape
    x0 = x.flatten().clone()
    xf = x0.clone()
    n = xf.numel()
    budget = min(max_features, n) if max_features is not None else math.floor(gamma * n + 1e-9)
    width = 2 if pairs else 1
    lo, hi = 0.0, 1.0
    sign = 1.0 if increase else -1.0
    domain = [i for i in range(n) if (xf[i] < hi if increase else xf[i] > lo)]
    evaluations = 0
    while True:
        changed = sum(1 for i in range(n) if xf[i] != x0[i])
        picks = min(per_step, (budget - changed) // width, len(domain) // width)
        if picks < 1:
            break
        xv = xf.reshape(shape).unsqueeze(0).requires_grad_(True)
        logits = model(xv)[0]
        evaluations += 1
        pred = int(logits.argmax())
        if target is None:
            if pred != y:
                break
            t = y if away else max((c for c in range(logits.numel()) if c != y), key=lambda c: float(logits[c].detach()))
        else:
            if pred == target:
                break
            t = target
        scores = torch.softmax(logits, 0) if probs else logits
        rows = [torch.autograd.grad(scores[c], xv, retain_graph=True)[0].flatten() for c in range(scores.numel())]
        direction = -sign if away else sign  # away: lower the true class, raise the others
        alpha = [direction * float(rows[t][i]) for i in range(n)]
        beta = [direction * sum(float(rows[c][i]) for c in range(len(rows)) if c != t) for i in range(n)]
        search = sorted(domain)
        if candidates is not None and pairs and not probs:
            top_a, low_b = max(alpha[i] for i in domain), min(beta[i] for i in domain)
            bound = {i: max(alpha[i] + top_a, 0.0) * max(-beta[i] - low_b, 0.0) for i in domain}
            search = sorted(sorted(domain, key=lambda i: -bound[i])[:candidates])
        choices = []
        for _ in range(picks):
            avail = [i for i in search if not any(i in c for c in choices)]
            best, choice = 0.0, None
            if pairs:
                for p, q in itertools.combinations(avail, 2):
                    a, b = alpha[p] + alpha[q], beta[p] + beta[q]
                    if a > 0 and b < 0 and -a * b > best:
                        best, choice = -a * b, (p, q)
            else:
                for p in avail:
                    if alpha[p] > 0 and beta[p] < 0 and -alpha[p] * beta[p] > best:
                        best, choice = -alpha[p] * beta[p], (p,)
            if choice is None:
                break
            choices.append(choice)
        if not choices:
            break
        for i in (i for c in choices for i in c):
            xf[i] = min(max(float(xf[i]) + sign * theta, lo), hi)
            if (xf[i] >= hi) if increase else (xf[i] <= lo):
                domain.remove(i)
    return xf.reshape(shape), evaluations


def tiny_double(seed, shape=(1, 4, 4), classes=5):
    return tiny_cnn(seed=seed, input_shape=shape, classes=classes).double()


def tiny_inputs(seed, b=3, shape=(1, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, *shape, generator=g, dtype=torch.float64)
    x[x < 0.15] = 0.0  # some features start at the bounds (out of the search domain for one variant)
    x[x > 0.9] = 1.0
    return x


CASES = {
    "pairs-increase": dict(theta=1.0, gamma=0.6, output="logits"),
    "pairs-decrease": dict(theta=1.0, gamma=0.6, variant="decrease", output="logits"),
    "pairs-small-theta": dict(theta=0.35, gamma=0.5, output="logits"),
    "singles": dict(theta=1.0, gamma=0.5, pairs=False, output="logits"),
    "singles-decrease-small-theta": dict(theta=0.3, gamma=0.4, pairs=False, variant="decrease", output="logits"),
    "probs": dict(theta=1.0, gamma=0.6, output="probs"),
    "default-is-probs": dict(theta=1.0, gamma=0.6),
    "singles-probs": dict(theta=1.0, gamma=0.5, pairs=False),
    "away": dict(theta=1.0, gamma=0.6, untargeted="away", output="logits"),
    "away-decrease-probs": dict(theta=1.0, gamma=0.6, untargeted="away", variant="decrease", output="probs"),
    # the large-input options: several picks per Jacobian, a budget in features, the candidate table
    "per-step": dict(theta=1.0, gamma=0.6, per_step=3),
    "per-step-small-theta": dict(theta=0.35, gamma=0.5, per_step=2),
    "per-step-table": dict(theta=1.0, gamma=0.6, per_step=3, candidates=16),
    "per-step-singles": dict(theta=1.0, gamma=0.5, pairs=False, per_step=3),
    "per-step-probs": dict(theta=1.0, gamma=0.6, output="probs", per_step=2),
    "max-features-odd": dict(theta=1.0, max_features=7, per_step=2),
    "max-features-table-decrease": dict(theta=1.0, max_features=9, per_step=4, candidates=20, variant="decrease"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("targeted", [True, False])
def test_equals_loop_reference_on_tiny_inputs(case, targeted):
    kw = CASES[case]
    for seed in range(3):
        model = tiny_double(seed)
        x = tiny_inputs(seed)
        y = model(x).argmax(1)  # attack from the clean prediction, so every sample has work to do
        target = (y + 1 + torch.arange(3)) % 5 if targeted else None
        res = JSMA(**kw)(model, x, y, target=target)
        for i in range(x.shape[0]):
            ref, evals = reference_jsma(
                model, x[i], int(y[i]), None if target is None else int(target[i]), theta=kw["theta"],
                gamma=kw.get("gamma", 0.145), pairs=kw.get("pairs", True),
                increase=kw.get("variant", "increase") == "increase", probs=kw.get("output", "probs") == "probs",
                away=target is None and kw.get("untargeted") == "away", per_step=kw.get("per_step", 1),
                max_features=kw.get("max_features"), candidates=kw.get("candidates"),
            )
            torch.testing.assert_close(res.x_adv[i], ref, atol=1e-12, rtol=0)
            assert int(res.queries[i]) == evals


def test_reference_comparison_is_not_vacuous():
    """The tiny cases above do change features and do reach targets (else equality would prove little)."""
    changed, reached = 0, 0
    for seed in range(3):
        model = tiny_double(seed)
        x = tiny_inputs(seed)
        y = model(x).argmax(1)
        res = JSMA(theta=1.0, gamma=0.6)(model, x, y, target=(y + 1) % 5)
        changed += int((res.norms["l0"] > 0).sum())
        reached += int(res.success.sum())
    assert changed >= 6 and reached >= 3


# ---------------------------------------------------------------- the pair search itself


def brute_force_pairs(a, b, domain):
    n = a.shape[1]
    sa, sb = a[:, :, None] + a[:, None, :], b[:, :, None] + b[:, None, :]
    ok = (sa > 0) & (sb < 0) & domain[:, :, None] & domain[:, None, :] & ~torch.eye(n, dtype=torch.bool)
    score = torch.where(ok, -sa * sb, torch.zeros((), dtype=a.dtype))
    return score.reshape(a.shape[0], -1).max(1).values


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 70), chunk=st.integers(1, 3000), reduce=st.booleans(),
       zeros=st.booleans())
@SETTINGS
def test_pair_search_is_exact(seed, n, chunk, reduce, zeros):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, n, generator=g, dtype=torch.float64)
    b = torch.randn(6, n, generator=g, dtype=torch.float64) - 0.7 * a  # anti-correlated, like real Jacobians
    if zeros:  # many exactly tied features (dead ReLUs give exact zero gradients)
        dead = torch.rand(6, n, generator=g) < 0.5
        a, b = a.masked_fill(dead, 0.0), b.masked_fill(dead, 0.0)
    domain = torch.rand(6, n, generator=g) < 0.8
    p, q, found = best_pairs(a, b, domain, chunk, reduce=reduce)
    expected = brute_force_pairs(a, b, domain)
    assert torch.equal(found, expected > 0)
    rows = torch.arange(6)
    assert bool((p[found] != q[found]).all())
    assert bool((domain[rows, p] & domain[rows, q])[found].all())
    got = -(a[rows, p] + a[rows, q]) * (b[rows, p] + b[rows, q])
    torch.testing.assert_close(got[found], expected[found], atol=0, rtol=0)


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 70), zeros=st.booleans())
@SETTINGS
def test_opposed_pair_search_equals_the_general_one(seed, n, zeros):
    """Softmax outputs have beta = -alpha: the top-two shortcut scores as well as the exhaustive search."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, n, generator=g, dtype=torch.float64)
    if zeros:
        a = a.masked_fill(torch.rand(6, n, generator=g) < 0.5, 0.0)
    domain = torch.rand(6, n, generator=g) < 0.8
    domain[:, :2] = True  # the attack only searches rows with at least two domain features
    p, q, found = best_pairs_opposed(a, domain)
    expected = brute_force_pairs(a, -a, domain)
    assert torch.equal(found, expected > 0)
    rows = torch.arange(6)
    assert bool((p != q).all()) and bool((domain[rows, p] & domain[rows, q]).all())
    got = (a[rows, p] + a[rows, q]) ** 2
    torch.testing.assert_close(got[found], expected[found], atol=0, rtol=0)


def test_single_feature_map_matches_definition():
    a = torch.tensor([[0.5, -1.0, 2.0, 3.0], [-1.0, -2.0, 0.0, 1.0]])
    b = torch.tensor([[-1.0, -5.0, 1.0, -0.1], [1.0, -1.0, -1.0, 2.0]])
    domain = torch.tensor([[True, True, True, True], [True, True, True, True]])
    p, found = best_features(a, b, domain)
    assert p[0] == 0 and found[0]  # S = [0.5, 0 (alpha < 0), 0 (beta > 0), 0.3]
    assert not found[1]
    p, found = best_features(a, b, torch.tensor([[False, True, True, True], [True] * 4]))
    assert p[0] == 3 and found[0]


# ---------------------------------------------------------------- budget, bounds, threat model


def test_threat_model_budget_agrees_with_counts():
    atk = JSMA(theta=1.0, gamma=0.145)
    threat = atk.threat
    assert isinstance(threat, L0Fraction) and threat.norm == "l0" and threat.eps == 0.145
    assert threat.budget(784) == 113 == max_changed_features(0.145, 784)
    assert max_changed_features(0.29, 100) == 29  # 0.29 * 100 is 28.999... in floating point
    x = torch.zeros(2, 1, 28, 28)
    x_adv = x.clone()
    x_adv.view(2, -1)[0, :113] = 1.0
    x_adv.view(2, -1)[1, :114] = 1.0
    assert threat.contains(x_adv, x).tolist() == [True, False]
    assert threat.distance(x_adv, x).tolist() == pytest.approx([113 / 784, 114 / 784])


@given(seed=st.integers(0, 2**31 - 1), gamma=st.floats(0.01, 0.5), theta=st.floats(0.2, 1.0),
       pairs=st.booleans(), variant=st.sampled_from(["increase", "decrease"]), targeted=st.booleans())
@SETTINGS
def test_never_exceeds_budget_and_stays_in_bounds(seed, gamma, theta, pairs, variant, targeted):
    model = tiny_cnn(seed=seed % 7)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 1, 8, 8, generator=g)
    x_before = x.clone()
    y = torch.tensor([0, 1, 2, 3])
    res = JSMA(theta=theta, gamma=gamma, pairs=pairs, variant=variant)(
        model, x, y, target=torch.tensor([5, 6, 7, 8]) if targeted else None)
    assert bool((res.norms["l0"] <= math.floor(gamma * 64 + 1e-9)).all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    moved = res.x_adv - x
    assert bool((moved >= 0).all()) if variant == "increase" else bool((moved <= 0).all())
    assert torch.equal(x, x_before)
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_finished_samples_do_not_change_and_batch_equals_singles():
    model = tiny_cnn(seed=2)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4])
    pred = model(x).argmax(1)
    target = (pred + 3) % 10
    target[0] = pred[0]  # already classified as its target: nothing to do
    atk = JSMA(theta=1.0, gamma=0.3)
    res = atk(model, x, y, target=target)
    micro = JSMA(theta=1.0, gamma=0.3, jacobian_batch=2)(model, x, y, target=target)  # 3 passes a step
    torch.testing.assert_close(micro.x_adv, res.x_adv, atol=1e-6, rtol=0)
    assert torch.equal(micro.queries, res.queries)
    assert torch.equal(res.x_adv[0], x[0]) and int(res.queries[0]) == 1 and bool(res.success[0])
    for i in range(5):
        single = atk(model, x[i:i + 1], y[i:i + 1], target=target[i:i + 1])
        torch.testing.assert_close(single.x_adv[0], res.x_adv[i], atol=1e-6, rtol=0)
        assert int(single.queries[0]) == int(res.queries[i])


def test_cifar_shaped_batch_with_small_chunks():
    """3x32x32 inputs (3,072 features) run with a tiny pair-search chunk (the logits search: the softmax one needs
    none); the budget still holds."""
    model = tiny_cnn(seed=1, input_shape=(3, 32, 32))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    res = JSMA(gamma=0.01, chunk_elements=1000, output="logits")(model, x, y, target=(y + 1) % 10)
    assert bool((res.norms["l0"] <= 30).all()) and bool((res.norms["l0"] > 0).all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: JSMA(theta=0.0),
        lambda: JSMA(theta=-1.0),
        lambda: JSMA(theta=float("nan")),
        lambda: JSMA(gamma=0.0),
        lambda: JSMA(gamma=1.5),
        lambda: JSMA(variant="sideways"),
        lambda: JSMA(output="energy"),
        lambda: JSMA(untargeted="nearest"),
        lambda: JSMA(pairs=1),
        lambda: JSMA(chunk_elements=0),
        lambda: JSMA(jacobian_batch=0),
        lambda: JSMA(max_features=0),
        lambda: JSMA(max_features=1.5),
        lambda: JSMA(per_step=0),
        lambda: JSMA(candidates=1),
        lambda: JSMA.large_input(0),
    ],
)
def test_bad_configuration_raises(make):
    with pytest.raises(ConfigError):
        make()


def test_config_is_keyword_only_and_serializable():
    atk = JSMA()
    assert atk.to_dict() == {"attack": "jsma", "theta": 1.0, "gamma": 0.145, "max_features": None, "per_step": 1,
                             "candidates": None, "pairs": True, "variant": "increase",
                             "output": "probs", "untargeted": "runner-up", "bounds": [0.0, 1.0], "chunk_elements": 1 << 24,
                             "jacobian_batch": None, "channels_last": True}
    with pytest.raises(TypeError):
        JSMA(1.0)  # type: ignore[misc]


# ---------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def trained():
    from bastion.data import load_dataset
    from bastion.models import pretrained

    ds = load_dataset("mnist-5k", "all[:3]")
    return pretrained("mnist-cnn"), ds.images, ds.labels


@pytest.mark.parametrize("output", ["logits", "probs"])
def test_reaches_targets_on_trained_model(trained, output):
    model, x, y = trained
    xs, ys = x.repeat_interleave(9, 0), y.repeat_interleave(9, 0)
    targets = (ys + torch.arange(1, 10).repeat(x.shape[0])) % 10
    res = JSMA(theta=1.0, gamma=0.145, output=output)(model, xs, ys, target=targets)
    assert float(res.success.float().mean()) >= 0.9
    assert bool((res.pred_adv[res.success] == targets[res.success]).all())
    assert bool((res.norms["l0"] <= 113).all())
    assert float(res.norms["l0"][res.success].mean()) / 784 < 0.08


@pytest.mark.parametrize("rule, max_l0", [("runner-up", 0.1), ("away", 0.05)])
def test_untargeted_breaks_trained_model(trained, rule, max_l0):
    model, x, y = trained
    res = JSMA(theta=1.0, gamma=0.145, untargeted=rule)(model, x, y)
    assert bool(res.success.all()) and bool((res.pred_adv != y).all())
    assert float(res.norms["l0"].mean()) / 784 < max_l0


@pytest.mark.parametrize("kw", [dict(), dict(output="probs"), dict(gamma=0.05), dict(pairs=False)])
def test_reported_logits_are_the_models_outputs_at_the_result(kw):
    """JSMA hands back the outputs it already computed at each sample's final point (only samples that moved
    after their last evaluation are evaluated again): they must equal the model's outputs at x_adv."""
    model = tiny_double(1, shape=(1, 6, 6), classes=5)
    x = tiny_inputs(4, b=12, shape=(1, 6, 6))
    y = model(x).argmax(1)
    target = (y + 1 + torch.arange(12) % 4) % 5
    for t in (target, None):
        res = JSMA(theta=1.0, **kw)(model, x, y, target=t)
        with torch.no_grad():
            expected = model(res.x_adv)
        assert not torch.isnan(res.logits_adv).any()
        torch.testing.assert_close(res.logits_adv, expected, atol=1e-12, rtol=0)
        assert torch.equal(res.success, (res.pred_adv == t) if t is not None else (res.pred_adv != y))


def test_final_logits_fill_only_the_missing_rows():
    from bastion._model import judge

    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x.flatten(1)[:, :3] * 2

    x = torch.rand(5, 1, 2, 2)
    known = torch.full((5, 3), float("nan"))
    known[[0, 3]] = torch.tensor([[7.0, 8.0, 9.0], [1.0, 2.0, 3.0]])
    out, preds = judge(Counting(), x, known=known)
    assert calls == [3]
    assert torch.equal(out[[0, 3]], known[[0, 3]])
    assert torch.equal(out[[1, 2, 4]], x.flatten(1)[[1, 2, 4], :3] * 2)
    assert torch.isnan(known[1]).all()  # the caller's tensor is not filled in place
    assert torch.equal(preds, out.argmax(1)[None])


def test_jsma_on_a_model_without_input_gradients_stops_cleanly():
    """A masked model (one-hot outputs) used to crash JSMA inside autograd ('does not require grad')."""
    from bastion.defenses import HideProbabilities
    from bastion.models import pretrained

    model = HideProbabilities(pretrained("mnist-cnn"))
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    for output in ("logits", "probs"):
        res = JSMA(output=output)(model, x, y, target=(y + 1) % 10)
        assert not bool(res.success.any()) and float(res.norms["l0"].max()) == 0.0

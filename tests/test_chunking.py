"""Bounded memory on large inputs: chunked forward and gradient passes, keyed draws and perturbation norms
computed a few samples at a time. Each chunked result must equal the one-pass result."""

import pytest
import torch
from torch import nn

from bastion import _model, _rng, threat
from bastion._model import chunk_size, chunks, forward_in_chunks, grad_in_chunks
from bastion.attacks import BIM, FGSM, PGD, MinNormPGD
from bastion.attacks.descent import named_loss, value_and_grad
from tests.conftest import tiny_cnn


class Recording(nn.Module):
    """A model that records the batch size of every call (a trivial linear classifier of any input size)."""

    def __init__(self, features: int, classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(int(x.shape[0]))
        return self.fc(x.flatten(1))


def rgb(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_chunk_slices_cover_the_batch_once():
    x = torch.zeros(10, 3, 4, 4)  # 48 features a sample
    assert chunk_size(x, 100) == 2 and chunk_size(x, 10) == 1 and chunk_size(x, 1000, per_sample=4) == 5
    parts = chunks(x, 100)
    assert [(s.start, s.stop) for s in parts] == [(i, i + 2) for i in range(0, 10, 2)]
    assert torch.equal(torch.cat([x[s] for s in parts]), x)


def test_grad_in_chunks_equals_one_pass():
    model = tiny_cnn(seed=1, input_shape=(3, 8, 8))
    x, y = rgb(7), torch.arange(7) % 10

    def f(xs, rows):
        logits = model(xs)
        return logits, nn.functional.cross_entropy(logits, y[rows], reduction="none")

    whole = grad_in_chunks(f, x, features=10**9)
    for features in (1, 3 * 64 * 2, 3 * 64 * 3):
        part = grad_in_chunks(f, x, features=features)
        for a, b in zip(whole, part, strict=True):  # equal up to float32 rounding (kernels differ by batch size)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the gradient is the loss's: compared with autograd on the whole batch
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y, reduction="sum"), xg)
    torch.testing.assert_close(whole[2], g, rtol=1e-5, atol=1e-5)


def test_grad_in_chunks_zero_where_no_gradient():
    x = rgb(5)
    out, values, g = grad_in_chunks(lambda xs, rows: (xs.flatten(1)[:, :2].detach(), xs.detach().sum((1, 2, 3))), x,
                                    features=3 * 64 * 2)
    assert torch.equal(g, torch.zeros_like(x)) and out.shape == (5, 2) and values.shape == (5,)


def test_value_and_grad_runs_in_bounded_chunks_at_224():
    """PGD's gradient passes on a batch of 3x224x224 images: no pass holds more than GRAD_CHUNK_FEATURES
    input features, and the result equals the one-pass gradient."""
    model = Recording(3 * 224 * 224)
    x = torch.rand(20, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 10
    logits, values, g = value_and_grad(model, x, named_loss("ce", y), None)
    per_pass = _model.GRAD_CHUNK_FEATURES // (3 * 224 * 224)
    assert model.seen == [per_pass] * (20 // per_pass) + ([20 % per_pass] if 20 % per_pass else [])
    assert max(model.seen) * 3 * 224 * 224 <= _model.GRAD_CHUNK_FEATURES
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y, reduction="sum"), xg)
    torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-8)


def test_value_and_grad_passes_the_samples_indices_to_the_loss():
    model = tiny_cnn(seed=2, input_shape=(3, 8, 8))
    x, y = rgb(6, seed=3), torch.tensor([1, 2, 3, 4, 5, 6])
    idx = torch.tensor([5, 0, 3])
    whole = value_and_grad(model, x[idx], named_loss("margin", y), idx)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_model, "GRAD_CHUNK_FEATURES", 3 * 64)  # one sample a pass
        part = value_and_grad(model, x[idx], named_loss("margin", y), idx)
    for a, b in zip(whole, part, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: FGSM(eps=0.1), lambda: BIM(eps=0.1, steps=3), lambda: PGD(eps=0.1, steps=4, restarts=2),
    lambda: PGD(eps=0.5, steps=4, norm="l2", early_stop=False), lambda: MinNormPGD(steps=3, doublings=2, search_steps=2),
])
def test_gradient_attacks_in_chunks_equal_one_pass(make, monkeypatch):
    model = tiny_cnn(seed=4, input_shape=(3, 8, 8))
    x = rgb(9, seed=5)
    y = model(x).argmax(1)
    atk = make()
    whole = atk(model, x, y, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(_model, "GRAD_CHUNK_FEATURES", 3 * 64 * 2)  # two samples a pass
    monkeypatch.setattr(_model, "_CPU_CHUNK_FEATURES", 3 * 64 * 3)
    part = atk(model, x, y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(part.x_adv, whole.x_adv, rtol=0, atol=1e-6)
    assert torch.equal(part.success, whole.success) and torch.equal(part.queries, whole.queries)


def test_forward_in_chunks_equals_one_pass_and_bounds_passes(monkeypatch):
    model = Recording(3 * 64)
    x = rgb(11)
    with torch.no_grad():
        whole = model(x)
        monkeypatch.setattr(_model, "_CPU_CHUNK_FEATURES", 3 * 64 * 4)
        model.seen.clear()
        part = forward_in_chunks(model, x)
    assert model.seen == [4, 4, 3]
    torch.testing.assert_close(part, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 224, 224), (1, 28, 28), (5,)])
def test_keyed_draws_in_chunks_equal_one_pass(shape, monkeypatch):
    keys = torch.tensor([0, 5, 2**40 + 3, 17, 9])
    ref = {
        "uniform": _rng.keyed_uniform(keys, shape, seed=3, stream=4),
        "uniform64": _rng.keyed_uniform(keys, shape, seed=3, stream=4, dtype=torch.float64),
        "normal": _rng.keyed_normal(keys, shape, seed=3, stream=4),
        "bits": _rng.keyed_bits(keys, shape, seed=3, stream=4),
        "negative": _rng.keyed_uniform(keys - 7, shape, seed=3),  # the torch path
    }
    monkeypatch.setattr(_rng, "_CHUNK_VALUES", 1)  # one sample at a time
    got = {
        "uniform": _rng.keyed_uniform(keys, shape, seed=3, stream=4),
        "uniform64": _rng.keyed_uniform(keys, shape, seed=3, stream=4, dtype=torch.float64),
        "normal": _rng.keyed_normal(keys, shape, seed=3, stream=4),
        "bits": _rng.keyed_bits(keys, shape, seed=3, stream=4),
        "negative": _rng.keyed_uniform(keys - 7, shape, seed=3),
    }
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
        assert got[k].shape == (5, *shape)
    # and each sample is its own key's draw: a batch equals its single examples
    assert torch.equal(got["normal"][2:3], _rng.keyed_normal(keys[2:3], shape, seed=3, stream=4))


def test_perturbation_norms_in_chunks_equal_one_pass(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 3, 16, 16, generator=g)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=g) * (torch.rand(x.shape, generator=g) < 0.2)).clamp(0, 1)
    d = (x_adv - x).flatten(1).double()
    expected = {"l0": (d.abs() > 1e-7).sum(1).double(), "l2": d.norm(dim=1), "linf": d.abs().amax(1)}
    monkeypatch.setattr(threat, "_NORM_CHUNK_VALUES", 3 * 256 * 2)
    got = threat.perturbation_norms(x_adv, x)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k
        assert got[k].dtype == torch.float64


def test_chunks_count_every_evaluation_of_an_input():
    """eot(model, n) and a defense averaged over n draws run the network n times per input: a gradient pass
    then takes n times fewer inputs."""
    from bastion._model import evaluations_per_input
    from bastion.attacks import bpda, eot
    from bastion.defenses import Defended, HideProbabilities
    from bastion.defenses.bart import BaRT

    inner = Recording(3 * 64)
    assert evaluations_per_input(inner) == 1
    model = eot(inner, n=4)
    assert evaluations_per_input(model) == 4 and evaluations_per_input(HideProbabilities(model)) == 4
    defended = Defended(BaRT(k=1), Recording(3 * 64), n_samples=3)
    assert evaluations_per_input(defended) == 3 and evaluations_per_input(eot(bpda(defended), n=2)) == 6
    x, y = rgb(10), torch.arange(10) % 10
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_model, "GRAD_CHUNK_FEATURES", 3 * 64 * 8)  # 8 network evaluations a pass
        value_and_grad(model, x, named_loss("ce", y), None)
    assert inner.seen == [8, 8, 8, 8, 8]  # 2 inputs x 4 draws a pass

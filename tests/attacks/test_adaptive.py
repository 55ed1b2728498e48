"""BPDA, EOT and the learned BPDA approximator (train_surrogate)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion.attacks import PGD, bpda, eot
from bastion.data import load_dataset
from bastion.defenses import Defended
from bastion.defenses.bart import BaRT, ColorPrecision, Noise
from bastion.errors import ConfigError
from bastion.models import pretrained
from bastion.training import train_surrogate


@pytest.fixture(scope="module")
def quantized():
    """mnist-cnn behind a fixed 4-level colour-precision reduction: piecewise constant, zero gradient."""
    defense = BaRT(k=1, groups=[ColorPrecision(levels=(4, 4), shared_prob=1.0)]).eval()
    return Defended(defense, pretrained("mnist-cnn")).eval()


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("mnist-5k", "test")
    idx = torch.arange(0, 1000, 50)
    return d.images[idx], d.labels[idx]


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xg), y)
    (g,) = torch.autograd.grad(loss, xg)
    return g


def test_bpda_forward_is_the_real_defense_and_its_gradient_is_not_zero(quantized, digits) -> None:
    x, y = digits
    adaptive = bpda(quantized)
    with torch.no_grad():
        assert torch.equal(adaptive(x), quantized(x))  # forward: the real, non-differentiable defense
    assert _input_grad(quantized, x, y).abs().max() == 0  # the naive gradient is masked ...
    assert _input_grad(adaptive, x, y).abs().sum(dim=(1, 2, 3)).gt(0).all()  # ... BPDA's is not


def test_bpda_with_identity_surrogate_equals_gradient_of_the_undefended_model_at_fx(quantized, digits) -> None:
    x, y = digits
    adaptive = bpda(quantized, surrogate=nn.Identity())
    fx = quantized.defense(x)
    assert torch.allclose(_input_grad(adaptive, x, y), _input_grad(quantized.model, fx, y), atol=1e-6)


def test_bpda_breaks_the_quantization_that_stops_naive_pgd(quantized, digits) -> None:
    x, y = digits
    pgd = PGD(eps=0.2, steps=20, step_size=0.025)
    naive = pgd(quantized, x, y, generator=torch.Generator().manual_seed(0))
    adaptive = pgd(bpda(quantized), x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        judged = (quantized(adaptive.x_adv).argmax(1) == y).float().mean()
    assert judged < naive.robust.float().mean() - 0.3


def test_eot_averages_probabilities_over_draws() -> None:
    torch.manual_seed(0)
    noisy = Defended(BaRT(k=1, groups=[Noise()]), pretrained("mnist-cnn")).eval()
    x = load_dataset("mnist-5k", "test").images[:4]
    noisy.reseed(3)
    with torch.no_grad():
        out = eot(noisy, n=5)(x)
    noisy.reseed(3)
    with torch.no_grad():  # the same draws, one batch of n*B: draw i covers rows i*B .. (i+1)*B
        probs = noisy(x.repeat(5, 1, 1, 1)).softmax(1).reshape(5, 4, -1).mean(0)
    assert torch.allclose(out.exp(), probs, atol=1e-6)
    with pytest.raises(ConfigError):
        eot(noisy, n=0)


def test_bpda_refuses_a_model_without_a_defense() -> None:
    with pytest.raises(ConfigError, match="Defended"):
        bpda(pretrained("mnist-cnn"))


def test_learned_surrogate_beats_the_identity_and_leaves_no_trainable_state() -> None:
    defense = BaRT(k=1, groups=[ColorPrecision(levels=(4, 4), shared_prob=1.0)]).eval()
    data = load_dataset("mnist-5k", "train").take(1200)
    g, report = train_surrogate(defense, data, epochs=3, width=16, depth=3)
    assert report.mae < report.mae_identity
    assert not g.training and not any(p.requires_grad for p in g.parameters())


def test_bpda_of_a_multi_draw_defended_model_averages_like_it(digits) -> None:
    """bpda(Defended(..., n_samples=3)) used to return one draw's logits: another model than the defended one."""
    x, _ = digits
    defended = Defended(BaRT(k=2), pretrained("mnist-cnn"), n_samples=3).eval()
    adaptive = bpda(defended)
    with torch.no_grad():
        defended.reseed(5)
        real = defended(x)
        defended.reseed(5)
        approx = adaptive(x)
    torch.testing.assert_close(approx, real, atol=1e-5, rtol=0)
    assert float(real.exp().sum(1).sub(1).abs().max()) < 1e-4  # log of a mean of softmaxes


def test_train_surrogate_leaves_the_global_rng_and_the_defense_mode_alone() -> None:
    defense = BaRT(k=1, groups=[ColorPrecision(levels=(4, 4), shared_prob=1.0)]).train()
    data = load_dataset("mnist-5k", "train").take(200)
    state = torch.random.get_rng_state()
    train_surrogate(defense, data, epochs=1, width=8, depth=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert defense.training


def test_adaptive_attack_crafts_through_eot_bpda_and_is_judged_on_the_defended_model(digits) -> None:
    """``Adaptive`` breaks mnist-cnn-bart where the same PGD on the model as it is mostly fails, stays in the
    eps-ball, counts n calls of the defended model per step, judges over fresh draws and is reproducible."""
    from bastion.attacks import Adaptive

    x, y = digits[0][:6], digits[1][:6]
    model = pretrained("mnist-cnn-bart")
    pgd = PGD(eps=0.2, steps=20, early_stop=False)
    atk = Adaptive(attack=pgd, n=4)
    model.reseed(0)
    naive = pgd(model, x, y, generator=torch.Generator().manual_seed(0))
    model.reseed(0)
    res = atk(model, x, y, generator=torch.Generator().manual_seed(0))
    assert int(res.success.sum()) > int(naive.success.sum())
    assert int(res.success.sum()) >= 4
    assert (res.x_adv - x).abs().max() <= 0.2 + 1e-6
    assert res.queries.tolist() == [20 * 4] * 6
    assert res.preds_adv is not None and res.preds_adv.shape == (8, 6)  # the defended model's verdict, 8 draws
    model.reseed(0)
    again = atk(model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.x_adv, res.x_adv)
    assert atk.radius == 0.2 and atk.at_eps(0.1).radius == 0.1
    assert atk.to_dict()["inner"]["attack"] == "pgd"
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_adaptive_attack_needs_an_attack_and_draws() -> None:
    from bastion.attacks import Adaptive

    with pytest.raises(ConfigError, match="attack must be a bastion Attack"):
        Adaptive(attack="pgd", n=4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n must be an integer >= 1"):
        Adaptive(attack=PGD(eps=0.1), n=0)

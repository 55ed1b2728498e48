"""The attack contract, checked by property-based tests over every registered attack (bastion.attacks.ATTACKS)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.attacks import (
    APGD,
    ATTACKS,
    BIM,
    CW,
    FAB,
    FGSM,
    FMN,
    JSMA,
    PGD,
    DeepFool,
    HopSkipJump,
    MinNormPGD,
    Square,
)
from bastion.data import load_dataset
from bastion.errors import ConfigError, InputRangeError, InputShapeError, LabelError, ModelModeError
from bastion.models import pretrained
from tests.conftest import tiny_cnn

#: case -> (registry name, factory(eps, norm) of a small configuration): every registered attack has at least one
#: case (test_every_registered_attack_is_under_contract); attacks without a norm choice ignore ``norm``
FACTORIES = {
    "fgsm": ("fgsm", lambda eps, norm: FGSM(eps=eps, norm=norm)),
    "bim": ("bim", lambda eps, norm: BIM(eps=eps, steps=5, norm=norm)),
    "pgd": ("pgd", lambda eps, norm: PGD(eps=eps, steps=5, norm=norm, restarts=2)),
    "pgd-margin": ("pgd", lambda eps, norm: PGD(eps=eps, steps=5, norm=norm, loss="margin", early_stop=False)),
    "apgd": ("apgd", lambda eps, norm: APGD(eps=eps, steps=6, norm=norm, restarts=2)),
    "apgd-t": ("apgd", lambda eps, norm: APGD(eps=eps, steps=5, norm=norm, loss="dlr", targets=2, early_stop=False)),
    "fab": ("fab", lambda eps, norm: FAB(eps=eps, steps=4, norm=norm, targets=2, restarts=2)),
    "jsma": ("jsma", lambda eps, norm: JSMA(gamma=max(eps, 0.05))),
    "jsma-large": ("jsma", lambda eps, norm: JSMA.large_input(max(1, round(64 * eps)), steps=2, candidates=8)),
    "square": ("square", lambda eps, norm: Square(eps=eps, max_queries=30)),
    "hsj": ("hsj", lambda eps, norm: HopSkipJump(max_queries=60, norm=norm, init_evals=5, max_evals=10)),
    "min-norm": ("min-norm", lambda eps, norm: MinNormPGD(steps=3, doublings=2, search_steps=2)),
    "cw": ("cw", lambda eps, norm: CW(steps=6, search_steps=3, initial_const=0.1)),
    "cw-kappa": ("cw", lambda eps, norm: CW(steps=4, search_steps=2, confidence=0.5, abort_early=False)),
    "deepfool": ("deepfool", lambda eps, norm: DeepFool(steps=4, norm=norm)),
    "deepfool-3": ("deepfool", lambda eps, norm: DeepFool(steps=4, norm=norm, candidates=3, overshoot=0.0)),
    "fmn": ("fmn", lambda eps, norm: FMN(steps=6, norm=norm)),
    "fmn-l1": ("fmn", lambda eps, norm: FMN(steps=6, norm="l1")),
    "fmn-l0": ("fmn", lambda eps, norm: FMN(steps=6, norm="l0")),
}


def test_every_registered_attack_is_under_contract():
    assert {name for name, _ in FACTORIES.values()} == set(ATTACKS.names())
    for case, (name, make) in FACTORIES.items():
        assert isinstance(make(0.1, "linf"), ATTACKS.get(name).cls), case


def _make(case: str, eps: float, norm: str):
    return FACTORIES[case][1](eps, norm)


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

inputs = st.integers(min_value=0, max_value=2**31 - 1).map(
    lambda s: torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(s))
)


@pytest.mark.parametrize("name", sorted(FACTORIES))
@given(x=inputs, eps=st.floats(0.0, 1.0), norm=st.sampled_from(["linf", "l2"]), targeted=st.booleans())
@SETTINGS
def test_result_in_threat_model_and_caller_state_untouched(name, x, eps, norm, targeted):
    model = tiny_cnn()
    flags = [p.requires_grad for p in model.parameters()]
    x_before = x.clone()
    y = torch.tensor([0, 1, 2, 3])
    atk = _make(name, eps, norm)
    res = atk(model, x, y, target=torch.tensor([5, 5, 6, 7]) if targeted else None, generator=torch.Generator().manual_seed(1))
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype and res.x_adv.device == x.device
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert bool(atk.threat.contains(res.x_adv, x).all())
    if atk.threat.norm == norm:
        assert bool((res.norms[norm] <= atk.threat.eps + 1e-6).all())
    assert torch.equal(x, x_before)
    assert not model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not res.x_adv.requires_grad
    assert res.success.dtype == torch.bool and res.success.shape == (4,)
    assert res.logits_adv.shape == (4, 10)
    assert torch.equal(res.success, (res.pred_adv == (torch.tensor([5, 5, 6, 7]) if targeted else y)) ^ (not targeted))


@pytest.mark.parametrize("name", sorted(FACTORIES))
@given(x=inputs, seed=st.integers(0, 2**20))
@SETTINGS
def test_same_seed_same_output_and_batch_equals_singles(name, x, seed):
    model = tiny_cnn(seed=3)
    y = torch.tensor([1, 2, 3, 4])
    atk = _make(name, 0.3, "linf")
    a = atk(model, x, y, generator=torch.Generator().manual_seed(seed))
    b = atk(model, x, y, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a.x_adv, b.x_adv)
    for i in range(4):
        single = atk(model, x[i : i + 1], y[i : i + 1], generator=torch.Generator().manual_seed(seed), keys=torch.tensor([i]))
        torch.testing.assert_close(single.x_adv[0], a.x_adv[i], atol=1e-6, rtol=0)


def test_requires_grad_flags_restored_when_mixed():
    model = tiny_cnn()
    model.net.conv.weight.requires_grad_(False)
    PGD(eps=0.1, steps=3)(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    assert not model.net.conv.weight.requires_grad and model.net.fc.weight.requires_grad


def test_training_mode_model_is_refused_and_left_alone():
    model = tiny_cnn().train()
    with pytest.raises(ModelModeError, match="model.eval"):
        FGSM(eps=0.1)(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    assert model.training


def test_fgsm_equals_closed_form_on_linear_model():
    """For softmax regression z = Wx + b, grad_x CE = W^T (softmax(z) - onehot(y))."""
    torch.manual_seed(0)  # only for building the test's own data
    lin = torch.nn.Linear(64, 10)
    model = torch.nn.Sequential(torch.nn.Flatten(), lin).eval()
    x = torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    t = (y + torch.randint(1, 10, (16,))) % 10  # targets are other classes (a target equal to y is refused)
    eps = 0.1
    p = torch.softmax(x.flatten(1) @ lin.weight.T + lin.bias, 1)
    grad = ((p - torch.nn.functional.one_hot(y, 10)) @ lin.weight).reshape(x.shape)
    expected = (x + eps * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(FGSM(eps=eps)(model, x, y).x_adv, expected, atol=1e-7, rtol=0)
    grad_t = ((p - torch.nn.functional.one_hot(t, 10)) @ lin.weight).reshape(x.shape)
    expected_t = (x - eps * grad_t.sign()).clamp(0, 1)
    torch.testing.assert_close(FGSM(eps=eps)(model, x, y, target=t).x_adv, expected_t, atol=1e-7, rtol=0)


def test_bim_default_step_is_eps_over_t():
    assert BIM(eps=0.3, steps=10).alpha == pytest.approx(0.03)
    assert PGD(eps=0.3, steps=40).alpha == pytest.approx(2.5 * 0.3 / 40)


@pytest.fixture(scope="module")
def trained():
    from bastion.data import load_dataset
    from bastion.models import pretrained

    ds = load_dataset("mnist-5k", "test[:64]")
    return pretrained("mnist-cnn"), ds.images, ds.labels


@pytest.mark.parametrize("target", ["tensor", "random", "least-likely"])
def test_targeted_pgd_reaches_target_on_trained_model(trained, target):
    model, x, y = trained
    spec = (y + 3) % 10 if target == "tensor" else target
    res = PGD(eps=0.3, steps=40, step_size=0.02)(model, x, y, target=spec)
    assert res.target is not None and bool((res.target != y).all())
    assert float((res.pred_adv == res.target).float().mean()) >= 0.95


def test_untargeted_attacks_break_trained_model(trained):
    model, x, y = trained
    assert float(PGD(eps=0.3, steps=40, step_size=0.01)(model, x, y).robust.float().mean()) <= 0.05
    assert float(FGSM(eps=0.3)(model, x, y).robust.float().mean()) < float(FGSM(eps=0.1)(model, x, y).robust.float().mean())


@pytest.mark.parametrize(
    "x, y, err",
    [
        (torch.full((2, 1, 8, 8), float("nan")), torch.tensor([0, 1]), InputRangeError),
        (torch.rand(2, 1, 8, 8) * 255, torch.tensor([0, 1]), InputRangeError),
        (torch.rand(2, 1, 8, 8) - 0.5, torch.tensor([0, 1]), InputRangeError),
        (torch.rand(1, 8, 8), torch.tensor([0]), InputShapeError),
        (torch.randint(0, 255, (2, 1, 8, 8)), torch.tensor([0, 1]), InputShapeError),
        (torch.rand(2, 1, 8, 8), torch.tensor([0, 10]), LabelError),
        (torch.rand(2, 1, 8, 8), torch.tensor([0, 1, 2]), LabelError),
        (torch.rand(2, 1, 8, 8), torch.tensor([0.0, 1.0]), LabelError),
    ],
)
def test_bad_inputs_raise_typed_errors(x, y, err):
    with pytest.raises(err):
        PGD(eps=0.1, steps=2)(tiny_cnn(), x, y)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FGSM(eps=-0.1),
        lambda: PGD(eps=0.1, steps=0),
        lambda: PGD(eps=0.1, restarts=0),
        lambda: BIM(eps=0.1, step_size=0.0),
        lambda: PGD(eps=0.1, norm="l1"),
        lambda: PGD(eps=0.1, loss="hinge"),
        lambda: PGD(eps=float("nan")),
        lambda: PGD(eps=float("inf")),
        lambda: FGSM(eps="0.1"),  # used to be a TypeError from the comparison
    ],
)
def test_bad_configuration_raises(make):
    with pytest.raises(ConfigError):
        make()


def test_configs_are_immutable_and_serializable():
    atk = PGD(eps=0.3, steps=40, step_size=0.01)
    with pytest.raises(AttributeError):
        atk.eps = 0.5  # type: ignore[misc]
    d = atk.to_dict()
    assert d == {"attack": "pgd", "eps": 0.3, "steps": 40, "step_size": 0.01, "random_start": True, "restarts": 1,
                 "norm": "linf", "loss": "ce", "early_stop": True, "bounds": [0.0, 1.0]}
    with pytest.raises(TypeError):
        PGD(0.3)  # type: ignore[misc]  # keyword-only


def test_gradient_attacks_work_under_no_grad_and_inference_mode():
    """Called under no_grad() the loss gradient used to be zero: the attack silently did nothing."""
    model, x = tiny_cnn(), torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1).detach()
    for atk in (FGSM(eps=0.3), PGD(eps=0.3, steps=5)):
        ref = atk(model, x, y)
        with torch.no_grad():
            got = atk(model, x, y)
        with torch.inference_mode():
            xi, yi = x.clone(), y.clone()  # inference tensors
            inf = atk(model, xi, yi)
        assert not torch.equal(ref.x_adv, x)
        assert torch.equal(got.x_adv, ref.x_adv) and torch.equal(inf.x_adv, ref.x_adv)
        assert not inf.x_adv.is_inference()


def test_inputs_the_model_cannot_take_get_a_clear_error():
    model, x = tiny_cnn(), torch.rand(2, 1, 8, 8)
    y = torch.tensor([0, 1])
    with pytest.raises(InputShapeError, match="cannot take x of shape .2, 3, 8, 8"):
        FGSM(eps=0.1)(model, x.repeat(1, 3, 1, 1), y)
    with pytest.raises(InputShapeError, match="float64 but the model's parameters are torch.float32"):
        FGSM(eps=0.1)(model, x.double(), y)

    class Pair(torch.nn.Module):
        def forward(self, v):
            return model(v), v

    with pytest.raises(InputShapeError, match="returned a tuple"):
        FGSM(eps=0.1)(Pair().eval(), x, y)


def test_target_equal_to_the_label_and_bad_generator_or_keys_are_refused():
    model, x = tiny_cnn(), torch.rand(3, 1, 8, 8)
    y = torch.tensor([0, 1, 2])
    with pytest.raises(LabelError, match="target equals the true label for 1 of 3 inputs .indices .2.."):
        FGSM(eps=0.1)(model, x, y, target=torch.tensor([1, 2, 2]))
    with pytest.raises(ConfigError, match="torch.Generator"):
        FGSM(eps=0.1)(model, x, y, generator=0)  # type: ignore[arg-type]
    with pytest.raises(LabelError, match="int64"):
        FGSM(eps=0.1)(model, x, y, keys=torch.zeros(3))


def test_fgsm_evaluates_each_input_once_for_its_gradient_and_once_for_its_result():
    """FGSM's gradient pass is the clean forward pass: no separate clean evaluation of the batch. The only other
    calls are the probe on the first 8 inputs (twice for a model that does not declare whether it is randomized,
    once for bastion's classifiers, which declare they are not)."""
    classifier, x = tiny_cnn(), torch.rand(32, 1, 8, 8)
    y = classifier(x).argmax(1).detach()
    for model, expected in ((classifier, [8, 32, 32]), (torch.nn.Sequential(classifier).eval(), [8, 8, 32, 32])):
        rows: list[int] = []
        handle = classifier.register_forward_hook(lambda _m, inp, _out, rows=rows: rows.append(inp[0].shape[0]))
        try:
            res = FGSM(eps=0.1)(model, x, y)
        finally:
            handle.remove()
        assert res.queries.tolist() == [1] * 32
        assert sorted(rows) == expected
    assert torch.equal(BIM(eps=0.1, steps=3)(classifier, x, y).queries, torch.full((32,), 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_keyed_uniforms_in_low_precision_stay_in_the_unit_interval(dtype):
    from bastion._rng import keyed_uniform

    keys = torch.arange(64)
    u = keyed_uniform(keys, (1000,), seed=3, dtype=dtype)
    assert u.dtype == dtype and bool(torch.isfinite(u).all()) and float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.float().mean()) - 0.5) < 0.01  # 2**24 overflowed half: nearly every value was inf


def test_attacks_on_0_255_pixels_stay_inside_their_threat_model():
    from bastion.attacks import FGSM, PGD

    class Scaled(torch.nn.Module):  # a model taking 0-255 pixels
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x / 255.0)

    model = Scaled(pretrained("mnist-cnn")).eval()
    x = (load_dataset("mnist-5k", "test[:8]").images * 255.0).round()
    y = load_dataset("mnist-5k", "test[:8]").labels
    for atk in (FGSM(eps=7.65, bounds=(0.0, 255.0)), PGD(eps=7.65, steps=3, bounds=(0.0, 255.0))):
        res = atk(model, x, y)  # the threat-model check's fixed 1e-6 tolerance used to raise here
        assert float(res.norms["linf"].max()) <= 7.65 + 1e-3


def test_transfer_source_that_cannot_take_x_gets_a_clear_error():
    from bastion.attacks import PGD, TransferAttack
    from bastion.errors import InputShapeError

    src = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10)).eval()
    data = load_dataset("mnist-5k", "test[:4]")
    with pytest.raises(InputShapeError, match="source model"):
        TransferAttack(source=src, attack=PGD(eps=0.1, steps=1))(pretrained("mnist-cnn"), data.images, data.labels)

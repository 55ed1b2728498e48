"""Transfer attacks and Papernot et al.'s substitute training: exactness, query accounting, label-only access."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks.fgsm import FGSM
from bastion.attacks.jsma import JSMA
from bastion.attacks.pgd import PGD
from bastion.attacks.transfer import TransferAttack
from bastion.data import load_dataset
from bastion.defenses import HideProbabilities
from bastion.errors import ConfigError, InputShapeError, ModelModeError
from bastion.models import create_model, pretrained
from bastion.training.substitute import (
    SubstituteAttack,
    SubstituteTraining,
    jacobian_augmentation,
    pick_seed_set,
)
from tests.conftest import tiny_cnn


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: these small models run several times faster on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return pretrained("mnist-cnn")


@pytest.fixture(scope="module")
def logreg() -> nn.Module:
    return pretrained("logreg")


@pytest.fixture(scope="module")
def batch() -> tuple[Tensor, Tensor]:
    ds = load_dataset("mnist-5k", "test").subset(list(range(0, 1000, 50)))  # 20 images, all classes
    return ds.images, ds.labels


@pytest.fixture(scope="module")
def train_pool():
    return load_dataset("mnist-5k", "train")


class Counting(nn.Module):
    """Records every forward call: batch size and whether autograd was on or the input required grad."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append((int(x.shape[0]), torch.is_grad_enabled() and x.requires_grad))
        return self.model(x)


_META = {"ndim", "shape", "device", "dtype"}


class LabelsOnly(Tensor):
    """Scores a caller may only take the argmax of (or ask the shape of); anything else is recorded."""

    violations: ClassVar[list[str]] = []

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", repr(func))
        owner = getattr(getattr(func, "__self__", None), "__name__", None)
        allowed = name in ("argmax", "dim", "size") or (name == "__get__" and owner in _META)
        if not allowed:
            cls.violations.append(f"{name}({owner})" if owner else name)
            raise AssertionError(f"score access through {name}")
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


class LabelOnlyTarget(nn.Module):
    """A target that fails on any gradient request and whose outputs allow only argmax; counts query rows."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0
        self.grad_requests = 0

    @property
    def classes(self) -> tuple[str, ...]:  # the task's label set is public, as for HideProbabilities
        return self.model.classes

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or x.requires_grad:
            self.grad_requests += 1
            raise AssertionError("gradient access to a label-only target")
        self.rows += int(x.shape[0])
        return self.model(x).detach().as_subclass(LabelsOnly)


TINY = SubstituteTraining(arch="logreg", rounds=3, epochs_per_round=5, lr=1e-2, batch_size=32, max_queries=130)


# --------------------------------------------------------------------------- TransferAttack


@pytest.mark.parametrize(
    "atk",
    # JSMA's run also returns its outputs at x_adv, which the transfer must not trip over
    [FGSM(eps=0.1), PGD(eps=0.1, steps=5), PGD(eps=0.2, steps=3, restarts=2, loss="margin"), JSMA(gamma=0.05)],
    ids=repr,
)
def test_transfer_to_itself_equals_white_box(cnn, batch, atk):
    """Transferred to the source itself, the examples are the white-box ones, without early stopping (an example
    frozen just past the source's boundary rarely crosses another model's: transfer never stops early)."""
    x, y = batch
    white_atk = replace(atk, early_stop=False) if isinstance(atk, PGD) else atk
    white = white_atk(cnn, x, y, generator=torch.Generator().manual_seed(5))
    trans = TransferAttack(source=cnn, attack=atk)(cnn, x, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(trans.x_adv, white.x_adv)
    assert torch.equal(trans.success, white.success)
    assert white.queries.sum() > 0 and trans.queries.sum() == 0
    assert white.success.any()  # the comparison is not between two no-ops


def test_transfer_targeted_equals_white_box(cnn, batch):
    x, y = batch
    tgt = (y + 3) % 10
    atk = PGD(eps=0.3, steps=4)
    white = replace(atk, early_stop=False)(cnn, x, y, target=tgt, generator=torch.Generator().manual_seed(1))
    trans = TransferAttack(source=cnn, attack=atk)(cnn, x, y, target=tgt, generator=torch.Generator().manual_seed(1))
    assert torch.equal(trans.x_adv, white.x_adv)
    assert torch.equal(trans.target, tgt)


def test_transfer_queries_the_target_only_for_evaluation(cnn, logreg, batch):
    x, y = batch
    target = Counting(cnn).eval()
    flags = [p.requires_grad for p in logreg.parameters()]
    res = TransferAttack(source=logreg, attack=PGD(eps=0.3, steps=5, early_stop=False))(target, x, y)
    # the base class only: the probe on 8 inputs (twice: the target does not declare whether it is randomized),
    # then the clean and the final evaluation
    assert target.calls == [(8, False), (8, False), (x.shape[0], False), (x.shape[0], False)]
    assert res.queries.dtype == torch.int64 and int(res.queries.abs().sum()) == 0
    assert res.success.any()  # logreg -> cnn transfer does something at eps 0.3 (about 20% on mnist-5k)
    assert float(res.norms["linf"].max()) <= 0.3 + 1e-6
    assert not logreg.training and [p.requires_grad for p in logreg.parameters()] == flags
    assert all(p.grad is None for p in logreg.parameters())


def test_transfer_breaks_hidden_probabilities_where_white_box_fails(cnn, batch):
    x, y = batch
    hidden = HideProbabilities(cnn).eval()
    naive = PGD(eps=0.3, steps=5)(hidden, x, y)
    # masking the output does not move the decision boundary: examples made on the unmasked model still work
    trans = TransferAttack(source=cnn, attack=PGD(eps=0.3, steps=5))(hidden, x, y)
    clean = float((naive.pred_clean == y).float().mean())
    assert clean > 0.8 and float(naive.robust.float().mean()) == clean  # zero gradient: PGD never moves
    assert float(trans.robust.float().mean()) < 0.2


def test_transfer_config(cnn, logreg, batch):
    atk = TransferAttack(source=logreg, attack=FGSM(eps=0.3))
    assert TransferAttack.access == "transfer"
    assert atk.threat == FGSM(eps=0.3).threat
    d = json.loads(json.dumps(atk.to_dict()))
    assert d["attack"] == "transfer" and d["inner"]["eps"] == 0.3 and d["source"]["arch"] == "logreg"
    assert len(json.dumps(d)) < 1000  # a description, not the weights
    assert len(repr(atk)) < 200 and "logreg" in repr(atk)
    with pytest.raises(ConfigError):
        TransferAttack(source="mnist-cnn", attack=FGSM(eps=0.3))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TransferAttack(source=logreg, attack=0.3)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        atk.attack = PGD(eps=0.1)  # type: ignore[misc]  # frozen


def test_transfer_refuses_training_mode_source_and_mismatched_classes(cnn, batch):
    x, y = batch
    src = create_model("logreg", seed=0)
    src.train()
    with pytest.raises(ModelModeError):
        TransferAttack(source=src, attack=FGSM(eps=0.1))(cnn, x, y)
    assert src.training  # left as it was
    five = create_model("logreg", classes=tuple("abcde"), seed=0).eval()
    with pytest.raises(InputShapeError):
        TransferAttack(source=five, attack=FGSM(eps=0.1))(cnn, x, y)


def test_transfer_contract_between_two_small_models():
    source, target = tiny_cnn(seed=1), tiny_cnn(seed=2)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    x_before = x.clone()
    src_flags = [p.requires_grad for p in source.parameters()]
    atk = TransferAttack(source=source, attack=PGD(eps=0.2, steps=4))
    res = atk(target, x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(x, x_before) and not res.x_adv.requires_grad
    assert bool((res.norms["linf"] <= 0.2 + 1e-6).all()) and float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    for m in (source, target):
        assert not m.training and all(p.grad is None for p in m.parameters())
    assert [p.requires_grad for p in source.parameters()] == src_flags
    # the keyed randomness passes through: a batch equals its samples attacked one by one
    for i in range(6):
        one = atk(target, x[i : i + 1], y[i : i + 1], generator=torch.Generator().manual_seed(4), keys=torch.tensor([i]))
        torch.testing.assert_close(one.x_adv[0], res.x_adv[i], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- substitute training


@pytest.fixture(scope="module")
def seeds(train_pool) -> Tensor:
    return pick_seed_set(train_pool, 4, generator=torch.Generator().manual_seed(0)).images  # 40 images


def test_pick_seed_set_is_balanced_and_deterministic(train_pool):
    a = pick_seed_set(train_pool, 15, generator=torch.Generator().manual_seed(3))
    b = pick_seed_set(train_pool, 15, generator=torch.Generator().manual_seed(3))
    c = pick_seed_set(train_pool, 15, generator=torch.Generator().manual_seed(4))
    assert len(a) == 150 and torch.equal(torch.bincount(a.labels), torch.full((10,), 15))
    assert torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)
    assert set(a.indices.tolist()) <= set(train_pool.indices.tolist())
    with pytest.raises(ConfigError):
        pick_seed_set(train_pool.take(30), 15)


def test_substitute_training_is_label_only_and_respects_the_budget_exactly(cnn, seeds, batch):
    LabelsOnly.violations.clear()
    target = LabelOnlyTarget(cnn).eval()
    sub = TINY.train(target, seeds, generator=torch.Generator().manual_seed(0))
    assert not LabelsOnly.violations and target.grad_requests == 0
    # 40 seed labels + 40 augmented + 80 planned for the second augmentation, cut to the budget of 130
    assert TINY.planned_queries(40) == 130
    assert sub.queries == target.rows == 130
    assert sub.images.shape == (130, 1, 28, 28) and sub.labels.shape == (130,)
    assert [h["train_size"] for h in sub.history] == [40, 80, 130]
    assert [h["augmented"] for h in sub.history[:-1]] == [40, 50]
    assert torch.equal(sub.images[:40], seeds)
    assert float(sub.images.min()) >= 0.0 and float(sub.images.max()) <= 1.0
    # the substitute learned the target's decision on unseen images far above chance (0.1)
    x, _ = batch
    with torch.no_grad():
        agree = (sub.model(x).argmax(1) == cnn(x).argmax(1)).float().mean()
    assert agree > 0.4
    assert not sub.model.training and not cnn.training


def test_substitute_training_without_a_cap_spends_the_planned_queries(cnn, seeds):
    cfg = SubstituteTraining(arch="logreg", rounds=3, epochs_per_round=1, max_queries=10_000, num_classes=10)
    target = Counting(cnn).eval()  # declares no classes: num_classes says how many
    sub = cfg.train(target, seeds[:10])
    assert sub.model.num_classes == 10
    assert sub.queries == cfg.planned_queries(10) == 40 == sum(n for n, _ in target.calls)
    assert not any(g for _, g in target.calls)
    res = SubstituteTraining(arch="logreg", rounds=6, epochs_per_round=1, reservoir=3, reservoir_after=2)
    assert res.planned_queries(10) == 10 + 10 + 20 + 3 + 3 + 3


def test_substitute_training_is_deterministic_in_the_generator(cnn, seeds):
    cfg = SubstituteTraining(arch="logreg", rounds=3, epochs_per_round=2, lr=1e-2, batch_size=32, max_queries=50)

    def run(s: int):
        return cfg.train(LabelOnlyTarget(cnn).eval(), seeds[::2], generator=torch.Generator().manual_seed(s))

    a, b, c = run(7), run(7), run(8)
    assert a.queries == b.queries == 50
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)  # init and the budget-cut subset depend on the generator
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), c.model.state_dict().values(),
                                                      strict=True))


def test_substitute_training_leaves_the_global_rng_alone(cnn, seeds):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    TINY.train(LabelOnlyTarget(cnn).eval(), seeds[:20], generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)


def test_jacobian_augmentation_steps_by_lambda_and_leaves_no_grad(logreg, seeds):
    labels = logreg(seeds).argmax(1)
    new = jacobian_augmentation(logreg, seeds, labels, 0.1)
    moved = (new - seeds).abs()
    inside = (seeds > 0.1) & (seeds < 0.9)  # points the clip cannot touch
    assert torch.allclose(moved[inside], torch.full_like(moved[inside], 0.1), atol=1e-6)
    assert all(p.grad is None for p in logreg.parameters())
    back = jacobian_augmentation(logreg, seeds, labels, -0.1)
    assert torch.allclose((back - seeds)[inside], -(new - seeds)[inside], atol=1e-6)


def test_lambda_sign_flips_every_tau_rounds():
    cfg = SubstituteTraining(tau=2, lam=0.1)
    assert [cfg.lam_at(r) for r in range(6)] == [0.1, 0.1, -0.1, -0.1, 0.1, 0.1]
    assert SubstituteTraining(tau=None).lam_at(5) == 0.1


@pytest.mark.parametrize(
    "kw",
    [{"rounds": 0}, {"lam": 0.0}, {"tau": 0}, {"max_queries": 0}, {"arch": "nope"}, {"epochs_per_round": 0},
     {"reservoir": 0}, {"arch_options": [1]}, {"bounds": (1.0, 0.0)}, {"num_classes": 1}],
    ids=str,
)
def test_substitute_training_config_is_validated(kw):
    with pytest.raises(ConfigError):
        SubstituteTraining(**kw)


def test_substitute_training_refuses_bad_seed_sets(cnn, seeds):
    with pytest.raises(ConfigError, match="budget"):
        SubstituteTraining(arch="logreg", max_queries=20).train(cnn, seeds)
    with pytest.raises(ConfigError, match="shape"):
        SubstituteTraining(arch="logreg", num_classes=10).train(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(),
                                                torch.rand(5, 1, 8, 8))
    with pytest.raises(ConfigError, match="num_classes"):
        SubstituteTraining(arch="logreg").train(Counting(cnn).eval(), seeds)
    train_mode = create_model("logreg", seed=0)
    with pytest.raises(ModelModeError):
        SubstituteTraining(arch="logreg").train(train_mode, seeds)


# --------------------------------------------------------------------------- SubstituteAttack


def test_substitute_attack_end_to_end_counts_queries(cnn, seeds, batch):
    x, y = batch
    target = Counting(cnn).eval()
    atk = SubstituteAttack(attack=FGSM(eps=0.3), seed_images=seeds, training=replace(TINY, num_classes=10))
    res = atk(target, x, y, generator=torch.Generator().manual_seed(0))
    # the attack spent exactly the training budget; the base class probed 8 inputs twice and evaluated the batch twice
    assert int(res.queries.sum()) == 130
    assert int(res.queries.max() - res.queries.min()) <= 1
    assert sum(n for n, _ in target.calls) == 130 + 2 * 8 + 2 * x.shape[0]
    assert not any(g for _, g in target.calls)
    assert float(res.norms["linf"].max()) <= 0.3 + 1e-6
    assert res.success.any()  # a 130-query logreg substitute transfers a little at eps 0.3 (~20%)
    again = atk(cnn, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.x_adv, res.x_adv)


def test_substitute_attack_config(seeds):
    atk = SubstituteAttack(attack=PGD(eps=0.3, steps=40, step_size=0.01), seed_images=seeds, training=TINY)
    assert SubstituteAttack.access == "label"
    assert atk.threat == PGD(eps=0.3).threat
    d = json.loads(json.dumps(atk.to_dict()))
    assert d["seed_images"]["n"] == 40 and d["training"]["max_queries"] == 130 and d["inner"]["attack"] == "pgd"
    assert len(repr(atk)) < 400 and "40 images" in repr(atk)
    seeds_copy = seeds.clone()
    atk2 = SubstituteAttack(attack=FGSM(eps=0.3), seed_images=seeds_copy)
    seeds_copy.zero_()
    assert torch.equal(atk2.seed_images, seeds)  # the config does not alias the caller's tensor
    with pytest.raises(ConfigError):
        SubstituteAttack(attack=FGSM(eps=0.3), seed_images=seeds, training=SubstituteTraining(max_queries=10))
    with pytest.raises(ConfigError):
        SubstituteAttack(attack="fgsm", seed_images=seeds)  # type: ignore[arg-type]


@pytest.mark.slow
def test_substitute_attack_breaks_hide_probabilities(cnn, train_pool):
    """End to end (a few minutes): label queries only, yet PGD crafted on the substitute fools the masked model."""
    test = load_dataset("mnist-5k", "test").subset(list(range(0, 1000, 5)))  # 200 images
    x, y = test.images, test.labels
    hidden = HideProbabilities(cnn).eval()
    naive = PGD(eps=0.3, steps=10, step_size=0.03)(hidden, x, y)
    seeds = pick_seed_set(train_pool, 15, generator=torch.Generator().manual_seed(0)).images
    cfg = SubstituteTraining(rounds=5, lam=0.2, epochs_per_round=5, max_queries=2400)
    atk = SubstituteAttack(attack=PGD(eps=0.3, steps=20, step_size=0.03, early_stop=False), seed_images=seeds,
                           training=cfg)
    res = atk(hidden, x, y, generator=torch.Generator().manual_seed(0))
    assert int(res.queries.sum()) == 2400
    assert float(naive.robust.float().mean()) > 0.9
    assert float(res.robust.float().mean()) < 0.5

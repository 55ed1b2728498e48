import pytest
import torch

from bastion.attacks import PGD
from bastion.data import load_dataset
from bastion.errors import ConfigError
from bastion.models import create_model, pretrained
from bastion.training import StepContext, TrainConfig, fit
from bastion.training.adversarial import AdversarialTraining, OverfitGuard, adversarial_recipe


@pytest.fixture(scope="module")
def small():
    return load_dataset("mnist-5k", "train[:1500]"), load_dataset("mnist-5k", "test").subset(torch.arange(0, 1000, 10))


def pgd_acc(model, data, eps=0.2):
    return float(PGD(eps=eps, steps=20, step_size=2.5 * eps / 20)(model, data.images, data.labels).robust.float().mean())


def test_fgsm_rs_training_beats_standard_model_under_pgd(small):
    train, test = small
    model = create_model("mnist-cnn", seed=0)
    obj = AdversarialTraining(recipe="fgsm-rs", eps=0.2, epochs=3)
    fit(model, train, config=TrainConfig(epochs=3, batch_size=64, lr=3e-3), objective=obj)
    adv, std = pgd_acc(model, test), pgd_acc(pretrained("mnist-cnn"), test)
    assert adv >= std + 0.25, (adv, std)


def test_crafting_switches_to_eval_and_back_and_keeps_flags():
    model = create_model("mnist-cnn", dropout=0.5, seed=0).train()
    seen = []
    model.net.classifier.drop1.register_forward_pre_hook(lambda m, i: seen.append(m.training))
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    ctx = StepContext(epoch=0, step=0, total_steps=1, keys=torch.arange(4), seed=0)
    loss, _ = AdversarialTraining(recipe="pgd", eps=0.3, steps=2)(model, x, y, ctx)
    assert seen[:-1] == [False] * (len(seen) - 1) and seen[-1] is True  # crafted in eval, trained in train mode
    assert model.training and all(p.requires_grad for p in model.parameters())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("recipe", ["fgsm-rs", "pgd", "trades"])
def test_crafted_points_in_the_ball(recipe):
    model = create_model("mnist-cnn", seed=0).eval()
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    ctx = StepContext(epoch=0, step=5, total_steps=10, keys=torch.arange(3), seed=1)
    obj = AdversarialTraining(recipe=recipe, eps=0.3, steps=3)
    xa = obj.craft(model, x, y, ctx)
    assert float((xa - x).abs().max()) <= 0.3 + 1e-6 and 0 <= float(xa.min()) and float(xa.max()) <= 1
    assert torch.equal(xa, obj.craft(model, x, y, ctx))  # deterministic in (seed, step, keys)


def test_eps_ramp_and_defaults():
    obj = AdversarialTraining(recipe="fgsm-rs", eps=0.3, ramp_epochs=2, epochs=4)
    ctx = lambda step: StepContext(epoch=0, step=step, total_steps=400, keys=torch.arange(1), seed=0)  # noqa: E731
    assert obj.eps_at(ctx(0)) == 0 and obj.eps_at(ctx(100)) == pytest.approx(0.15) and obj.eps_at(ctx(300)) == 0.3
    assert obj.step_size == pytest.approx(0.375) and AdversarialTraining(recipe="pgd").n_steps == 40
    with pytest.raises(ConfigError):
        AdversarialTraining(recipe="free")
    with pytest.raises(ConfigError):
        adversarial_recipe(create_model("logreg"), attack="cw")


def test_resume_equals_uninterrupted(tmp_path, small):
    train, test = small
    train = train.take(300)
    cfg = TrainConfig(epochs=2, batch_size=50, lr=2e-3, seed=3)
    obj, cbs, _, _ = adversarial_recipe(create_model("mnist-cnn"), attack="fgsm-rs", eps=0.3, val=test, epochs=2, guard_images=20)

    a = create_model("mnist-cnn", seed=1)
    fit(a, train, config=cfg, objective=obj, callbacks=cbs, val=test, out_dir=tmp_path / "a", monitor="val_robust_acc")

    class Kill(Exception):
        pass

    def die(model, epoch, metrics, history):
        if epoch == 1:
            raise Kill
        return {}

    b = create_model("mnist-cnn", seed=1)
    with pytest.raises(Kill):
        fit(b, train, config=cfg, objective=obj, callbacks=[*cbs, die], val=test, out_dir=tmp_path / "b", monitor="val_robust_acc")
    b = create_model("mnist-cnn", seed=1)
    fit(b, train, config=cfg, objective=obj, callbacks=cbs, val=test, out_dir=tmp_path / "b", resume=True, monitor="val_robust_acc")
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def test_overfit_guard_fires_on_constructed_collapse(small):
    _, test = small
    guard = OverfitGuard(data=test.take(40), eps=0.3)
    std = pretrained("mnist-cnn")  # PGD accuracy ~0 at eps 0.3
    out = guard(std, 3, {}, history=[{"val_robust_acc": 0.7}, {"val_robust_acc": 0.8}])
    assert out["val_robust_acc"] < 0.1 and out["rollback"] and out["catastrophic_overfitting"]
    assert "rollback" not in guard(std, 0, {}, history=[])


def test_fit_rolls_back_to_best_epoch(small):
    train, _ = small
    model = create_model("logreg", seed=0)
    snapshots = []
    scores = iter([0.5, 0.9, 0.1])

    def cb(m, epoch, metrics, history):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        s = next(scores)
        return {"val_robust_acc": s, **({"rollback": True} if s < 0.2 else {})}

    h = fit(model, train.take(200), config=TrainConfig(epochs=5, batch_size=50), callbacks=[cb], monitor="val_robust_acc")
    assert len(h.epochs) == 3 and h.epochs[-1]["rolled_back"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k])  # the best epoch (score 0.9)


@pytest.mark.parametrize("bad", [{"alpha": -0.1}, {"alpha": 0.0}, {"beta": -1.0}, {"ramp_epochs": -1.0}])
def test_negative_steps_and_weights_are_refused(bad):
    with pytest.raises(ConfigError):
        AdversarialTraining(recipe="pgd", eps=0.3, **bad)


@pytest.mark.parametrize("recipe", ["fgsm-rs", "pgd", "trades"])
@pytest.mark.parametrize("batch", [2, 8])
def test_mixed_batches_craft_only_their_share(recipe, batch):
    # adv_ratio=0.5 used to pass the whole batch's keys with half the batch: a shape error, or (one image)
    # one image crafted into B copies
    model = create_model("mnist-cnn", seed=0).train()
    x, y = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(batch) % 10
    ctx = StepContext(epoch=0, step=0, total_steps=1, keys=torch.arange(batch), seed=0)
    obj = AdversarialTraining(recipe=recipe, eps=0.3, steps=2, adv_ratio=0.5)
    crafted = []
    orig = obj.craft

    def spy(m, xs, ys, c):
        out = orig(m, xs, ys, c)
        crafted.append((xs, out))
        return out

    object.__setattr__(obj, "craft", spy)
    loss, _ = obj(model, x, y, ctx)
    (xs, out), = crafted
    assert xs.shape[0] == out.shape[0] == batch // 2 and torch.equal(xs, x[: batch // 2])
    assert float((out - xs).abs().max()) <= 0.3 + 1e-6 and torch.isfinite(loss)


def test_ramp_follows_fit_epochs_and_fgsm_step_follows_the_ramp():
    obj = AdversarialTraining(recipe="fgsm-rs", eps=0.3, ramp_epochs=1)  # epochs left at its default of 1
    ctx = lambda step: StepContext(epoch=0, step=step, total_steps=400, keys=torch.arange(1), seed=0,  # noqa: E731
                                   steps_per_epoch=100)
    assert obj.eps_at(ctx(50)) == pytest.approx(0.15) and obj.eps_at(ctx(100)) == 0.3  # one epoch of 4, not 4
    assert obj.step_size_at(0.15) == pytest.approx(0.1875)  # 1.25 x the ramped eps keeps the random start alive
    assert AdversarialTraining(recipe="trades").n_steps == 40


def test_crafting_restores_each_modules_own_mode():
    model = create_model("cifar-resnet", dataset="cifar10", seed=0).train()
    frozen_bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][:2]
    for m in frozen_bn:
        m.eval()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    ctx = StepContext(epoch=0, step=0, total_steps=1, keys=torch.arange(2), seed=0)
    flags = {id(m): m.training for m in model.modules()}
    AdversarialTraining(recipe="pgd", eps=0.03, steps=1)(model, x, y, ctx)
    assert {id(m): m.training for m in model.modules()} == flags


def _craft_before_the_shared_loop(obj, model, x, y, ctx):
    """AdversarialTraining.craft as it was written before the descent loop was shared (the reference)."""
    import torch.nn.functional as F

    from bastion.threat import ThreatModel

    eps = obj.eps_at(ctx)
    threat = ThreatModel(norm="linf", eps=eps)
    alpha = obj.step_size_at(eps)
    seed = (ctx.seed * 1_000_003 + ctx.step) % (2**31)
    if obj.recipe == "trades":
        with torch.no_grad():
            p_clean = F.softmax(model(x), 1)
        x_adv = threat.random_init(x, ctx.keys, seed=seed)
        for _ in range(obj.n_steps):
            xa = x_adv.detach().requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(xa), 1), p_clean, reduction="sum")
            (g,) = torch.autograd.grad(kl, xa)
            x_adv = threat.project(xa.detach() + alpha * g.sign(), x)
        return x_adv.detach()
    with torch.no_grad():
        y = model(x).argmax(1)
    start = threat.random_init(x, ctx.keys, seed=seed)
    xs = start.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xs), y, reduction="sum"), xs)
    return threat.project(start + alpha * g.sign(), x).detach()


@pytest.mark.parametrize("recipe", ["fgsm-rs", "trades"])
def test_crafting_through_the_shared_loop_equals_the_code_before_it(recipe):
    model = create_model("mnist-cnn", seed=1).eval()
    x = load_dataset("mnist-5k", "test").subset(torch.arange(0, 1000, 50)).images
    y = torch.arange(20) % 10
    ctx = StepContext(epoch=0, step=7, total_steps=10, keys=torch.arange(100, 120), seed=3)
    obj = AdversarialTraining(recipe=recipe, eps=0.3, steps=5 if recipe == "trades" else None)
    got = obj.craft(model, x, y, ctx)
    want = _craft_before_the_shared_loop(obj, model, x, y, ctx)
    assert torch.equal(got, want)
    assert not torch.equal(got, x)


def test_trades_inner_loss_is_the_kl_of_clean_to_adversarial():
    import torch.nn.functional as F

    from bastion.training.adversarial import _kl_from

    g = torch.Generator().manual_seed(0)
    clean, adv = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    p = F.softmax(clean, 1)
    q = F.softmax(adv, 1)
    by_hand = (p * (p.log() - q.log())).sum(1)  # KL(f(x) || f(x')) per sample
    torch.testing.assert_close(_kl_from(p)(adv, None), by_hand)
    torch.testing.assert_close(_kl_from(p)(adv[[1, 4]], torch.tensor([1, 4])), by_hand[[1, 4]])
    # and the training objective: CE(f(x), y) + beta * KL(f(x) || f(x')) averaged over the batch
    obj = AdversarialTraining(recipe="trades", eps=0.3, steps=1, beta=6.0)
    model = create_model("logreg", seed=0).train()
    x = torch.rand(6, 1, 28, 28, generator=g)
    y = torch.arange(6)
    ctx = StepContext(epoch=0, step=0, total_steps=1, keys=torch.arange(6), seed=0)
    loss, _ = obj(model, x, y, ctx)
    x_adv = obj.craft(model.eval(), x, y, ctx)
    model.train()
    with torch.no_grad():
        pc, pa = F.softmax(model(x), 1), F.softmax(model(x_adv), 1)
        expected = F.cross_entropy(model(x), y) + 6.0 * (pc * (pc.log() - pa.log())).sum(1).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_plain_fgsm_recipe_is_goodfellows():
    """recipe='fgsm': one step of eps from the clean image (no random start), true labels, half of each batch."""
    import torch.nn.functional as F

    model = create_model("mnist-cnn", seed=2).eval()
    x = load_dataset("mnist-5k", "test").subset(torch.arange(0, 1000, 50)).images
    y = (torch.arange(20) + 3) % 10  # not the model's predictions: crafting must use these labels
    ctx = StepContext(epoch=0, step=0, total_steps=1, keys=torch.arange(20), seed=0)
    obj = AdversarialTraining(recipe="fgsm", eps=0.3)
    assert obj.ratio == 0.5 and obj.labels == "true" and obj.n_steps == 1 and obj.step_size == 0.3
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xs), y, reduction="sum"), xs)
    assert torch.equal(obj.craft(model, x, y, ctx), (x + 0.3 * g.sign()).clamp(0, 1))
    assert AdversarialTraining(recipe="pgd").ratio == 1.0 and AdversarialTraining(recipe="pgd").labels == "predicted"
    seen = []
    model.train()
    handle = model.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[0]))
    try:
        obj(model, x, y, ctx)
    finally:
        handle.remove()
    assert seen[-1] == 20 and 10 in seen[:-1]  # 10 of the 20 images crafted, the update on all 20


def test_label_leak_check_reports_fgsm_accuracy_above_clean():
    from bastion.training.adversarial import LabelLeakCheck

    data = load_dataset("mnist-5k", "test").subset(torch.arange(0, 1000, 25))
    out = LabelLeakCheck(data=data, eps=0.3)(pretrained("mnist-cnn"), 0, {}, [])
    assert out["val_fgsm_acc"] < out["val_clean_acc"] and out["label_leaking"] is False

    class Leaky(torch.nn.Module):  # right only on perturbed images (it recognises the perturbation)
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, v):
            z = self.m(v)
            clean = ((v * 255).round() == v * 255).flatten(1).all(1)
            return torch.where(clean[:, None], z.roll(1, 1), z)

    out = LabelLeakCheck(data=data, eps=0.3)(Leaky(pretrained("mnist-cnn")).eval(), 0, {}, [])
    assert out["label_leaking"] is True

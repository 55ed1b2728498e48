from __future__ import annotations

import json

import pytest
import torch

from bastion.defenses.bart import BaRT, Denoise, Swirl
from bastion.defenses.base import Defended
from bastion.errors import ConfigError, UnknownNameError

from ...conftest import tiny_cnn


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_orders_are_per_image_and_k_is_respected(rgb: torch.Tensor) -> None:
    bart = BaRT(k=5)
    draw = bart.sample(64, 3, generator=gen())
    assert draw.order.shape == (64, 5) and draw.names == bart.names
    for row in draw.order.tolist():
        assert len(set(row)) == 5  # k distinct groups per image
    assert len({tuple(r) for r in draw.order.tolist()}) > 50  # orders differ between images
    firsts = torch.bincount(draw.order[:, 0], minlength=10)
    assert int((firsts > 0).sum()) >= 8  # every group can come first


def test_grayscale_skips_colour_groups(gray: torch.Tensor) -> None:
    bart = BaRT(k=8)
    draw = bart.sample(16, 1, generator=gen())
    assert "greyscale" not in draw.names and "color_space" not in draw.names and len(draw.names) == 8
    y = bart(gray.float(), generator=gen())
    assert y.shape == gray.shape
    with pytest.raises(ConfigError):
        BaRT(k=9)(gray.float(), generator=gen())


def test_forward_replay_and_batch_invariance(rgb: torch.Tensor) -> None:
    bart = BaRT(k=5)
    x = rgb.float()
    y, draw = bart(x, generator=gen(1), return_params=True)
    assert torch.equal(bart.apply(x, draw), y)
    y2, _ = bart(x, generator=gen(1), return_params=True)
    assert torch.equal(y2, y)  # same generator state, same barrage
    for i in (0, 5):
        torch.testing.assert_close(bart.apply(x[i : i + 1], draw.select([i]))[0], y[i], atol=1e-6, rtol=0)
    assert not torch.equal(bart(x, generator=gen(2)), y)
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_the_step_order_matters() -> None:
    """Applying a draw's groups in its order equals chaining the groups by hand."""
    bart = BaRT(k=2, groups=["swirl", "denoise"])
    x = torch.rand(6, 1, 12, 12, generator=gen(3))
    y, draw = bart(x, generator=gen(4), return_params=True)
    for i in range(6):
        xi = x[i : i + 1]
        for name in draw.groups_of(i):
            xi = bart.group(name).apply(xi, draw.params[name].select([i]))
        torch.testing.assert_close(xi[0], y[i], atol=1e-6, rtol=0)


def test_bpda_forward_value_and_gradient(gray: torch.Tensor) -> None:
    bart = BaRT(k=5)
    x = gray.float().clone().requires_grad_(True)
    draw = bart.sample(x.shape[0], 1, generator=gen(5))
    real = bart.apply(x, draw)
    bpda = bart.apply_bpda(x, draw)
    assert torch.equal(bpda.detach(), real.detach())  # the real value, bit for bit
    (g,) = torch.autograd.grad((bpda * torch.rand(bpda.shape, generator=gen(6))).sum(), x)
    assert torch.isfinite(g).all() and bool((g.abs().flatten(1).sum(1) > 0).all())
    # the method draws once and keeps the real value
    assert torch.equal(bart.bpda_forward(gray.float(), generator=gen(7)), bart(gray.float(), generator=gen(7)))


def test_forward_keeps_autograd_connected(gray: torch.Tensor) -> None:
    bart = BaRT(k=3)
    x = gray.float().clone().requires_grad_(True)
    y = bart(x, generator=gen(8))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g.shape == x.shape


def test_config_round_trip_through_json() -> None:
    bart = BaRT(k=3, groups=["jpeg", Swirl(strength=(0.1, 0.5)), {"name": "denoise", "kinds": ["median", "tv"]}],
                n_samples=4)
    d = json.loads(json.dumps(bart.to_dict()))
    again = BaRT.from_dict(d)
    assert again.to_dict() == bart.to_dict()
    assert isinstance(again.group("denoise"), Denoise) and again.group("denoise").kinds == ("median", "tv")
    assert again.group("swirl").strength == (0.1, 0.5)
    x = torch.rand(4, 3, 16, 16, generator=gen())
    assert torch.equal(again(x, generator=gen(1)), bart(x, generator=gen(1)))


def test_bad_configs() -> None:
    with pytest.raises(ConfigError):
        BaRT(k=0)
    with pytest.raises(ConfigError):
        BaRT(k=3, groups=["jpeg", "swirl"])
    with pytest.raises(ConfigError):
        BaRT(k=1, groups=["jpeg", "jpeg"])
    with pytest.raises(UnknownNameError):
        BaRT(k=1, groups=["sharpen"])
    with pytest.raises(ConfigError):
        BaRT(k=1, groups=[{"name": "swirl", "bogus": 1}])
    with pytest.raises(ConfigError):
        BaRT.from_dict({"groups": []})


def test_defended_model_averages_n_samples() -> None:
    model = tiny_cnn(input_shape=(1, 8, 8))
    x = torch.rand(5, 1, 8, 8, generator=gen())
    one = Defended(BaRT(k=2), model)
    many = Defended(BaRT(k=2, n_samples=4), model)
    assert one.n_samples == 1 and many.n_samples == 4
    out = many(x)
    assert out.shape == (5, 10)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(5), atol=1e-5, rtol=0)  # log of averaged softmax
    a, b = one(x), one(x)
    assert not torch.equal(a, b)  # randomized per call
    one.reseed()
    torch.testing.assert_close(one(x), a)


def test_module_methods_still_work_on_a_defended_model() -> None:
    """``apply(fn)`` (recursive module apply), ``.to``/``.double`` must not hit the transforms' ``apply(x, p)``."""
    model = Defended(BaRT(k=2), tiny_cnn(input_shape=(1, 8, 8)))
    seen: list[str] = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert "BaRT" in seen and "Swirl" in seen
    model.to("cpu").double().float()
    with pytest.raises(ConfigError):
        BaRT(k=2).apply(torch.rand(2, 1, 8, 8))
    with pytest.raises(ConfigError):
        Swirl().apply(torch.rand(2, 1, 8, 8))


def test_no_grad_and_autograd_give_the_same_values(images: torch.Tensor) -> None:
    """Without autograd the barrage (and the groups) run in-place variants: same arithmetic, same values bit for
    bit (a last-bit difference could become a whole level after a later quantising group)."""
    bart = BaRT(k=5)
    x = images.float()
    for seed in range(3):
        draw = bart.sample(x.shape[0], x.shape[1], generator=gen(seed))
        with torch.no_grad():
            y = bart.apply(x, draw)
        assert torch.equal(bart.apply(x.clone().requires_grad_(True), draw).detach(), y)


def test_schedule_runs_each_image_through_its_own_order_once() -> None:
    """The merged schedule: every image gets its groups exactly in its order, and costly groups run in fewer,
    larger calls than the k slot-by-slot rounds would need."""
    from bastion.defenses.bart.barrage import _schedule

    bart = BaRT(k=5)
    draw = bart.sample(1000, 1, generator=gen(7))
    costs = [bart.group(n).call_cost for n in draw.names]
    calls = _schedule(draw.order, costs)
    seen: list[list[int]] = [[] for _ in range(1000)]
    for g, idx in calls:
        assert idx.numel() > 0 and len(set(idx.tolist())) == idx.numel()
        for i in idx.tolist():
            seen[i].append(g)
    assert seen == draw.order.tolist()
    per_group = torch.bincount(torch.tensor([g for g, _ in calls]), minlength=len(costs))
    costly = max(range(len(costs)), key=lambda j: costs[j])
    assert int(per_group[costly]) < draw.k


def test_scheduled_barrage_equals_each_image_chained_by_hand(images: torch.Tensor) -> None:
    bart = BaRT(k=5)
    x = images.float()
    draw = bart.sample(x.shape[0], x.shape[1], generator=gen(8))
    with torch.no_grad():
        y = bart.apply(x, draw)
        for i in range(x.shape[0]):
            xi = x[i : i + 1]
            for name in draw.groups_of(i):
                xi = bart.group(name).apply(xi, draw.params[name].select([i]))
            torch.testing.assert_close(xi[0], y[i], atol=1e-6, rtol=0)


def test_channel_counts_no_group_takes_are_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="no BaRT group transforms 4-channel images"):
        BaRT(k=1)(torch.rand(2, 4, 8, 8))
    with pytest.raises(ConfigError, match="only 8 of the groups apply to 1-channel"):
        BaRT(k=9)(torch.rand(2, 1, 8, 8))


def test_small_images_and_draws_for_other_channel_counts_are_refused_clearly() -> None:
    from bastion.errors import InputShapeError

    bart = BaRT(k=2)
    with pytest.raises(InputShapeError, match="at least 8x8"):  # used to be an error from inside kornia
        bart(torch.rand(2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    rgb_draw = bart.sample(4, 3, generator=torch.Generator().manual_seed(0))
    if any(n in ("color_space", "greyscale") for n in rgb_draw.names):
        with pytest.raises(ConfigError, match="sampled for another channel count"):
            bart.apply(torch.rand(4, 1, 16, 16), rgb_draw)
    with pytest.raises(ConfigError, match="n_samples"):
        Defended(bart, tiny_cnn(), n_samples=0)


def test_select_takes_a_boolean_mask_as_positions(rgb: torch.Tensor) -> None:
    bart = BaRT(k=3)
    d = bart.sample(rgb.shape[0], 3, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(rgb.shape[0], dtype=torch.bool)
    mask[[1, 3]] = True
    by_mask, by_index = d.select(mask), d.select(torch.tensor([1, 3]))
    assert torch.equal(by_mask.order, by_index.order)
    torch.testing.assert_close(bart.apply(rgb[mask], by_mask), bart.apply(rgb, d)[mask])
    with pytest.raises(ConfigError, match="mask"):
        d.select(mask[:2])
    with pytest.raises(ConfigError, match="integer"):
        d.select(torch.tensor([0.0, 1.0]))


def test_defended_refuses_a_bare_transform_group() -> None:
    from bastion.defenses.bart import JPEG

    with pytest.raises(ConfigError, match=r"BaRT\(k=1, groups=\['jpeg'\]\)"):
        Defended(JPEG(), tiny_cnn(3))
    with pytest.raises(ConfigError, match="InputDefense"):
        Defended(torch.nn.Identity(), tiny_cnn(3))


def test_jpeg_takes_a_non_contiguous_batch(rgb: torch.Tensor) -> None:
    bart = BaRT(k=1, groups=["jpeg"])
    xt = rgb.transpose(2, 3)  # a view, not contiguous
    d = bart.sample(xt.shape[0], 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(bart.apply(xt, d), bart.apply(xt.contiguous(), d))


def test_half_precision_images_get_a_clear_error(rgb: torch.Tensor) -> None:
    from bastion.errors import InputShapeError

    with pytest.raises(InputShapeError, match="float32 or float64"):
        BaRT(k=2)(rgb.half(), generator=torch.Generator().manual_seed(0))


def test_k_range_draws_each_images_own_number_of_groups(rgb: torch.Tensor) -> None:
    """BaRT(k_range=(lo, hi)): every image goes through its own number of groups, uniform in [lo, hi]; the
    result equals each image transformed alone with its row of the draw."""
    bart = BaRT(k_range=(1, 4))
    assert bart.k == 4 and BaRT.from_dict(bart.to_dict()).k_range == (1, 4)
    x = rgb.float()
    n = x.shape[0]
    y, draw = bart(x, generator=torch.Generator().manual_seed(3), return_params=True)
    counts = draw.counts
    assert set(counts.tolist()) <= {1, 2, 3, 4} and len(set(counts.tolist())) > 1
    assert all(len(draw.groups_of(i)) == int(counts[i]) for i in range(n))
    for i in range(n):
        torch.testing.assert_close(bart.apply(x[i : i + 1], draw.select([i])), y[i : i + 1], atol=1e-6, rtol=0)
    big = BaRT(k_range=(2, 3)).sample(4000, 3, generator=torch.Generator().manual_seed(0))
    share = float((big.counts == 2).float().mean())
    assert abs(share - 0.5) < 0.05  # uniform over {2, 3}
    with pytest.raises(ConfigError, match="k_range"):
        BaRT(k_range=(3, 2))
    with pytest.raises(ConfigError, match="k_range"):
        BaRT(k_range=(1, 11))

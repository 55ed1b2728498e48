"""The contract every BaRT transform keeps (run over the TRANSFORMS registry, grayscale and colour)."""

from __future__ import annotations

import pytest
import torch

from bastion.defenses.bart import TRANSFORMS, RandomTransform
from bastion.errors import ConfigError, InputShapeError

NAMES = TRANSFORMS.names()


def make(name: str) -> RandomTransform:
    return TRANSFORMS.create(name)


def draw(t: RandomTransform, n: int, seed: int = 0):
    return t.sample(n, generator=torch.Generator().manual_seed(seed))


def test_registry_has_the_ten_groups() -> None:
    assert set(NAMES) == {"color_precision", "jpeg", "swirl", "noise", "fft", "zoom", "color_space", "contrast",
                          "greyscale", "denoise"}
    for name in NAMES:
        t = make(name)
        assert t.name == name and t.grad in ("exact", "approx", "none")
        assert 3 in t.channels


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_range_kept(name: str, dtype: torch.dtype, images: torch.Tensor) -> None:
    t = make(name)
    if not t.supports(images.shape[1]):
        with pytest.raises(InputShapeError):
            t(images.to(dtype), generator=torch.Generator().manual_seed(0))
        return
    x = images.to(dtype)
    y = t(x, generator=torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(y).all()
    s = t.apply_surrogate(x, draw(t, x.shape[0], 1))
    assert s.shape == x.shape and s.dtype == dtype and torch.isfinite(s).all()


@pytest.mark.parametrize("name", NAMES)
def test_chunked_apply_equals_one_piece(name: str, images: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large batches go through ``transform`` in chunks of whole images: the same values as in one piece."""
    t = make(name)
    if not t.supports(images.shape[1]):
        pytest.skip("colour-only group")
    x = images.float()
    p = draw(t, x.shape[0], 4)
    calls: list[int] = []
    transform = t.transform
    monkeypatch.setattr(t, "transform", lambda xs, ps: calls.append(xs.shape[0]) or transform(xs, ps))
    monkeypatch.setattr(t, "chunk_values", None)
    whole = t.apply(x, p)
    monkeypatch.setattr(t, "chunk_values", 3 * x[0].numel())  # chunks of 3 images, the last of 2
    torch.testing.assert_close(t.apply(x, p), whole, rtol=0, atol=1e-6)
    assert calls == [8, 3, 3, 2]


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_per_image_and_replay(name: str, images: torch.Tensor) -> None:
    t = make(name)
    if not t.supports(images.shape[1]):
        pytest.skip("colour-only group")
    x = images.float()
    p = draw(t, x.shape[0], 3)
    y = t.apply(x, p)
    assert torch.equal(t.apply(x, p), y), "replaying the same parameters must give the same output"
    for i in (0, 3, 7):
        yi = t.apply(x[i : i + 1], p.select([i]))
        torch.testing.assert_close(yi[0], y[i], rtol=0, atol=1e-6)
    # a batch in another order gives the same images
    perm = torch.tensor([5, 1, 7, 0])
    torch.testing.assert_close(t.apply(x[perm], p.select(perm)), y[perm], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_draws_differ_and_are_seeded(name: str) -> None:
    t = make(name)
    a, b, c = draw(t, 16, 0), draw(t, 16, 0), draw(t, 16, 1)
    assert a.as_dict() == b.as_dict()
    assert a.as_dict() != c.as_dict()
    assert len(a) == 16


@pytest.mark.parametrize("name", [n for n in NAMES if TRANSFORMS.get(n).grad == "exact"])
def test_gradcheck_exact(name: str) -> None:
    t = make(name)
    g = torch.Generator().manual_seed(0)
    x = (0.3 + 0.4 * torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    p = draw(t, 2, 5)
    if name == "fft":  # keep the output inside (0, 1), where the final clip is the identity
        p = type(p)(fraction=p.fraction * 0.2, seed=p.seed)
    assert torch.autograd.gradcheck(lambda z: t.apply(z, p), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_surrogate_gradient_is_nonzero(name: str, images: torch.Tensor) -> None:
    t = make(name)
    if not t.supports(images.shape[1]):
        pytest.skip("colour-only group")
    x = images[:4].float().clone().requires_grad_(True)
    p = draw(t, 4, 7)
    out = t.apply_surrogate(x, p)
    (g,) = torch.autograd.grad((out * torch.linspace(0.5, 1.5, out.numel()).view_as(out)).sum(), x)
    assert torch.isfinite(g).all()
    per_image = g.abs().flatten(1).sum(1)
    assert bool((per_image > 0).all()), f"{name}: surrogate gradient is zero for some image"


def test_bad_configs_raise() -> None:
    from bastion.defenses.bart import JPEG, ColorPrecision, Denoise, Swirl

    with pytest.raises(ConfigError):
        ColorPrecision(levels=(1, 5))
    with pytest.raises(ConfigError):
        JPEG(quality=(90, 50))
    with pytest.raises(ConfigError):
        Swirl(strength=(2.0, 1.0))
    with pytest.raises(ConfigError):
        Denoise(sizes=(4,))
    with pytest.raises(ConfigError):
        Denoise(kinds=("median", "nope"))


def test_wrong_params_type_raises(gray: torch.Tensor) -> None:
    from bastion.defenses.bart import JPEG, Swirl

    with pytest.raises(ConfigError):
        Swirl().apply(gray.float(), draw(JPEG(), gray.shape[0]))


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name: str) -> None:
    t = make(name)
    d = t.to_dict()
    assert d["name"] == name
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "name"}
    assert type(t)(**opts).to_dict() == d

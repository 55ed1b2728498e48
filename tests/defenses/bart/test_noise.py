"""Noise agrees with scikit-image's ``random_noise`` in distribution on identical parameters.

The noise values differ (bastion's are keyed by a per-image seed), so the comparison is statistical:
on 200 MNIST digits (~157k values), the mean and standard deviation of the change and the share of changed
values must agree within the documented tolerances (0.003 on means and shares, 5% relative on std)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.util import random_noise

from bastion.data import load_dataset
from bastion.defenses.bart import Noise
from bastion.defenses.bart.noise import KINDS, NoiseParams, poisson_from_uniform, sample_poisson


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset("mnist-5k", "test").images[:200].double()


def params(kind: str, n: int) -> NoiseParams:
    f = lambda v: torch.full((n,), v, dtype=torch.float64)  # noqa: E731
    return NoiseParams(kind=torch.full((n,), KINDS.index(kind)), var=f(0.01), amount=f(0.05),
                       salt_vs_pepper=f(0.3), seed=torch.arange(n) * 7919 + 11)


@pytest.mark.parametrize("kind", KINDS)
def test_matches_scikit_image_in_distribution(kind: str, digits: torch.Tensor) -> None:
    y = Noise().apply(digits, params(kind, digits.shape[0]))
    rng = np.random.default_rng(0)
    kw = {"gaussian": {"var": 0.01}, "speckle": {"var": 0.01}, "salt": {"amount": 0.05}, "pepper": {"amount": 0.05},
          "s&p": {"amount": 0.05, "salt_vs_pepper": 0.3}, "poisson": {}}[kind]
    ref = np.stack([random_noise(x[0].numpy(), mode=kind, rng=rng, **kw) for x in digits])
    ours = (y[:, 0] - digits[:, 0]).numpy()
    theirs = ref - digits[:, 0].numpy()
    assert abs(ours.mean() - theirs.mean()) < 0.003
    assert abs(ours.std() - theirs.std()) < 0.05 * theirs.std()
    assert abs((ours != 0).mean() - (theirs != 0).mean()) < 0.003


def test_noise_is_keyed_by_seed(gray: torch.Tensor) -> None:
    p = params("gaussian", gray.shape[0])
    a = Noise().apply(gray, p)
    b = Noise().apply(gray, NoiseParams(**{**p.__dict__, "seed": p.seed + 1}))
    assert not torch.equal(a, b)
    assert torch.equal(a, Noise().apply(gray, p))


def test_poisson_inversion_is_exact() -> None:
    from scipy import stats

    g = torch.Generator().manual_seed(0)
    for lam in (0.5, 7.0, 90.0, 3000.0):
        u = torch.rand(3000, generator=g, dtype=torch.float64)
        k = poisson_from_uniform(torch.full((3000,), lam, dtype=torch.float64), u)
        np.testing.assert_array_equal(k.numpy(), stats.poisson.ppf(u.numpy(), lam))


def test_fast_keyed_uniform_equals_reference() -> None:
    """keyed_uniform's NumPy uint32 fast path gives the reference tensor hash's values bit for bit."""
    from bastion._rng import _keyed_uniform_np as fast_keyed_uniform
    from bastion._rng import _keyed_uniform_torch as keyed_uniform

    g = torch.Generator().manual_seed(0)
    keys = torch.randint(0, 2**62, (17,), generator=g)
    keys[0], keys[1] = 0, 2**62 - 1
    for shape in [(1, 28, 28), (3, 30, 30), (7,), (1, 1, 1)]:
        for dtype in (torch.float32, torch.float64):
            for seed, stream in ((0x6E6F697365, 2), (0x666674, 0), (5, 1001)):
                a = keyed_uniform(keys, shape, seed=seed, stream=stream, dtype=dtype)
                b = fast_keyed_uniform(keys, shape, seed=seed, stream=stream, dtype=dtype)
                assert b.dtype == dtype and torch.equal(a, b)


def test_poisson_inversion_equals_the_single_step_walk() -> None:
    """Values still walking after a few steps (e.g. u = 0 far below the initial guess) are moved a block of
    steps at a time; the result must be the k the one-step-at-a-time walk ends on."""
    import math

    def walk(lam: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        z = math.sqrt(2.0) * torch.erfinv((2.0 * u - 1.0).clamp(-1 + 1e-15, 1 - 1e-15))
        k = torch.floor(lam + torch.sqrt(lam) * z + (z * z - 1.0) / 6.0 + 0.5).clamp(min=0)
        idx = torch.arange(k.numel())
        while idx.numel():
            kk, ll, uu = k[idx], lam[idx], u[idx]
            cdf = torch.special.gammaincc(kk + 1.0, ll)
            pmf = torch.exp(kk * torch.log(ll) - ll - torch.lgamma(kk + 1.0))
            step = (uu > cdf).double() - ((uu <= cdf - pmf) & (kk > 0)).double()
            moved = step != 0
            k[idx[moved]] += step[moved]
            idx = idx[moved]
        return k

    g = torch.Generator().manual_seed(1)
    for scale in (1.0, 30.0, 4096.0):
        lam = torch.rand(20000, generator=g, dtype=torch.float64) * scale + 1e-3
        u = torch.randint(0, 2**24, (20000,), generator=g).double() / 2**24
        u[:10], u[10:20] = 0.0, 1 - 2**-24
        assert torch.equal(poisson_from_uniform(lam, u), walk(lam, u))


def _stream_source(n: int, seed: int):  # noqa: ANN202
    g = torch.Generator().manual_seed(seed)
    streams: dict[int, torch.Tensor] = {}

    def uniform(s: int) -> torch.Tensor:
        if s not in streams:
            streams[s] = torch.rand(n, generator=g, dtype=torch.float64)
        return streams[s]

    return uniform


@pytest.mark.parametrize("lam", [0.5, 10.0, 37.5, 255.0, 4096.0])
def test_sample_poisson_follows_the_poisson_law(lam: float) -> None:
    """Transformed rejection (rates >= 10) with inversion fallback: a chi-square test against the pmf."""
    from scipy import stats

    n = 300_000
    k = sample_poisson(torch.full((n,), lam, dtype=torch.float64), _stream_source(n, int(lam * 7))).numpy()
    assert np.all(k == np.floor(k)) and k.min() >= 0
    lo, hi = int(stats.poisson.ppf(1e-6, lam)), int(stats.poisson.ppf(1 - 1e-6, lam))
    obs = np.bincount(np.clip(k.astype(np.int64), lo, hi) - lo, minlength=hi - lo + 1)
    pmf = stats.poisson.pmf(np.arange(lo, hi + 1), lam)
    pmf[0] += stats.poisson.cdf(lo - 1, lam)
    pmf[-1] += stats.poisson.sf(hi, lam)
    exp = pmf * n
    big = exp >= 5
    chi2 = float(((obs[big] - exp[big]) ** 2 / exp[big]).sum())
    assert stats.chi2.sf(chi2, int(big.sum()) - 1) > 1e-3
    assert abs(k.mean() - lam) < 5 * np.sqrt(lam / n)


def test_sample_poisson_inverts_what_every_rejection_round_refused() -> None:
    """Streams that make every rejection round refuse (u = 0: a zero-width hat) leave all values to the exact
    inversion of stream 0."""
    n = 2000
    g = torch.Generator().manual_seed(3)
    lam = 10 + 500 * torch.rand(n, generator=g, dtype=torch.float64)
    u0 = torch.rand(n, generator=g, dtype=torch.float64)
    streams = {0: u0, 1: torch.zeros(n), 2: torch.rand(n, generator=g), 3: torch.zeros(n), 4: torch.rand(n, generator=g)}
    assert torch.equal(sample_poisson(lam, streams.__getitem__), poisson_from_uniform(lam, u0))


def test_sample_poisson_values_do_not_depend_on_the_rest_of_the_array() -> None:
    """A value depends only on its rate and its position's uniforms: with few rates >= 10 (their positions
    gathered) or many (every value in contiguous blocks, masked), the same positions get the same variates."""
    n = 3 * 2**15 + 123  # several blocks
    g = torch.Generator().manual_seed(4)
    lam = torch.zeros(n, dtype=torch.float64)
    some = torch.randperm(n, generator=g)[: n // 10]
    lam[some] = 10 + 4000 * torch.rand(some.numel(), generator=g, dtype=torch.float64)
    lam[some[:50]] = 3.0  # a few small rates (inversion)
    dense = lam.clone()
    rest = torch.ones(n, dtype=torch.bool)
    rest[some] = False
    dense[rest] = 10 + 4000 * torch.rand(int(rest.sum()), generator=g, dtype=torch.float64)
    src = _stream_source(n, 9)
    sparse_k, dense_k = sample_poisson(lam, src), sample_poisson(dense, src)
    assert torch.equal(sparse_k[some], dense_k[some])
    assert torch.equal(sparse_k[rest], torch.zeros(int(rest.sum()), dtype=torch.float64))

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
from bastion.defenses.bart.noise import KINDS, NoiseParams, poisson_from_uniform


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

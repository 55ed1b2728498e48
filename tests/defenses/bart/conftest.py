from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bastion.data import load_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many ops on tiny tensors, where intra-op threads only add overhead (on a loaded
    2-core machine, gradcheck went from ~1 s to ~60 s with two threads); restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def gray() -> torch.Tensor:
    """8 MNIST digits (1, 28, 28), float64."""
    return load_dataset("mnist-5k", "test").images[:8].double()


@pytest.fixture(scope="session")
def rgb() -> torch.Tensor:
    """8 smooth random colour images (3, 30, 30) in [0, 1], float64 (30: not a multiple of 8 or 16)."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(8, 3, 6, 6, generator=g, dtype=torch.float64)
    x = F.interpolate(low, size=(30, 30), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.rand(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)


@pytest.fixture(params=["gray", "rgb"])
def images(request: pytest.FixtureRequest) -> torch.Tensor:
    return request.getfixturevalue(request.param)


def hwc(t: torch.Tensor) -> np.ndarray:
    """One (C, H, W) tensor as scikit-image's (H, W) or (H, W, C) array."""
    a = t.detach().cpu().numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def channel_axis(t: torch.Tensor) -> int | None:
    return None if t.shape[0] == 1 else -1

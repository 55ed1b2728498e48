from __future__ import annotations

import numpy as np
import torch
from skimage.color import rgb2gray

from bastion.defenses.bart import Greyscale
from bastion.defenses.bart.greyscale import GreyscaleParams


def test_full_greyscale_with_luma_weights_is_rgb2gray(rgb: torch.Tensor) -> None:
    n = rgb.shape[0]
    w = torch.tensor([[0.2125, 0.7154, 0.0721]], dtype=torch.float64).expand(n, 3)
    p = GreyscaleParams(weights=w, mask=torch.ones(n, 3, dtype=torch.bool), amount=torch.ones(n, dtype=torch.float64))
    y = Greyscale().apply(rgb, p)
    for i in range(n):
        ref = rgb2gray(rgb[i].numpy().transpose(1, 2, 0))
        for c in range(3):
            np.testing.assert_allclose(y[i, c].numpy(), ref, atol=1e-12)


def test_partial_and_channel_subsets(rgb: torch.Tensor) -> None:
    p = Greyscale().sample(256, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(p.weights.sum(1), torch.ones(256, dtype=torch.float64))
    assert bool(p.mask.any(1).all())
    assert 0.3 < float((p.amount == 1).double().mean()) < 0.7
    n = rgb.shape[0]
    q = GreyscaleParams(weights=p.weights[:n], mask=torch.tensor([[True, False, False]]).expand(n, 3),
                        amount=torch.full((n,), 0.5, dtype=torch.float64))
    y = Greyscale().apply(rgb, q)
    torch.testing.assert_close(y[:, 1:], rgb[:, 1:])
    assert not torch.equal(y[:, 0], rgb[:, 0])

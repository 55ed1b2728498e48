from __future__ import annotations

import numpy as np
import torch

from bastion.defenses.bart import ColorPrecision
from bastion.defenses.bart.color_precision import ColorPrecisionParams


def test_quantises_to_the_drawn_levels(rgb: torch.Tensor) -> None:
    t = ColorPrecision()
    p = t.sample(rgb.shape[0], generator=torch.Generator().manual_seed(0))
    y = t.apply(rgb, p).numpy()
    x = rgb.numpy()
    for i in range(rgb.shape[0]):
        for c in range(3):
            q = int(p.levels[i, c]) - 1
            np.testing.assert_allclose(y[i, c], np.round(x[i, c] * q) / q, atol=1e-12)
            assert len(np.unique(y[i, c])) <= q + 1


def test_shared_levels_and_grayscale(gray: torch.Tensor) -> None:
    t = ColorPrecision(shared_prob=1.0)
    p = t.sample(64, generator=torch.Generator().manual_seed(1))
    assert bool((p.levels == p.levels[:, :1]).all())
    lv = torch.full((gray.shape[0], 3), 2)
    y = t.apply(gray, ColorPrecisionParams(levels=lv))
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}


def test_soft_rounding_surrogate_is_close(rgb: torch.Tensor) -> None:
    t = ColorPrecision(levels=(8, 8))
    p = t.sample(rgb.shape[0], generator=torch.Generator().manual_seed(0))
    # soft rounding moves a value by at most 1/8 of a level
    assert float((t.apply_surrogate(rgb, p) - t.apply(rgb, p)).abs().max()) <= 0.125 / 7 + 1e-9

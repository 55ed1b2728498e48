"""BaRT, the Barrage of Random Transforms defense (Raff et al., CVPR 2019, https://arxiv.org/abs/1903.08778).

>>> import torch
>>> from bastion.defenses.bart import BaRT
>>> bart = BaRT(k=5)                                    # all ten groups, paper-like ranges
>>> y = bart(torch.rand(4, 3, 32, 32), generator=torch.Generator().manual_seed(0))
>>> y.shape
torch.Size([4, 3, 32, 32])

``Defended(BaRT(k=5), model)`` is the defended model; see :mod:`bastion.defenses.bart.barrage`.
"""

from __future__ import annotations

from bastion.defenses.bart.barrage import GROUPS, TRANSFORMS, BarrageDraw, BaRT
from bastion.defenses.bart.base import Params, RandomTransform
from bastion.defenses.bart.color_precision import ColorPrecision
from bastion.defenses.bart.color_space import ColorSpace
from bastion.defenses.bart.contrast import Contrast
from bastion.defenses.bart.denoise import Denoise
from bastion.defenses.bart.fft import FFTPerturbation
from bastion.defenses.bart.greyscale import Greyscale
from bastion.defenses.bart.jpeg import JPEG
from bastion.defenses.bart.noise import Noise
from bastion.defenses.bart.swirl import Swirl
from bastion.defenses.bart.zoom import Zoom

__all__ = [
    "BaRT", "BarrageDraw", "GROUPS", "Params", "RandomTransform", "TRANSFORMS",
    "ColorPrecision", "JPEG", "Swirl", "Noise", "FFTPerturbation", "Zoom", "ColorSpace", "Contrast",
    "Greyscale", "Denoise",
]

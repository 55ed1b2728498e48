from __future__ import annotations

import numpy as np
import torch
from skimage.transform import resize

from bastion.defenses.bart import Zoom
from bastion.defenses.bart.zoom import ZoomParams


def test_crop_and_resize_matches_scikit_image_inside_the_crop(rgb: torch.Tensor) -> None:
    """A 24/30 crop at pixel offsets (row 6, column 0) equals scikit-image's bilinear ``resize`` of that crop,
    except on the first row and last column, whose interpolation reaches just outside the crop: bastion reads
    the image's pixels there, ``resize`` repeats the crop's edge."""
    n = rgb.shape[0]
    p = ZoomParams(scale=torch.full((n,), 0.8, dtype=torch.float64), u=torch.zeros(n, dtype=torch.float64),
                   v=torch.ones(n, dtype=torch.float64))
    y = Zoom().apply(rgb, p)
    for i in range(n):
        crop = rgb[i].numpy().transpose(1, 2, 0)[6:30, 0:24]
        ref = resize(crop, (30, 30), order=1, mode="edge", anti_aliasing=False)
        np.testing.assert_allclose(y[i].numpy().transpose(1, 2, 0)[1:, :-1], ref[1:, :-1], atol=1e-9)


def test_full_scale_is_identity(gray: torch.Tensor) -> None:
    n = gray.shape[0]
    p = ZoomParams(scale=torch.ones(n, dtype=torch.float64), u=torch.rand(n, dtype=torch.float64),
                   v=torch.rand(n, dtype=torch.float64))
    torch.testing.assert_close(Zoom().apply(gray, p), gray, atol=1e-9, rtol=0)

from __future__ import annotations

import pytest
import torch

from bastion.defenses.bart import BaRT
from bastion.defenses.base import Defended
from bastion.models import pretrained, weights_path


@pytest.mark.skipif(not weights_path("mnist-cnn-bart").exists(), reason="mnist-cnn-bart weights not shipped")
def test_pretrained_bart_model_is_defended_and_accurate(mnist5k_test) -> None:
    model = pretrained("mnist-cnn-bart")
    assert isinstance(model, Defended) and isinstance(model.defense, BaRT)
    assert not model.training and model.randomized
    x, y = mnist5k_test.images[:300], mnist5k_test.labels[:300]
    with torch.no_grad():
        a, b = model(x), model(x)
    assert not torch.equal(a, b)  # a new barrage per call
    acc = float((a.argmax(1) == y).float().mean())
    assert acc >= 0.94, f"accuracy through the barrage on 300 mnist-5k test images: {acc:.3f}"

"""Grad-CAM and CAM on large batches: computed on chunks of the batch (bounded memory), equal to one pass."""

import pytest
import torch
import torch.nn.functional as F

from bastion import _model
from bastion.errors import LabelError
from bastion.models import create_model
from bastion.viz import cam, grad_cam, upsample


@pytest.fixture(scope="module")
def resnet():
    return create_model("cifar-resnet", dataset="cifar10", seed=0).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def one_pass_grad_cam(model, x, cls):
    """Grad-CAM written out on the whole batch at once (the layer the default picks on this net)."""
    acts = []
    layer = dict(model.named_modules())["net.features.block3_1.relu"]
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        xi = x.clone().requires_grad_(True)
        scores = model(xi)
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(scores.gather(1, cls[:, None]).sum(), acts[-1])
    return F.relu((g.mean((2, 3), keepdim=True) * acts[-1]).sum(1)).detach()


def test_grad_cam_in_chunks_equals_one_pass(resnet, x, monkeypatch):
    cls = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    reference = one_pass_grad_cam(resnet, x, cls)
    seen = []
    hook = resnet.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[0]))
    try:
        whole = grad_cam(resnet, x, class_idx=cls)
        assert seen == [7]
        monkeypatch.setattr(_model, "GRAD_CHUNK_FEATURES", 3 * 32 * 32 * 3)  # three images a pass
        seen.clear()
        chunked = grad_cam(resnet, x, class_idx=cls)
        assert seen == [3, 3, 1]
        seen.clear()
        chunked_cam = cam(resnet, x, class_idx=cls)
        assert seen == [3, 3, 1]
    finally:
        hook.remove()
    torch.testing.assert_close(whole, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked_cam, cam(resnet, x, class_idx=cls), rtol=1e-5, atol=1e-6)
    # one class for all and the predicted class work per chunk too
    torch.testing.assert_close(grad_cam(resnet, x, class_idx=2), grad_cam(resnet, x, class_idx=torch.tensor([2])))
    monkeypatch.undo()
    torch.testing.assert_close(grad_cam(resnet, x, class_idx=2), one_pass_grad_cam(resnet, x, torch.full((7,), 2)),
                               rtol=1e-5, atol=1e-6)


def test_class_count_is_checked_against_the_whole_batch(resnet, x, monkeypatch):
    monkeypatch.setattr(_model, "GRAD_CHUNK_FEATURES", 3 * 32 * 32 * 2)
    with pytest.raises(LabelError, match="3 entries for 7 images"):
        grad_cam(resnet, x, class_idx=torch.tensor([0, 1, 2]))
    with pytest.raises(LabelError, match="3 entries for 7 images"):
        cam(resnet, x, class_idx=torch.tensor([0, 1, 2]))
    with pytest.raises(LabelError, match="outside"):
        grad_cam(resnet, x, class_idx=torch.tensor([0, 1, 2, 3, 4, 5, 10]))


def test_upsample_normalizes_each_map_to_unit_range():
    maps = torch.rand(4, 7, 7, generator=torch.Generator().manual_seed(1)) * torch.tensor([1.0, 5.0, 0.1, 0.0])[:, None, None]
    up = upsample(maps, (224, 224))
    raw = F.interpolate(maps[:, None], size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = raw.amin((1, 2), keepdim=True), raw.amax((1, 2), keepdim=True)
    torch.testing.assert_close(up, (raw - lo) / (hi - lo).clamp_min(1e-12))
    assert up.shape == (4, 224, 224) and float(up[:3].amax((1, 2)).min()) == pytest.approx(1.0)
    assert float(up[3].abs().max()) == 0.0  # a flat map stays 0, not NaN
    assert torch.equal(upsample(maps, (224, 224), normalize=False), raw)

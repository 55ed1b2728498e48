import re

import pytest
import torch

from bastion.data import load_dataset
from bastion.errors import ConfigError, ModelModeError
from bastion.models import create_model, pretrained
from bastion.viz import cam, default_layer, grad_cam, upsample


@pytest.fixture(scope="module")
def x():
    return load_dataset("mnist-5k", "test[:6]").images


@pytest.mark.parametrize("source", ["shipped", "random"])
def test_cam_equals_grad_cam_up_to_scale_on_gap_model(source, x):
    model = pretrained("mnist-cnn-gap") if source == "shipped" else create_model("mnist-cnn-gap", seed=5).eval()
    assert default_layer(model) == "net.features.relu5"
    cls = torch.tensor([0, 1, 2, 3, 4, 5])
    c = cam(model, x, class_idx=cls)
    g = grad_cam(model, x, class_idx=cls)
    assert c.shape == g.shape == (6, 7, 7)
    hw = c.shape[1] * c.shape[2]
    torch.testing.assert_close(torch.relu(c) / hw, g, atol=1e-5, rtol=1e-4)


def test_model_left_untouched(x):
    model = pretrained("mnist-cnn-gap")
    flags = [p.requires_grad for p in model.parameters()]
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    grad_cam(model, x)
    cam(model, x)
    assert not model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks
    model.train()
    with pytest.raises(ModelModeError):
        grad_cam(model, x)
    assert model.training


def test_grad_cam_any_conv_net_and_errors(x):
    model = pretrained("mnist-cnn")
    g = grad_cam(model, x, layer="net.features.relu2")
    assert g.shape == (6, 14, 14) and (g >= 0).all()
    up = upsample(g, (28, 28))
    assert up.shape == (6, 28, 28) and float(up.max()) <= 1.0
    with pytest.raises(ConfigError, match="no layer named"):
        grad_cam(model, x, layer="net.nope")
    with pytest.raises(ConfigError, match="not a GAP model"):
        cam(model, x)
    with pytest.raises(ConfigError, match="no spatial feature map"):
        grad_cam(pretrained("logreg"), x)


def test_evaluation_html_is_self_contained():
    from bastion.attacks import FGSM, PGD
    from bastion.eval import Evaluation
    from bastion.viz.html import evaluation_html

    data = load_dataset("mnist-5k", "test[:20]")
    rep = Evaluation(suite=[FGSM(eps=0.3), PGD(eps=0.3, steps=5)], eps_grid=[0.1, 0.3]).run(pretrained("mnist-cnn"), data)
    html = evaluation_html(rep)
    assert html.startswith("<!doctype html>") and 'name="viewport"' in html
    assert not re.search(r"(src|href)\s*=\s*\"(https?:)?//", html)
    assert "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") >= 1
    assert "worst-case accuracy" in html


def test_report_title_names_the_defense():
    """A defended model's report must not read as the bare classifier's."""
    from bastion._model import describe_model
    from bastion.defenses import HideProbabilities
    from bastion.viz.html import model_label

    assert model_label(describe_model(pretrained("mnist-cnn"))) == "mnist-cnn"
    assert model_label(describe_model(pretrained("mnist-cnn-bart"))) == "mnist-cnn with BaRT (k=2)"
    assert model_label(describe_model(HideProbabilities(pretrained("mnist-cnn")))) == "mnist-cnn with HideProbabilities"



def test_grad_cam_checks_class_idx_and_works_under_no_grad(x):
    from bastion.errors import LabelError

    model = pretrained("mnist-cnn")
    ref = grad_cam(model, x)
    with torch.no_grad():
        assert torch.equal(grad_cam(model, x), ref)
    assert torch.equal(grad_cam(model, x, class_idx=torch.tensor(3)), grad_cam(model, x, class_idx=3))
    with pytest.raises(LabelError, match="2 entries for 6 images"):  # used to leave images 3-6 with zero maps
        grad_cam(model, x, class_idx=torch.tensor([1, 2]))
    with pytest.raises(LabelError, match="outside the model's 10 classes"):
        grad_cam(model, x, class_idx=12)
    with pytest.raises(LabelError, match="integer tensor"):
        grad_cam(model, x, class_idx=torch.ones(6))
    with pytest.raises(LabelError, match="outside"):
        cam(pretrained("mnist-cnn-gap"), x, class_idx=-1)


def test_default_layer_follows_execution_order_on_a_residual_net():
    # registration order ends in block3_1's 1x1 skip conv; the block's output is what the head pools
    model = create_model("cifar-resnet", dataset="cifar10", seed=0).eval()
    assert default_layer(model) == "net.features.block3_1.relu"
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    c = cam(model, x, class_idx=0)
    fc = model.net.fc
    with torch.no_grad():
        logits = model(x)
    # CAM's definition: its spatial mean plus the bias is the class score
    torch.testing.assert_close(c.mean((1, 2)) + fc.bias[0], logits[:, 0], rtol=1e-4, atol=1e-5)


def test_cam_refuses_a_layer_that_is_not_the_pooled_one_and_grad_cam_a_non_spatial_one(x):
    model = pretrained("mnist-cnn-gap")
    with pytest.raises(ConfigError, match="not a GAP model"):
        cam(model, x, layer="net.features.conv5")  # 128 channels, but the ReLU sits between it and the pooling
    with pytest.raises(ConfigError, match="no 4-D feature map"):
        grad_cam(model, x, layer="net.fc")

"""Channels-last evaluation (bastion.attacks._layout) and chunked forward passes (bastion._model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion._model import forward_in_chunks
from bastion.attacks._layout import channels_last_forward
from bastion.attacks.jsma import JSMA


def _cnn(channels: int, *, view_flatten: bool = False) -> nn.Module:
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 4 * 4, 10)
            self.register_buffer("scale", torch.rand(1, channels, 1, 1) + 0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn(self.conv1(x * self.scale)))
            h = nn.functional.max_pool2d(torch.relu(self.conv2(h)), 2)
            # .view needs NCHW-contiguous activations: in channels-last layout this raises
            return self.fc(h.view(h.shape[0], -1) if view_flatten else h.flatten(1))

    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.1, 0.1)
        net.bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _input_grad(f, x: torch.Tensor, target: int = 3) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    xg = x.detach().clone().requires_grad_(True)
    out = f(xg)
    (g,) = torch.autograd.grad(out[:, target].sum(), xg)
    return out.detach(), g


def _params(model: nn.Module) -> list[tuple[str, int, tuple[int, ...], bool]]:
    return [(n, t.data_ptr(), t.stride(), t.requires_grad) for n, t in [*model.named_parameters(), *model.named_buffers()]]


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_forward_matches_the_model_and_leaves_it_untouched(channels):
    model = _cnn(channels)
    x = torch.rand(6, channels, 8, 8, generator=torch.Generator().manual_seed(1))
    before = _params(model)
    f = channels_last_forward(model, x)
    assert f is not model  # a CNN on CPU: the layout applies
    out, g = _input_grad(f, x)
    ref_out, ref_g = _input_grad(model, x)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, ref_g, rtol=1e-4, atol=1e-6)
    assert _params(model) == before
    assert all(p.grad is None for p in model.parameters())


def test_channels_last_forward_falls_back_when_the_model_needs_nchw():
    model = _cnn(3, view_flatten=True)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with pytest.raises(RuntimeError):  # the premise: this model fails in channels-last layout
        torch.func.functional_call(model, {n: p.detach().contiguous(memory_format=torch.channels_last) if p.ndim == 4
                                           else p for n, p in model.named_parameters()},
                                   (x.contiguous(memory_format=torch.channels_last),))
    f = channels_last_forward(model, x)
    out, g = _input_grad(f, x)
    ref_out, ref_g = _input_grad(model, x)
    assert torch.equal(out, ref_out) and torch.equal(g, ref_g)  # the model itself, called as it is


def test_channels_last_forward_is_the_model_where_it_does_not_apply():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    assert channels_last_forward(mlp, torch.rand(2, 3, 2, 2)) is mlp  # no 4-D kernels
    cnn = _cnn(1)
    assert channels_last_forward(cnn, torch.rand(2, 64)) is cnn  # not an image batch


@pytest.mark.parametrize("n", [0, 1, 5, 130])
def test_forward_in_chunks_equals_one_pass(n, monkeypatch):
    import bastion._model as base

    monkeypatch.setattr(base, "_CPU_CHUNK_FEATURES", 3 * 8 * 8 * 7)  # chunks of 7 images
    model = _cnn(3)
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, want = forward_in_chunks(model, x), model(x)
    assert got.shape == want.shape == (n, 10)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_forward_in_chunks_returns_a_non_tensor_output_for_the_callers_check(monkeypatch):
    import bastion._model as base

    monkeypatch.setattr(base, "_CPU_CHUNK_FEATURES", 4)
    calls = []

    def model(x: torch.Tensor) -> dict:
        calls.append(x.shape[0])
        return {"logits": x.sum(1)}

    out = forward_in_chunks(model, torch.rand(10, 4))
    assert isinstance(out, dict) and calls == [1]  # the first chunk only: the caller reports the bad output type


@pytest.mark.parametrize("channels_last", [True, False])
def test_jsma_leaves_a_cnn_untouched_and_agrees_across_layouts(channels_last):
    model = _cnn(3)
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.zeros(5, dtype=torch.int64)
    t = torch.arange(1, 6)
    before = _params(model)
    res = JSMA(gamma=0.3, channels_last=channels_last)(model, x, y, target=t)
    assert _params(model) == before and all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(res.logits_adv, model(res.x_adv), rtol=1e-5, atol=1e-5)
    other = JSMA(gamma=0.3, channels_last=not channels_last)(model, x, y, target=t)
    # the layouts differ only in rounding: on this model no near-tie changes a chosen pair
    assert torch.equal(res.x_adv, other.x_adv)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's imports warn about torch.jit
def test_a_compiled_model_is_left_alone():
    model = _cnn(1)
    compiled = torch.compile(model)
    assert channels_last_forward(compiled, torch.rand(2, 1, 8, 8)) is compiled

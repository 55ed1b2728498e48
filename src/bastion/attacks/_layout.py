"""Run a convolutional model in channels-last memory layout on CPU, without touching the model.

oneDNN's CPU convolutions and max-pooling are faster on NHWC ("channels last") tensors than on the default
NCHW ones; the choice follows the layout of the weights and the input. The model's own parameters are left
as they are: :func:`channels_last_forward` calls it through :func:`torch.func.functional_call` with
channels-last copies of its 4-D parameters and buffers (made once per attack call, a few hundred kilobytes
for bastion's CNNs). The layout changes no value, only memory order (results can differ in the last bits,
as between batch sizes). A model that fails in that layout (a ``.view`` that needs NCHW strides, an
extension that assumes them) is called as it is from then on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call


def channels_last_forward(model: nn.Module, x: Tensor) -> Callable[[Tensor], Tensor]:
    """A function computing ``model(inputs)`` for inputs like ``x``: in channels-last layout when ``x`` is a 4-D
    CPU tensor and the model has 4-D floating parameters (convolution kernels), else ``model`` itself. Gradients flow to the inputs (a one-channel input's
    layout is ambiguous and left as is: the kernels' layout decides).

    The parameters are copied with ``requires_grad=False``: only for use where gradients flow to the inputs
    alone (the attacks run models under :func:`bastion._checks.frozen`).
    """
    if x.ndim != 4 or x.device.type != "cpu" or _compiled(model):
        return model
    tensors: dict[str, Tensor] = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    if not any(t.ndim == 4 and t.is_floating_point() for t in tensors.values()):
        return model
    swapped = {name: _nhwc(t) if t.ndim == 4 and t.is_floating_point() else t.detach() for name, t in tensors.items()}
    failed = False

    def forward(inputs: Tensor) -> Tensor:
        nonlocal failed
        if not failed:
            try:
                return functional_call(model, swapped, (inputs.contiguous(memory_format=torch.channels_last),))
            except Exception as e:  # noqa: BLE001 - any failure: the plain call below raises the model's own error
                if isinstance(e, torch.OutOfMemoryError):
                    raise
                failed = True
        return model(inputs)

    return forward


def _compiled(model: nn.Module) -> bool:
    """Whether ``model`` comes from ``torch.compile`` (left alone: swapping its tensors would recompile it). Looked
    up without importing ``torch._dynamo`` (a second's import; a compiled model has imported it already)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return eval_frame is not None and isinstance(model, eval_frame.OptimizedModule)


def _nhwc(t: Tensor) -> Tensor:
    """A detached copy of ``t`` (4-D) in channels-last strides, also when a dimension of size one makes the layout ambiguous
    (``contiguous(memory_format=...)`` keeps such a tensor's NCHW strides, and oneDNN then picks NCHW)."""
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t.detach())

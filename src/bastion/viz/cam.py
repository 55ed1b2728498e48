"""Class activation maps: CAM for global-average-pooling models, Grad-CAM for any conv net.

* CAM (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization"): for a model ending in
  global average pooling and one linear layer, ``M_c = sum_k w_{c,k} A_k`` where ``A_k`` are the last conv
  activations and ``w_c`` the linear weights of class ``c``.
* Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of
  ``d y_c / d A_k``. For a GAP model, ``alpha_k = w_{c,k} / (H W)``, so Grad-CAM equals ``ReLU(CAM) / (H W)``.

Both leave the model as they found it: hooks are removed in ``finally``, gradients are taken with
``torch.autograd.grad`` w.r.t. activations only (no ``.grad`` on parameters), and the mode is untouched
(a training-mode model is refused, as everywhere in bastion).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion._checks import check_eval_mode, check_images, frozen
from bastion.errors import ConfigError, LabelError

_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid)


def default_layer(model: nn.Module) -> str:
    """Name of the default CAM layer: the last ``Conv2d``, or the activation right after it if there is one."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ConfigError("the model has no Conv2d layer; CAM and Grad-CAM need a conv net")
    last = names[-1]
    modules = list(model.named_modules())
    pos = [n for n, _ in modules].index(last)
    parent = last.rsplit(".", 1)[0] if "." in last else ""
    for name, mod in modules[pos + 1 :]:
        same_parent = (name.rsplit(".", 1)[0] if "." in name else "") == parent
        if same_parent and isinstance(mod, _ACTIVATIONS):
            return name
        if same_parent:
            break
    return last


def _module(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules:
        conv = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, *_ACTIVATIONS))]
        raise ConfigError(f"no layer named {layer!r}; conv/activation layers: {', '.join(conv)}")
    return modules[layer]


def _activations_and_scores(model: nn.Module, x: Tensor, layer: str) -> tuple[Tensor, Tensor]:
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _inp: Any, out: Tensor) -> None:
        store["a"] = out

    handle = _module(model, layer).register_forward_hook(hook)
    try:
        scores = model(x)
    finally:
        handle.remove()
    if "a" not in store:
        raise ConfigError(f"layer {layer!r} was not used in the forward pass")
    return store["a"], scores


def grad_cam(model: nn.Module, x: Tensor, *, layer: str | None = None, class_idx: Tensor | int | None = None) -> Tensor:
    """Grad-CAM maps, shape (B, h, w) at the layer's resolution (use :func:`upsample` for input size).

    Args:
        model: a conv net in eval mode.
        x: images (B, C, H, W) in [0, 1].
        layer: module name (``dict(model.named_modules())`` key); default :func:`default_layer`.
        class_idx: class per image (tensor (B,) or int); default the predicted class.
    """
    check_images(x)
    check_eval_mode(model)
    layer = layer or default_layer(model)
    with frozen(model), torch.inference_mode(False), torch.enable_grad():  # works under no_grad() too
        xi = x.detach().clone().requires_grad_(True)  # so activations are part of a graph
        a, scores = _activations_and_scores(model, xi, layer)
        cls = _classes(scores, class_idx)
        picked = scores.gather(1, cls[:, None]).sum()
        (g,) = torch.autograd.grad(picked, a)
    alpha = g.mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * a).sum(1)).detach()


def cam(model: nn.Module, x: Tensor, *, layer: str | None = None, fc: str | None = None,
        class_idx: Tensor | int | None = None) -> Tensor:
    """CAM maps ``sum_k w_{c,k} A_k`` (B, h, w) for a model ending in global average pooling + linear.

    Args:
        layer: the last conv activation (default :func:`default_layer`).
        fc: the final linear layer (default the model's last ``nn.Linear``).
    """
    check_images(x)
    check_eval_mode(model)
    layer = layer or default_layer(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    fc = fc or (linears[-1] if linears else None)
    if fc is None:
        raise ConfigError("CAM needs a final linear layer after global average pooling; use grad_cam instead")
    lin = _module(model, fc)
    assert isinstance(lin, nn.Linear)
    with torch.no_grad():
        a, scores = _activations_and_scores(model, x, layer)
        if a.ndim != 4 or a.shape[1] != lin.in_features:
            raise ConfigError(
                f"CAM needs GAP between {layer!r} ({tuple(a.shape[1:])}) and {fc!r} (in_features={lin.in_features}); "
                "this model is not a GAP model: use grad_cam")
        cls = _classes(scores, class_idx)
        w = lin.weight[cls]  # (B, K)
        return torch.einsum("bk,bkhw->bhw", w, a).detach()


def _classes(scores: Tensor, class_idx: Tensor | int | None) -> Tensor:
    """One class index per image, checked against the model's classes."""
    b, k = scores.shape
    if class_idx is None:
        return scores.argmax(1)
    if isinstance(class_idx, int) and not isinstance(class_idx, bool):
        cls = torch.full((b,), class_idx, dtype=torch.int64, device=scores.device)
    elif isinstance(class_idx, Tensor) and not class_idx.is_floating_point() and class_idx.dtype != torch.bool:
        cls = class_idx.to(scores.device, torch.int64).reshape(-1)
        if cls.numel() == 1:
            cls = cls.expand(b)
        elif cls.numel() != b:
            raise LabelError(f"class_idx has {cls.numel()} entries for {b} images: give one per image or one for all")
    else:
        raise LabelError(f"class_idx must be an int or an integer tensor of classes, got "
                         f"{class_idx.dtype if isinstance(class_idx, Tensor) else type(class_idx).__name__}")
    if bool(((cls < 0) | (cls >= k)).any()):
        raise LabelError(f"class_idx has values in [{int(cls.min())}, {int(cls.max())}], outside the model's {k} "
                         f"classes [0, {k - 1}]")
    return cls


def upsample(maps: Tensor, size: tuple[int, int], *, normalize: bool = True) -> Tensor:
    """Bilinearly upsample (B, h, w) maps to ``size``; optionally scale each to [0, 1]."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    if normalize:
        lo = up.amin(dim=(1, 2), keepdim=True)
        hi = up.amax(dim=(1, 2), keepdim=True)
        up = (up - lo) / (hi - lo).clamp_min(1e-12)
    return up

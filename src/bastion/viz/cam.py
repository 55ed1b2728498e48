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

from bastion._checks import check_eval_mode, check_images, frozen, shown
from bastion._model import chunks, evaluations_per_input
from bastion.errors import ConfigError, LabelError

_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid)


def default_layer(model: nn.Module, x: Tensor | None = None) -> str:
    """Name of the default CAM layer: the last spatial feature map the forward pass computes, found by running
    ``x`` (default: one blank input of a bastion model's ``meta.input_shape``) with hooks on every module.

    Execution order matters where registration order misleads: in a residual block the skip-connection conv
    is registered last, but the block's output (after the addition) is the feature map the head pools.
    """
    if x is None:
        shape = getattr(getattr(model, "meta", None), "input_shape", None)
        if shape is None or len(shape) != 3:
            raise ConfigError("default_layer needs an input x for a model without bastion metadata (meta.input_shape)")
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        x = torch.zeros(1, *shape, device=dev)
    with torch.no_grad():
        return _activations_and_scores(model, x[:1], None)[2]  # one input tells the layer


def _module(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules:
        conv = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, *_ACTIVATIONS))]
        raise ConfigError(f"no layer named {shown(layer)}; conv/activation layers: {', '.join(conv)}")
    return modules[layer]


_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)


def _activations_and_scores(model: nn.Module, x: Tensor, layer: str | None) -> tuple[Tensor, Tensor, str]:
    """The activations of ``layer`` (its last 4-D output in the forward pass), the model's scores, and the
    layer's name. ``layer=None``: the layer :func:`default_layer` names, skipping pooling outputs and 1x1 maps. A
    tensor keeps the name of the last leaf module that returned it (an in-place ReLU returns its conv's tensor: the
    ReLU's name); a container that only passes a tensor on does not rename it."""
    found: list[tuple[str, Tensor]] = []
    made_by: dict[int, str] = {}
    alive: list[Tensor] = []  # every tensor seen stays referenced, so that no id() is reused mid-pass

    def hook_for(name: str, mod: nn.Module):  # noqa: ANN202
        leaf = next(mod.children(), None) is None

        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if not isinstance(out, Tensor) or out.ndim != 4:
                return
            if layer is not None:
                found.append((name, out))
                return
            alive.append(out)
            if isinstance(mod, _POOLING) or out.shape[2] * out.shape[3] <= 1:
                made_by[id(out)] = ""  # a pooling output: no container passing it on counts
                return
            if leaf or id(out) not in made_by:
                made_by[id(out)] = name
            if made_by[id(out)]:
                found.append((made_by[id(out)], out))
        return hook

    targets = [(n, m) for n, m in model.named_modules() if n] if layer is None else [(layer, _module(model, layer))]
    handles = [m.register_forward_hook(hook_for(n, m)) for n, m in targets]
    try:
        scores = model(x)
    finally:
        for h in handles:
            h.remove()
    if not found:
        if layer is None:
            raise ConfigError("the model computes no spatial feature map (4-D, larger than 1x1); CAM and "
                              "Grad-CAM need a conv net")
        raise ConfigError(f"layer {shown(layer)} was not used in the forward pass, or produced no 4-D feature map "
                          "(CAM and Grad-CAM need a conv layer's (B, C, h, w) output)")
    name, a = found[-1]
    return a, scores, name


def grad_cam(model: nn.Module, x: Tensor, *, layer: str | None = None, class_idx: Tensor | int | None = None) -> Tensor:
    """Grad-CAM maps, shape (B, h, w) at the layer's resolution (use :func:`upsample` for input size).

    The forward and backward passes run on chunks of the batch (:func:`bastion._model.chunks`), so memory
    stays bounded for any batch of large images; the maps equal the whole batch's.

    Args:
        model: a conv net in eval mode.
        x: images (B, C, H, W) in [0, 1].
        layer: module name (``dict(model.named_modules())`` key); default the last spatial feature map the
            forward pass computes (see :func:`default_layer`).
        class_idx: class per image (tensor (B,) or int); default the predicted class.
    """
    _check_inputs(model, x, class_idx)
    maps = []
    with frozen(model), torch.inference_mode(False), torch.enable_grad():  # works under no_grad() too
        for sl in chunks(x, per_sample=evaluations_per_input(model)):
            xi = x[sl].detach().clone().requires_grad_(True)  # so activations are part of a graph
            a, scores, _ = _activations_and_scores(model, xi, layer)
            cls = _classes(scores, class_idx, sl)
            picked = scores.gather(1, cls[:, None]).sum()
            (g,) = torch.autograd.grad(picked, a)
            alpha = g.mean(dim=(2, 3), keepdim=True)
            maps.append(F.relu((alpha * a).sum(1)).detach())
            del a, scores, g, picked
    return maps[0] if len(maps) == 1 else torch.cat(maps)


def cam(model: nn.Module, x: Tensor, *, layer: str | None = None, fc: str | None = None,
        class_idx: Tensor | int | None = None) -> Tensor:
    """CAM maps ``sum_k w_{c,k} A_k`` (B, h, w) for a model ending in global average pooling + linear
    (computed on chunks of the batch, like :func:`grad_cam`).

    Args:
        layer: the last conv activation (default: the last spatial feature map the forward pass computes).
        fc: the final linear layer (default the model's last ``nn.Linear``).
    """
    _check_inputs(model, x, class_idx)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    fc = fc or (linears[-1] if linears else None)
    if fc is None:
        raise ConfigError("CAM needs a final linear layer after global average pooling; use grad_cam instead")
    lin = _module(model, fc)
    assert isinstance(lin, nn.Linear)
    maps = []
    with torch.no_grad():
        for sl in chunks(x, per_sample=evaluations_per_input(model)):
            a, scores, found = _activations_and_scores(model, x[sl], layer)
            not_gap = (f"CAM needs global average pooling then {fc!r} right after {found!r}; this model is not a "
                       "GAP model there (pass layer=/fc=, or use grad_cam)")
            if a.shape[1] != lin.in_features:
                raise ConfigError(f"{not_gap}: {tuple(a.shape[1:])} activations, in_features={lin.in_features}")
            # the definition's premise: the scores are the linear layer on the pooled activations
            pooled = F.linear(a.mean((2, 3)), lin.weight, lin.bias)
            if pooled.shape != scores.shape or not torch.allclose(pooled, scores, rtol=1e-3, atol=1e-4):
                raise ConfigError(f"{not_gap}: the scores are not {shown(fc)} applied to the pooled activations")
            cls = _classes(scores, class_idx, sl)
            w = lin.weight[cls]  # (B, K)
            maps.append(torch.einsum("bk,bkhw->bhw", w, a).detach())
    return maps[0] if len(maps) == 1 else torch.cat(maps)


def _check_inputs(model: nn.Module, x: Tensor, class_idx: Tensor | int | None) -> None:
    """Images in [0, 1], a model in eval mode, and a tensor of classes with one entry per image or one for all."""
    check_images(x)
    check_eval_mode(model)
    b = x.shape[0]
    if isinstance(class_idx, Tensor) and class_idx.numel() not in (1, b):
        raise LabelError(f"class_idx has {class_idx.numel()} entries for {b} images: give one per image or one for all")


def _classes(scores: Tensor, class_idx: Tensor | int | None, sl: slice) -> Tensor:
    """One class index per image of the chunk ``sl`` of a batch (whose ``scores`` these are), checked against the
    model's classes."""
    b, k = scores.shape
    if class_idx is None:
        return scores.argmax(1)
    if isinstance(class_idx, int) and not isinstance(class_idx, bool):
        cls = torch.full((b,), class_idx, dtype=torch.int64, device=scores.device)
    elif isinstance(class_idx, Tensor) and not class_idx.is_floating_point() and class_idx.dtype != torch.bool:
        given = class_idx.reshape(-1)
        cls = (given[sl] if given.numel() > 1 else given).to(scores.device, torch.int64).expand(b)
    else:
        raise LabelError(f"class_idx must be an int or an integer tensor of classes, got "
                         f"{class_idx.dtype if isinstance(class_idx, Tensor) else type(class_idx).__name__}")
    if bool(((cls < 0) | (cls >= k)).any()):
        raise LabelError(f"class_idx has values in [{int(cls.min())}, {int(cls.max())}], outside the model's {k} "
                         f"classes [0, {k - 1}]")
    return cls


def upsample(maps: Tensor, size: tuple[int, int], *, normalize: bool = True) -> Tensor:
    """Bilinearly upsample (B, h, w) maps to ``size``; optionally scale each to [0, 1] (in place: the result
    is the only full-size tensor allocated)."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    if normalize:
        lo = up.amin(dim=(1, 2), keepdim=True)
        hi = up.amax(dim=(1, 2), keepdim=True)
        up.sub_(lo).div_((hi - lo).clamp_min(1e-12))
    return up

"""What every layer of bastion needs to know about a model: the model protocol.

A model is an ``nn.Module`` taking a batch of inputs in the threat model's bounds and returning ``(N, classes)``
logits (or log-probabilities). It may be *randomized*: its output for the same input changes from call to call
(a BaRT barrage, noise injection, random resizing). bastion asks a model whether it is randomized
(:func:`declared_randomized`: a ``randomized`` attribute on the model or any of its submodules) and, when it
declares nothing, finds out by calling it twice (:func:`probe_randomized`). Randomized models are attacked
without early stopping and judged over several draws (:func:`judge`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import InputShapeError

#: draws over which a randomized model's predictions are judged by default
DEFAULT_DRAWS = 8
#: samples a randomization probe calls the model on (twice)
PROBE_SAMPLES = 8


def declared_randomized(model: nn.Module) -> bool | None:
    """True when ``model`` or any of its submodules declares ``randomized = True`` (an attribute or property);
    False when ``model`` itself declares False and no submodule declares True; None when nothing is declared."""
    top = getattr(model, "randomized", None)
    if any(getattr(m, "randomized", None) is True for m in model.modules()):
        return True
    return False if top is False else None


def probe_randomized(model: nn.Module, x: Tensor, first: Tensor | None = None) -> bool:
    """Whether two calls of ``model`` on the first few samples of ``x`` disagree (beyond float rounding);
    ``first``: the output of one call already made on them."""
    xs = x[:PROBE_SAMPLES]
    with torch.no_grad():
        a = model(xs) if first is None else first
        b = model(xs)
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape:
        return False  # the caller's output check reports it
    return not torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)


def is_randomized(model: nn.Module, x: Tensor | None = None) -> bool:
    """The model's declaration (:func:`declared_randomized`), else a probe on ``x`` (False without ``x``)."""
    declared = declared_randomized(model)
    if declared is not None:
        return declared
    return probe_randomized(model, x) if x is not None else False


def describe_model(model: nn.Module) -> dict[str, Any]:
    """A short JSON-able description of a (possibly wrapped) model: its class, what its own ``describe()`` says
    (architecture and provenance for bastion's classifiers, the defense in front for a defended model), and its
    parameter count. Never the weights."""
    d: dict[str, Any] = {"class": type(model).__name__}
    describe = getattr(model, "describe", None)
    if callable(describe):
        d.update(describe())
    d["parameters"] = int(sum(p.numel() for p in model.parameters()))
    return d


def log_mean_softmax(logits: Tensor) -> Tensor:
    """The log of the mean softmax over the first dimension of ``logits`` (draws, B, K) -> (B, K): one model's
    output for several random draws, averaged (``argmax`` and cross-entropy keep working on it)."""
    return F.softmax(logits, dim=-1).mean(0).clamp_min(1e-12).log()


#: input features per chunk of a forward pass on CPU: a chunk's activations then stay in cache (bastion's
#: ``mnist-cnn`` evaluates 900 images about 1.5x faster in chunks of 83 than in one batch)
_CPU_CHUNK_FEATURES = 1 << 16
#: input features per chunk of a forward pass without gradients on other devices (a GPU): only memory counts
#: there, so chunks are large (55 images of 3x224x224, 10,700 of 28x28)
_DEVICE_CHUNK_FEATURES = 1 << 23
#: input features per chunk of a gradient pass (a forward pass whose activations autograd keeps for the
#: backward pass), on every device: it bounds that memory whatever the batch size. A ResNet-18 keeps about
#: 35 MiB per 3x224x224 image, so a chunk of 13 such images (2,674 of 28x28) holds about 450 MiB.
GRAD_CHUNK_FEATURES = 1 << 21


def evaluations_per_input(model: nn.Module) -> int:
    """How many times one call of ``model`` runs its network on each input: ``n`` for ``eot(model, n)``, a
    defense's averaged draws (``Defended(..., n_samples=n)``), 1 for a plain model (an
    ``evaluations_per_input`` attribute, which wrappers pass on). Chunked passes divide their budget by it."""
    n = getattr(model, "evaluations_per_input", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


def chunk_size(x: Tensor, features: int | None = None, *, per_sample: int = 1) -> int:
    """Samples of ``x`` per chunk so that a chunk holds at most ``features`` input features (default
    :data:`GRAD_CHUNK_FEATURES`; at least one sample); ``per_sample``: copies of each sample one chunk
    evaluates (e.g. EOT draws)."""
    budget = GRAD_CHUNK_FEATURES if features is None else features
    return max(1, budget // max(1, x[0].numel() * per_sample)) if x.ndim and x.shape[0] else 1


def chunks(x: Tensor, features: int | None = None, *, per_sample: int = 1) -> list[slice]:
    """The slices of the batch ``x`` into chunks of :func:`chunk_size` samples."""
    step = chunk_size(x, features, per_sample=per_sample)
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


def forward_in_chunks(model: nn.Module, x: Tensor) -> Any:  # the model's output, checked by callers
    """``model(x)`` in chunks (concatenated): on CPU of about ``_CPU_CHUNK_FEATURES`` input features (speed),
    elsewhere of ``_DEVICE_CHUNK_FEATURES`` (memory), each counted as often as the model evaluates an input
    (:func:`evaluations_per_input`). The first chunk's output is returned as is when it is
    not a tensor (for the caller's check). Call it under ``torch.no_grad()``: with gradients on, every
    chunk's activations stay alive (use :func:`grad_in_chunks`)."""
    if x.ndim == 0 or x.shape[0] == 0:
        return model(x)
    chunk = chunk_size(x, _CPU_CHUNK_FEATURES if x.device.type == "cpu" else _DEVICE_CHUNK_FEATURES,
                       per_sample=evaluations_per_input(model))
    if x.shape[0] <= chunk:
        return model(x)
    first = model(x[:chunk])
    if not isinstance(first, Tensor):
        return first
    out = first.new_empty((x.shape[0], *first.shape[1:]))
    out[:chunk] = first
    for i in range(chunk, x.shape[0], chunk):
        out[i : i + chunk] = model(x[i : i + chunk])
    return out


def grad_in_chunks(
    f: Callable[[Tensor, slice], tuple[Tensor, Tensor]], x: Tensor, *, features: int | None = None, per_sample: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(outputs, values, d sum(values) / d x)`` with ``f(x_chunk, rows) -> (outputs, values)`` evaluated on
    chunks of at most ``features`` input features (default :data:`GRAD_CHUNK_FEATURES`; ``per_sample``: copies
    of each sample ``f`` evaluates), so that autograd keeps the activations of one chunk at a time. ``rows``
    is the chunk's slice of the batch; ``outputs`` and ``values`` hold one row per sample of the chunk.

    The result equals the whole batch's when samples do not interact in the model (an eval-mode model: batch
    norm uses its running statistics); a randomized model draws its randomness per call, thus per chunk.
    Where ``values`` does not depend on ``x`` differentiably the gradient is zero (masked gradients).
    Gradients are taken with respect to ``x`` only; call it with the model's parameters frozen."""
    x = x.detach()
    parts = chunks(x, features, per_sample=per_sample)
    if len(parts) == 1:  # the whole batch at once
        out, values, g = _grad_pass(f, x, parts[0])
        return out, values, torch.zeros_like(x) if g is None else g
    grad = torch.zeros_like(x)
    outs: list[Tensor] = []
    vals: list[Tensor] = []
    for sl in parts:
        out, values, g = _grad_pass(f, x, sl)
        if g is not None:
            grad[sl] = g
        outs.append(out)
        vals.append(values)
    return torch.cat(outs), torch.cat(vals), grad


def _grad_pass(f: Callable[[Tensor, slice], tuple[Tensor, Tensor]], x: Tensor,
               sl: slice) -> tuple[Tensor, Tensor, Tensor | None]:
    """One chunk of :func:`grad_in_chunks`: detached outputs and values, and the gradient (None: zero)."""
    xs = x[sl].requires_grad_(True)
    out, values = f(xs, sl)
    g = None
    if values.requires_grad:
        (g,) = torch.autograd.grad(values.sum(), xs, allow_unused=True)
    return out.detach(), values.detach(), g


def checked_forward(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` without gradients, checked: a model that cannot take ``x`` (wrong shape, channels or dtype)
    or does not return ``(N, classes)`` scores gets a clear :class:`InputShapeError` instead of an error from
    deep inside torch."""
    try:
        with torch.no_grad():
            out = forward_in_chunks(model, x)
    except RuntimeError as e:
        if isinstance(e, torch.OutOfMemoryError) or "memory" in str(e).lower():
            raise
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
        if len(dtypes) == 1 and x.dtype not in dtypes:
            (want,) = dtypes
            raise InputShapeError(f"x has dtype {x.dtype} but the model's parameters are {want}: pass x.to({want}) "
                                  "(or convert the model)") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputShapeError(f"the model cannot take x of shape {tuple(x.shape)} ({x.dtype}): {first}") from e
    if not isinstance(out, Tensor):
        raise InputShapeError(f"the model returned a {type(out).__name__}; bastion needs a model that returns a "
                              "tensor of logits (wrap it to return only the logits)")
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise InputShapeError(f"the model returned shape {tuple(out.shape)} for {x.shape[0]} inputs; expected "
                              "(N, classes) logits")
    return out


def judge(model: nn.Module, x: Tensor, *, draws: int = 1, known: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The model's verdict on ``x`` over ``draws`` calls: ``(logits, preds)``.

    ``logits`` (B, K) is the model's output for one draw, or the log of the mean softmax over the draws (its
    argmax is the mean-probability prediction); ``preds`` (draws, B) holds each draw's predicted class. With
    one draw, ``known`` rows (the outputs an attack already computed at ``x``; NaN rows elsewhere) are used as
    they are and only the others are evaluated.
    """
    with torch.no_grad():
        if draws == 1:
            if known is None:
                out = forward_in_chunks(model, x)
            else:
                out = known.detach().clone()
                missing = torch.isnan(out).any(1).nonzero().squeeze(1)
                if missing.numel():
                    out[missing] = forward_in_chunks(model, x[missing]).to(out.dtype)
            return out, out.argmax(1)[None]
        outs = torch.stack([forward_in_chunks(model, x) for _ in range(draws)])
    return log_mean_softmax(outs), outs.argmax(2)

"""The demo's request handlers: pure functions from plain data (and a :class:`DemoContext`) to plain data.

They hold no attack math (that is the library's) and know nothing about HTTP: they validate everything
they are given and raise typed errors (:mod:`bastion.errors`, :mod:`bastion.web.errors`), which the app in
:mod:`bastion.web.server` turns into ``{"error": "..."}`` JSON with a 4xx status. Tests call them directly.

>>> from bastion.web.context import DemoContext
>>> ctx = DemoContext()
>>> out = run_attack({"model": "standard", "attack": "fgsm", "eps": 0.3, "image": {"gallery": 0}}, ctx)  # doctest: +SKIP
>>> out["clean"]["pred"], out["adversarial"]["pred"]                                                     # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion._model import declared_randomized, judge
from bastion.attacks import ATTACKS as ATTACK_REGISTRY
from bastion.attacks import Adaptive, TransferAttack
from bastion.attacks.base import Attack, AttackResult
from bastion.errors import (
    BastionError,
    ConfigError,
    InputRangeError,
    InputShapeError,
    LabelError,
    UnknownNameError,
)
from bastion.threat import perturbation_norms
from bastion.web import render
from bastion.web.context import DemoContext, LoadedModel
from bastion.web.errors import UnavailableError
from bastion.web.upload import check_declared_type, image_to_tensor, open_image

#: the input shape of the shipped demo models (MNIST); a demo of your own model has its own (``ctx.input_shape``)
INPUT_SHAPE: tuple[int, int, int] = (1, 28, 28)
#: how many classes the probability bars show
TOP_K = 5
#: Grad-CAM overlays are drawn at this multiple of a 28x28 input's size (about 112 pixels wide for any input)
CAM_ZOOM = 4
#: inputs with more values than this are sent back by the page as a PNG, not as a list of numbers
MAX_PIXEL_LIST = 4096
#: gallery thumbnails are at most this many pixels wide or high
THUMB_SIDE = 96
#: JSMA (one pair of pixels per step) is offered only for inputs of at most this many values
MAX_JSMA_VALUES = 4096


#: how the page writes each budget the registry names (bastion.attacks.ATTACKS entries' ``budget``)
BUDGET_SYMBOLS: Mapping[str, str] = {"eps": "\u03b5", "gamma": "\u03b3"}
#: draws of the defense averaged per gradient step by the demo's adaptive attack: PGD-20 through eot(bpda(model), 4)
#: answers in about 0.3 s per image on one CPU thread and breaks mnist-cnn-bart at eps 0.3 (eight of eight draws)
ADAPTIVE_DRAWS = 4
#: the shipped model the transfer attack crafts on (trained apart from the demo's models, on the same data)
TRANSFER_SOURCE = "mnist-cnn-dropout"


@dataclass(frozen=True, kw_only=True)
class AttackSpec:
    """An attack the demo offers: a registered attack (:data:`bastion.attacks.ATTACKS`) as the page shows it.

    Attributes:
        key: API name.
        name: the attack's registry name.
        label, description, eps_label: shown in the page (the registry entry's label, summary, budget label).
        budget: the option the slider sets (the registry entry's ``budget``: ``"eps"``, ``"gamma"`` for JSMA).
        targeted: ``"no"``, ``"optional"`` or ``"required"`` (a target class).
        default_steps: iterations when the request gives none (the library's default unless the registry entry
            gives the demo another, with its reason); None means the attack has no steps.
        options: the other options the demo sets differently from the library (from the registry entry).
        mode: ``"white-box"`` (the attack on the model as it is), ``"adaptive"`` (through
            :class:`~bastion.attacks.Adaptive`: EOT over the defense's draws, BPDA through its non-differentiable
            steps; for randomized models only) or ``"transfer"`` (crafted on another shipped model,
            :class:`~bastion.attacks.TransferAttack`).
    """

    key: str
    name: str
    label: str
    description: str
    eps_label: str
    budget: str
    targeted: Literal["no", "optional", "required"]
    default_steps: int | None
    options: Mapping[str, Any]
    mode: Literal["white-box", "adaptive", "transfer"] = "white-box"

    @property
    def symbol(self) -> str:
        """The budget as the page writes it (\u03b5, \u03b3)."""
        return BUDGET_SYMBOLS.get(self.budget, self.budget)

    def build(self, eps: float, steps: int | None, *, source: nn.Module | None = None) -> Attack:
        entry = ATTACK_REGISTRY.get(self.name)
        options: dict[str, Any] = dict(self.options)
        options[self.budget] = eps
        if self.default_steps is not None:
            options["steps"] = steps or self.default_steps
        attack = entry.build(**options)
        if self.mode == "adaptive":
            return Adaptive(attack=attack, n=ADAPTIVE_DRAWS)
        if self.mode == "transfer":
            if source is None:
                raise ConfigError(f"{self.label} needs a source model to craft on")
            return TransferAttack(source=source, attack=attack)
        return attack


def _spec(name: str, *, key: str | None = None, label: str | None = None, description: str | None = None,
          targeted: Literal["no", "optional", "required"] = "optional",
          mode: Literal["white-box", "adaptive", "transfer"] = "white-box", **overrides: Any) -> AttackSpec:
    """The demo's view of the registered attack ``name``."""
    entry = ATTACK_REGISTRY.get(name)
    if entry.web is None or entry.budget is None:
        raise ConfigError(f"the attack {name!r} is not registered for the web demo")
    options = {**entry.web, **overrides}
    steps_field = next((f for f in dataclasses.fields(entry.cls) if f.name == "steps"), None)  # type: ignore[arg-type]
    steps = options.pop("steps", None if steps_field is None else steps_field.default)
    return AttackSpec(key=key or name, name=name, label=label or entry.label, description=description or entry.summary,
                      eps_label=entry.budget_label, budget=entry.budget, targeted=targeted, default_steps=steps,
                      options=options, mode=mode)


ATTACK_SPECS: tuple[AttackSpec, ...] = (
    _spec("fgsm", targeted="no"),
    _spec("fgsm", key="fgsm-targeted", label="targeted FGSM", targeted="required",
          description="one step of size eps that lowers the loss of the chosen target class"),
    _spec("bim"),
    _spec("pgd"),
    _spec("jsma"),
    _spec("pgd", key="pgd-adaptive", label="PGD + EOT + BPDA (adaptive)", mode="adaptive", early_stop=False,
          description=f"PGD whose every step averages the gradient over {ADAPTIVE_DRAWS} random draws of the defense "
                      "(EOT) and passes backward through its non-differentiable transforms as if they were the "
                      "identity (BPDA), judged over 8 fresh draws (Athalye, Carlini & Wagner 2018). For randomized "
                      "defended models."),
    _spec("pgd", key="pgd-transfer", label=f"transfer PGD (from {TRANSFER_SOURCE})", mode="transfer",
          early_stop=False,
          description=f"PGD run on {TRANSFER_SOURCE}, another shipped model trained apart on the same digits; the "
                      "examples are then shown to the chosen model, which the attack never queries. Needs no "
                      "gradient and no score from the target: it breaks label-only models."),
)
ATTACKS: Mapping[str, AttackSpec] = {a.key: a for a in ATTACK_SPECS}


# --------------------------------------------------------------------------------------------- listings


def _public(message: str) -> str:
    """A message without the server's file paths (the page need not know where bastion is installed)."""
    return re.sub(r"\s*\([^()]*[/\\][^()]*\)", "", message)


def list_models(ctx: DemoContext) -> dict[str, Any]:
    """The models, each with whether it can be used and, if not, why (loading each on first call)."""
    out = []
    for key, spec in ctx.specs.items():
        reason = ctx.availability(key)
        reason = None if reason is None else _public(reason)
        randomized = reason is None and declared_randomized(ctx.model(key).model) is True
        out.append({"key": key, "label": spec.label, "description": spec.description, "label_only": spec.label_only,
                    "randomized": randomized, "available": reason is None, "reason": reason})
    return {"models": out}


def list_attacks(ctx: DemoContext) -> dict[str, Any]:
    """The attacks and the parameter ranges the server accepts."""
    attacks = []
    for spec in ATTACK_SPECS:
        reason = _unavailable(spec, ctx)
        attacks.append({"key": spec.key, "label": spec.label, "description": spec.description,
                        "eps_label": spec.eps_label, "budget": spec.budget, "budget_symbol": spec.symbol,
                        "mode": spec.mode, "targeted": spec.targeted, "default_steps": spec.default_steps,
                        "available": reason is None, "reason": reason})
    gal = ctx.gallery()
    return {
        "attacks": attacks,
        "classes": list(gal.classes),
        "input_shape": list(ctx.input_shape),
        "upload_hint": _upload_hint(ctx),
        "limits": {"eps": [0.0, 1.0], "max_steps": ctx.limits.max_steps,
                   "max_upload_bytes": ctx.limits.max_upload_bytes, "max_pixels": ctx.limits.max_pixels},
    }


def _unavailable(spec: AttackSpec, ctx: DemoContext) -> str | None:
    """Why an attack is not offered for this demo's inputs (None: it is)."""
    values = math.prod(ctx.input_shape)
    if spec.name == "jsma" and values > MAX_JSMA_VALUES:
        return (f"JSMA changes one pair of pixels per step and scores all {values:,} input values each time: too slow for "
                "a live page at this input size (run it with bastion attack)")
    if spec.mode == "transfer" and (ctx.transfer_loader is None or ctx.input_shape != INPUT_SHAPE):
        return "no source model to transfer from in this demo (the shipped ones take MNIST digits)"
    return None


def _upload_hint(ctx: DemoContext) -> str:
    c, h, w = ctx.input_shape
    if ctx.transform is None and c == 1:
        return ("Converted like MNIST: grayscale, inverted if the background is light, the digit cropped, scaled to 20 px "
                f"and centred by its centre of mass in {h}\u00d7{w}.")
    t = ctx.transform
    steps = []
    if t is not None and t.resize is not None:
        steps.append(f"resized to {t.resize} px on its shorter side" if isinstance(t.resize, int)
                     else f"resized to {t.resize[0]}\u00d7{t.resize[1]}")
    if t is not None and t.crop is not None:
        steps.append(f"centre-cropped to {t.crop[0]}\u00d7{t.crop[1]}")
    how = ", ".join(steps) or f"resized to {h}\u00d7{w}"
    return f"Converted as the model expects: {'RGB' if c == 3 else 'grayscale'}, {how}."


def gallery(ctx: DemoContext) -> dict[str, Any]:
    """The gallery: test images with their labels, as PNG data URLs (thumbnails of at most ``THUMB_SIDE`` pixels)."""
    gal = ctx.gallery()
    items = [{"id": i, "label": int(gal.labels[i]), "name": gal.classes[int(gal.labels[i])],
              "image": render.thumbnail_url(gal.images[i], THUMB_SIDE)} for i in range(len(gal.labels))]
    return {"source": gal.source, "images": items}


def warm_up(ctx: DemoContext) -> None:
    """Load the models and the gallery and run one small attack, so the first visitor does not wait for
    lazy loading and first-call initialisation (about 0.5 s on CPU)."""
    list_models(ctx)
    ctx.gallery()
    for key in ctx.specs:
        if ctx.availability(key) is None:
            run_attack({"model": key, "attack": "fgsm", "eps": 0.1, "image": {"gallery": 0}}, ctx)
            break


# --------------------------------------------------------------------------------------------- uploads


def decode_upload(data: bytes, content_type: str | None, ctx: DemoContext) -> Tensor:
    """Validate and decode a PNG/JPEG upload into a model input (1, C, H, W) in [0, 1] (``ctx.input_shape``).

    See :mod:`bastion.web.upload` for the checks and the MNIST-like preprocessing.

    Raises:
        PayloadTooLargeError: more bytes or pixels than the limits allow.
        UnsupportedMediaError: not PNG/JPEG (by magic bytes), or declared as another type.
        DataError: empty or corrupt.
    """
    return _decode(data, content_type, ctx)[0]


def _decode(data: bytes, content_type: str | None, ctx: DemoContext) -> tuple[Tensor, bool, tuple[int, int]]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputShapeError(f"the upload must be bytes, got {type(data).__name__}")
    check_declared_type(content_type)
    im = open_image(bytes(data), max_bytes=ctx.limits.max_upload_bytes, max_pixels=ctx.limits.max_pixels)
    size = im.size
    if ctx.transform is not None:
        x, inverted = ctx.transform(im)[None], False
        if tuple(x.shape[1:]) != ctx.input_shape:
            raise InputShapeError(f"the upload comes out at {tuple(x.shape[1:])}, not the model's {ctx.input_shape}")
    else:
        x, inverted = image_to_tensor(im, ctx.input_shape)
    return x, inverted, size


def upload(data: bytes, content_type: str | None, ctx: DemoContext) -> dict[str, Any]:
    """Decode an upload and return the converted input: a preview PNG (lossless: ``run_attack`` takes it back as
    ``{"png": ...}``), its pixels for small inputs (row-major, for ``{"pixels": [...]}``; None for inputs of more
    than ``MAX_PIXEL_LIST`` values), the original size and whether it was inverted."""
    x, inverted, (w, h) = _decode(data, content_type, ctx)
    small = x.numel() <= MAX_PIXEL_LIST
    return {
        "pixels": [round(float(v), 4) for v in x.reshape(-1).tolist()] if small else None,
        "shape": list(ctx.input_shape),
        "image": render.image_url(x[0]),
        "original_size": [w, h],
        "inverted": inverted,
    }


# --------------------------------------------------------------------------------------------- attacks


@dataclass(frozen=True, kw_only=True)
class AttackRequest:
    """A validated attack request."""

    model: str
    attack: str
    eps: float
    steps: int | None
    target: int | None
    seed: int
    gallery_id: int | None
    image: Tensor  # (1, C, H, W): the gallery's image or the one sent


def _number(params: Mapping[str, Any], name: str, default: Any = None) -> Any:
    v = params.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {v!r}")
    return v


def _integer(params: Mapping[str, Any], name: str, *, limit: int = 2**53) -> int | None:
    v = _number(params, name)
    if v is None:
        return None
    if isinstance(v, float) and not v.is_integer():
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    # a float is exact only up to 2**53; JSON integers are unbounded (the message does not echo all their digits)
    if abs(v) > (2**53 if isinstance(v, float) else limit):
        raise ConfigError(f"{name} is out of range, got {v:.3g}" if isinstance(v, float) else
                          f"{name} is out of range, got an integer of {len(str(abs(v)))} digits")
    return int(v)


def _model_key(params: Any, valid: tuple[str, ...], ctx: DemoContext) -> str:
    """The model a request names, after refusing a request that is not an object or has parameters not in ``valid``."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"the request must be a JSON object, got {type(params).__name__}")
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"unknown parameters {unknown}; valid: {list(valid)}")
    model = params.get("model", "standard")
    if not isinstance(model, str) or model not in ctx.specs:
        raise UnknownNameError(f"unknown model {model!r}; valid models: {', '.join(ctx.specs)}")
    return model


def _seed(params: Mapping[str, Any]) -> int:
    seed = _integer(params, "seed", limit=2**63) or 0
    if not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return seed


def _loaded(ctx: DemoContext, key: str) -> tuple[LoadedModel, torch.device]:
    """The model ``key`` and the device it is on (a reason it is unavailable without the server's file paths)."""
    try:
        lm = ctx.model(key)
    except UnavailableError as e:
        raise UnavailableError(_public(str(e))) from None
    return lm, next((p.device for p in lm.model.parameters()), torch.device(ctx.device))


def parse_attack(params: Any, ctx: DemoContext) -> AttackRequest:
    """Validate an attack request.

    ``params`` keys: ``model`` and ``attack`` (names from :func:`list_models` / :func:`list_attacks`), ``eps``
    in [0, 1], ``steps`` in [1, max_steps] (BIM/PGD only), ``target`` in [0, classes) (required by targeted
    FGSM, optional for BIM/PGD/JSMA, refused by FGSM), ``seed`` (int >= 0, default 0), and ``image``: either
    ``{"gallery": id}``, ``{"pixels": [C*H*W numbers in [0, 1]]}`` or ``{"png": "data:image/png;base64,..."}`` (a PNG
    of exactly the input size, as :func:`upload` returns it).

    Raises:
        ConfigError, UnknownNameError, LabelError, InputShapeError, InputRangeError, UnavailableError.
    """
    model = _model_key(params, ("model", "attack", "eps", "steps", "target", "seed", "image"), ctx)
    attack = params.get("attack")
    if not isinstance(attack, str) or attack not in ATTACKS:
        if attack is None:
            raise ConfigError(f"attack is required; valid attacks: {', '.join(ATTACKS)}")
        raise UnknownNameError(f"unknown attack {attack!r}; valid attacks: {', '.join(ATTACKS)}")
    spec = ATTACKS[attack]
    reason = _unavailable(spec, ctx)
    if reason is not None:
        raise ConfigError(reason)

    eps = _number(params, "eps")
    if eps is None:
        raise ConfigError("eps is required (a number in [0, 1])")
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"eps must be in [0, 1], got {eps!r}")

    steps = _integer(params, "steps")
    if steps is not None:
        if spec.default_steps is None:
            raise ConfigError(f"{spec.label} takes no steps parameter")
        if not 1 <= steps <= ctx.limits.max_steps:
            raise ConfigError(f"steps must be an integer in [1, {ctx.limits.max_steps}], got {steps!r}")
    elif spec.default_steps is not None:
        steps = spec.default_steps

    num_classes = len(ctx.gallery().classes)
    target = _integer(params, "target")
    if target is None and spec.targeted == "required":
        raise LabelError(f"{spec.label} needs a target class in [0, {num_classes})")
    if target is not None:
        if spec.targeted == "no":
            raise LabelError(f"{spec.label} is untargeted; use targeted FGSM to aim at a class")
        if not 0 <= target < num_classes:
            raise LabelError(f"target must be a class in [0, {num_classes}), got {target!r}")

    seed = _seed(params)
    gallery_id, image = _parse_image(params.get("image"), ctx)
    return AttackRequest(model=model, attack=attack, eps=float(eps), steps=steps, target=target, seed=seed,
                         gallery_id=gallery_id, image=image)


def _parse_image(image: Any, ctx: DemoContext) -> tuple[int | None, Tensor]:
    if not isinstance(image, Mapping) or len(image) != 1 or not ({"gallery", "pixels", "png"} & set(image)):
        raise InputShapeError('image must be {"gallery": id}, {"pixels": [numbers]} or {"png": "data:image/png;base64,..."}')
    if "png" in image:
        return None, _png_input(image["png"], ctx)
    if "gallery" in image:
        n = len(ctx.gallery().labels)
        gid = _integer(image, "gallery")
        if gid is None or not 0 <= gid < n:
            raise InputShapeError(f"gallery id must be an integer in [0, {n}), got {image['gallery']!r}")
        return gid, ctx.gallery().images[gid : gid + 1]
    px = image["pixels"]
    n = math.prod(ctx.input_shape)
    if not isinstance(px, list) or len(px) != n:
        got = len(px) if isinstance(px, list) else type(px).__name__
        raise InputShapeError(f"pixels must be a list of {n} numbers ({'x'.join(map(str, ctx.input_shape))}), got {got}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in px):
        raise InputShapeError("pixels must all be numbers")
    x = torch.tensor(px, dtype=torch.float32).reshape(1, *ctx.input_shape)
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise InputRangeError("pixels must be finite numbers in [0, 1]")
    return None, x


def _png_input(url: Any, ctx: DemoContext) -> Tensor:
    """A converted input sent back as a PNG data URL: exactly the model's input size and channels."""
    prefix = "data:image/png;base64,"
    if not isinstance(url, str) or not url.startswith(prefix):
        raise InputShapeError(f'image png must be a string "{prefix}..." (the image an upload returned)')
    try:
        data = base64.b64decode(url[len(prefix):], validate=True)
    except (binascii.Error, ValueError):
        raise InputShapeError("image png is not valid base64") from None
    c, h, w = ctx.input_shape
    im = open_image(data, max_bytes=ctx.limits.max_json_bytes, max_pixels=h * w)
    want = "RGB" if c == 3 else "L"
    if im.size != (w, h) or im.mode != want:
        raise InputShapeError(f"image png must be a {w}x{h} {want} PNG (the converted upload), got {im.size[0]}x"
                              f"{im.size[1]} {im.mode}")
    a = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).float().div_(255.0)
    return (a[None, None] if c == 1 else a.permute(2, 0, 1)[None]).contiguous()


def _probs(scores: Tensor, label_only: bool) -> Tensor:
    # A label-only model's one-hot scores are all it reveals; a softmax over them would invent confidences.
    return scores.float() if label_only else F.softmax(scores.float(), dim=1)


def _side(x: Tensor, probs: Tensor, classes: tuple[str, ...], cam_url: str | None) -> dict[str, Any]:
    p = probs[0]
    top = torch.topk(p, min(TOP_K, p.numel()))
    pred = int(p.argmax())
    return {
        "pred": pred,
        "name": classes[pred] if pred < len(classes) else str(pred),
        "confidence": round(float(p[pred]), 4),
        "probs": [round(float(v), 4) for v in p.tolist()],
        "top": [{"class": int(c), "name": classes[int(c)] if int(c) < len(classes) else str(int(c)),
                 "p": round(float(v), 4)} for v, c in zip(top.values.tolist(), top.indices.tolist(), strict=True)],
        "image": render.image_url(x[0]),
        "cam": cam_url,
    }


def _cams(lm: LoadedModel, x: Tensor, x_adv: Tensor, classes: Tensor) -> tuple[list[str | None], str | None]:
    """Grad-CAM overlays (on the innermost classifier) for the displayed predictions, or a reason why not."""
    from bastion.viz import grad_cam, upsample

    zoom = max(1, round(CAM_ZOOM * 28 / max(x.shape[-2], x.shape[-1])))
    try:
        both = torch.cat([x, x_adv])
        maps = grad_cam(lm.classifier, both, class_idx=classes)
        up = upsample(maps, (both.shape[-2] * zoom, both.shape[-1] * zoom))
    except BastionError as e:
        return [None, None], f"Grad-CAM unavailable for this model: {e}"
    return [render.cam_overlay_url(both[i], up[i], zoom=zoom) for i in range(2)], None


def run_attack(params: Any, ctx: DemoContext) -> dict[str, Any]:
    """Validate ``params`` (see :func:`parse_attack`), run the attack on one image and describe the result.

    Returns a dict with ``clean`` and ``adversarial`` sides (prediction, probabilities, top-5, image,
    Grad-CAM overlay), the magnified ``perturbation``, ``norms`` (L0 / L2 / Linf), ``flipped`` (the
    prediction changed), ``success`` (the attack's own criterion), ``budget`` and ``budget_symbol`` (what the
    slider set: eps, or gamma for JSMA), ``mode``, ``queries`` (the attack's calls of the model), ``draws`` (calls
    that judged each prediction: more than one on a randomized model), ``download`` (the adversarial image as an
    8-bit PNG, its file name and the model's prediction on those rounded pixels), ``notes`` and ``timing_ms``.
    """
    t0 = time.perf_counter()
    req = parse_attack(params, ctx)
    spec = ATTACKS[req.attack]
    lm, device = _loaded(ctx, req.model)
    if spec.mode == "adaptive" and declared_randomized(lm.model) is not True:
        raise ConfigError(f"{spec.label} is for randomized defended models (e.g. BaRT); on {lm.spec.label!r} it would "
                          "be plain PGD: pick PGD")
    source = ctx.transfer_source() if spec.mode == "transfer" else None
    if spec.mode == "transfer" and source is None:
        raise UnavailableError(f"{spec.label} is not available: its source model {TRANSFER_SOURCE} could not be loaded")
    x = req.image.to(device)
    label = None if req.gallery_id is None else int(ctx.gallery().labels[req.gallery_id])
    notes: list[str] = []

    with lm.lock, (ctx.transfer_lock if source is not None else contextlib.nullcontext()):
        reseed = getattr(lm.model, "reseed", None)
        if callable(reseed):  # a randomized defense: the same request gives the same draws
            reseed(req.seed)
        if req.eps == 0.0:
            with torch.no_grad():
                logits = lm.model(x)
            x_adv, logits_clean, logits_adv, seconds = x, logits, logits, 0.0
            success, queries, draws = False, 0, 1
            notes.append("eps = 0: no perturbation, the adversarial image is the original.")
        else:
            attack = spec.build(req.eps, req.steps, source=source)
            if label is None:
                with torch.no_grad():
                    y = lm.model(x).argmax(1)
                notes.append("No true label for an upload or a drawing: the attack uses the model's own clean "
                             "prediction as the label to move away from.")
            else:
                y = torch.tensor([label], device=device)
            if req.target is not None and req.target == int(y[0]):
                whose = "its label" if label is not None else "the model's prediction"
                raise LabelError(f"the image is already of class {req.target} ({whose}): pick another target class")
            target = None if req.target is None else torch.tensor([req.target], device=device)
            res: AttackResult = attack(lm.model, x, y, target=target,
                                       generator=torch.Generator().manual_seed(req.seed))
            x_adv, logits_clean, logits_adv, seconds = res.x_adv, res.logits_clean, res.logits_adv, res.seconds
            success = bool(res.success[0])
            queries = int(res.queries[0])
            draws = 1 if res.preds_adv is None else int(res.preds_adv.shape[0])
        # the downloadable PNG holds 8-bit values: judge what it holds too (for a randomized model, over new draws)
        x_png = render.quantized(x_adv)
        png_pred = int(judge(lm.model, x_png, draws=draws)[0].argmax(1)[0])
        probs_clean = _probs(logits_clean, lm.spec.label_only)
        probs_adv = _probs(logits_adv, lm.spec.label_only)
        preds = torch.stack([probs_clean.argmax(1)[0], probs_adv.argmax(1)[0]])
        cams, cam_note = _cams(lm, x, x_adv, preds)
    if cam_note:
        notes.append(cam_note)

    norms = perturbation_norms(x_adv, x)
    pert_url, scale = render.perturbation_url(x_adv[0], x[0])
    flipped = int(preds[0]) != int(preds[1])
    if lm.spec.label_only:
        notes.append("This model reveals only its label (one-hot scores), so its input gradient is exactly zero: "
                     "gradient attacks get no signal. That is gradient masking, not robustness: its decision "
                     "boundary is the standard model's, and the transfer attack in the list breaks it.")
    if callable(getattr(lm.model, "reseed", None)):
        notes.append(f"Randomized defense: its random transforms are drawn from seed {req.seed}; "
                     "another seed gives other draws (and possibly another prediction).")
        if draws > 1:
            notes.append(f"Predictions are the mean over {draws} draws of its random transforms.")
        if req.eps > 0 and float(norms["l0"][0]) == 0:
            notes.append("The attack did not change a pixel: through this draw's transforms (e.g. JPEG or colour "
                         "precision reduction) the gradient was zero. That is gradient masking, not robustness: "
                         "the adaptive attack (PGD + EOT + BPDA) attacks through the transforms.")
        elif spec.mode == "white-box" and not success and req.eps > 0:
            notes.append("PGD through the transforms as they are gets a noisy or zero gradient: pick the adaptive "
                         "attack (PGD + EOT + BPDA), which averages over draws and steps through the transforms.")
    if spec.mode == "adaptive" and req.eps > 0:
        notes.append(f"Adaptive attack: {req.steps} PGD steps, each averaging the gradient over {ADAPTIVE_DRAWS} draws "
                     f"of the defense and passing backward through it as the identity (BPDA): {queries} calls of the "
                     "defended model.")
    if spec.mode == "transfer" and req.eps > 0:
        notes.append(f"Transfer attack: crafted white-box on {TRANSFER_SOURCE}, a shipped model trained apart from this "
                     "one; the chosen model was queried 0 times by the attack (only for the verdict). Training a "
                     "substitute from the model's labels (Papernot et al. 2017, bastion.training.substitute) is a "
                     "training run, not a live step: this page transfers from a shipped surrogate instead.")
    if spec.budget == "gamma":
        notes.append(f"For {spec.label} the slider sets \u03b3 (gamma), the largest fraction of pixels changed: at most "
                     f"{int(req.eps * math.prod(ctx.input_shape))} pixels may change.")
    classes = lm.classes
    return {
        "model": req.model,
        "attack": req.attack,
        "eps": req.eps,
        "steps": req.steps,
        "target": req.target,
        "seed": req.seed,
        "gallery": req.gallery_id,
        "label": label,
        "label_name": None if label is None else classes[label],
        "classes": list(classes),
        "clean": _side(x, probs_clean, classes, cams[0]),
        "adversarial": _side(x_adv, probs_adv, classes, cams[1]),
        "perturbation": {"image": pert_url, "scale": round(scale, 4),
                         "magnification": round(1.0 / scale, 2) if scale > 0 else None},
        "norms": {"l0": int(norms["l0"][0]), "l2": round(float(norms["l2"][0]), 4),
                  "linf": round(float(norms["linf"][0]), 4)},
        "flipped": flipped,
        "success": success,
        "budget": spec.budget,
        "budget_symbol": spec.symbol,
        "mode": spec.mode,
        "queries": queries,
        "draws": draws,
        "download": {
            "image": render.image_url(x_png[0]),
            "filename": f"bastion-{req.model}-{req.attack}-{spec.budget}{req.eps:.2f}-seed{req.seed}.png",
            "pred": png_pred,
            "flipped": png_pred != int(preds[0]),
            "note": "8-bit PNG: each value rounded to the nearest multiple of 1/255 (at most 0.002 from the "
                    "attack's float pixels)",
        },
        "notes": notes,
        "timing_ms": {"attack": round(seconds * 1000, 1), "total": round((time.perf_counter() - t0) * 1000, 1)},
    }


# --------------------------------------------------------------------------------------------- accuracy curve

#: the radii of the accuracy-vs-eps chart
CURVE_EPS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def accuracy_curve(params: Any, ctx: DemoContext) -> dict[str, Any]:
    """Accuracy vs eps of one model on the whole gallery: FGSM at each eps of :data:`CURVE_EPS` as the model is
    attacked naively, and next to it the attack that does not fall for its defense: FGSM through
    ``eot(bpda(model))`` for a randomized model, FGSM transferred from the transfer source for the others
    (a :class:`bastion.eval.Evaluation`, no cascade, no checks).

    ``params``: ``{"model": key, "seed": int}``. Returns the grid, one line per attack (label and accuracies), the
    number of images, the judging draws, notes and the time taken.
    """
    from bastion.attacks import FGSM
    from bastion.data import ImageDataset
    from bastion.eval import Evaluation

    t0 = time.perf_counter()
    key = _model_key(params, ("model", "seed"), ctx)
    seed = _seed(params)
    lm, device = _loaded(ctx, key)
    gal = ctx.gallery()
    data = ImageDataset(name="gallery", split="all", images=gal.images.to(device), labels=gal.labels.to(device),
                        classes=gal.classes, indices=gal.source_indices.to(device))
    randomized = declared_randomized(lm.model) is True
    suite: list[Attack] = [FGSM(eps=CURVE_EPS[-1])]
    adaptive: dict[str, nn.Module] = {}
    notes: list[str] = []
    source = None if randomized else ctx.transfer_source()
    if randomized:
        adaptive["eot(bpda)"] = Adaptive(attack=suite[0], n=ADAPTIVE_DRAWS).through(lm.model)
    elif source is not None:
        suite.append(TransferAttack(source=source, attack=FGSM(eps=CURVE_EPS[-1])))
    evaluation = Evaluation(suite=suite, eps_grid=list(CURVE_EPS), cascade=False, checks=False, seed=seed,
                            adaptive=adaptive)
    with lm.lock, (ctx.transfer_lock if source is not None else contextlib.nullcontext()):
        report = evaluation.run(lm.model, data, device=device)
    lines: dict[str, list[float]] = {}
    for row in report.rows:
        if row.eps is None:  # every row of this suite has a radius; a row without one has no place on the chart
            continue
        label = (f"FGSM through EOT ({ADAPTIVE_DRAWS} draws) + BPDA" if row.mode.startswith("adaptive")
                 else f"FGSM transferred from {TRANSFER_SOURCE}" if row.access == "transfer"
                 else "FGSM on the model as it is")
        lines.setdefault(label, [float("nan")] * len(CURVE_EPS))[CURVE_EPS.index(float(row.eps))] = round(row.accuracy, 4)
    draws = report.draws
    if randomized:
        notes.append(f"Accuracy of a randomized model: the mean share of correct predictions over {draws} draws.")
    if lm.spec.label_only:
        notes.append("FGSM gets a zero gradient from a label-only model: its line stays flat (gradient masking); "
                     "the transferred one shows the real weakness.")
    return {"model": key, "eps": list(CURVE_EPS), "images": len(data), "draws": draws, "seed": seed,
            "clean_accuracy": round(report.clean_accuracy, 4),
            "lines": [{"label": k, "accuracy": v} for k, v in lines.items()], "notes": notes,
            "seconds": round(time.perf_counter() - t0, 2)}

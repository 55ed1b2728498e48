"""Your own classifier as a bastion model: a factory plus weights, a TorchScript file, or a torchvision/timm model.

Every form becomes a :class:`UserModel`: your network behind the normalization it expects, so that it takes
pixels in [0, 1] (attacks then work in pixel space, and eps means the same for every model), with its class
names, and a description for reports.

=====================================  ==========================================================================
``my_model.py:build``                  ``build()`` (no arguments) from that file returns an ``nn.Module``; with
                                       ``weights=FILE``, loaded into it
``package.module:build``               the same from an importable module
``model.pt`` (a TorchScript file)      ``torch.jit.load``
``torchvision:resnet18``               ``torchvision.models.get_model``; its ImageNet weights, class names and
                                       preprocessing, unless ``weights=FILE`` (needs torchvision)
``timm:resnet18``                      ``timm.create_model``; its published safetensors weights (needs timm)
=====================================  ==========================================================================

What is loaded, and how (nothing is ever unpickled with code):

* Weights files (``weights=``): safetensors, or a state dict saved with ``torch.save(model.state_dict(), ...)``,
  read with ``torch.load(weights_only=True)``, which rebuilds tensors and plain containers only. Every tensor's name
  and shape is checked against the model before any is copied into it, so weights for another architecture are
  refused with the names that differ. A file holding a whole pickled model is refused.
* TorchScript files: ``torch.jit.load`` reads the archive's tensors and constants with TorchScript's own unpickler,
  which rebuilds tensors, containers and TorchScript classes and never imports or calls Python code. The model's
  forward pass is TorchScript code from the file, run by the TorchScript interpreter: load only TorchScript files
  whose author you trust, as you would a Python factory (PyTorch's security policy says the same).
* ``torch.export`` files (``.pt2``) are refused: ``torch.export.load`` unpickles parts of the archive (tensor
  subclasses and custom objects with ``weights_only=False``, and its example inputs, falling back to
  ``weights_only=False`` when the safe load fails) and parses the graph's symbolic shapes with ``sympy.sympify``,
  which evaluates strings from the file. Save the exported program's state dict instead
  (``save_file(ep.state_dict(), ...)``) and load it with a factory.
* ``torchvision:NAME`` builds the architecture with ``weights=None`` and loads the published weights file itself
  (from torch's hub cache, downloading it there when it is missing and a network exists) with
  ``torch.load(weights_only=True)``, instead of torchvision's loader (which unpickles with ``weights_only=False``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from bastion._checks import shown
from bastion._model import checked_forward
from bastion.errors import ConfigError, InputShapeError, UnknownNameError, WeightsError
from bastion.models.io import _first_line
from bastion.models.presets import Preprocessing, preset

#: the largest safetensors header accepted (a weights file is untrusted input)
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: ``torchvision:NAME`` / ``timm:NAME``
HUBS = ("torchvision", "timm")

_FACTORY = re.compile(r"^(?P<target>.+\.py|[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*):(?P<name>[A-Za-z_]\w*)$")


class UserModel(nn.Module):
    """Your network, taking pixels in [0, 1]: ``net((x - mean) / std)`` (just ``net(x)`` without a mean).

    It starts in ``net``'s mode (bastion's loaders put the networks they build in eval mode) and changes nothing
    in ``net``. Grad-CAM, the reports and the web demo treat it as the classifier (as a bastion ``Classifier``).

    Args:
        net: the network (logits out).
        preprocessing: its :class:`~bastion.models.presets.Preprocessing` (normalization, input size, class names).
        source: how it was made, for reports: ``{"spec": ..., "weights": ..., ...}``.

    Attributes:
        classes: the class names (an ``AttributeError`` when unknown, so ``getattr(model, "classes", default)``
            works).
        input_shape: ``(C, H, W)`` when the preprocessing fixes a size, else None.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module, preprocessing: Preprocessing | None = None, *,
                 source: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"the model must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net
        self.preprocessing = preprocessing or Preprocessing()
        self.source: dict[str, Any] = dict(source or {})
        pre = self.preprocessing
        dev = next((p.device for p in net.parameters()), None)  # the network's, else the default device
        for name, values, neutral in (("mean", pre.mean, 0.0), ("std", pre.std, 1.0)):
            t = torch.tensor(values if values is not None else (neutral,), dtype=torch.float32, device=dev)
            self.register_buffer(name, t.reshape(1, -1, 1, 1), persistent=False)
        self._normalizes = pre.mean is not None
        self.training = net.training

    @property
    def classes(self) -> tuple[str, ...]:
        if self.preprocessing.classes is None:
            raise AttributeError("the class names of this model are not known (give them: --classes FILE)")
        return self.preprocessing.classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        size = self.preprocessing.size
        return None if size is None else (self.preprocessing.in_channels, *size)

    def with_preprocessing(self, preprocessing: Preprocessing) -> UserModel:
        """The same network with another preprocessing (e.g. class names learnt from the data); it shares ``net``."""
        return UserModel(self.net, preprocessing, source=self.source)

    def forward(self, x: Tensor) -> Tensor:
        if self._normalizes:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out: Tensor = self.net(x)
        return out

    def describe(self) -> dict[str, Any]:
        """What the report says about this model (see :func:`bastion._model.describe_model`)."""
        d: dict[str, Any] = {"arch": self.source.get("spec", type(self.net).__name__),
                             "network": type(self.net).__name__}
        d.update({k: v for k, v in self.source.items() if k != "spec"})
        d["preprocessing"] = self.preprocessing.to_dict()
        if self.input_shape is not None:
            d["input_shape"] = list(self.input_shape)
        return d

    def extra_repr(self) -> str:
        return f"source={self.source.get('spec')!r}"


def wrap_model(net: nn.Module, *, mean: Any = None, std: Any = None, classes: Any = None,
               size: tuple[int, int] | None = None) -> UserModel:
    """Your own ``nn.Module`` (already built) as a bastion model taking pixels in [0, 1]; its mode is kept.

    >>> model = wrap_model(my_net.eval(), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # doctest: +SKIP
    """
    return UserModel(net, Preprocessing(mean=mean, std=std, classes=classes, size=size),
                     source={"spec": type(net).__name__})


# ----------------------------------------------------------------------------------------------- recognizing specs


def is_user_spec(spec: str) -> bool:
    """Whether ``spec`` names a model by a form of this module (``X.py:f``, ``pkg.mod:f``, ``torchvision:N``,
    ``timm:N``) rather than by a shipped name or a file path."""
    head = spec.partition(":")[0]
    return (head in HUBS and ":" in spec) or _FACTORY.match(spec) is not None


def file_kind(path: Path) -> str:
    """What a model file holds, from its first bytes and (for zip archives) its member names, without loading it:
    ``"safetensors"``, ``"torchscript"``, ``"export"``, ``"pickle"`` (``torch.save``) or ``"unknown"``."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
        size = path.stat().st_size
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "unknown"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("archive_format") or n.endswith("serialized_exported_program.json")
               or ("/models/" in n and n.endswith(".json")) for n in names):
            return "export"
        if any(n.endswith("data.pkl") for n in names):
            return "pickle"
        return "unknown"
    if head[:1] == b"\x80":  # a pickle protocol marker: torch.save's legacy format
        return "pickle"
    return "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- weights


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    with path.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
    if n > MAX_HEADER_BYTES:
        raise WeightsError(f"{path}: its safetensors header claims {n:,} bytes (at most {MAX_HEADER_BYTES:,}); corrupt?")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a mapping
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path}: not a valid safetensors file ({_first_line(e)}); corrupt or truncated?") from None


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise WeightsError(f"{path}: holds more than tensors{what}, and bastion never unpickles code (it reads "
                           "weights with torch.load(weights_only=True)); save the weights alone, "
                           "torch.save(model.state_dict(), FILE) or safetensors") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise WeightsError(f"{path}: not a readable torch.save file ({_first_line(e)[:160]})") from None
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        inner = [k for k in ("state_dict", "model_state_dict", "model") if isinstance(obj.get(k), Mapping)]
        if inner:  # a training checkpoint: {"state_dict": {...}, "epoch": ...}
            obj = obj[inner[0]]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) and isinstance(v, Tensor)
                                                          for k, v in obj.items()):
        raise WeightsError(f"{path}: not a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    return dict(obj)


def read_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The tensors of a weights file: safetensors, or a ``torch.save``\\d state dict (``weights_only=True``).

    Raises:
        WeightsError: no such file, a model program instead of weights, not a state dict, or unreadable.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"{p}: no such weights file" if not p.exists() else f"{p}: not a file")
    kind = file_kind(p)
    if kind == "safetensors":
        return _read_safetensors(p)
    if kind == "pickle":
        return _read_state_dict(p)
    if kind in ("torchscript", "export"):
        raise WeightsError(f"{p}: a {'TorchScript' if kind == 'torchscript' else 'torch.export'} program, not "
                           "weights: pass it as the model itself (--model FILE)")
    raise WeightsError(f"{p}: neither a safetensors file nor a state dict saved with torch.save")


def load_weights(net: nn.Module, path: str | os.PathLike[str], *, what: str) -> str:
    """Load a weights file into ``net`` after checking every name and shape; returns the file's sha256.

    Raises:
        WeightsError: see :func:`read_weights`; or the tensors do not match ``net`` (another architecture, other
            class count): the message names the file, ``what`` (the model) and the first differences.
    """
    p = Path(path).expanduser()
    state = read_weights(p)
    expected = net.state_dict()
    if set(state) != set(expected) and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"{len(state):,} tensors in the file, {len(expected):,} in the model"]
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}" + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}"
                         + (f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""))
        raise WeightsError(f"{p}: weights do not match the model of {what} (another architecture?): {'; '.join(parts)}")
    for name, want in expected.items():
        got = state[name]
        if tuple(got.shape) != tuple(want.shape):
            raise WeightsError(f"{p}: weights do not match the model of {what}: tensor {name!r} has shape "
                               f"{list(got.shape)} in the file, {list(want.shape)} in the model")
        if got.is_floating_point() != want.is_floating_point():
            raise WeightsError(f"{p}: tensor {name!r} is {got.dtype} in the file, {want.dtype} in the model")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise WeightsError(f"{p}: tensor {name!r} contains NaN or inf")
    with torch.no_grad():
        net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return _sha256(p)


# ----------------------------------------------------------------------------------------------- the forms


def _import_file(path: Path) -> Any:
    """Import a Python file as a module of its own (its folder importable while it runs)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such Python file")
    name = "bastion_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    no_cache = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ left beside your file
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise ConfigError(f"{path}, line {e.lineno}: SyntaxError: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - any error in your file is one line naming it
        sys.modules.pop(name, None)
        raise ConfigError(f"{path}: importing it failed: {type(e).__name__}: {_first_line(e)}") from None
    finally:
        sys.dont_write_bytecode = no_cache
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _factory(target: str, name: str) -> Callable[[], Any]:
    if target.endswith(".py"):
        module = _import_file(Path(target).expanduser())
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:  # noqa: BLE001 - ModuleNotFoundError or an error inside the module
            raise ConfigError(f"cannot import {target}: {type(e).__name__}: {_first_line(e)}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise ConfigError(f"{target} has no function {name!r}" + (f"; it defines {', '.join(found[:8])}" if found else ""))
    return fn  # type: ignore[no-any-return]


def _from_factory(m: re.Match[str], weights: Path | None) -> tuple[nn.Module, Preprocessing, dict[str, Any]]:
    spec, target, name = m.string, m.group("target"), m.group("name")
    fn = _factory(target, name)
    try:
        net = fn()
    except Exception as e:  # noqa: BLE001 - the factory's own error, as one line
        raise ConfigError(f"{spec}: the factory raised {type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"{spec} returned a {type(net).__name__}, not a torch.nn.Module")
    shown_spec = f"{Path(target).name}:{name}" if target.endswith(".py") else spec
    return net, Preprocessing(), {"spec": shown_spec} if weights is None else _loaded(net, shown_spec, weights)


def _loaded(net: nn.Module, spec: str, weights: Path, name: str | None = None) -> dict[str, Any]:
    """``weights`` loaded into ``net``: the source a report gives (the file as ``name``, default its name)."""
    return {"spec": spec, "weights": name or weights.name, "weights_sha256": load_weights(net, weights, what=spec)}


def _from_file(path: Path, weights: Path | None) -> tuple[nn.Module, Preprocessing, dict[str, Any]]:
    kind = file_kind(path)
    if kind == "torchscript":
        if weights is not None:
            raise ConfigError(f"{path} is a TorchScript model with its weights inside; --weights does not apply")
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001 - RuntimeError and friends from the TorchScript loader, as one line
            raise WeightsError(f"{path}: not a loadable TorchScript model ({_first_line(e)[:200]})") from None
        return net, Preprocessing(), {"spec": f"{path.name} (TorchScript)", "weights_sha256": _sha256(path)}
    if kind == "export":
        raise WeightsError(f"{path}: a torch.export program; bastion does not load these, because torch.export.load "
                           "unpickles parts of the file and evaluates strings from it (it can run code). Save its "
                           "weights instead (safetensors.torch.save_file(ep.state_dict(), 'w.safetensors')) and "
                           "load them with a factory: --model my_model.py:build --weights w.safetensors")
    if kind == "pickle":
        raise WeightsError(f"{path}: a torch.save checkpoint; bastion never unpickles model objects. If it holds a "
                           "state dict, load it into your model: --model my_model.py:build --weights FILE")
    if kind == "safetensors":
        raise WeightsError(f"{path}: weights without a model (no bastion metadata); name the model that takes them: "
                           "--model my_model.py:build --weights FILE")
    raise WeightsError(f"{path}: not a model file bastion can load (a bastion .safetensors, or a TorchScript file)")


def _hub_checkpoint(url: str, what: str) -> Path:
    """The file of ``url`` in torch's hub cache, downloaded there (hash-checked) when missing."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    dest = folder / os.path.basename(url.split("?", 1)[0])
    if dest.is_file():
        return dest
    m = re.search(r"-([a-f0-9]{6,})\.", dest.name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=m.group(1) if m else None, progress=False)
    except Exception as e:  # noqa: BLE001 - URLError, HTTPError, hash mismatch...: one line
        raise WeightsError(f"the weights of {what} are not in {folder} and could not be downloaded "
                           f"({type(e).__name__}: {_first_line(e)[:160]}); offline, download {url} into that "
                           "folder elsewhere, or pass a weights file with --weights") from None
    return dest


def _from_torchvision(name: str, weights: Path | None) -> tuple[nn.Module, Preprocessing, dict[str, Any]]:
    try:
        import torchvision  # type: ignore[import-not-found]
    except Exception as e:  # noqa: BLE001 - missing, or built for another torch
        raise ConfigError(f"torchvision:{name} needs torchvision, which does not import here ({type(e).__name__}: "
                          f"{_first_line(e)[:120]}); install a torchvision built for this torch, or build the model "
                          "in a factory file (--model my_model.py:build --weights FILE)") from None
    spec = f"torchvision:{name}"
    try:
        net = torchvision.models.get_model(name, weights=None)
        default = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError) as e:
        raise UnknownNameError(f"{spec}: torchvision has no classification model {name!r} ({_first_line(e)[:120]})"
                               ) from None
    meta = getattr(default, "meta", {}) or {}  # class names, normalization and sizes it publishes (or leaves unset)
    classes = meta.get("categories")
    try:
        t = default.transforms()
    except Exception:  # noqa: BLE001 - a weights entry without the usual transforms: use what the meta says
        t = None
    crop, resize = getattr(t, "crop_size", None), getattr(t, "resize_size", None)
    pre = Preprocessing(mean=getattr(t, "mean", None), std=getattr(t, "std", None),
                        size=(int(crop[0]), int(crop[-1])) if crop else None,
                        resize=int(resize[0]) if resize else None, classes=tuple(classes) if classes else None)
    if weights is None:
        file = _hub_checkpoint(str(default.url), spec)
        return net, pre, _loaded(net, spec, file, f"{default} ({file.name})")
    return net, pre, _loaded(net, spec, weights)


def _from_timm(name: str, weights: Path | None) -> tuple[nn.Module, Preprocessing, dict[str, Any]]:
    try:
        import timm  # type: ignore[import-not-found]
    except Exception as e:  # noqa: BLE001 - missing, or its torchvision does not import beside this torch
        raise ConfigError(f"timm:{name} needs timm, which does not import here ({type(e).__name__}: "
                          f"{_first_line(e)[:120]}); install it, or build the model in a factory file") from None
    spec = f"timm:{name}"
    try:
        net = timm.create_model(name, pretrained=False)
    except (RuntimeError, ValueError, KeyError) as e:
        raise UnknownNameError(f"{spec}: timm has no model {name!r} ({_first_line(e)[:120]})") from None
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    size = cfg.get("input_size") or (3, 224, 224)
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    classes = preset("imagenet").classes if cfg.get("num_classes", 1000) == 1000 else None
    pre = Preprocessing(mean=cfg.get("mean"), std=cfg.get("std"), channels=int(size[0]), size=(int(size[1]), int(size[2])),
                        resize=int(int(size[1]) / crop_pct), classes=classes)
    if weights is None:
        hub_id = cfg.get("hf_hub_id")
        if not hub_id:
            raise WeightsError(f"{spec}: timm publishes no Hugging Face weights for it; pass a weights file with --weights")
        try:
            from huggingface_hub import hf_hub_download  # type: ignore[import-not-found]

            weights = Path(hf_hub_download(hub_id, "model.safetensors"))
        except Exception as e:  # noqa: BLE001 - offline, or no safetensors file published
            raise WeightsError(f"the weights of {spec} ({hub_id}, model.safetensors) are not cached and could not be "
                               f"downloaded ({type(e).__name__}: {_first_line(e)[:160]}); pass a weights file with "
                               "--weights") from None
    return net, pre, _loaded(net, spec, weights)


def load_user_model(spec: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None,
                    preprocessing: Preprocessing | None = None, device: str | torch.device = "cpu") -> UserModel:
    """Your model (any form of the module docstring), in eval mode on ``device``, taking pixels in [0, 1].

    Args:
        spec: ``my_model.py:build``, ``package.module:build``, a TorchScript file, ``torchvision:NAME``, ``timm:NAME``.
        weights: a weights file for a factory (or instead of a torchvision/timm model's published weights).
        preprocessing: what the model expects (normalization, sizes, class names); it overrides what a
            torchvision/timm model publishes, field by field.

    Raises:
        ConfigError: a factory that cannot be imported, raises, or returns no ``nn.Module``; a missing package.
        WeightsError: weights that do not match the model, unsafe or unreadable files, weights not downloadable.
        UnknownNameError: an unknown torchvision/timm model.
    """
    text = os.fspath(spec)
    w = Path(weights).expanduser() if weights is not None else None
    head, _, rest = text.partition(":")
    if head in HUBS and rest:
        net, defaults, source = (_from_torchvision if head == "torchvision" else _from_timm)(rest, w)
    elif m := _FACTORY.match(text):
        net, defaults, source = _from_factory(m, w)
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise UnknownNameError(f"{shown(text)}: no such model file")
        net, defaults, source = _from_file(path, w)
    pre = preprocessing.over(defaults) if preprocessing is not None else defaults
    return UserModel(net, pre, source=source).to(device).eval()


def preprocessing_of(model: nn.Module) -> Preprocessing:
    """What ``model`` expects of image files: a :class:`UserModel`'s preprocessing, or for a bastion classifier its
    channels and input size (its normalization is inside it) and class names; wrappers (defenses) are looked through."""
    from bastion._wrap import innermost

    inner = innermost(model)
    if isinstance(inner, UserModel):
        return inner.preprocessing
    meta = getattr(inner, "meta", None)
    shape = tuple(getattr(meta, "input_shape", ()) or ())
    classes = getattr(meta, "classes", None)
    if len(shape) == 3 and shape[0] in (1, 3):
        return Preprocessing(channels=int(shape[0]), size=(int(shape[1]), int(shape[2])), resize=(int(shape[1]), int(shape[2])),
                             classes=tuple(classes) if classes else None)
    return Preprocessing(classes=tuple(classes) if classes else None)


def check_outputs(model: nn.Module, x: Tensor, classes: tuple[str, ...], *, where: str) -> None:
    """Refuse a model whose number of scores per image is not the number of ``classes`` (named by ``where``: the
    preset, the class-names file, the folder names...).

    Raises:
        InputShapeError: the model cannot take ``x``, or returns another number of scores than there are classes.
    """
    try:
        out = checked_forward(model, x[:1])
    except InputShapeError as e:
        c, h, w = (tuple(x.shape[1:]) + (0, 0, 0))[:3]
        raise InputShapeError(f"{e}; the images are made {c}-channel {h}x{w}: give the input your model takes with "
                              "--input-size (e.g. 3x224x224, or 1x28x28 for a grayscale model)") from None
    k = int(out.shape[1])
    if k != len(classes):
        listed = ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")
        raise InputShapeError(f"the model returns {k} scores per image, but there are {len(classes):,} classes "
                              f"({listed}: {where}); give the model's own class names (--classes FILE, one a line, in "
                              "its output order) or check the model")


#: the safetensors metadata key of a trained model of yours (not bastion's ``bastion`` key: the file holds your
#: network's weights only, loaded again with ``--model FILE.py:FUNCTION --weights FILE``)
RECORD_KEY = "bastion_training"


def save_weights(model: UserModel, path: str | os.PathLike[str], record: Mapping[str, Any] | None = None) -> Path:
    """Write your network's weights (``model.net``'s state dict) to a safetensors file, atomically, with ``record``
    (JSON: how it was trained) and the model's description in its metadata; returns the path."""
    import json

    from safetensors.torch import save_file

    from bastion._outputs import atomic_write

    p = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.net.state_dict().items()}
    meta = {RECORD_KEY: json.dumps({"model": model.describe(), **dict(record or {})}, sort_keys=True, default=str)}
    atomic_write(p, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return p


def with_classes(model: UserModel, classes: tuple[str, ...]) -> UserModel:
    """``model`` with class names (when its preprocessing had none)."""
    return model.with_preprocessing(replace(model.preprocessing, classes=classes))


__all__ = ["UserModel", "wrap_model", "load_user_model", "load_weights", "read_weights", "save_weights", "is_user_spec",
           "file_kind", "preprocessing_of", "check_outputs", "with_classes"]

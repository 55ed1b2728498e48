"""The demo's state: lazily loaded models, the gallery, limits, and a bounded worker pool.

Nothing here is module-global: everything hangs off a :class:`DemoContext` that the app (or a test)
creates, so two apps in one process never share models, locks or threads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from bastion._wrap import innermost
from bastion.data import ImageDataset, ImageFiles, ImageTransform
from bastion.errors import BastionError, ConfigError, UnknownNameError
from bastion.web.errors import BusyError, UnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model the demo offers.

    Attributes:
        key: the name used by the API (``"standard"``, ...).
        label: the name shown in the page.
        description: one line shown under the name.
        load: ``device -> model`` (eval mode); may raise a :class:`~bastion.errors.BastionError`
            (e.g. ``WeightsError`` when the weights are not shipped), which marks the model unavailable.
        label_only: the model returns one-hot scores (only its label), not logits.
    """

    key: str
    label: str
    description: str
    load: Callable[[str], nn.Module]
    label_only: bool = False


def _pretrained(name: str, device: str) -> nn.Module:
    from bastion.models import pretrained

    return pretrained(name, device=device)


def _label_only(device: str) -> nn.Module:
    from bastion.defenses import HideProbabilities

    return HideProbabilities(_pretrained("mnist-cnn", device)).eval()


_TRANSFER_SOURCE = partial(_pretrained, "mnist-cnn-dropout")

#: The four models of the demo, in the order the page lists them.
DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(key="standard", label="standard", load=partial(_pretrained, "mnist-cnn"),
              description="mnist-cnn: small conv net, ordinary training"),
    ModelSpec(key="adversarial", label="adversarially trained", load=partial(_pretrained, "mnist-cnn-adv"),
              description="mnist-cnn-adv: trained on PGD examples at eps=0.3 (Madry et al.)"),
    ModelSpec(key="bart", label="BaRT-defended", load=partial(_pretrained, "mnist-cnn-bart"),
              description="mnist-cnn-bart: a random barrage of input transforms in front of the classifier"),
    ModelSpec(key="label-only", label="label-only", load=_label_only, label_only=True,
              description="mnist-cnn behind HideProbabilities: returns only its label (one-hot scores)"),
)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds on what one request may cost.

    Attributes:
        max_upload_bytes: largest accepted upload (413 above).
        max_pixels: largest accepted image in pixels before decoding (decompression-bomb guard).
        max_json_bytes: largest accepted JSON body.
        max_steps: largest number of iterations for BIM/PGD.
        max_running: attacks computed at the same time (each on its own worker thread).
        max_waiting: attacks allowed to wait for a worker; more get 503.
        max_requests: requests with a body (uploads, attacks) admitted at once: reading their body, waiting
            for a worker or using one. One more gets 503 at once, before any of its body is read, so request
            bodies never hold more than about ``max_requests * max_upload_bytes`` of memory.
        body_seconds: the whole body of a request must arrive within this time (408 otherwise), so a client
            that trickles its upload cannot hold an admission slot and its memory for long.
        max_connections: open connections the server accepts at once (uvicorn's ``limit_concurrency``); a
            request arriving beyond it gets 503 from uvicorn.
        keep_alive_seconds: an idle kept-alive connection is closed after this many seconds (uvicorn's
            ``timeout_keep_alive``).
    """

    max_upload_bytes: int = 5 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_json_bytes: int = 64 * 1024
    max_steps: int = 100
    max_running: int = 1
    max_waiting: int = 4
    max_requests: int = 8
    body_seconds: float = 30.0
    max_connections: int = 256
    keep_alive_seconds: int = 5

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_json_bytes", "max_steps", "max_running", "max_requests",
                     "max_connections", "keep_alive_seconds"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.max_waiting, int) or isinstance(self.max_waiting, bool) or self.max_waiting < 0:
            raise ConfigError(f"max_waiting must be an integer >= 0, got {self.max_waiting!r}")
        v = self.body_seconds
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"body_seconds must be a number of seconds > 0, got {v!r}")


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A loaded model with what the handlers need around it.

    Attributes:
        spec: its :class:`ModelSpec`.
        model: the model attacked (possibly a wrapper: ``Defended``, ``HideProbabilities``).
        classifier: the innermost classifier (Grad-CAM runs on it).
        classes: class names.
        lock: held while the model is used (wrappers such as ``Defended`` carry a generator, and
            attacks toggle ``requires_grad`` flags while they run).
    """

    spec: ModelSpec
    model: nn.Module
    classifier: nn.Module
    classes: tuple[str, ...]
    lock: threading.Lock


@dataclass(frozen=True, eq=False)
class Gallery:
    """Images shown in the page: images (N, C, H, W) in [0, 1] (the model's input shape), labels (N,), class names,
    each image's index in its source, and a line saying where they come from."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    source_indices: Tensor
    source: str = "mnist-5k (held out: never seen by the shipped models)"


def images_gallery(data: ImageDataset | ImageFiles, n: int) -> Gallery:
    """A gallery of ``n`` images spread over ``data`` (your folder of images: only these are decoded)."""
    picked = data.spread(n).load()
    assert picked.indices is not None
    return Gallery(images=picked.images.contiguous(), labels=picked.labels.clone(), classes=picked.classes,
                   source_indices=picked.indices.clone(), source=f"{data.name} ({len(picked)} of {len(data)} images)")


def _default_gallery(n: int) -> Gallery:
    from bastion.data import load_dataset

    full = load_dataset("mnist-5k", "all")
    idx = torch.linspace(0, len(full) - 1, n).round().long()
    assert full.indices is not None
    return Gallery(images=full.images[idx].contiguous(), labels=full.labels[idx].clone(), classes=full.classes,
                   source_indices=full.indices[idx].clone())


class Admission:
    """At most ``limit`` requests (or jobs) inside at once; one more is refused at once with :class:`BusyError`
    (the app answers 503), its message naming ``what`` is inside.

    The server takes a :meth:`slot` before a request's body is read, so a flood of uploads cannot make it buffer
    more than ``limit`` bodies; the slot is released when the request is answered (or its client goes away).
    """

    def __init__(self, limit: int, what: str = "requests being received or computed") -> None:
        self.limit = limit
        self.what = what
        self._inside = 0
        self._lock = threading.Lock()

    @property
    def inside(self) -> int:
        with self._lock:
            return self._inside

    def enter(self) -> None:
        with self._lock:
            if self._inside >= self.limit:
                raise BusyError(f"the server is busy ({self._inside} {self.what}, limit {self.limit}); "
                                "try again in a moment")
            self._inside += 1

    def leave(self, *_done: Any) -> None:
        with self._lock:
            self._inside -= 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()


class Limiter:
    """Bounded concurrency for CPU-heavy work: ``max_running`` worker threads and at most ``max_waiting``
    jobs queued behind them; one more is refused at once with :class:`BusyError` (the app answers 503).

    A job counts until it has really finished on its worker (not merely until its client went away), so the
    queue can never grow past the bound.
    """

    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self._jobs = Admission(max_running + max_waiting, "attacks running or waiting")
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def admitted(self) -> int:
        """Jobs running or waiting now."""
        return self._jobs.inside

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)`` on a worker, or raise :class:`BusyError` when the queue is full."""
        self._jobs.enter()
        try:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=self.max_running, thread_name_prefix="bastion-web")
                fut = self._executor.submit(fn, *args)
        except BaseException:
            self._jobs.leave()
            raise
        fut.add_done_callback(self._jobs.leave)
        return fut

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker thread and await its result (the event loop keeps serving)."""
        fut = self.submit(fn, *args)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.cancel()  # a job still waiting is dropped; a running one finishes and is discarded
            raise

    def close(self) -> None:
        """Stop the workers (waiting jobs are cancelled); a later :meth:`submit` starts new ones."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


class DemoContext:
    """Everything the handlers need: models (loaded on first use and cached), the gallery, the limits and
    the worker pool.

    Args:
        device: where models run (``"cpu"``, ``"cuda"``, ...).
        models: the models offered (default :data:`DEFAULT_MODELS`).
        gallery_size: how many held-out ``mnist-5k`` images the gallery shows.
        limits: request limits (:class:`Limits`).
        gallery_loader: ``n -> Gallery`` (tests may pass their own).
        input_shape: ``(C, H, W)`` of every model's input (default MNIST's).
        transform: how uploads become inputs for models of your own (resize, centre crop); None: MNIST-like
            preprocessing for 1-channel inputs, a plain resize for 3-channel ones (:mod:`bastion.web.upload`).
        transfer_source: ``device -> model`` the transfer attack crafts on (a shipped model trained apart from the
            demo's); None: no transfer attack.
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        models: Sequence[ModelSpec] = DEFAULT_MODELS,
        gallery_size: int = 30,
        limits: Limits | None = None,
        gallery_loader: Callable[[int], Gallery] = _default_gallery,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        transform: ImageTransform | None = None,
        transfer_source: Callable[[str], nn.Module] | None = _TRANSFER_SOURCE,
    ) -> None:
        keys = [m.key for m in models]
        if len(set(keys)) != len(keys) or not keys:
            raise ConfigError(f"model keys must be distinct and non-empty, got {keys}")
        if not isinstance(gallery_size, int) or gallery_size < 1:
            raise ConfigError(f"gallery_size must be a positive integer, got {gallery_size!r}")
        if (len(input_shape) != 3 or input_shape[0] not in (1, 3)
                or not all(isinstance(v, int) and v > 0 for v in input_shape)):
            raise ConfigError(f"input_shape must be (1 or 3, height, width), got {input_shape!r}")
        self.device = device
        self.input_shape: tuple[int, int, int] = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        self.transform = transform
        self.specs: dict[str, ModelSpec] = {m.key: m for m in models}
        self.gallery_size = gallery_size
        self.limits = limits or Limits()
        self.limiter = Limiter(self.limits.max_running, self.limits.max_waiting)
        self._gallery_loader = gallery_loader
        self._lock = threading.Lock()
        #: what each loader gave (``"model <key>"``, ``"transfer source"``), or the error that makes it unavailable
        self._loaded: dict[str, Any] = {}
        self._gallery: Gallery | None = None
        self.transfer_loader = transfer_source
        #: held while the transfer source is used (attacks toggle its ``requires_grad`` flags)
        self.transfer_lock = threading.Lock()

    def _once(self, what: str, load: Callable[[], T]) -> T | BastionError:
        """``load()``, run once; a BastionError it raises (e.g. WeightsError: weights not shipped in this version)
        is kept as the reason ``what`` is unavailable."""
        with self._lock:
            if what not in self._loaded:
                try:
                    self._loaded[what] = load()
                except BastionError as e:
                    log.info("%s unavailable: %s", what, e)
                    self._loaded[what] = e
            return self._loaded[what]

    def _load(self, key: str) -> LoadedModel | BastionError:
        return self._once(f"model {key}", partial(self._loaded_model, self.specs[key]))

    def _loaded_model(self, spec: ModelSpec) -> LoadedModel:
        model = spec.load(self.device)
        classifier = innermost(model)
        classes = tuple(getattr(model, "classes", None) or getattr(classifier, "classes", ()) or ())
        if not classes:
            with torch.no_grad():
                k = int(model(torch.zeros(1, *self.input_shape, device=self.device)).shape[1])
            classes = tuple(str(i) for i in range(k))
        return LoadedModel(spec=spec, model=model, classifier=classifier, classes=classes, lock=threading.Lock())

    def model(self, key: str) -> LoadedModel:
        """The loaded model ``key``.

        Raises:
            UnknownNameError: no such model (the message lists the valid keys).
            UnavailableError: the model exists but could not be loaded (the message says why).
        """
        if not isinstance(key, str) or key not in self.specs:
            raise UnknownNameError(f"unknown model {key!r}; valid models: {', '.join(self.specs)}")
        got = self._load(key)
        if isinstance(got, BastionError):
            raise UnavailableError(f"model {key!r} is not available: {got}")
        return got

    def availability(self, key: str) -> str | None:
        """None when model ``key`` can be used, else the reason it cannot."""
        got = self._load(key)
        return str(got) if isinstance(got, BastionError) else None

    def transfer_source(self) -> nn.Module | None:
        """The model the transfer attack crafts on (loaded on first use), or None when this demo has none or it
        could not be loaded."""
        if self.transfer_loader is None:
            return None
        got = self._once("transfer source", partial(self.transfer_loader, self.device))
        return None if isinstance(got, BastionError) else got

    def gallery(self) -> Gallery:
        """The gallery images (loaded on first use)."""
        with self._lock:
            if self._gallery is None:
                self._gallery = self._gallery_loader(self.gallery_size)
            return self._gallery

    def close(self) -> None:
        """Stop the worker threads (models stay cached)."""
        self.limiter.close()


def own_model_context(model: nn.Module, *, label: str, description: str, gallery: ImageDataset | ImageFiles,
                      transform: ImageTransform, device: str = "cpu", gallery_size: int = 30) -> DemoContext:
    """A demo of your own model (already loaded, in eval mode) on your images: one model, the gallery spread over
    ``gallery``, uploads made into inputs by ``transform``; request bodies may carry one PNG of the input size."""
    shape = tuple(int(v) for v in gallery.batch(slice(0, 1)).shape[1:])
    if len(shape) != 3:
        raise ConfigError(f"the gallery's images have shape {shape}; the demo shows images (C, H, W)")
    c, h, w = shape
    limits = Limits(max_json_bytes=Limits().max_json_bytes + 2 * c * h * w)  # an attack request carries a PNG
    spec = ModelSpec(key="yours", label=label, description=description, load=lambda _device: model)
    return DemoContext(device=device, models=(spec,), gallery_size=gallery_size, limits=limits,
                       gallery_loader=lambda n: images_gallery(gallery, n), input_shape=(c, h, w), transform=transform,
                       transfer_source=None)

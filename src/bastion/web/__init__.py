"""The live local web demo (``bastion serve``): pick an image, a model, an attack and eps; watch the
prediction flip.

* :mod:`bastion.web.handlers` — pure functions over the library (tested without sockets);
* :mod:`bastion.web.context` — models (loaded lazily), the gallery, limits and a bounded worker pool;
* :mod:`bastion.web.upload` — safe PNG/JPEG decoding and MNIST-like preprocessing;
* :mod:`bastion.web.server` — the Starlette app (``create_app``) and ``serve()`` (uvicorn, loopback);
* ``static/`` — the page: plain HTML, JS and CSS, no build step, nothing fetched from a CDN.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["create_app", "serve", "DemoContext"]

#: where each name lives (late imports: `import bastion.web` stays cheap)
_HOMES = {"create_app": "server", "serve": "server", "DemoContext": "context"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"bastion.web.{_HOMES[name]}"), name)

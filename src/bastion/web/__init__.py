"""The live local web demo (``bastion serve``): pick an image, a model, an attack and eps; watch the
prediction flip.

* :mod:`bastion.web.handlers` — pure functions over the library (tested without sockets);
* :mod:`bastion.web.context` — models (loaded lazily), the gallery, limits and a bounded worker pool;
* :mod:`bastion.web.upload` — safe PNG/JPEG decoding and MNIST-like preprocessing;
* :mod:`bastion.web.server` — the Starlette app (``create_app``) and ``serve()`` (uvicorn, loopback);
* ``static/`` — the page: plain HTML, JS and CSS, no build step, nothing fetched from a CDN.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve", "DemoContext"]


def __getattr__(name: str) -> Any:  # late imports: `import bastion.web` stays cheap
    if name in ("create_app", "serve"):
        from bastion.web import server

        return getattr(server, name)
    if name == "DemoContext":
        from bastion.web.context import DemoContext

        return DemoContext
    raise AttributeError(name)

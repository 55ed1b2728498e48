"""The base of every model that wraps another model (defenses, adaptive-attack transforms)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn


class ModelWrapper(nn.Module):
    """An ``nn.Module`` around another model.

    It starts in the wrapped model's mode, and looks up ``meta``, ``classes`` and ``num_classes`` on the
    wrapped model (named by ``wrapped_attr``), so wrappers can be stacked and still describe themselves.
    """

    wrapped_attr: ClassVar[str] = "model"
    forwarded: ClassVar[tuple[str, ...]] = ("meta", "classes", "num_classes")

    def adopt_mode(self, inner: nn.Module) -> None:
        """Take the wrapped model's train/eval flag (this module only; children keep their own)."""
        self.training = inner.training

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in self.forwarded:
                inner = self._modules.get(self.wrapped_attr)
                if inner is not None:
                    return getattr(inner, name)
            raise


def innermost(model: nn.Module) -> nn.Module:
    """The model at the bottom of a stack of wrappers (defenses, adaptive-attack transforms): the classifier."""
    seen = 0
    while isinstance(model, ModelWrapper) and seen < 64:
        model = getattr(model, model.wrapped_attr)
        seen += 1
    return model

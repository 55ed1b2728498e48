"""The base of every model that wraps another model (defenses, adaptive-attack transforms)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn


class ModelWrapper(nn.Module):
    """An ``nn.Module`` around another model.

    It starts in the wrapped model's mode, and looks up ``meta``, ``classes``, ``num_classes`` and
    ``evaluations_per_input`` (see :func:`bastion._model.evaluations_per_input`) on the wrapped model (named by
    ``wrapped_attr``), so wrappers can be stacked and still describe themselves.
    """

    wrapped_attr: ClassVar[str] = "model"
    forwarded: ClassVar[tuple[str, ...]] = ("meta", "classes", "num_classes", "evaluations_per_input")

    def describe(self) -> dict[str, Any]:
        """The wrapped model's description (:func:`bastion._model.describe_model`), with this wrapper's defense
        (:meth:`defense_info`) when it is one."""
        describe = getattr(self._modules.get(self.wrapped_attr), "describe", None)
        out: dict[str, Any] = dict(describe()) if callable(describe) else {}
        info = self.defense_info()
        if info is not None:
            out["defense"] = info
        return out

    def defense_info(self) -> dict[str, Any] | None:
        """The defense this wrapper adds, as plain data (None: it adds none, e.g. an adaptive-attack view)."""
        return None

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

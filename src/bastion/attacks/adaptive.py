"""Adaptive attacks as model transformations: BPDA and EOT (Athalye, Carlini & Wagner 2018,
"Obfuscated Gradients Give a False Sense of Security", https://arxiv.org/abs/1802.00420).

Both return an ``nn.Module`` that behaves like the defended model in the forward pass but gives useful
gradients, so *every* gradient attack runs through them unchanged::

    adaptive = eot(bpda(defended), n=16)
    PGD(eps=0.3)(adaptive, x, y)

* :func:`bpda` — Backward Pass Differentiable Approximation: forward through the real (possibly
  non-differentiable) defense, backward through a differentiable approximation: the defense's own
  surrogate (identity for non-differentiable steps), or a small network trained to mimic it
  (:func:`bastion.training.train_surrogate`).
* :func:`eot` — Expectation over Transformation: average the model's probabilities over ``n`` random draws
  of a randomized defense; the gradient of the averaged output estimates the expected gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from torch import Tensor, nn

from bastion._checks import shown
from bastion._model import declared_randomized, evaluations_per_input, log_mean_softmax
from bastion._wrap import ModelWrapper
from bastion.attacks.base import Attack, Outcome, Task, WrappingAttack
from bastion.errors import ConfigError


def bpda(defended: nn.Module, surrogate: nn.Module | None = None) -> nn.Module:
    """Backward Pass Differentiable Approximation of a defended model.

    Args:
        defended: a model with an input defense in front, e.g. ``Defended(defense, model)``: anything with a
            ``bpda(surrogate)`` method returning its BPDA view.
        surrogate: a differentiable module approximating the defense (e.g. from :func:`bastion.training.train_surrogate`);
            None uses the defense's own ``bpda_forward`` (identity for non-differentiable steps, smooth
            stand-ins for approximately differentiable ones).
    """
    view = getattr(defended, "bpda", None)
    if not callable(view):
        raise ConfigError(f"bpda expects a model with an input defense in front (bastion.defenses.Defended), got "
                          f"{type(defended).__name__}")
    return view(surrogate)


class EOT(ModelWrapper):
    """The log of the mean softmax of ``model`` over ``n`` draws (computed as one batch of n*B)."""

    wrapped_attr = "inner"

    def __init__(self, model: nn.Module, n: int) -> None:
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"eot needs n >= 1 draws, got {shown(n)}")
        self.inner = model
        self.n = n
        self.adopt_mode(model)

    @property
    def randomized(self) -> bool | None:
        """Whether the averaged output still changes from call to call: it does whenever the model's does (the
        average of n draws varies less, but a success under one call can still be undone by the next)."""
        return declared_randomized(self.inner)

    @property
    def evaluations_per_input(self) -> int:
        """``n`` calls of the wrapped model per input (chunked passes count them, see :mod:`bastion._model`)."""
        return self.n * evaluations_per_input(self.inner)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        rep = x.repeat(self.n, *([1] * (x.ndim - 1)))
        return log_mean_softmax(self.inner(rep).reshape(self.n, b, -1))


def eot(model: nn.Module, n: int = 16) -> EOT:
    """Expectation over Transformation: average probabilities over ``n`` random draws of ``model``.

    ``model`` is any randomized model (a ``Defended`` BaRT model, or ``bpda(defended)``).
    """
    return EOT(model, n)


@dataclass(frozen=True, kw_only=True, eq=False)
class Adaptive(WrappingAttack):
    """``attack`` run through ``eot(bpda(model), n)`` and judged on ``model`` itself: the adaptive attack on a
    randomized, non-differentiable input defense (Athalye et al. 2018) as one attack object.

    The gradient steps see the average over ``n`` draws of the defense, backward through its BPDA view; the
    verdict (by the base class) is the real model's, over ``draws`` fresh draws. On a model without an input
    defense (nothing to approximate) ``bpda`` is skipped and only EOT applies.

    Args:
        attack: a white-box attack (e.g. ``PGD(eps=0.3, steps=20, early_stop=False)``); its threat model is this
            attack's.
        n: draws of the defense averaged per gradient (each step costs ``n`` forward/backward passes).
        use_bpda: backward through the defense's differentiable approximation (True) or through the defense
            itself (False: plain EOT).

    ``queries`` counts calls of the defended model: ``n`` per call of the averaged one.

    Example:
        >>> atk = Adaptive(attack=PGD(eps=0.3, steps=20, early_stop=False), n=8)    # doctest: +SKIP
        >>> res = atk(pretrained("mnist-cnn-bart"), x, y)                         # doctest: +SKIP
    """

    name: ClassVar[str] = "adaptive"
    attack: Attack
    n: int = 8
    use_bpda: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.attack, Attack):
            raise ConfigError(f"attack must be a bastion Attack (e.g. PGD(eps=0.3)), got {type(self.attack).__name__}")
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ConfigError(f"n must be an integer >= 1 (draws per gradient), got {shown(self.n)}")

    def through(self, model: nn.Module) -> nn.Module:
        """The model the gradient steps see: ``eot(bpda(model), n)`` (``eot(model, n)`` without an input defense
        or with ``use_bpda=False``)."""
        has_defense = self.use_bpda and callable(getattr(model, "bpda", None))
        return eot(bpda(model) if has_defense else model, self.n)

    def _execute(self, model: nn.Module, task: Task) -> Outcome:
        out = self.attack._execute(self.through(model), replace(task, may_stop_early=False))
        # each call of the averaged model is n calls of the defended one; its outputs are not the model's own
        # (the verdict is judged afresh, over fresh draws)
        return Outcome(out.x_adv, out.queries * self.n)

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.name, "inner": self.attack.to_dict(), "n": self.n, "use_bpda": self.use_bpda}


__all__ = ["bpda", "eot", "EOT", "Adaptive"]

"""Input-transformation defenses and the ``Defended`` model that puts one in front of a classifier.

An :class:`InputDefense` has two faces (after ART's forward / estimate_forward split):

* ``forward(x)`` — the real defense, possibly randomized and non-differentiable;
* ``surrogate(x)`` — a differentiable stand-in used by BPDA (identity when the defense declares
  ``grad = "none"``).

``Defended(defense, model)`` is itself a model (an ``nn.Module`` mapping pixels to logits), so every
attack and the evaluator run on it without special cases. A randomized defense draws its randomness from
a ``torch.Generator`` owned by the ``Defended`` wrapper (seeded at construction; ``reseed`` resets it), never
from torch's global RNG.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from bastion._checks import shown
from bastion._model import evaluations_per_input, log_mean_softmax
from bastion._wrap import ModelWrapper
from bastion.errors import ConfigError

GradKind = Literal["exact", "approx", "none"]


class InputDefense(nn.Module, ABC):
    """A transformation applied to inputs before the classifier."""

    #: True when ``forward`` draws random parameters on each call
    randomized: ClassVar[bool] = False
    #: how gradients flow: exactly, through a smooth ``surrogate``, or not at all (identity surrogate)
    grad: ClassVar[GradKind] = "exact"

    @abstractmethod
    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The real defense."""

    def surrogate(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """A differentiable approximation of :meth:`forward` (identity unless overridden)."""
        if self.grad == "exact":
            return self.forward(x, generator=generator)
        return x

    def bpda_forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Forward value of the real defense, gradient of the surrogate (BPDA, Athalye et al. 2018).

        Randomized defenses must override this so that the real and the surrogate pass share one draw.
        """
        if self.randomized:
            raise NotImplementedError(f"{type(self).__name__} is randomized and must implement bpda_forward")
        return straight_through(self.forward(x, generator=generator), self.surrogate(x, generator=generator))

    def to_dict(self) -> dict[str, Any]:
        return {"defense": type(self).__name__}


def straight_through(real: Tensor, surrogate: Tensor) -> Tensor:
    """Forward value of ``real``, gradient of ``surrogate`` (the BPDA identity)."""
    return surrogate + (real - surrogate).detach()


class Defended(ModelWrapper):
    """``model(defense(x))`` as one model.

    Args:
        defense: the input defense.
        model: the classifier (pixels in, logits out).
        n_samples: for randomized defenses, average the softmax over this many draws and return its log
            (so ``argmax`` and cross-entropy keep working); 1 returns the logits of a single draw. None
            (default) takes the defense's own ``n_samples`` attribute if it has one (e.g. ``BaRT``), else 1.
        seed: seed of the wrapper's own generator. It advances on every call (each call draws new
            transforms), so two runs of the same attack differ unless :meth:`reseed` is called first;
            :class:`~bastion.eval.Evaluation` seeds it from its own ``seed`` for the run and restores it.
    """

    def __init__(self, defense: InputDefense, model: nn.Module, *, n_samples: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if n_samples is None:
            n_samples = int(getattr(defense, "n_samples", 1))
        if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
            raise ConfigError(f"n_samples must be an integer >= 1, got {shown(n_samples)}")
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(defense, InputDefense):
            hint = (f" (a single BaRT group: wrap it as BaRT(k=1, groups=[{getattr(defense, 'name', '...')!r}]))"
                    if hasattr(defense, "sample") and hasattr(defense, "apply") else "")
            raise ConfigError(f"defense must be an InputDefense such as BaRT(...), got {type(defense).__name__}{hint}")
        self.defense = defense
        self.model = model
        self.n_samples = n_samples
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.adopt_mode(model)
        defense.train(model.training)

    @property
    def randomized(self) -> bool:
        return bool(self.defense.randomized)

    @property
    def evaluations_per_input(self) -> int:
        """Calls of the classifier per input: ``n_samples`` draws when the defense is randomized."""
        draws = self.n_samples if self.randomized else 1
        return draws * evaluations_per_input(self.model)

    def defense_info(self) -> dict[str, Any]:
        return {"defense": type(self.defense).__name__, **self.defense.to_dict()}

    def reseed(self, seed: int | None = None) -> None:
        """Reset the wrapper's generator (to ``seed`` or the construction seed)."""
        self.generator.manual_seed(self.seed if seed is None else seed)

    def forward(self, x: Tensor) -> Tensor:
        return self._averaged(lambda z: self.model(self.defense(z, generator=self.generator)), x)

    def _averaged(self, one_draw: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``one_draw(x)``, or for a randomized defense the log of its softmax averaged over ``n_samples`` draws."""
        if self.n_samples == 1 or not self.randomized:
            return one_draw(x)
        return log_mean_softmax(torch.stack([one_draw(x) for _ in range(self.n_samples)]))

    def bpda(self, surrogate: nn.Module | None = None) -> BPDA:
        """This model's BPDA view (Athalye et al. 2018): the real defense forward, a differentiable approximation
        backward (see :func:`bastion.attacks.bpda`)."""
        return BPDA(self, surrogate)


class BPDA(ModelWrapper):
    """``model(f(x))`` in the forward pass, ``model(g(x))``'s gradient in the backward pass: ``g`` is the defense's
    own surrogate (identity for non-differentiable steps) or a given network trained to mimic ``f``."""

    wrapped_attr = "inner"

    def __init__(self, defended: Defended, surrogate: nn.Module | None = None) -> None:
        super().__init__()
        self.inner = defended
        self.surrogate = surrogate
        self.adopt_mode(defended)
        if surrogate is not None:
            surrogate.train(defended.training)

    @property
    def randomized(self) -> bool:
        return self.inner.randomized

    @property
    def evaluations_per_input(self) -> int:
        return int(self.inner.evaluations_per_input)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner._averaged(self._one_draw, x)  # over as many draws as the defended model

    def _one_draw(self, x: Tensor) -> Tensor:
        d: Defended = self.inner
        if self.surrogate is None:
            z = d.defense.bpda_forward(x, generator=d.generator)
        else:
            z = straight_through(d.defense(x, generator=d.generator), self.surrogate(x))
        return d.model(z)

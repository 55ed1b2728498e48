"""Transfer attacks: craft adversarial examples white-box on a model the attacker has, use them on another.

Adversarial examples often transfer between models trained for the same task, even across architectures
(Szegedy et al. 2014, https://arxiv.org/abs/1312.6199; Papernot, McDaniel & Goodfellow 2016,
https://arxiv.org/abs/1605.07277). The attacker needs no access at all to the target: the examples are made
on the *source* model, and the target is only evaluated (by the :class:`~bastion.attacks.base.Attack` base
class, as for every attack). This is also what Papernot et al. 2017 (https://arxiv.org/abs/1602.02697) do
with a substitute trained from the target's labels (see :mod:`bastion.training.substitute`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bastion._checks import check_eval_mode, frozen
from bastion._model import DEFAULT_DRAWS, describe_model
from bastion.attacks.base import Access, Attack, Outcome, Task, WrappingAttack, probe_model
from bastion.errors import ConfigError, InputShapeError


def craft_on_source(attack: Attack, source: nn.Module, task: Task) -> Tensor:
    """Run ``attack`` white-box on ``source`` and return the adversarial inputs (for another model).

    The inner attack gets the same seed and keys it would get if called directly, so transferring from a
    model to itself gives the white-box result (without early stopping: an example frozen just past the
    source's boundary rarely crosses the target's). The source is checked (eval mode, device, its number of
    classes) and its parameters are frozen for the call, as the base class does for a target.
    """
    check_eval_mode(source)
    param = next(iter(source.parameters()), None)
    if param is not None and param.device != task.x.device:
        raise ConfigError(f"the source model is on {param.device} but the inputs are on {task.x.device}; "
                          "bastion does not move models: put the source on the inputs' device")
    with frozen(source):
        try:
            num_classes, randomized = probe_model(source, task.x)
        except InputShapeError as e:
            raise InputShapeError(f"the source model: {e}") from e
        if num_classes != task.num_classes:
            raise InputShapeError(
                f"the source model has {num_classes} outputs, but the target has {task.num_classes} classes; "
                "source and target must classify the same label set"
            )
        sub = replace(task, randomized=randomized, may_stop_early=False, draws=DEFAULT_DRAWS if randomized else 1)
        out = attack._execute(source, sub)
    return out.x_adv.detach()


@dataclass(frozen=True, kw_only=True, eq=False)
class TransferAttack(WrappingAttack):
    """Adversarial examples crafted white-box on ``source``, returned for the target model.

    The target model is never queried by the attack itself: the base class evaluates it once on the clean
    inputs and once on the result, as it does for every attack, and ``AttackResult.queries`` is 0.

    Args:
        source: the attacker's own model (an ``nn.Module`` in eval mode, on the inputs' device, with the
            same classes as the target). It is not copied, moved or modified.
        attack: the attack run on the source (e.g. ``FGSM(eps=0.3)`` or
            ``PGD(eps=0.3, steps=40, early_stop=False)``); its threat model is the threat model of the transfer
            attack. Pass iterative attacks ``early_stop=False``: stopped at its first success on the source, an
            example sits just past the source's boundary and rarely crosses the target's.

    Note:
        Targets given as ``"least-likely"`` are resolved by the base class from the target model's clean
        output (the one evaluation every attack gets); pass explicit target labels for a strictly
        no-access transfer.

    Example:
        >>> from bastion.attacks import PGD                                         # doctest: +SKIP
        >>> pgd = PGD(eps=0.3, steps=40, early_stop=False)                          # doctest: +SKIP
        >>> atk = TransferAttack(source=pretrained("mnist-cnn-gap"), attack=pgd)     # doctest: +SKIP
        >>> res = atk(pretrained("mnist-cnn"), x, y)                                # doctest: +SKIP
        >>> res.robust.float().mean(), int(res.queries.sum())                       # doctest: +SKIP
    """

    name: ClassVar[str] = "transfer"
    access: ClassVar[Access] = "transfer"
    source: nn.Module
    attack: Attack

    def __post_init__(self) -> None:
        if not isinstance(self.source, nn.Module):
            raise ConfigError(f"source must be a torch.nn.Module, got {type(self.source).__name__}")
        if not isinstance(self.attack, Attack):
            raise ConfigError(f"attack must be a bastion Attack (e.g. FGSM(eps=0.3)), got {type(self.attack).__name__}")

    def _execute(self, model: nn.Module, task: Task) -> Outcome:
        del model  # the target is never queried by the attack itself
        x_adv = craft_on_source(self.attack, self.source, task)
        return Outcome(x_adv, torch.zeros(task.n, dtype=torch.int64, device=task.x.device))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able configuration: the source is described by its class and metadata, not its weights."""
        return {"attack": self.name, "source": describe_model(self.source), "inner": self.attack.to_dict()}

    def __repr__(self) -> str:  # the source as ``Classifier(arch='mnist-cnn')`` (its repr prints every layer)
        arch = getattr(getattr(self.source, "meta", None), "arch", None)
        source = f"{type(self.source).__name__}({'...' if arch is None else f'arch={arch!r}'})"
        return f"TransferAttack(source={source}, attack={self.attack!r})"

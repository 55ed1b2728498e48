"""Defenses: input transformations (BaRT), output masking, adversarial training."""

from __future__ import annotations

from bastion.defenses.base import Defended, InputDefense, straight_through
from bastion.defenses.masking import HideProbabilities

__all__ = ["Defended", "InputDefense", "HideProbabilities", "straight_through"]

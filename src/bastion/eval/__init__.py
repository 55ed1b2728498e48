"""Robustness evaluation: attack suites over eps grids, cascades, sanity checks and reports."""

from __future__ import annotations

from bastion.eval.checks import run_checks
from bastion.eval.evaluator import Evaluation, with_eps
from bastion.eval.report import SCHEMA_VERSION, Flag, RobustnessReport, Row

__all__ = ["Evaluation", "RobustnessReport", "Row", "Flag", "SCHEMA_VERSION", "run_checks", "with_eps"]

"""Robustness evaluation: attack suites over eps grids, cascades, sanity checks and reports."""

from __future__ import annotations

from bastion.eval.checks import run_checks
from bastion.eval.evaluator import Evaluation, suite_labels
from bastion.eval.report import SCHEMA_VERSION, Flag, RobustnessReport, Row
from bastion.eval.results import PerImage, RowResult, worst_case

__all__ = ["Evaluation", "RobustnessReport", "Row", "Flag", "SCHEMA_VERSION", "run_checks", "suite_labels",
           "PerImage", "RowResult", "worst_case"]

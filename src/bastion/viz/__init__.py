"""Visualisation: CAM / Grad-CAM, figures, and the self-contained HTML report."""

from __future__ import annotations

from bastion.viz.cam import cam, default_layer, grad_cam, upsample

__all__ = ["cam", "grad_cam", "upsample", "default_layer"]

"""Measurements on binary vessel masks: exact centerlines (reference §3)."""

from retinaseg.measure.centerline import MaskShapeError, centerline

__all__ = ["MaskShapeError", "centerline"]

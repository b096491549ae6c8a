"""Measurements on binary vessel masks: exact centerlines (reference §3), and the clinical
numbers of a mask (densities, calibre, tortuosity, fractal dimension, graph counts, the FAZ,
grid sectors) with their reports.

``centerline`` imports NumPy only; the measurement functions (SciPy, scikit-image, matplotlib
for reports) are imported when first used.
"""

from __future__ import annotations

from typing import Any

from retinaseg.measure.centerline import MaskShapeError, centerline

__all__ = ["MaskShapeError", "MaskValueError", "analyse_mask", "centerline", "measure_files",
           "measure_mask"]

_LAZY = {"MaskValueError", "analyse_mask", "measure_files", "measure_mask"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from retinaseg.measure import api

        return getattr(api, name)
    raise AttributeError(f"module 'retinaseg.measure' has no attribute '{name}'")

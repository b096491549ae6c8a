"""Preprocessing (plain array functions, composed from config) and MONAI augmentation.

The names below load lazily, so that a light command (``retinaseg project``) that imports one
module of this package, e.g. :mod:`retinaseg.preprocessing.projection`, does not pay for torch
and MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "build_augmentation": "augment",
    "PRESETS": "pipeline",
    "build_preprocess": "pipeline",
    **{name: "functions" for name in ("clahe", "gamma", "green_channel", "hist_equalise",
                                      "pad_to_multiple", "resize", "standardise", "to_grey")},
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")


__all__ = sorted(_WHERE)

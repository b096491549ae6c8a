"""Models, found by name through :data:`retinaseg.registry.MODELS`.

Every model maps ``[B, C, H, W]`` to logits ``[B, 1, H, W]`` and has ``size_multiple``, the number
the input height and width must be divisible by. Volume models (``volumetric = True``, e.g.
``ipn``) map ``[B, C, D, H, W]`` to ``[B, 1, H, W]``.
"""

from __future__ import annotations

from retinaseg.models import (  # noqa: F401 (registration)
    dscnet,
    ensemble,
    ipn,
    monai_nets,
    octanet,
    resnest,
    s3octa,
    sam2,
    unet,
)
from retinaseg.models.factory import build_model
from retinaseg.registry import MODELS

__all__ = ["MODELS", "build_model"]

"""Losses, found by name through :data:`retinaseg.registry.LOSSES` (reference §4)."""

from __future__ import annotations

from retinaseg.losses import standard, topology  # noqa: F401  (registration)
from retinaseg.losses.factory import build_loss

__all__ = ["build_loss"]

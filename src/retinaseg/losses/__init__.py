"""Losses, found by name through :data:`retinaseg.registry.LOSSES` (reference §4)."""

from __future__ import annotations

from typing import Any

from torch import nn

from retinaseg.losses import standard, topology  # noqa: F401  (registration)
from retinaseg.registry import LOSSES


def build_loss(name: str, **params: Any) -> nn.Module:
    """Build a registered loss; a bad parameter becomes a ConfigError naming it."""
    from retinaseg.errors import ConfigError

    try:
        return LOSSES.get(name)(**params)
    except TypeError as err:
        raise ConfigError(f"loss '{name}': {err}") from None

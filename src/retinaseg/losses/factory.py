"""Build a registered loss by name (kept apart from the package so that modules of the
package can build losss without importing the package that imports them)."""

from __future__ import annotations

from typing import Any

from torch import nn

from retinaseg.errors import ConfigError
from retinaseg.registry import LOSSES


def build_loss(name: str, **params: Any) -> nn.Module:
    """Build a registered loss; a bad parameter becomes a ConfigError naming it."""
    try:
        return LOSSES.get(name)(**params)
    except TypeError as err:
        raise ConfigError(f"loss '{name}': {err}") from None

"""Build a registered model by name (kept apart from the package so that modules of the
package can build models without importing the package that imports them)."""

from __future__ import annotations

from typing import Any

from torch import nn

from retinaseg.errors import ConfigError
from retinaseg.registry import MODELS


def build_model(name: str, in_channels: int, out_channels: int = 1, **params: Any) -> nn.Module:
    """Build a registered model; a bad parameter becomes a ConfigError naming it."""
    factory = MODELS.get(name)
    try:
        net = factory(in_channels=in_channels, out_channels=out_channels, **params)
    except TypeError as err:
        raise ConfigError(f"model '{name}': {err}") from None
    if not hasattr(net, "size_multiple"):
        net.size_multiple = 1
    return net

"""Models, found by name through :data:`retinaseg.registry.MODELS`.

Every model maps ``[B, C, H, W]`` to logits ``[B, 1, H, W]`` and has ``size_multiple``, the number
the input height and width must be divisible by.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from retinaseg.models import dscnet, ensemble, monai_nets, s3octa, unet  # noqa: F401 (registration)
from retinaseg.registry import MODELS


def build_model(name: str, in_channels: int, out_channels: int = 1, **params: Any) -> nn.Module:
    """Build a registered model; a bad parameter becomes a ConfigError naming it."""
    from retinaseg.errors import ConfigError

    factory = MODELS.get(name)
    try:
        net = factory(in_channels=in_channels, out_channels=out_channels, **params)
    except TypeError as err:
        raise ConfigError(f"model '{name}': {err}") from None
    if not hasattr(net, "size_multiple"):
        net.size_multiple = 1
    return net

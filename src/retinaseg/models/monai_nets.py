"""MONAI networks registered under our names: ``monai_unet``, ``basic_unet``, ``dynunet``."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import BasicUNet, DynUNet
from monai.networks.nets import UNet as MonaiUNet
from torch import nn

from retinaseg.registry import MODELS


@MODELS.register("monai_unet")
def build_monai_unet(in_channels: int = 1, out_channels: int = 1,
                     channels: Sequence[int] = (16, 32, 64, 128, 256),
                     num_res_units: int = 2, dropout: float = 0.0,
                     norm: str = "batch") -> nn.Module:
    """MONAI ``UNet`` with stride-2 levels; inputs must be divisible by ``2**(len(channels)-1)``."""
    net = MonaiUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                    channels=tuple(channels), strides=(2,) * (len(channels) - 1),
                    num_res_units=num_res_units, dropout=dropout, norm=norm)
    net.size_multiple = 2 ** (len(channels) - 1)
    return net


@MODELS.register("basic_unet")
def build_basic_unet(in_channels: int = 1, out_channels: int = 1,
                     features: Sequence[int] = (16, 16, 32, 64, 128, 16),
                     dropout: float = 0.0) -> nn.Module:
    """MONAI ``BasicUNet`` (4 poolings, 6 feature counts)."""
    net = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                    features=tuple(features), dropout=dropout)
    net.size_multiple = 16
    return net


@MODELS.register("dynunet")
def build_dynunet(in_channels: int = 1, out_channels: int = 1, depth: int = 4,
                  width: int = 16, res_block: bool = True) -> nn.Module:
    """MONAI ``DynUNet`` with 3×3 kernels and ``depth`` stride-2 levels."""
    kernels = [[3, 3]] * (depth + 1)
    strides = [[1, 1]] + [[2, 2]] * depth
    filters = [min(width * 2**i, 320) for i in range(depth + 1)]
    net = DynUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                  kernel_size=kernels, strides=strides, upsample_kernel_size=strides[1:],
                  filters=filters, res_block=res_block, norm_name="instance")
    net.size_multiple = 2**depth
    return net

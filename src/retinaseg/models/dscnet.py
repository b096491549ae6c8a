"""The original 2D DSCNet for DRIVE (reference §2.3), registered as ``dscnet``.

A U-shaped net of multi-view DSConv blocks (reference §2.2): encoder widths n, 2n, 4n, 8n with
2×2 max-pooling between levels; decoder with bilinear ×2 upsampling (align_corners), skip
concatenation and blocks of 4n, 2n, n (inputs 12n, 6n, 3n); a 1×1 head. The head returns logits
(the seed applies a sigmoid; the toolkit applies it at inference and inside the losses).

CPU cost (torch 2.13, 1 thread, shared machine): width 16 on 304² ≈ 0.85 s forward, ≈ 4.5 s
forward + backward; width 8 on a batch of 4 96² patches ≈ 0.6 s forward + backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retinaseg.errors import ConfigError
from retinaseg.models.snake import MultiViewBlock
from retinaseg.registry import MODELS


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear ×2 upsampling with ``align_corners=True``; ``[B,C,H,W] → [B,C,2H,2W]``."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class DSCNet(nn.Module):
    """DSCNet returning logits; ``[B, in_channels, H, W] → [B, out_channels, H, W]``.

    Args:
        in_channels: input channels C.
        out_channels: output channels (1 for binary vessels).
        width: base width n (16 in the seed).
        kernel_size: DSConv taps K (9 in the seed).
        extend_scope: DSConv offset scale s (1 in the seed).
        offset_norm: norm of the DSConv offset branch, "batch" (seed DSCNet) or "group" (S3-OCTA).
    H and W must be divisible by 8 (``size_multiple``).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 16,
                 kernel_size: int = 9, extend_scope: float = 1.0,
                 offset_norm: str = "batch") -> None:
        super().__init__()
        n = width
        self.size_multiple = 8

        def block(cin: int, cout: int) -> MultiViewBlock:
            return MultiViewBlock(cin, cout, kernel_size, extend_scope, offset_norm)

        self.encoder = nn.ModuleList([block(in_channels, n), block(n, 2 * n),
                                      block(2 * n, 4 * n), block(4 * n, 8 * n)])
        self.decoder = nn.ModuleList([block(12 * n, 4 * n), block(6 * n, 2 * n),
                                      block(3 * n, n)])
        self.head = nn.Conv2d(n, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoder):
            x = enc(x if i == 0 else F.max_pool2d(skips[-1], 2))
            skips.append(x)
        skips.pop()
        for dec in self.decoder:
            x = dec(torch.cat([upsample2(x), skips.pop()], dim=1))
        return self.head(x)


@MODELS.register("dscnet")
def build_dscnet(in_channels: int = 1, out_channels: int = 1, **params: object) -> nn.Module:
    """DSCNet (see :class:`DSCNet` for the parameters)."""
    try:
        return DSCNet(in_channels, out_channels, **params)  # type: ignore[arg-type]
    except ValueError as err:
        raise ConfigError(f"model 'dscnet': {err}") from None

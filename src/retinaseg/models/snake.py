"""Dynamic Snake Convolution (reference §2.1) and the multi-view DSConv block (reference §2.2).

A DSConv layer predicts, per pixel, one offset per kernel tap, accumulates them outward from the
centre tap ("snake" offsets), samples the input bilinearly along the resulting wiggly line of K
taps, and aggregates the K samples with a strided convolution.

Layout of the sampled feature (one ``F.grid_sample`` call builds it):

* morph 0 (kernel along x): ``[B, C, K·H, W]``, row ``i·K + k`` holds tap ``k`` of row ``i``;
  aggregated by a ``(K, 1)`` conv with stride ``(K, 1)``;
* morph 1 (kernel along y): ``[B, C, H, K·W]``, column ``j·K + k`` holds tap ``k`` of column ``j``;
  aggregated by a ``(1, K)`` conv with stride ``(1, K)``.

Coordinates are clamped to the image before sampling, so taps that leave the image read the edge
pixel (replicate padding). With all offsets zero a DSConv is therefore exactly a ``1×K`` (morph 0)
or ``K×1`` (morph 1) convolution on a replicate-padded input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_count(channels: int, per_group: int = 4) -> int:
    """Largest divisor of ``channels`` not above ``channels // per_group`` (at least 1).

    Reference §2.1/§2.2 use ``GroupNorm(C/4)``; this keeps that for C divisible by 4 and stays
    valid for small or odd C (e.g. 3 → 1 group, 6 → 1 group, 24 → 6 groups).
    """
    target = max(1, channels // per_group)
    return next(g for g in range(target, 0, -1) if channels % g == 0)


def snake_cumulate(offset: torch.Tensor) -> torch.Tensor:
    """Cumulative snake offsets from per-tap offsets (reference §2.1 step 2).

    Args:
        offset: ``o`` of shape ``[B, K, H, W]`` (K odd), one offset per tap.
    Returns:
        ``Δ`` of shape ``[B, K, H, W]`` with ``Δ_c = 0`` and, for m = 1..c,
        ``Δ_{c+m} = Δ_{c+m-1} + o_{c+m}`` and ``Δ_{c-m} = Δ_{c-m+1} + o_{c-m}``. ``o_c`` is unused.
    """
    k = offset.shape[1]
    c = k // 2
    right = torch.cumsum(offset[:, c + 1:], dim=1)
    left = torch.cumsum(offset[:, :c].flip(1), dim=1).flip(1)
    return torch.cat([left, torch.zeros_like(offset[:, c:c + 1]), right], dim=1)


def _scale(size: int) -> float:
    """Factor mapping a pixel coordinate in ``[0, size-1]`` to ``[0, 2]`` (align_corners)."""
    return 2.0 / (size - 1) if size > 1 else 0.0


def snake_grid(offset: torch.Tensor, morph: int, extend_scope: float) -> torch.Tensor:
    """Sampling grid for ``F.grid_sample`` (reference §2.1 steps 3–4).

    Coordinates are clamped to ``[0, H-1]`` / ``[0, W-1]`` and mapped linearly to ``[-1, 1]``.

    Args:
        offset: tanh offsets ``[B, 2K, H, W]``: channels ``:K`` are y-offsets, ``K:`` x-offsets.
        morph: 0 (kernel along x, y-offsets used) or 1 (kernel along y, x-offsets used).
        extend_scope: ``s``, the multiplier of the cumulative offsets (pixels).
    Returns:
        ``[B, K·H, W, 2]`` (morph 0) or ``[B, H, K·W, 2]`` (morph 1), last dim ``(x, y)``.
    """
    b, k2, h, w = offset.shape
    k = k2 // 2
    c = k // 2
    dev, dt = offset.device, offset.dtype
    taps = torch.arange(k, device=dev, dtype=dt) - c
    if morph == 0:  # grid [B, H, K, W, 2]; x fixed per tap, y follows the snake
        rows = torch.arange(h, device=dev, dtype=dt).view(1, 1, h, 1)
        y = (rows + extend_scope * snake_cumulate(offset[:, :k])).clamp_(0, h - 1)
        cols = torch.arange(w, device=dev, dtype=dt).view(1, w) + taps.view(k, 1)
        grid = offset.new_empty(b, h, k, w, 2)
        grid[..., 0] = cols.clamp_(0, w - 1).mul_(_scale(w)).sub_(1.0)
        grid[..., 1] = y.mul_(_scale(h)).sub_(1.0).transpose(1, 2)
        return grid.view(b, h * k, w, 2)
    cols = torch.arange(w, device=dev, dtype=dt).view(1, 1, 1, w)
    x = (cols + extend_scope * snake_cumulate(offset[:, k:])).clamp_(0, w - 1)
    rows = torch.arange(h, device=dev, dtype=dt).view(h, 1, 1) + taps.view(1, 1, k)
    grid = offset.new_empty(b, h, w, k, 2)  # grid [B, H, W, K, 2]; y fixed per tap
    grid[..., 0] = x.mul_(_scale(w)).sub_(1.0).permute(0, 2, 3, 1)
    grid[..., 1] = rows.clamp_(0, h - 1).mul_(_scale(h)).sub_(1.0)
    return grid.view(b, h, w * k, 2)


def snake_sample(x: torch.Tensor, offset: torch.Tensor, morph: int,
                 extend_scope: float) -> torch.Tensor:
    """Bilinear samples of ``x`` ``[B, C, H, W]`` along the snake kernels.

    Returns ``[B, C, K·H, W]`` (morph 0) or ``[B, C, H, K·W]`` (morph 1); see the module docstring.
    """
    grid = snake_grid(offset, morph, extend_scope).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class DSConv(nn.Module):
    """One Dynamic Snake Convolution layer (reference §2.1); ``[B,Cin,H,W] → [B,Cout,H,W]``.

    Args:
        cin: input channels.
        cout: output channels.
        kernel_size: K, the number of taps (odd).
        extend_scope: s, the scale of the cumulative offsets in pixels.
        morph: 0 = kernel along x (taps move in y), 1 = kernel along y (taps move in x).
        norm: norm of the offset branch: "group" (GroupNorm with K groups, S3-OCTA) or
            "batch" (BatchNorm, original DSCNet).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 9, extend_scope: float = 1.0,
                 morph: int = 0, norm: str = "group") -> None:
        super().__init__()
        if morph not in (0, 1):
            raise ValueError(f"morph must be 0 or 1, not {morph}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, not {kernel_size}")
        if norm not in ("group", "batch"):
            raise ValueError(f"norm must be 'group' or 'batch', not '{norm}'")
        k = kernel_size
        self.kernel_size, self.extend_scope, self.morph = k, float(extend_scope), morph
        self.offset_conv = nn.Conv2d(cin, 2 * k, 3, padding=1)
        self.offset_norm = nn.GroupNorm(k, 2 * k) if norm == "group" else nn.BatchNorm2d(2 * k)
        kshape = (k, 1) if morph == 0 else (1, k)
        self.dsc_conv = nn.Conv2d(cin, cout, kshape, stride=kshape)
        self.norm = nn.GroupNorm(group_count(cout), cout)
        self.relu = nn.ReLU(inplace=True)

    def predict_offset(self, x: torch.Tensor) -> torch.Tensor:
        """Per-tap offsets ``o`` in (−1, 1), ``[B, 2K, H, W]`` (y-offsets first, then x)."""
        return torch.tanh(self.offset_norm(self.offset_conv(x)))

    def sample(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Deformed feature ``[B,Cin,K·H,W]`` (morph 0) / ``[B,Cin,H,K·W]`` (morph 1)."""
        if offset is None:
            offset = self.predict_offset(x)
        return snake_sample(x, offset, self.morph, self.extend_scope)

    def forward(self, x: torch.Tensor, return_prenorm: bool = False) -> torch.Tensor:
        """``[B,Cin,H,W] → [B,Cout,H,W]``; ``return_prenorm`` skips the final GroupNorm + ReLU."""
        y = self.dsc_conv(self.sample(x))
        return y if return_prenorm else self.relu(self.norm(y))


class ConvGN(nn.Sequential):
    """3×3 conv (padding 1) → GroupNorm(Cout/4) → ReLU (reference §2.2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1),
                         nn.GroupNorm(group_count(cout), cout), nn.ReLU(inplace=True))


class MultiViewBlock(nn.Module):
    """Multi-view DSConv block (reference §2.2); ``[B,Cin,H,W] → [B,Cout,H,W]``.

    ``Y = ConvGN(3·Cout → Cout)(concat[ConvGN(X), DSConv_morph1(X), DSConv_morph0(X)])``.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 9, extend_scope: float = 1.0,
                 offset_norm: str = "group") -> None:
        super().__init__()
        self.conv = ConvGN(cin, cout)
        self.dsconv_y = DSConv(cin, cout, kernel_size, extend_scope, morph=1, norm=offset_norm)
        self.dsconv_x = DSConv(cin, cout, kernel_size, extend_scope, morph=0, norm=offset_norm)
        self.fusion = ConvGN(3 * cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion(torch.cat([self.conv(x), self.dsconv_y(x), self.dsconv_x(x)], dim=1))

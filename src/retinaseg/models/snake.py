"""Dynamic Snake Convolution (reference §2.1) and the multi-view DSConv block (reference §2.2).

A DSConv layer predicts, per pixel, one offset per kernel tap, accumulates them outward from the
centre tap ("snake" offsets), samples the input bilinearly along the resulting wiggly line of K
taps, and aggregates the K samples with a strided convolution.

Layouts of the sampled feature (one ``F.grid_sample`` call builds either):

* ``"reference"`` (§2.1 step 5): morph 0 gives ``[B, C, K·H, W]`` with row ``i·K + k`` holding tap
  ``k`` of row ``i``, aggregated by the ``(K, 1)`` conv with stride ``(K, 1)``; morph 1 gives
  ``[B, C, H, K·W]`` (column ``j·K + k``) and a ``(1, K)`` conv with stride ``(1, K)``;
* ``"kmajor"`` (used by :meth:`DSConv.forward`): ``[B, C, K·H, W]`` with row ``k·H + i``, i.e. a
  ``[B, C, K, H, W]`` tensor. Viewed as ``[B, C·K, H, W]`` (channel ``c·K + k``), the same
  aggregation is a 1×1 conv whose weight is the ``(K, 1)``/``(1, K)`` weight reshaped to
  ``[Cout, C·K, 1, 1]``, computed as a batched matrix product (:meth:`DSConv.forward`). The
  result is identical (see :meth:`DSConv.forward_reference`) and, on CPU (1 thread, 32
  channels, 304², K 9) forward was 3–4× and forward + backward 1.4–3× faster than with the
  strided conv. Parameters keep the seed's shapes, so seed weights map one-to-one.

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


def snake_coords(offset: torch.Tensor, morph: int,
                 extend_scope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised sampling coordinates ``(gx, gy)``, each ``[B, K, H, W]`` (§2.1 steps 3–4).

    Tap k of output pixel (i, j): morph 0 reads ``x = j + (k − c)``, ``y = i + s·Δ^y_k``;
    morph 1 reads ``y = i + (k − c)``, ``x = j + s·Δ^x_k``. Coordinates are clamped to
    ``[0, W−1]`` / ``[0, H−1]`` and mapped linearly to ``[−1, 1]`` (align_corners). ``offset`` is
    ``[B, 2K, H, W]``: channels ``:K`` are y-offsets, ``K:`` x-offsets.
    """
    b, k2, h, w = offset.shape
    k = k2 // 2
    c = k // 2
    dev, dt = offset.device, offset.dtype
    taps = torch.arange(k, device=dev, dtype=dt).view(1, k, 1, 1) - c
    rows = torch.arange(h, device=dev, dtype=dt).view(1, 1, h, 1)
    cols = torch.arange(w, device=dev, dtype=dt).view(1, 1, 1, w)
    if morph == 0:
        x = cols + taps
        y = rows + extend_scope * snake_cumulate(offset[:, :k])
    else:
        x = cols + extend_scope * snake_cumulate(offset[:, k:])
        y = rows + taps
    gx = x.clamp(0, w - 1) * _scale(w) - 1.0
    gy = y.clamp(0, h - 1) * _scale(h) - 1.0
    return gx.expand(b, k, h, w), gy.expand(b, k, h, w)


def snake_grid(offset: torch.Tensor, morph: int, extend_scope: float,
               layout: str = "kmajor") -> torch.Tensor:
    """Sampling grid for ``F.grid_sample``, last dim ``(x, y)`` in ``[−1, 1]``.

    Args:
        offset: tanh offsets ``[B, 2K, H, W]``: channels ``:K`` are y-offsets, ``K:`` x-offsets.
        morph: 0 (kernel along x, y-offsets used) or 1 (kernel along y, x-offsets used).
        extend_scope: ``s``, the multiplier of the cumulative offsets (pixels).
        layout: "kmajor" → ``[B, K·H, W, 2]`` (row ``k·H + i``); "reference" →
            ``[B, H·K, W, 2]`` (morph 0, row ``i·K + k``) or ``[B, H, W·K, 2]`` (morph 1).
    """
    b, k2, h, w = offset.shape
    k = k2 // 2
    grid = torch.stack(snake_coords(offset, morph, extend_scope), dim=-1)  # [B, K, H, W, 2]
    if layout == "kmajor":
        return grid.view(b, k * h, w, 2)
    if layout != "reference":
        raise ValueError(f"layout must be 'kmajor' or 'reference', not '{layout}'")
    if morph == 0:
        return grid.transpose(1, 2).reshape(b, h * k, w, 2)
    return grid.permute(0, 2, 3, 1, 4).reshape(b, h, w * k, 2)


def snake_sample(x: torch.Tensor, offset: torch.Tensor, morph: int, extend_scope: float,
                 layout: str = "kmajor") -> torch.Tensor:
    """Bilinear samples of ``x`` ``[B, C, H, W]`` along the snake kernels (zero padding).

    Returns ``[B, C, K·H, W]`` ("kmajor", or "reference" morph 0) or ``[B, C, H, K·W]``
    ("reference" morph 1); see the module docstring for the row/column order.
    """
    grid = snake_grid(offset, morph, extend_scope, layout).to(x.dtype)
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

    def sample(self, x: torch.Tensor, offset: torch.Tensor | None = None,
               layout: str = "kmajor") -> torch.Tensor:
        """Deformed feature, ``[B, Cin, K·H, W]`` (or ``[B, Cin, H, K·W]``, reference morph 1)."""
        if offset is None:
            offset = self.predict_offset(x)
        return snake_sample(x, offset, self.morph, self.extend_scope, layout)

    def forward(self, x: torch.Tensor, return_prenorm: bool = False) -> torch.Tensor:
        """``[B,Cin,H,W] → [B,Cout,H,W]``; ``return_prenorm`` skips the final GroupNorm + ReLU.

        Aggregates the k-major samples with the 1×1 equivalent of the ``(K,1)``/``(1,K)`` conv,
        written as a batched matrix product ``[Cout, Cin·K] @ [Cin·K, H·W]`` per image (the
        weight expanded, not broadcast by ``matmul``, whose weight gradient was 2× slower at
        batch 8): on one CPU thread with a batch below 16, PyTorch runs a 1×1 convolution on
        its slow path. The gain is in the backward pass: the layer's forward + backward is
        14–20 % faster on one 304² or 400² map (forward alone unchanged), an S3-OCTA training
        step 4 % (``benchmarks/speed/dsconv.py``).
        """
        b, cin, h, w = x.shape
        k, conv = self.kernel_size, self.dsc_conv
        weight = conv.weight.reshape(1, conv.out_channels, cin * k).expand(b, -1, -1)
        y = torch.baddbmm(conv.bias.view(1, -1, 1), weight,
                          self.sample(x).view(b, cin * k, h * w))  # [B, Cout, H·W]
        y = y.view(b, conv.out_channels, h, w)
        return y if return_prenorm else self.relu(self.norm(y))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-norm output computed literally as §2.1 step 5 (strided conv); ``[B,Cout,H,W]``."""
        return self.dsc_conv(self.sample(x, layout="reference"))


class ConvGN(nn.Sequential):
    """3×3 conv (padding 1) → GroupNorm(Cout/4) → ReLU (reference §2.2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1),
                         nn.GroupNorm(group_count(cout), cout), nn.ReLU(inplace=True))


class MultiViewBlock(nn.Module):
    """Multi-view DSConv block (reference §2.2); ``[B,Cin,H,W] → [B,Cout,H,W]``.

    ``Y = ConvGN(3·Cout → Cout)(concat[ConvGN(X), DSConv_morph1(X), DSConv_morph0(X)])``.
    Attributes are named after the kernel direction: ``dsconv_y`` is morph 1 (kernel along y),
    ``dsconv_x`` morph 0 (the seed names them the other way round).
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

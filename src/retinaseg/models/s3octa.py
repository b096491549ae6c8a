"""S3-OCTA network, a generalised DSCNet with global aggregation (reference §2.4), as ``s3octa``.

Encoder level i = 0..L−1 is a multi-view DSConv block (reference §2.2) with r·2^i output
channels; levels 0..L−2 keep a skip and max-pool 2×2, level L−1 is the bottleneck. At levels
1..L−2 a global-aggregation (GA) module maps the level input (r·2^{i−1} channels) to r·2^i
channels and the skip becomes ``concat[block, GA]`` (2·r·2^i channels). The decoder upsamples
(bilinear ×2, align_corners), concatenates ``[upsampled, skip]`` and applies a multi-view block
(r·2^i out) per level; a 1×1 head returns **logits** (the seed applies a sigmoid).

Channel example, L = 3, r = 72, 304² input: enc0 3→72 @304² | enc1 72→144 @152², GA 72→144,
skip 288 | bottleneck 144→288 @76² | dec1 (288+288)→144 @152² | dec0 (144+72)→72 @304² | head.

GA modules: ``"mit"`` (one SegFormer stage, the released default), ``"aspp"`` (plain-torch
re-implementation of torchvision's ASPP, one atrous rate 24) and ``"none"`` (skips are the block
outputs, so decoder inputs are 3·r·2^i). SwinT is not implemented.

Deviations from the seed, all numerical-safety or availability choices:
* channel LayerNorm uses ``(x−μ)/sqrt(σ²+ε)`` (the seed's ``(x−μ)/(σ+ε)`` has an infinite
  gradient where all channels of a pixel are equal, e.g. an all-zero ReLU output);
* attention runs through ``F.scaled_dot_product_attention`` (same maths; q, k, v are made
  contiguous so that the CPU flash kernel, not the slow math path, is used);
* maps smaller than the 4×4 K/V reduction are replicate-padded up to 4 before the reduction;
* the ASPP image-pool branch has no BatchNorm (BatchNorm of a 1×1 map fails at batch size 1).

Presets (``preset=`` in :func:`build_s3octa`; explicit parameters override the preset):
* ``"m"``: L 3, r 72, K 11, s 3, MiT (released medium);
* ``"l"``: L 4, r 144, K 11, s 3, MiT (released large);
* ``"cpu"``: L 3, r 16, K 9, s 3, MiT (0.52 M parameters; ``"m"`` has 10.0 M).

Measured CPU cost (torch 2.13, **1 thread**, ``nice 19`` on 2 cores shared with a training job;
with 2 threads under that load OpenMP oversubscription made runs up to 100× slower), batch 1,
1 input channel, 304×304: ``cpu`` preset forward ≈ 1.3 s, forward + backward ≈ 5 s (peak ≈ 2 GB);
a batch of 4 128² patches ≈ 2.6 s forward + backward; ``m`` preset forward ≈ 15 s, forward +
backward ≈ 240 s (peak ≈ 7.5 GB), dominated by ``grid_sample``'s backward at 72–216 channels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retinaseg.errors import ConfigError
from retinaseg.models.dscnet import upsample2
from retinaseg.models.snake import MultiViewBlock
from retinaseg.registry import MODELS

PRESETS: dict[str, dict[str, Any]] = {
    "m": {"depth": 3, "width": 72, "kernel_size": 11, "extend_scope": 3.0, "ga": "mit"},
    "l": {"depth": 4, "width": 144, "kernel_size": 11, "extend_scope": 3.0, "ga": "mit"},
    "cpu": {"depth": 3, "width": 16, "kernel_size": 9, "extend_scope": 3.0, "ga": "mit"},
}
GA_TYPES = ("mit", "aspp", "none")


def head_count(dim: int, max_heads: int = 8) -> int:
    """Largest divisor of ``dim`` not above ``max_heads`` (the attention head count)."""
    return next(h for h in range(max(1, min(max_heads, dim)), 0, -1) if dim % h == 0)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, H, W]`` at every pixel, with affine g, b."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.g + self.b


class EfficientSelfAttention(nn.Module):
    """SegFormer efficient self-attention; ``[B, C, H, W] → [B, C, H, W]``.

    Queries from every pixel (1×1 conv); keys and values from a ``reduction``×``reduction``
    stride-``reduction`` conv, so there are ``⌊H/r⌋·⌊W/r⌋`` keys. No biases, as in the seed.
    """

    def __init__(self, dim: int, heads: int = 8, reduction: int = 4) -> None:
        super().__init__()
        self.heads = head_count(dim, heads)
        self.reduction = reduction
        self.to_q = nn.Conv2d(dim, dim, 1, bias=False)
        self.to_kv = nn.Conv2d(dim, 2 * dim, reduction, stride=reduction, bias=False)
        self.to_out = nn.Conv2d(dim, dim, 1, bias=False)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w] → [B, heads, h·w, C/heads]``."""
        b, c = t.shape[:2]
        return t.reshape(b, self.heads, c // self.heads, -1).transpose(2, 3).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        r = self.reduction
        kv_in = x
        if h < r or w < r:
            kv_in = F.pad(x, (0, max(0, r - w), 0, max(0, r - h)), mode="replicate")
        k, v = self.to_kv(kv_in).chunk(2, dim=1)
        q, k, v = (self._split_heads(t) for t in (self.to_q(x), k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale (C/heads)^-1/2, as the seed
        return self.to_out(out.transpose(2, 3).reshape(b, c, h, w))


class MixFFN(nn.Module):
    """Mix-FFN: 1×1 expand ×e → depthwise 3×3 → pointwise 1×1 → GELU → 1×1; shape-preserving."""

    def __init__(self, dim: int, expansion: int = 4) -> None:
        super().__init__()
        hid = dim * expansion
        self.net = nn.Sequential(
            nn.Conv2d(dim, hid, 1), nn.Conv2d(hid, hid, 3, padding=1, groups=hid),
            nn.Conv2d(hid, hid, 1), nn.GELU(), nn.Conv2d(hid, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MiTBlock(nn.Module):
    """One SegFormer (MiT) stage as GA module; ``[B, Cin, H, W] → [B, Cout, H, W]``.

    Overlapping patch embedding (3×3 unfold, stride 1, pad 1, then 1×1 conv 9·Cin → Cout, which
    is exactly a 3×3 conv), then one pre-norm transformer layer:
    ``x += Attn(LN(x))``; ``x += MixFFN(LN(x))``.
    """

    def __init__(self, cin: int, cout: int, heads: int = 8, reduction: int = 4,
                 expansion: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm1 = ChannelLayerNorm(cout)
        self.attn = EfficientSelfAttention(cout, heads, reduction)
        self.norm2 = ChannelLayerNorm(cout)
        self.ffn = MixFFN(cout, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """DeepLabV3 ASPP with one atrous rate; ``[B, Cin, H, W] → [B, Cout, H, W]``.

    Branches 1×1, 3×3 dilated (``rate``) and image pooling; concat; 1×1 projection with
    BatchNorm, ReLU and Dropout 0.5 (as torchvision, except the pool branch has no BatchNorm).
    """

    def __init__(self, cin: int, cout: int, rate: int = 24) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(cin, cout, 1),
                                       _conv_bn_relu(cin, cout, 3, rate)])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1),
                                  nn.ReLU(inplace=True))
        self.project = nn.Sequential(_conv_bn_relu(3 * cout, cout, 1), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


def make_ga(kind: str, cin: int, cout: int, heads: int = 8) -> nn.Module:
    """Build a GA module of ``kind`` ("mit" or "aspp") mapping ``cin → cout`` channels."""
    if kind == "mit":
        return MiTBlock(cin, cout, heads)
    if kind == "aspp":
        return ASPP(cin, cout)
    raise ValueError(f"ga must be one of {', '.join(GA_TYPES)}, not '{kind}'")


def _normalise_ga(ga: str | None) -> str:
    kind = (ga or "none").lower()
    if kind not in GA_TYPES:
        raise ValueError(f"ga must be one of {', '.join(GA_TYPES)}, not '{ga}'")
    return kind


class S3OCTA(nn.Module):
    """S3-OCTA segmentation network returning logits; ``[B, C, H, W] → [B, out_channels, H, W]``.

    Args:
        in_channels: input channels C (3 in the seed: FULL, ILM_OPL, OPL_BM projections).
        out_channels: output channels (1 for binary vessels).
        depth: L, the number of encoder levels (≥ 2); H, W must be divisible by 2^(L−1).
        width: r, the channels of level 0; level i has r·2^i.
        kernel_size: DSConv taps K.
        extend_scope: DSConv offset scale s.
        ga: global aggregation at levels 1..L−2: "mit", "aspp" or "none".
        heads: maximum MiT attention heads (the largest divisor of the GA width not above it).
        offset_norm: DSConv offset norm, "group" (S3-OCTA) or "batch".
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, depth: int = 3,
                 width: int = 72, kernel_size: int = 11, extend_scope: float = 3.0,
                 ga: str | None = "mit", heads: int = 8, offset_norm: str = "group") -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2, not {depth}")
        self.depth, self.ga = depth, _normalise_ga(ga)
        self.size_multiple = 2 ** (depth - 1)
        r = width

        def block(cin: int, cout: int) -> MultiViewBlock:
            return MultiViewBlock(cin, cout, kernel_size, extend_scope, offset_norm)

        enc_in = [in_channels] + [r * 2 ** (i - 1) for i in range(1, depth)]
        self.encoder = nn.ModuleList(block(enc_in[i], r * 2**i) for i in range(depth))
        ga_levels = range(1, depth - 1) if self.ga != "none" else range(0)
        self.ga_blocks = nn.ModuleDict({str(i): make_ga(self.ga, enc_in[i], r * 2**i, heads)
                                        for i in ga_levels})
        skip = [r * 2**i * (2 if str(i) in self.ga_blocks else 1) for i in range(depth - 1)]
        self.decoder = nn.ModuleList(block(r * 2 ** (i + 1) + skip[i], r * 2**i)
                                     for i in reversed(range(depth - 1)))
        self.head = nn.Conv2d(r, out_channels, 1)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Bottleneck features and the skips of levels 0..L−2 (shallowest first)."""
        skips: list[torch.Tensor] = []
        for i, enc in enumerate(self.encoder[:-1]):
            y = enc(x)
            ga = self.ga_blocks[str(i)] if str(i) in self.ga_blocks else None
            skips.append(y if ga is None else torch.cat([y, ga(x)], dim=1))
            x = F.max_pool2d(y, 2)
        return self.encoder[-1](x), skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, skips = self._encode(x)
        for dec in self.decoder:
            y = dec(torch.cat([upsample2(y), skips.pop()], dim=1))
        return self.head(y)


@MODELS.register("s3octa")
def build_s3octa(in_channels: int = 1, out_channels: int = 1, preset: str | None = None,
                 **params: Any) -> nn.Module:
    """S3-OCTA from a preset ("m", "l", "cpu") and/or explicit :class:`S3OCTA` parameters."""
    if preset is not None and preset.lower() not in PRESETS:
        raise ConfigError(f"model 's3octa': unknown preset '{preset}'; "
                          f"choose from {', '.join(PRESETS)}")
    kwargs = {**(PRESETS[preset.lower()] if preset else {}), **params}
    try:
        return S3OCTA(in_channels, out_channels, **kwargs)
    except ValueError as err:
        raise ConfigError(f"model 's3octa': {err}") from None

"""ResNeSt encoder (Zhang et al. 2020), the backbone of OCTA-Net's coarse stage (reference §5).

Written by hand with ``torch.nn`` (no torchvision or timm):

- :class:`SplitAttentionConv2d` (SplAt), radix R, cardinality G, output C channels:
  grouped conv (groups G·R) to R·C channels → BN (``bn0``) → ReLU; split into U_1..U_R;
  s = GAP(Σ_r U_r); ``fc1`` (1×1, C → max(Cin·R/4, 32), groups G) → BN (``bn1``) → ReLU;
  ``fc2`` (→ R·C, groups G); a softmax over the R splits per channel (sigmoid when R = 1,
  :func:`radix_softmax`); output Σ_r a_r ⊙ U_r.
- :class:`ResNeStBottleneck` (expansion 4): 1×1 conv → BN → ReLU → SplAt 3×3 → [avd] → 1×1
  conv → BN, plus the shortcut, → ReLU. In strided blocks the SplAt conv has stride 1 and a
  3×3 average pool of stride s follows it ("avd", ``avd_layer``). The downsampling shortcut is
  "avg_down": AvgPool(s) → 1×1 conv → BN (``downsample.0/1/2``).
- :class:`ResNeSt`: deep stem (3×3/s2 conv in→w, 3×3 w→w, 3×3 w→2w, BN-ReLU after each; the
  last BN is ``bn1``) → 3×3/s2 max-pool → layer1..layer4. :meth:`ResNeSt.forward_features`
  returns ``[x0 (stem, H/2), x2 (layer1, H/4), x3 (layer2, H/8), x4 (layer3, H/16),
  x5 (layer4, H/32)]`` with channels :attr:`ResNeSt.channels` = ``[2w, 4·p0, 4·p1, 4·p2, 4·p3]``.

Module names equal those of the official zhanghang1989/ResNeSt ``resnest50`` (and of timm's
``resnest50d``, which uses the same names for every learnable tensor), so ImageNet weights load
with an identity key mapping (:func:`load_imagenet_weights`).

Presets (:data:`PRESETS`): ``"resnest50"`` (layers [3, 4, 6, 3], planes 64/128/256/512 →
256/512/1024/2048 channels, stem 32/64; 25.43 M parameters without the classifier, i.e. timm's
``resnest50d`` 27.48 M minus its 2.05 M ``fc``), and ``"cpu"`` (layers [2, 2, 2, 1], planes
16/32/64/96 → 64/128/256/384 channels, stem 16/32; 0.73 M parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retinaseg.errors import ModelLoadError

PRESETS: dict[str, dict[str, Any]] = {
    "resnest50": {"layers": [3, 4, 6, 3], "stem_width": 32, "planes": [64, 128, 256, 512]},
    "cpu": {"layers": [2, 2, 2, 1], "stem_width": 16, "planes": [16, 32, 64, 96]},
}


def radix_softmax(logits: torch.Tensor, radix: int, cardinality: int) -> torch.Tensor:
    """Attention weights of a SplAt conv from its ``fc2`` output.

    ``logits`` ``[B, R·C]`` in ``fc2``'s channel order (G groups of R·C/G, as a grouped 1×1
    conv writes them) → ``[B, R, C]``: a softmax over the R splits of each channel, or a
    sigmoid when R = 1 (then the result is ``[B, 1, C]``). Channel c of the result belongs to
    cardinal group c // (C/G), the order of the conv's output splits.
    """
    b = logits.shape[0]
    if radix > 1:
        x = logits.reshape(b, cardinality, radix, -1).transpose(1, 2)  # [B, R, G, C/G]
        return F.softmax(x, dim=1).reshape(b, radix, -1)
    return torch.sigmoid(logits).reshape(b, 1, -1)


class SplitAttentionConv2d(nn.Module):
    """Split-attention conv (SplAt, module docstring): ``[B, Cin, H, W] → [B, C, H', W']``.

    Args:
        in_channels: input channels Cin (divisible by ``groups·radix``).
        channels: output channels C (divisible by ``groups``).
        kernel_size, stride, padding, dilation: of the grouped conv.
        groups: cardinality G.
        radix: number of splits R (R = 1: a sigmoid gate, SE-like).
        reduction_factor: ``fc1`` width is max(Cin·R // reduction_factor, 32).
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, groups: int = 1, radix: int = 2,
                 reduction_factor: int = 4) -> None:
        super().__init__()
        inter = max(in_channels * radix // reduction_factor, 32)
        if radix < 1 or groups < 1 or in_channels % (groups * radix) or channels % groups \
                or inter % groups:
            raise ValueError(f"SplAt conv {in_channels}→{channels} with radix {radix} and "
                             f"groups {groups}: channels must divide into the groups")
        self.radix, self.cardinality, self.channels = radix, groups, channels
        self.conv = nn.Conv2d(in_channels, channels * radix, kernel_size, stride, padding,
                              dilation, groups=groups * radix, bias=False)
        self.bn0 = nn.BatchNorm2d(channels * radix)
        self.fc1 = nn.Conv2d(channels, inter, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(inter)
        self.fc2 = nn.Conv2d(inter, channels * radix, 1, groups=groups)

    def attention(self, u_sum: torch.Tensor) -> torch.Tensor:
        """Weights ``[B, R, C]`` (summing to 1 over R when R > 1) from Σ_r U_r ``[B, C, H, W]``."""
        s = self.fc1(F.adaptive_avg_pool2d(u_sum, 1))
        if self.training and s.shape[0] == 1:  # BN of one 1×1 value per channel is undefined:
            bn = self.bn1                       # use the running statistics (batch of 1 only)
            z = F.relu(F.batch_norm(s, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                    False, 0.0, bn.eps))
        else:
            z = F.relu(self.bn1(s))
        return radix_softmax(self.fc2(z).flatten(1), self.radix, self.cardinality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = F.relu(self.bn0(self.conv(x)))
        splits = u.reshape(u.shape[0], self.radix, self.channels, *u.shape[2:])
        a = self.attention(splits.sum(1))
        return (a[..., None, None] * splits).sum(1)


class ResNeStBottleneck(nn.Module):
    """ResNeSt bottleneck, ``[B, inplanes, H, W] → [B, 4·planes, H/stride, W/stride]``.

    Args:
        inplanes: input channels.
        planes: bottleneck planes; the output has ``planes * expansion`` channels.
        stride: 1 or 2 (2: SplAt at stride 1 followed by a 3×3/s2 average pool, "avd").
        downsample: the shortcut (``None``: identity).
        radix, cardinality: of the SplAt conv.
        base_width: bottleneck width per 64 planes; the SplAt conv has
            ``int(planes · base_width / 64) · cardinality`` channels.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, radix: int = 2, cardinality: int = 1,
                 base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * cardinality
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = SplitAttentionConv2d(width, width, 3, 1, 1, groups=cardinality,
                                          radix=radix)
        self.avd_layer = nn.AvgPool2d(3, stride, padding=1) if stride > 1 else None
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.avd_layer is not None:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
    """avg_down shortcut: AvgPool(stride) (identity at stride 1) → 1×1 conv → BN."""
    pool: nn.Module = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                       if stride > 1 else nn.Identity())
    return nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, bias=False),
                         nn.BatchNorm2d(outplanes))


class ResNeSt(nn.Module):
    """ResNeSt encoder without classifier: ``[B, Cin, H, W]`` → five feature maps.

    Args:
        in_channels: input channels (3 for ImageNet weights; 1 works, see
            :func:`load_imagenet_weights`).
        layers: bottleneck blocks per stage (ResNeSt-50: [3, 4, 6, 3]).
        stem_width: w of the deep stem (x0 has 2w channels).
        planes: bottleneck planes per stage (ResNeSt-50: [64, 128, 256, 512]); ``None``:
            ``round(64·2^i·width_scale)``.
        width_scale: scales the default planes when ``planes`` is not given.
        base_width: bottleneck width per 64 planes (64 in ResNeSt-50).
        radix, cardinality: of every SplAt conv.
    """

    def __init__(self, in_channels: int = 3, layers: Sequence[int] = (3, 4, 6, 3),
                 stem_width: int = 32, planes: Sequence[int] | None = None,
                 width_scale: float = 1.0, base_width: int = 64, radix: int = 2,
                 cardinality: int = 1) -> None:
        super().__init__()
        if planes is None:
            planes = [max(1, round(64 * 2**i * width_scale)) for i in range(4)]
        planes, layers = [int(p) for p in planes], [int(n) for n in layers]
        if len(planes) != 4 or len(layers) != 4 or min(planes) < 1 or min(layers) < 1 \
                or stem_width < 1:
            raise ValueError(f"ResNeSt needs 4 positive stage sizes and planes, got layers "
                             f"{layers}, planes {planes}, stem_width {stem_width}")
        sw = int(stem_width)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, sw, 3, 2, 1, bias=False), nn.BatchNorm2d(sw),
            nn.ReLU(inplace=True),
            nn.Conv2d(sw, sw, 3, 1, 1, bias=False), nn.BatchNorm2d(sw), nn.ReLU(inplace=True),
            nn.Conv2d(sw, 2 * sw, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(2 * sw)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self._inplanes = 2 * sw
        block = {"radix": radix, "cardinality": cardinality, "base_width": base_width}
        self.layer1 = self._make_layer(planes[0], layers[0], 1, block)
        self.layer2 = self._make_layer(planes[1], layers[1], 2, block)
        self.layer3 = self._make_layer(planes[2], layers[2], 2, block)
        self.layer4 = self._make_layer(planes[3], layers[3], 2, block)
        self.channels = [2 * sw] + [p * ResNeStBottleneck.expansion for p in planes]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int,
                    block: dict[str, int]) -> nn.Sequential:
        out = planes * ResNeStBottleneck.expansion
        down = _downsample(self._inplanes, out, stride) \
            if stride != 1 or self._inplanes != out else None
        mods = [ResNeStBottleneck(self._inplanes, planes, stride, down, **block)]
        self._inplanes = out
        mods += [ResNeStBottleneck(out, planes, 1, None, **block) for _ in range(blocks - 1)]
        return nn.Sequential(*mods)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[x0 (H/2), x2 (H/4), x3 (H/8), x4 (H/16), x5 (H/32)]`` (ceil sizes)."""
        x0 = F.relu(self.bn1(self.conv1(x)))
        x2 = self.layer1(self.maxpool(x0))
        x3 = self.layer2(x2)
        x4 = self.layer3(x3)
        x5 = self.layer4(x4)
        return [x0, x2, x3, x4, x5]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


def build_resnest(in_channels: int = 3, preset: str = "resnest50", **overrides: Any) -> ResNeSt:
    """A :class:`ResNeSt` from a preset of :data:`PRESETS` and explicit overrides."""
    return ResNeSt(in_channels, **{**PRESETS[preset], **overrides})


_PREFIXES = ("module.", "model.", "backbone.", "encoder.")


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # any reader failure is the file's fault
            raise ModelLoadError(f"cannot read ImageNet weights '{path}': {err}") from None
    if suffix in (".pth", ".pt"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # weights_only refusals and corrupt files alike
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelLoadError(
                f"cannot read ImageNet weights '{path}' as plain tensors (a checkpoint that "
                f"needs code to unpickle is refused): {first}") from None
        if isinstance(obj, dict):
            for key in ("state_dict", "model", "model_state"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in obj.values()):
            raise ModelLoadError(f"ImageNet weights '{path}' hold no state dict of tensors")
        return obj
    raise ModelLoadError(f"ImageNet weights '{path}' must be a .safetensors, .pth or .pt file")


def _adapt_first_conv(w: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB stem weights ``[O, 3, k, k]`` for ``in_channels`` inputs: 1 channel sums the three
    (a grey image replicated to RGB gives the same response); other counts repeat the RGB
    kernels cyclically and rescale by 3/in_channels (timm's ``adapt_input_conv`` rule)."""
    if in_channels == 1:
        return w.sum(dim=1, keepdim=True)
    reps = -(-in_channels // 3)
    return w.repeat(1, reps, 1, 1)[:, :in_channels] * (3.0 / in_channels)


def load_imagenet_weights(encoder: ResNeSt, path: str | Path) -> int:
    """Load ImageNet ResNeSt weights from a local file into ``encoder``; returns the number of
    tensors loaded.

    Accepted files: ``.safetensors`` (``safetensors.torch.load_file``) and ``.pth``/``.pt``
    read with ``torch.load(..., weights_only=True)``; a pickle that needs code to load (a
    checkpoint holding objects, not tensors) is refused with :class:`ModelLoadError`. A dict
    wrapping the weights under ``state_dict``/``model`` is unwrapped.

    Key mapping. Our module names equal the official zhanghang1989/ResNeSt ones
    (``conv1.0/1/3/4/6``, ``bn1``, ``layerL.B.conv1``, ``layerL.B.bn1``,
    ``layerL.B.conv2.{conv,bn0,fc1,bn1,fc2}``, ``layerL.B.conv3``, ``layerL.B.bn3``,
    ``layerL.B.downsample.{1,2}``), and timm's ``resnest50d`` uses the very same names for every
    learnable tensor and BN statistic (its differences, ``act*``, ``avd_last`` for our
    ``avd_layer``, ``drop_block``, hold no tensors). The mapping is therefore the identity after
    stripping a leading ``module.``/``model.``/``backbone.``/``encoder.`` prefix. The classifier
    ``fc.*`` is dropped; ``num_batches_tracked`` buffers are optional.

    Input channels: when the encoder takes 1 channel and the weights 3, the first stem conv is
    summed over its input channels (other counts: the RGB kernels repeated and scaled by 3/C).

    Raises :class:`ModelLoadError` (one sentence) for an unreadable file, a missing tensor, an
    extra tensor, or the first tensor whose shape does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"ImageNet weights file '{path}' does not exist")
    raw = _read_checkpoint(path)
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        if not key.startswith("fc."):
            state[key] = value
    own = encoder.state_dict()
    extra = [k for k in state if k not in own]
    if extra:
        raise ModelLoadError(f"ImageNet weights '{path}' have tensor '{extra[0]}' that the "
                             "ResNeSt encoder does not have (another architecture?)")
    new: dict[str, torch.Tensor] = {}
    for key, target in own.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            raise ModelLoadError(f"ImageNet weights '{path}' lack tensor '{key}'")
        value = state[key]
        if key == "conv1.0.weight" and value.ndim == 4 and value.shape[1] == 3 \
                and target.shape[1] != 3 and value.shape[0] == target.shape[0]:
            value = _adapt_first_conv(value, target.shape[1])
        if value.shape != target.shape:
            raise ModelLoadError(f"ImageNet weights of the wrong shape: '{key}' is "
                                 f"{list(value.shape)} in '{path}' but {list(target.shape)} "
                                 "in the encoder")
        new[key] = value.to(target.dtype)
    encoder.load_state_dict(new, strict=False)
    return len(new)


__all__ = ["PRESETS", "ResNeSt", "ResNeStBottleneck", "SplitAttentionConv2d", "build_resnest",
           "load_imagenet_weights", "radix_softmax"]

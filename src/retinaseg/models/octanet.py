"""OCTA-Net, the split-based coarse-to-fine network of ROSE (Ma et al., IEEE TMI 2021;
reference §5), as ``octanet`` (coarse stage) and ``octanet_fine`` (fine stage).

**Coarse stage** (:class:`OctaNet`, the seed's ``SRF_UNet``): a ResNeSt encoder
(:mod:`retinaseg.models.resnest`) with features x0 (H/2), x2 (H/4), x3 (H/8), x4 (H/16),
x5 (H/32) of channels c0, c2, c3, c4, c5 (ResNeSt-50: 64, 256, 512, 1024, 2048) and two
decoders built from ConvTranspose 2×2/s2 ups and residual conv blocks (:class:`RCB`):

- thick (pixel level): up(c5→c4) ‖ x4 → RCB(2c4→c4); up(c4→c3) ‖ x3 → RCB(2c3→c3);
  up(c3→c2) ‖ x2 → RCB(2c2→c2); up(c2→c0) ‖ x0 → RCB(2c0→c0); up(c0→c0) → RCB(c0→c0/2) →
  1×1 → one logit map at H×W. For ResNeSt-50 these are exactly the reference widths
  (2048→1024 … RCB(64→32)); the ``cpu`` preset scales them with the encoder.
- thin (centerline level), shallow: up(c2→c0) applied to x2 ‖ x0 → RCB(2c0→c0); up(c0→c0) →
  RCB(c0→c0/2) → 1×1.
- fused = max(thick, thin). The maps are **logits**; the max of logits equals the max of the
  seed's sigmoids because the sigmoid is monotonic.

Any input size works: the input is padded (bottom/right, ``pad_mode`` "reflect", or
"replicate" where the pad exceeds the image, or "zeros") to a multiple of 32 inside
:meth:`OctaNet.forward_branches` and the outputs are cropped back, so ``size_multiple = 1``.
(The seed instead zero-pads an odd x4 before layer4 and crops after the first concat; with a
padded input that case never arises.)

**Fine stage** (:class:`OctaNetFine`, the seed's ``fusion``): one or two frozen coarse nets give
P_thick and P_thin (sigmoids); a head of three 3×3 convs (3→64 BN ReLU, 64→128 BN ReLU, 128→9
BN ReLU, weights N(0, 0.1), the last conv's bias one-hot at the centre tap) and a softmax gives
per-pixel weights w_k, and the output is Σ_k w_k(x)·S(x + δ_k) with S = max(P_thick, P_thin)
zero-padded (:func:`propagate`), returned as a logit.

Deviations from the seed: the unused thin-branch decoder levels and the unused
``Up_conv1``/``Conv_1x1`` of ``SRF_UNet`` are not built; outputs are logits, not
probabilities; input padding to a multiple of 32 instead of the x4 pad.

Presets (``preset=``; explicit encoder parameters override): ``"resnest50"`` (reference:
ResNeSt-50 encoder, 3-channel input; ImageNet weights via ``imagenet_weights=``) and ``"cpu"``
(ResNeSt layers [2, 2, 2, 1], planes 16/32/64/96, stem 16, so c = 32, 64, 128, 256, 384).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retinaseg.errors import ConfigError
from retinaseg.models.resnest import PRESETS as ENCODER_PRESETS
from retinaseg.models.resnest import ResNeSt, SplitAttentionConv2d, load_imagenet_weights
from retinaseg.registry import MODELS

PRESETS = tuple(ENCODER_PRESETS)
PAD_MODES = ("reflect", "replicate", "zeros")
ENCODER_PARAMS = ("layers", "stem_width", "planes", "width_scale", "base_width", "radix",
                  "cardinality")


class RCB(nn.Module):
    """Residual conv block RCB(a→b): ``[B, a, H, W] → [B, b, H, W]``.

    Main path 3×3 conv (no bias) → BN → ReLU → SplAt 3×3 (radix 2, groups 2, BN) → ReLU;
    shortcut 1×1 conv (no bias) + BN; output ReLU(main + shortcut). ``b`` must be even.
    """

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
            SplitAttentionConv2d(b, b, 3, 1, 1, groups=2, radix=2), nn.ReLU(inplace=True),
        )
        self.downsample = nn.Sequential(nn.Conv2d(a, b, 1, bias=False), nn.BatchNorm2d(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x) + self.downsample(x))


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 2, stride=2)


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad ``[B, C, H, W]`` at the bottom and right up to multiples of ``multiple``.

    ``mode`` "reflect" (falls back to "replicate" where a pad is not smaller than the image
    side, which reflection cannot do), "replicate" or "zeros".
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    if mode == "zeros":
        return F.pad(x, (0, pw, 0, ph))
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class OctaNet(nn.Module):
    """OCTA-Net coarse stage (module docstring): ``[B, C, H, W]`` → logits.

    Forward contract:

    - :meth:`forward_branches` returns ``{"thick", "thin", "fused"}``, each ``[B, 1, H, W]``
      logits, with fused = max(thick, thin);
    - :meth:`forward` in **eval** mode returns fused ``[B, 1, H, W]`` (what inference uses);
      in **training** mode it returns ``cat([fused, thick, thin], 1)`` ``[B, 3, H, W]``, the
      channel order of :attr:`branches`, which the ``octanet`` loss scores (thick against the
      pixel label, thin against the centerline label).

    Args:
        in_channels: input channels (3 in the reference).
        out_channels: must be 1.
        layers, stem_width, planes, width_scale, base_width, radix, cardinality: of the
            :class:`~retinaseg.models.resnest.ResNeSt` encoder.
        pad_mode: how the input is padded to a multiple of 32 (:func:`pad_to_multiple`).
    """

    size_multiple = 1
    branches = ("fused", "thick", "thin")

    def __init__(self, in_channels: int = 3, out_channels: int = 1, pad_mode: str = "reflect",
                 **encoder: Any) -> None:
        super().__init__()
        if out_channels != 1:
            raise ConfigError(f"model 'octanet' has one output map, not {out_channels}")
        if pad_mode not in PAD_MODES:
            raise ConfigError(f"model 'octanet': pad_mode '{pad_mode}' is unknown; choose from "
                              f"{', '.join(PAD_MODES)}")
        self.pad_mode = pad_mode
        self.encoder = ResNeSt(in_channels, **encoder)
        c0, c2, c3, c4, c5 = self.encoder.channels
        if c0 % 4:
            raise ValueError(f"the stem width must be even (x0 has {c0} channels)")
        self.up5_thick, self.rcb5_thick = _up(c5, c4), RCB(2 * c4, c4)
        self.up4_thick, self.rcb4_thick = _up(c4, c3), RCB(2 * c3, c3)
        self.up3_thick, self.rcb3_thick = _up(c3, c2), RCB(2 * c2, c2)
        self.up2_thick, self.rcb2_thick = _up(c2, c0), RCB(2 * c0, c0)
        self.up1_thick, self.rcb1_thick = _up(c0, c0), RCB(c0, c0 // 2)
        self.head_thick = nn.Conv2d(c0 // 2, 1, 1)
        self.up2_thin, self.rcb2_thin = _up(c2, c0), RCB(2 * c0, c0)
        self.up1_thin, self.rcb1_thin = _up(c0, c0), RCB(c0, c0 // 2)
        self.head_thin = nn.Conv2d(c0 // 2, 1, 1)

    def forward_branches(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"thick", "thin", "fused"}`` logits, each ``[B, 1, H, W]``."""
        h, w = x.shape[-2:]
        x0, x2, x3, x4, x5 = self.encoder.forward_features(pad_to_multiple(x, 32, self.pad_mode))
        d = self.rcb5_thick(torch.cat([x4, self.up5_thick(x5)], 1))
        d = self.rcb4_thick(torch.cat([x3, self.up4_thick(d)], 1))
        d = self.rcb3_thick(torch.cat([x2, self.up3_thick(d)], 1))
        d = self.rcb2_thick(torch.cat([x0, self.up2_thick(d)], 1))
        thick = self.head_thick(self.rcb1_thick(self.up1_thick(d)))[..., :h, :w]
        t = self.rcb2_thin(torch.cat([x0, self.up2_thin(x2)], 1))
        thin = self.head_thin(self.rcb1_thin(self.up1_thin(t)))[..., :h, :w]
        return {"thick": thick, "thin": thin, "fused": torch.maximum(thick, thin)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.forward_branches(x)
        if self.training:
            return torch.cat([out[k] for k in self.branches], 1)
        return out["fused"]


def propagate(s: torch.Tensor, weights: torch.Tensor, pn: int = 3) -> torch.Tensor:
    """One learned propagation step: ``out(x) = Σ_k w_k(x)·S(x + δ_k)``.

    ``s`` ``[B, 1, H, W]``, ``weights`` ``[B, pn², H, W]`` → ``[B, 1, H, W]``. Tap k has the
    offset δ_k = (k // pn − pn // 2, k % pn − pn // 2) (row, column), the order of the seed's
    mapping kernel and of ``F.unfold``; S is zero outside the image. With pn = 3, tap 4 is the
    centre and tap 5 the right neighbour (out(y, x) = S(y, x + 1)).
    """
    b, _, h, w = s.shape
    patches = F.unfold(s, pn, padding=pn // 2).reshape(b, pn * pn, h, w)
    return (patches * weights).sum(1, keepdim=True)


class FusionHead(nn.Module):
    """Per-pixel propagation weights ``[B, 3, H, W] → [B, pn², H, W]`` (softmax over pn²).

    3×3 conv 3→``width`` BN ReLU, 3×3 ``width``→2·``width`` BN ReLU, 3×3 2·``width``→pn² (the
    only bias, one-hot at the centre tap) BN ReLU, softmax; conv weights N(0, 0.1).
    """

    def __init__(self, width: int = 64, pn: int = 3, std: float = 0.1) -> None:
        super().__init__()
        self.pn = pn
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, pn * pn, 3, padding=1, bias=True)
        self.bn3 = nn.BatchNorm2d(pn * pn)
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.normal_(conv.weight, 0.0, std)
        with torch.no_grad():
            self.conv3.bias.zero_()
            self.conv3.bias[(pn * pn) // 2] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return F.softmax(x, dim=1)


class OctaNetFine(nn.Module):
    """OCTA-Net fine stage: frozen coarse net(s) + learned propagation; ``[B, C, H, W]`` →
    logits ``[B, 1, H, W]`` in both training and eval mode.

    ``coarse_thick`` supplies P_thick and, unless ``two_coarse``, also P_thin; with
    ``two_coarse`` a second net ``coarse_thin`` supplies P_thin (the seed picks the checkpoints
    of best thick and best thin AUC). The coarse nets never train: their parameters have
    ``requires_grad = False`` and they stay in eval mode whatever :meth:`train` is given. The
    head sees ``cat[x[:, :1], P_thick, P_thin]`` (P = sigmoid of the coarse logits); the
    output probability Σ_k w_k·S(x + δ_k) (:func:`propagate`) is returned as
    ``logit(clamp(p, 1e-6, 1 − 1e-6))``.

    Args:
        coarse_thick: the coarse net giving P_thick (and P_thin without ``coarse_thin``).
        coarse_thin: optional second coarse net giving P_thin.
        width: channels of the head's first conv (64 in the reference).
        pn: propagation neighbourhood size (3).
    """

    size_multiple = 1

    def __init__(self, coarse_thick: OctaNet, coarse_thin: OctaNet | None = None,
                 width: int = 64, pn: int = 3) -> None:
        super().__init__()
        self.coarse_thick = coarse_thick
        self.coarse_thin = coarse_thin
        self.head = FusionHead(width, pn)
        for net in self._coarse():
            net.requires_grad_(False)
            net.eval()

    def _coarse(self) -> list[OctaNet]:
        return [n for n in (self.coarse_thick, self.coarse_thin) if n is not None]

    def train(self, mode: bool = True) -> OctaNetFine:
        """Set the head's mode; the coarse nets stay in eval mode."""
        super().train(mode)
        for net in self._coarse():
            net.eval()
        return self

    def load_coarse(self, thick_state: Mapping[str, torch.Tensor],
                    thin_state: Mapping[str, torch.Tensor] | None = None) -> None:
        """Load coarse ``octanet`` state dicts (strict). Without ``coarse_thin`` only
        ``thick_state`` is used (``thin_state`` must be None); with it, a missing
        ``thin_state`` loads ``thick_state`` into both."""
        if self.coarse_thin is None and thin_state is not None:
            raise ConfigError("this octanet_fine model has one coarse net (two_coarse=False), "
                              "so it takes no separate thin checkpoint")
        pairs = [(self.coarse_thick, thick_state)]
        if self.coarse_thin is not None:
            pairs.append((self.coarse_thin, thick_state if thin_state is None else thin_state))
        for net, state in pairs:
            try:
                net.load_state_dict(dict(state), strict=True)
            except RuntimeError as err:
                lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
                first = lines[1] if len(lines) > 1 else (lines[0] if lines else "mismatch")
                raise ConfigError(f"the coarse checkpoint is of another architecture than this "
                                  f"octanet_fine model's coarse net ({first})") from None
        for net in self._coarse():
            net.requires_grad_(False)
            net.eval()

    def coarse_probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P_thick, P_thin), each ``[B, 1, H, W]`` sigmoid probabilities, without gradients."""
        with torch.no_grad():
            out = self.coarse_thick.forward_branches(x)
            thick, thin = out["thick"], out["thin"]
            if self.coarse_thin is not None:
                thin = self.coarse_thin.forward_branches(x)["thin"]
        return torch.sigmoid(thick), torch.sigmoid(thin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p_thick, p_thin = self.coarse_probabilities(x)
        w = self.head(torch.cat([x[:, :1], p_thick, p_thin], 1))
        prob = propagate(torch.maximum(p_thick, p_thin), w, self.head.pn)
        return torch.logit(prob.clamp(1e-6, 1 - 1e-6))


def _encoder_kwargs(name: str, preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if preset not in ENCODER_PRESETS:
        raise ConfigError(f"model '{name}': unknown preset '{preset}'; choose from "
                          f"{', '.join(ENCODER_PRESETS)}")
    unknown = [k for k in overrides if k not in ENCODER_PARAMS and k != "pad_mode"]
    if unknown:
        raise ConfigError(f"model '{name}': unknown parameter '{unknown[0]}'; known: "
                          f"{', '.join((*ENCODER_PARAMS, 'pad_mode'))}")
    kwargs = {**ENCODER_PRESETS[preset], **overrides}
    if "width_scale" in overrides and "planes" not in overrides:
        kwargs.pop("planes", None)
    return kwargs


def _coarse(name: str, in_channels: int, out_channels: int, preset: str,
            overrides: dict[str, Any]) -> OctaNet:
    if out_channels != 1:
        raise ConfigError(f"model '{name}' has one output map, not {out_channels}")
    try:
        return OctaNet(in_channels, out_channels, **_encoder_kwargs(name, preset, overrides))
    except ValueError as err:
        raise ConfigError(f"model '{name}': {err}") from None


@MODELS.register("octanet")
def build_octanet(in_channels: int = 3, out_channels: int = 1, preset: str = "cpu",
                  imagenet_weights: str | None = None, **overrides: Any) -> OctaNet:
    """OCTA-Net coarse stage (ResNeSt encoder, thick and thin decoders; reference §5).

    ``preset``: ``"resnest50"`` or ``"cpu"``; overrides of the encoder (``layers``,
    ``stem_width``, ``planes``, ``width_scale``, ``base_width``, ``radix``, ``cardinality``)
    or ``pad_mode``. ``imagenet_weights``: a local ResNeSt ``.safetensors``/``.pth`` file
    loaded into the encoder (:func:`~retinaseg.models.resnest.load_imagenet_weights`); the
    path is stored with the model's parameters, so a saved model is rebuilt only where that
    file exists.
    """
    net = _coarse("octanet", in_channels, out_channels, preset, overrides)
    if imagenet_weights is not None:
        if not Path(imagenet_weights).is_file():
            raise ConfigError(f"model 'octanet': imagenet_weights file '{imagenet_weights}' "
                              "does not exist")
        load_imagenet_weights(net.encoder, imagenet_weights)
    return net


@MODELS.register("octanet_fine")
def build_octanet_fine(in_channels: int = 3, out_channels: int = 1, preset: str = "cpu",
                       two_coarse: bool = False, **overrides: Any) -> OctaNetFine:
    """OCTA-Net fine stage (frozen coarse nets + learned 3×3 propagation; reference §5).

    Builds fresh coarse net(s) of the given preset and overrides (as :func:`build_octanet`);
    their weights come from :meth:`OctaNetFine.load_coarse` or from a saved ``octanet_fine``
    state dict. ``two_coarse``: separate thick and thin coarse nets.
    """
    thick = _coarse("octanet_fine", in_channels, out_channels, preset, overrides)
    thin = _coarse("octanet_fine", in_channels, out_channels, preset, overrides) \
        if two_coarse else None
    return OctaNetFine(thick, thin)


__all__ = ["RCB", "FusionHead", "OctaNet", "OctaNetFine", "build_octanet", "build_octanet_fine",
           "pad_to_multiple", "propagate"]

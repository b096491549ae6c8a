"""IPN, the Image Projection Network (Li et al., IEEE TMI 2020; reference §6), as ``ipn``.

Maps a volume ``[B, C, D, H, W]`` (C = 1 OCTA, or 2 OCT + OCTA) to 2D logits ``[B, out, H, W]``
at full lateral resolution:

- **Projection learning modules (PLMs)**, ``n_plm`` of them: ``convs`` × [Conv3d 3×3×3 →
  (norm) → ReLU], then a *unidirectional* max-pool with kernel = stride = ``(n_i, 1, 1)``: only
  depth is pooled, never ``H`` or ``W``.
- **Pool schedule** (:func:`pool_schedule`, the TF IPN rule of reference §6): non-decreasing
  integer factors >= 2, one per PLM, whose product P satisfies D <= P <= 1.1·D, minimising P and
  then the sum, applied in descending order: D = 160 with 5 PLMs gives [5, 4, 2, 2, 2]
  (160 → 32 → 8 → 4 → 2 → 1). Pools use ceil mode, so P >= D always ends at depth 1.
- **Other depths.** The schedule is fixed at build time from ``depth`` (the expected number of
  planes). Any other input depth still works: a pool larger than the remaining depth takes the
  whole remaining depth, and whatever depth is left after the last PLM is max-pooled to 1
  (adaptive max over depth). Where no factors fit in [D, 1.1·D] (e.g. D = 3 with 5 PLMs), the
  smallest P >= D is used.
- **Head**: the 3×3×3 output convolution of TF IPN acts on a depth-1 map, where it equals a 2D
  3×3 convolution; it is written as ``Conv2d(width, out, 3)`` after squeezing depth. TF's ReLU
  after it (a quirk, §6) is omitted and the 2-class softmax is one logit per output channel
  (sigmoid), the convention of every retinaseg model.

Deviations: PyTorch's default (Kaiming-uniform) initialisation instead of TF's truncated normal
(std 0.02, bias 0.1); optional normalisation (``norm``, default none as in the paper).

Presets (``preset=``; explicit parameters override): ``"paper"``: 5 PLMs × 3 convs, 64 filters,
D = 160 (TF IPN); ``"small"``: 5 PLMs × 2 convs, 16 filters, instance norm (CPU tests and
smoke runs). Whole-volume inference with bounded memory:
:func:`retinaseg.inference.volume.predict_volume`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retinaseg.errors import ConfigError
from retinaseg.registry import MODELS

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"depth": 160, "n_plm": 5, "convs": 3, "width": 64, "norm": "none"},
    "small": {"depth": 160, "n_plm": 5, "convs": 2, "width": 16, "norm": "instance"},
}
NORMS = ("none", "batch", "instance")


def _sequences(n: int, low: int, upper: int) -> list[tuple[int, ...]]:
    """Non-decreasing tuples of ``n`` integers >= ``low`` whose product is <= ``upper``."""
    if n == 0:
        return [()]
    out = []
    for f in range(low, upper + 1):
        if f**n > upper:
            break
        out += [(f, *rest) for rest in _sequences(n - 1, f, upper // f)]
    return out


def pool_schedule(depth: int, n_plm: int) -> list[int]:
    """Depth pool factors of the PLMs, largest first (reference §6; module docstring).

    >>> pool_schedule(160, 5), pool_schedule(640, 5), pool_schedule(64, 5)
    ([5, 4, 2, 2, 2], [5, 4, 4, 4, 2], [4, 2, 2, 2, 2])
    """
    if depth < 1 or n_plm < 1:
        raise ConfigError(f"model 'ipn': depth and n_plm must be >= 1, got {depth}, {n_plm}")
    for upper in (int(1.1 * depth), 2 * max(depth, 2**n_plm)):
        fits = [s for s in _sequences(n_plm, 2, upper) if _prod(s) >= depth]
        if fits:
            best = min(fits, key=lambda s: (_prod(s), sum(s)))
            return sorted(best, reverse=True)
    raise AssertionError("unreachable: 2·max(D, 2^n) always admits a schedule")


def _prod(seq: Sequence[int]) -> int:
    p = 1
    for f in seq:
        p *= f
    return p


def _norm3d(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(ch)
    if kind == "instance":
        return nn.InstanceNorm3d(ch, affine=True)
    return nn.Identity()


class PLM(nn.Module):
    """``convs`` × [Conv3d 3×3×3 → norm → ReLU], then max-pool ``(k, 1, 1)`` over depth only.

    ``[B, Cin, D, H, W] → [B, Cout, ceil(D / k), H, W]``; a ``k`` above the input depth pools
    the whole depth.
    """

    def __init__(self, cin: int, cout: int, pool: int, convs: int, norm: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [nn.Conv3d(cin if i == 0 else cout, cout, 3, padding=1,
                                 bias=norm == "none"), _norm3d(norm, cout), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        k = min(self.pool, x.shape[2])
        return F.max_pool3d(x, (k, 1, 1), (k, 1, 1), ceil_mode=True)


class IPN(nn.Module):
    """Image Projection Network: ``[B, C, D, H, W]`` → logits ``[B, out, H, W]``.

    Args:
        in_channels: volume channels (1: OCTA; 2: OCT and OCTA).
        out_channels: output logit maps.
        depth: expected input depth D (planes), which fixes the pool schedule.
        n_plm: number of projection learning modules.
        convs: 3D convolutions per PLM.
        width: filters of every convolution, or one count per PLM.
        norm: ``"none"`` (paper), ``"batch"`` or ``"instance"``.
    """

    volumetric = True
    size_multiple = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 160,
                 n_plm: int = 5, convs: int = 3, width: int | Sequence[int] = 64,
                 norm: str = "none") -> None:
        super().__init__()
        widths = [int(width)] * n_plm if isinstance(width, int) else [int(w) for w in width]
        if len(widths) != n_plm or min(widths) < 1 or convs < 1:
            raise ConfigError(f"model 'ipn': width needs one positive count per PLM ({n_plm}) "
                              f"and convs >= 1, got width={width}, convs={convs}")
        if norm not in NORMS:
            raise ConfigError(f"model 'ipn': norm '{norm}' is unknown; choose from "
                              f"{', '.join(NORMS)}")
        self.input_depth = int(depth)
        self.pools = pool_schedule(int(depth), n_plm)
        chans = [in_channels, *widths]
        self.plms = nn.ModuleList(PLM(chans[i], chans[i + 1], k, convs, norm)
                                  for i, k in enumerate(self.pools))
        self.head = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"IPN expects [B, C, D, H, W], got shape {tuple(x.shape)}")
        for plm in self.plms:
            x = plm(x)
        return self.head(x.amax(dim=2))


@MODELS.register("ipn")
def build_ipn(in_channels: int = 1, out_channels: int = 1, preset: str | None = None,
              **params: Any) -> nn.Module:
    """IPN from a preset (``"paper"``, ``"small"``) and/or explicit :class:`IPN` parameters."""
    if preset is not None and preset.lower() not in PRESETS:
        raise ConfigError(f"model 'ipn': unknown preset '{preset}'; choose from "
                          f"{', '.join(PRESETS)}")
    kwargs = {**(PRESETS[preset.lower()] if preset else {}), **params}
    return IPN(in_channels, out_channels, **kwargs)


__all__ = ["IPN", "PLM", "PRESETS", "build_ipn", "pool_schedule"]

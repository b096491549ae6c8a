"""Whole-volume inference for volume models (IPN, reference §6) with bounded memory.

A full OCTA-500 6M cube (640 × 400 × 400) is too big for one IPN pass on a CPU: the first PLM's
activations alone are ``width × D × H × W`` floats (64 × 640 × 400² × 4 B = 26 GB). So:

1. depth is resampled to ``planes`` (default 160, IPN's depth; area averaging, or IPN's nearest
   neighbour) with :func:`retinaseg.preprocessing.projection.resample_depth`;
2. the network runs on lateral tiles ``roi × roi`` over the full (resampled) depth, through
   MONAI's ``sliding_window_inference`` with Gaussian blending of the overlapping tiles. The
   network's ``[B, out, h, w]`` output is given a depth axis of 1, which MONAI maps back to the
   ``[H, W]`` grid (its output-to-input scale is 1 / planes along depth, 1 laterally).

Peak memory ≈ the float32 volume read by the caller + the resampled volume
(``C × planes × H × W × 4`` B, 102 MB per channel at 160 × 400²) + one tile's activations
(≈ 3 × ``width × planes × roi² × 4`` B: 340 MB for the ``paper`` preset at roi 96, 28 MB for
``small``). Measured on OCTA-500 10225, CPU, 2 threads (``benchmarks/speed/volume_projection.py``):
untrained ``small`` preset, 160 planes, roi 96, overlap 0.25 (36 tiles): 66 s, peak RSS 1.26 GiB
(0.41 GiB of it the interpreter and libraries, 0.39 GiB the float32 volume); ``paper`` preset:
12 s and peak RSS 1.9 GiB per 96² tile, so about 7 minutes for the whole volume.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from retinaseg.errors import OptionError, VolumeError
from retinaseg.preprocessing.projection import check_volume, resample_depth


def _channels(volume: np.ndarray) -> np.ndarray:
    """``[D,H,W]`` → ``[1,D,H,W]``; ``[C,D,H,W]`` kept; anything else is a VolumeError."""
    arr = np.asarray(volume)
    if arr.ndim == 3:
        return arr[None]
    if arr.ndim == 4:
        return arr
    raise VolumeError(f"a volume model needs [D, H, W] or [C, D, H, W], got shape {arr.shape}")


def prepare_volume(volume: np.ndarray, planes: int | None = 160,
                   resample: str = "area") -> np.ndarray:
    """Float32 ``[C, planes, H, W]`` network input from ``[D, H, W]`` or ``[C, D, H, W]``.

    ``planes=None`` keeps the depth. Training data must be prepared the same way.
    """
    vols = _channels(volume)
    out = []
    for ch in vols:
        ch = check_volume(ch)
        if planes is None or ch.shape[0] == planes:
            out.append(ch.astype(np.float32, copy=False))
        else:
            out.append(resample_depth(ch, planes, resample))
    return out[0][None] if len(out) == 1 else np.stack(out)


@torch.inference_mode()
def predict_volume(net: nn.Module, volume: np.ndarray, planes: int | str | None = "model",
                   resample: str = "area", roi: int = 96, overlap: float = 0.25,
                   sw_batch_size: int = 1, device: str | torch.device = "cpu") -> np.ndarray:
    """Probabilities ``[out, H, W]`` float32 in [0, 1] of a volume model on a whole volume.

    Args:
        net: a model mapping ``[B, C, D, H, W]`` to logits ``[B, out, H, W]`` (e.g. ``ipn``).
        volume: ``[D, H, W]`` (one channel) or ``[C, D, H, W]``, values as the model was
            trained on (``read_volume`` gives [0, 1]).
        planes: depth after resampling; ``"model"`` (default): the model's ``input_depth``
            (IPN's ``depth`` parameter, so a saved model brings its own); None keeps the depth.
        resample: ``"area"`` or ``"nearest"`` depth resampling.
        roi: lateral tile size (px); tiles overlap by ``overlap`` and blend with Gaussian
            weights. A volume smaller than ``roi`` runs as one tile.
        sw_batch_size: tiles per forward pass.
    """
    if isinstance(planes, str):
        if planes != "model":
            raise OptionError(f"planes must be an integer, None or 'model', not '{planes}'")
        planes = getattr(net, "input_depth", None)
    x = torch.from_numpy(prepare_volume(volume, planes, resample))[None].to(device)
    n_depth, height, width = x.shape[-3:]
    window = (n_depth, min(roi, height), min(roi, width))
    net = net.eval()

    def predictor(tile: torch.Tensor) -> torch.Tensor:
        return net(tile)[:, :, None]  # [B, out, 1, h, w]

    prob = sliding_window_inference(x, roi_size=window, sw_batch_size=sw_batch_size,
                                    predictor=predictor, overlap=(0.0, overlap, overlap),
                                    mode="gaussian", padding_mode="replicate")
    return torch.sigmoid(prob[0, :, 0].float()).cpu().numpy()


__all__ = ["predict_volume", "prepare_volume"]

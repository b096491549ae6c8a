"""Inference: whole-image where it fits, Gaussian-weighted sliding window otherwise.

Whole-image inference pads the image (reflect) to the network's ``size_multiple`` and runs one
forward pass; it is faster than tiling on CPU. Images larger than ``max_whole_pixels`` go through
MONAI's ``sliding_window_inference`` with Gaussian weighting, which keeps peak memory bounded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

MAX_WHOLE_PIXELS = 1536 * 1536
BATCH_TTA_PIXELS = 512 * 512  # smaller images run their TTA copies as one batch
TTA_FLIPS: dict[str, list[tuple[int, ...]]] = {  # flipped dims of each pass, () = identity
    "none": [()],
    "hflip": [(), (-1,)],
    "flips": [(), (-1,), (-2,)],
}


def tta_flips(tta: bool | str | None) -> list[tuple[int, ...]]:
    """The passes of a TTA mode: ``none``/False, ``hflip`` (2 passes), ``flips``/True (3)."""
    key = {True: "flips", False: "none", None: "none"}.get(tta, tta)  # type: ignore[arg-type]
    if key not in TTA_FLIPS:
        from retinaseg.errors import RetinasegError

        raise RetinasegError(f"tta must be one of {', '.join(TTA_FLIPS)}, not '{tta}'")
    return TTA_FLIPS[str(key)]


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad ``[B,C,H,W]`` at the bottom/right so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def _forward_whole(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    xp, (h, w) = _pad_to_multiple(x, int(getattr(net, "size_multiple", 1)))
    return net(xp)[..., :h, :w]


def _forward_tiled(net: nn.Module, x: torch.Tensor, tile: int, overlap: float,
                   sw_batch_size: int) -> torch.Tensor:
    m = int(getattr(net, "size_multiple", 1))
    tile = max(m, tile - tile % m)
    roi = tuple(min(tile, -(-s // m) * m) for s in x.shape[-2:])
    small = any(r - s >= s for r, s in zip(roi, x.shape[-2:]))
    return sliding_window_inference(x, roi_size=roi, sw_batch_size=sw_batch_size,
                                    predictor=net, overlap=overlap, mode="gaussian",
                                    padding_mode="replicate" if small else "reflect")


def predict_logits(net: nn.Module, x: torch.Tensor, tile: int | None = None,
                   overlap: float = 0.25, sw_batch_size: int = 2,
                   max_whole_pixels: int = MAX_WHOLE_PIXELS) -> torch.Tensor:
    """Logits ``[B,1,H,W]`` for a batch ``[B,C,H,W]``; tiles when asked or when too large."""
    h, w = x.shape[-2:]
    if tile is None and h * w <= max_whole_pixels:
        return _forward_whole(net, x)
    return _forward_tiled(net, x, tile or 512, overlap, sw_batch_size)


@torch.inference_mode()
def predict_probability(net: nn.Module, image: np.ndarray, device: str | torch.device = "cpu",
                        tile: int | None = None, overlap: float = 0.25, tta: bool | str = False,
                        sw_batch_size: int = 2,
                        max_whole_pixels: int = MAX_WHOLE_PIXELS, channel: int = 0,
                        precision: str = "fp32", fov: np.ndarray | None = None) -> np.ndarray:
    """Vessel probability ``[H,W]`` float32 in [0,1] for a preprocessed image ``[C,H,W]``.

    ``tta`` averages over flips (:data:`TTA_FLIPS`: ``"hflip"``, or ``"flips"``/True for
    horizontal and vertical; whole images up to :data:`BATCH_TTA_PIXELS` run the flipped
    copies as one batch, which was faster on CPU for 400² OCTA and slower for 584×565
    fundus); ``channel`` picks the output head of a model with several;
    ``precision="bf16"`` runs the network under bfloat16 autocast on a channels-last input (see
    :func:`retinaseg.utils.runtime.resolve_precision`; a network converted with
    ``net.to(memory_format=torch.channels_last)`` runs fastest then). ``fov`` (bool ``[H,W]``,
    the retina of a fundus image) limits the network to the box of the mask
    (:func:`retinaseg.inference.crop.fov_box`); the map is 0 outside that box.
    """
    from retinaseg.inference.crop import fov_box, paste

    box = None if fov is None else fov_box(fov, int(getattr(net, "size_multiple", 1)))
    if box is not None:
        prob = predict_probability(net, image[:, box[0], box[1]], device, tile, overlap, tta,
                                   sw_batch_size, max_whole_pixels, channel, precision)
        return paste(prob, box, image.shape[-2:])
    acc = _tta_average(net, image, device, tile, overlap, tta, sw_batch_size,
                       max_whole_pixels, precision,
                       lambda logits: torch.sigmoid(logits[:, channel:channel + 1]))
    return acc[0, 0].cpu().numpy()


def _tta_average(net: nn.Module, image: np.ndarray, device: str | torch.device,
                 tile: int | None, overlap: float, tta: bool | str | None, sw_batch_size: int,
                 max_whole_pixels: int, precision: str,
                 activation: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``activation(logits)`` ``[1, K, H, W]`` of ``image [C, H, W]``, averaged over the flips
    of ``tta`` (see :func:`predict_probability`)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
    flips = tta_flips(tta)
    acc: torch.Tensor | None = None
    dev = torch.device(device).type
    h, w = x.shape[-2:]
    if tile is None and 1 < len(flips) and h * w <= BATCH_TTA_PIXELS \
            and h * w * len(flips) <= max_whole_pixels:
        chunks = [flips]  # whole image: all flipped copies in one batch (faster on CPU)
    else:
        chunks = [[d] for d in flips]  # one pass each: bounded memory
    for chunk in chunks:
        xb = torch.cat([torch.flip(x, d) if d else x for d in chunk])
        if precision == "bf16":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = predict_logits(net, xb, tile, overlap, sw_batch_size, max_whole_pixels)
        p = activation(logits.float())
        for i, d in enumerate(chunk):
            pi = torch.flip(p[i:i + 1], d) if d else p[i:i + 1]
            acc = pi.clone() if acc is None else acc + pi
    assert acc is not None
    return acc / len(flips)


@torch.inference_mode()
def predict_class_probabilities(net: nn.Module, image: np.ndarray,
                                device: str | torch.device = "cpu", tile: int | None = None,
                                overlap: float = 0.25, tta: bool | str = False,
                                sw_batch_size: int = 2, max_whole_pixels: int = MAX_WHOLE_PIXELS,
                                precision: str = "fp32",
                                fov: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities ``[K, H, W]`` float32 (softmax over the K outputs, summing to 1 at
    each pixel) of a multi-class model for a preprocessed image ``[C, H, W]``; the predicted
    class map is their argmax over axis 0. Options as :func:`predict_probability`; outside the
    box of ``fov`` the map is background (class 0 probability 1)."""
    from retinaseg.inference.crop import fov_box, paste

    box = None if fov is None else fov_box(fov, int(getattr(net, "size_multiple", 1)))
    if box is not None:
        inner = predict_class_probabilities(net, image[:, box[0], box[1]], device, tile, overlap,
                                            tta, sw_batch_size, max_whole_pixels, precision)
        out = np.stack([paste(c, box, image.shape[-2:]) for c in inner])
        out[0][paste(np.ones(inner.shape[1:], np.float32), box, image.shape[-2:]) == 0] = 1.0
        return out
    acc = _tta_average(net, image, device, tile, overlap, tta, sw_batch_size, max_whole_pixels,
                       precision, lambda logits: torch.softmax(logits, dim=1))
    return acc[0].cpu().numpy()

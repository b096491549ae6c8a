"""SAM 2 frames: an image onto the model's 1024×1024 canvas, and masks back (reference §7).

Reference §7.1 step 2-3 and §7.2: resize the longest side to 1024, scale the point coordinates
the same way, normalise (SAM-OCTA2: values in [0, 1], ImageNet mean and std), pad to 1024×1024.
The image sits at the top-left of the canvas; the padding is zero after normalisation. Masks
come back by the inverse: upsample the decoder's 256×256 logits to the canvas, crop the image's
part and resize it to the image's own size. transformers' SAM 2 processors need torchvision, so
this is written here.

Coordinates are (x, y) = (column, row) in pixels. A point is scaled by the same factor as the
image (x · s, y · s with s = 1024 / max(H, W)), as the official predictor does; the prompt
encoder then adds half a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from retinaseg.errors import OptionError

IMAGE_SIZE = 1024
"""Side of the square canvas the model takes (pixels)."""
LOW_RES = 256
"""Side of the mask decoder's logits (the canvas / 4)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FrameGeometry:
    """Where an ``height``×``width`` image lies on the ``size``×``size`` canvas."""

    height: int
    width: int
    size: int = IMAGE_SIZE

    @property
    def scale(self) -> float:
        """Canvas pixels per image pixel."""
        return self.size / max(self.height, self.width)

    @property
    def resized(self) -> tuple[int, int]:
        """(rows, columns) the image covers on the canvas."""
        return (max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale)))


def to_unit_rgb(image: np.ndarray) -> torch.Tensor:
    """``[3, H, W]`` float32 in [0, 1] from a grey ``[H, W]`` / ``[H, W, 1]`` or RGB
    ``[H, W, 3]`` image: integers are divided by their type's maximum (uint8: 255), floats
    are taken as [0, 1] and clipped, grey is repeated into three channels."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)) or min(arr.shape[:2]) < 1:
        raise OptionError(f"SAM 2 needs a grey [H, W] or RGB [H, W, 3] image, got shape "
                          f"{list(arr.shape)}")
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    x = torch.from_numpy(np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0))
    chw = x[None].expand(3, -1, -1) if x.ndim == 2 else x.permute(2, 0, 1)
    return chw.contiguous()


def _resize(x: torch.Tensor, shape: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize the last two axes of ``x`` ``[..., H, W]``; bilinear anti-aliases when shrinking."""
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:]).float()
    if mode == "nearest":
        out = F.interpolate(flat, size=shape, mode="nearest-exact")
    else:
        shrink = shape[0] < x.shape[-2] or shape[1] < x.shape[-1]
        out = F.interpolate(flat, size=shape, mode="bilinear", align_corners=False,
                            antialias=shrink)
    return out.reshape(*lead, *shape)


def to_canvas(x: torch.Tensor, geom: FrameGeometry, mode: str = "bilinear",
              fill: float = 0.0) -> torch.Tensor:
    """``[..., H, W]`` → ``[..., S, S]``: resize to ``geom.resized`` and pad bottom/right with
    ``fill``. ``mode``: ``bilinear`` (images, probabilities) or ``nearest`` (label masks)."""
    if tuple(x.shape[-2:]) != (geom.height, geom.width):
        raise ValueError(f"expected [..., {geom.height}, {geom.width}], got {list(x.shape)}")
    h, w = geom.resized
    out = _resize(x, (h, w), mode)
    return F.pad(out, (0, geom.size - w, 0, geom.size - h), value=fill)


def from_canvas(x: torch.Tensor, geom: FrameGeometry) -> torch.Tensor:
    """``[..., s, s]`` (the canvas at any resolution, e.g. the 256×256 logits) → ``[..., H, W]``:
    upsample to the canvas size, drop the padding, resize to the image (bilinear)."""
    full = _resize(x, (geom.size, geom.size), "bilinear") if x.shape[-1] != geom.size else x
    h, w = geom.resized
    return _resize(full[..., :h, :w], (geom.height, geom.width), "bilinear")


def preprocess_image(image: np.ndarray, size: int = IMAGE_SIZE) -> tuple[torch.Tensor,
                                                                          FrameGeometry]:
    """The model input ``[1, 3, S, S]`` (normalised with the ImageNet mean and std, zero
    padding) and the frame's geometry."""
    rgb = to_unit_rgb(image)
    geom = FrameGeometry(int(rgb.shape[1]), int(rgb.shape[2]), size)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    h, w = geom.resized
    normed = (_resize(rgb, (h, w), "bilinear") - mean) / std
    return F.pad(normed, (0, size - w, 0, size - h))[None], geom


def scale_points(points: np.ndarray, geom: FrameGeometry) -> np.ndarray:
    """Image (x, y) pixel coordinates ``[N, 2]`` → canvas coordinates ``[N, 2]`` (float32)."""
    return np.asarray(points, dtype=np.float32).reshape(-1, 2) * np.float32(geom.scale)


def scale_box(box: np.ndarray, geom: FrameGeometry) -> np.ndarray:
    """Image box (x0, y0, x1, y1) → canvas box ``[4]`` (float32)."""
    return np.asarray(box, dtype=np.float32).reshape(4) * np.float32(geom.scale)

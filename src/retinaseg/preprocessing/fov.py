"""The field of view (FOV) of a fundus photograph: the bright disc of retina on a near-black
surround (reference §1.5 recommends the red channel). Datasets without FOV masks derive theirs
here, inference crops to the non-dark box (:mod:`retinaseg.inference.crop`) and matches
resolution by the FOV diameter (:mod:`retinaseg.inference.scale`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return yy**2 + xx**2 <= radius**2


def bright_pixels(img: np.ndarray, rel_threshold: float = 0.1, step: int = 1) -> np.ndarray:
    """Pixels of a fundus image ``[H, W, 3]`` / ``[H, W]`` in [0, 1] brighter than the surround:
    red channel (grey: the image) above ``max(rel_threshold · p99, 0.02)``; bool ``[H, W]``.

    p99 (robust to hot pixels) is taken on every ``step``-th pixel of each axis; all False when
    it is not positive.
    """
    red = img[..., 0] if img.ndim == 3 else img
    ref = float(np.percentile(red[::step, ::step], 99))
    if ref <= 0:
        return np.zeros(red.shape, bool)
    return red > max(rel_threshold * ref, 0.02)


def fov_from_image(img: np.ndarray, rel_threshold: float = 0.1) -> np.ndarray:
    """Field-of-view mask of a fundus photograph (bool ``[H, W]``), for sets without FOV masks.

    The retina is bright in the red channel and the surround is (near) black, so: threshold the
    red channel (grey images: the image) at ``max(rel_threshold · p99, 0.02)`` (p99 = 99th
    percentile, robust to hot pixels), remove specks and JPEG noise with a binary opening by a
    disc of radius ``max(1, min(H, W) // 100)`` px, keep the largest connected component and
    fill its holes (dark lesions, the vessels of a dark image). CHASE_DB1, STARE and the
    ``folder`` dataset's ``fov=auto`` use this (reference §1.5 recommends a red-channel FOV).
    """
    red = img[..., 0] if img.ndim == 3 else img
    mask = bright_pixels(img, rel_threshold)
    if not mask.any():
        return mask
    radius = max(1, min(red.shape) // 100)
    opened = ndimage.binary_opening(mask, structure=_disk(radius))
    mask = opened if opened.any() else mask
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)


def bright_mask(image: np.ndarray, rel_threshold: float = 0.1) -> np.ndarray:
    """Non-dark pixels of a fundus image ``[H, W, 3]`` or ``[H, W]`` in [0, 1]: bool ``[H, W]``.

    :func:`bright_pixels` (the first step of ``fov_from_image``), with p99
    taken on a strided copy of about 128 px a side, which is fast and as robust to hot pixels.
    """
    return bright_pixels(image, rel_threshold, step=max(1, max(image.shape[:2]) // 128))


def fov_diameter(fov: np.ndarray) -> float:
    """Diameter in pixels of a FOV mask ``[H, W]`` bool: the wider side of its bounding box.

    Fundus FOVs are discs cut at the top and bottom by the sensor, so the horizontal extent is
    the diameter. Returns 0 for an empty mask.
    """
    rows, cols = np.any(fov, axis=1), np.any(fov, axis=0)
    if not cols.any():
        return 0.0
    width = np.flatnonzero(cols)[[0, -1]]
    height = np.flatnonzero(rows)[[0, -1]]
    return float(max(width[1] - width[0], height[1] - height[0]) + 1)


def median_fov_diameter(fovs: Iterable[np.ndarray]) -> float:
    """Median :func:`fov_diameter` of masks (the value a model stores), px."""
    values = [d for d in (fov_diameter(f) for f in fovs) if d > 0]
    return float(np.median(values)) if values else 0.0

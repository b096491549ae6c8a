"""Resolution matching for colour fundus images by the size of the field of view.

A vessel model learns vessel widths in pixels. Fundus cameras differ in resolution by up to
six-fold (DRIVE 565×584, CHASE_DB1 999×960, HRF 3504×2336), so a DRIVE-trained model sees HRF
vessels as far too wide. The retina's field of view (FOV) is a disc of roughly fixed angle
(about 45°), so its diameter in pixels measures the resolution. A model that stores the median
FOV diameter of its training images (``spec.info["fov_diameter"]``, px) gets each new fundus
image rescaled to that diameter before inference, and the probability map rescaled back
(reference §1.5 for the red-channel FOV). Images already within ±15 % are left alone.
"""

from __future__ import annotations

import math

import numpy as np

from retinaseg.preprocessing.fov import fov_diameter, fov_from_image

TOLERANCE = 0.15
"""Relative difference of FOV diameters below which an image is not rescaled."""
LIMITS = (0.2, 4.0)
"""The factor is clamped to this range (a mis-detected FOV cannot blow up memory)."""


def scale_factor(image: np.ndarray, target: float) -> float:
    """Factor that brings a fundus image's FOV diameter to ``target`` px (1.0 to leave it).

    The FOV is derived from the image (red channel,
    :func:`~retinaseg.preprocessing.fov.fov_from_image`).
    Only RGB images ``[H, W, 3]`` are rescaled: grey and multi-map images, images without a
    detectable FOV and images within :data:`TOLERANCE` get 1.0. The factor is clamped to
    :data:`LIMITS`.
    """
    if image.ndim != 3 or image.shape[-1] != 3 or target <= 0:
        return 1.0
    step = max(1, max(image.shape[:2]) // 128)  # the FOV of a strided copy: fast, ±step px
    d = fov_diameter(fov_from_image(image[::step, ::step])) * step
    if d < 32:
        return 1.0
    f = min(max(target / d, LIMITS[0]), LIMITS[1])
    return 1.0 if abs(math.log(f)) <= math.log1p(TOLERANCE) else f

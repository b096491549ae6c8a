"""Acquisition changes: what another camera or OCTA device, or a lossy file, does to an image.

Reference: no seed method does this (reference.md §8, retina-unet, trains on DRIVE as it is);
it serves the default models' robustness (docs/explanation/robustness.md). The same
functions make the training copies of ``data.acquisition_copies``
(:mod:`retinaseg.training.data`) and the test conditions of
``benchmarks/accuracy/robustness.py``.

Every function takes and returns a float image in [0, 1], ``[H,W]`` or ``[H,W,C]`` (channels
last, as read from a file), before any preprocessing: a change of the raw pixels passes
through CLAHE and standardisation as it would on a user's photograph.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from retinaseg.preprocessing.functions import per_channel


def to_8bit(img: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and round to 256 levels, as a saved file would be (float32 out)."""
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.float32) / 255.0


def gamma(img: np.ndarray, g: float) -> np.ndarray:
    """``x ** g``: ``g < 1`` brightens the mid-tones, ``g > 1`` darkens them."""
    return np.clip(img, 0.0, 1.0) ** g


def contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """Each channel pulled towards (``factor < 1``) or pushed from its mean."""
    return per_channel(img, lambda c: c.mean() + factor * (c - c.mean()))


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel, ``sigma`` in pixels (softer optics, a resampled scan)."""
    return per_channel(img, lambda c: ndimage.gaussian_filter(c, sigma))


def noise(img: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of standard deviation ``std`` (intensity units of [0, 1])."""
    return img + rng.normal(0.0, std, img.shape).astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """The image saved as a JPEG of ``quality`` (1-95) and read back."""
    buf = io.BytesIO()
    Image.fromarray((to_8bit(img) * 255).astype(np.uint8)).save(buf, format="JPEG",
                                                                 quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255.0


def colour_balance(img: np.ndarray, gains: tuple[float, ...]) -> np.ndarray:
    """Each channel scaled by its gain (another camera's white balance); grey images pass."""
    if img.ndim == 2:
        return img
    return img * np.asarray(gains, dtype=np.float32)[: img.shape[-1]]


def random_change(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random mix of acquisition changes, at least one, then 8-bit rounding.

    Each is drawn with probability 1/2: colour balance (gains 0.8-1.2, colour images), gamma
    (0.6-1.6, log-uniform), blur (sigma 0.3-1.2 px), noise (std 0.005-0.05) and, last, JPEG
    (quality 20-90). Returns float32 ``img``-shaped, in [0, 1].
    """
    while True:
        pick = rng.random(5) < 0.5
        if pick.any():
            break
    out = img.astype(np.float32)
    if pick[0] and out.ndim == 3:
        out = colour_balance(out, tuple(rng.uniform(0.8, 1.2, out.shape[-1])))
    if pick[1]:
        out = gamma(out, float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))))
    if pick[2]:
        out = blur(out, float(rng.uniform(0.3, 1.2)))
    if pick[3]:
        out = noise(out, float(rng.uniform(0.005, 0.05)), rng)
    if pick[4]:
        out = jpeg(out, int(rng.integers(20, 91)))
    return to_8bit(out)

"""Inference on the field of view only: a fundus image is cropped to the box of its retina.

Reference §1.5 (the red-channel field of view). A fundus photograph is a bright disc of retina
on a near-black surround; the network's time grows with the pixels it sees, and the surround
holds no vessels. :class:`~retinaseg.inference.segmenter.Segmenter` therefore runs the network on
the bounding box of the non-dark pixels, grown by a margin and to the network's size multiple,
and gives every pixel outside the box probability 0. For DRIVE (584×565) the padded input of
592×576 px becomes 544×544, 13 % fewer pixels.

"Non-dark" is :func:`retinaseg.preprocessing.fov.bright_mask`, the rule of
:func:`~retinaseg.preprocessing.fov.fov_from_image` (red channel above a
tenth of its 99th percentile), but without the opening and without keeping only the largest
component, so every pixel that could be retina stays inside the box: a bright label or a
second bright region widens the box rather than being cut off.
"""

from __future__ import annotations

import numpy as np

MARGIN = 2
"""Pixels of context kept around the non-dark box on each side."""
MIN_GAIN = 0.05
"""The crop is skipped unless it removes at least this share of the (padded) pixels."""

Box = tuple[slice, slice]


def _span(lo: int, hi: int, size: int, multiple: int, margin: int) -> slice:
    """``[lo, hi)`` grown by ``margin``, then to a multiple of ``multiple``, in ``[0, size)``."""
    lo, hi = max(0, lo - margin), min(size, hi + margin)
    want = min(size, -(-(hi - lo) // multiple) * multiple)
    extra = want - (hi - lo)
    lo = max(0, min(lo - extra // 2, size - want))
    return slice(lo, lo + want)


def fov_box(mask: np.ndarray, multiple: int = 1, margin: int = MARGIN) -> Box | None:
    """The crop box of a fundus image from its non-dark (or FOV) mask ``[H, W]``, or None.

    The box is the mask's bounding box grown by ``margin`` px on each side and then, where the
    image allows, to a multiple of ``multiple`` (the network's ``size_multiple``, so that no
    padding is needed). None means "use the whole image": an empty mask, or a box that would
    save less than :data:`MIN_GAIN` of the padded pixels.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    box = (_span(int(rows[0]), int(rows[-1]) + 1, h, multiple, margin),
           _span(int(cols[0]), int(cols[-1]) + 1, w, multiple, margin))
    padded = (-(-h // multiple) * multiple) * (-(-w // multiple) * multiple)
    area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
    return None if area > (1 - MIN_GAIN) * padded else box


def paste(prob: np.ndarray, box: Box | None, shape: tuple[int, int]) -> np.ndarray:
    """The map of a cropped region ``prob`` placed in a zero map of ``shape`` ``(H, W)``."""
    if box is None:
        return prob
    out = np.zeros(shape, dtype=prob.dtype)
    out[box] = prob
    return out

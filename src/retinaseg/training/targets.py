"""Extra training targets: centerline labels for OCTA-Net's thin branch (reference §5).

OCTA-Net's coarse stage trains two branches on two labels of each image: the pixel-level label
(thick branch) and a centerline-level label (thin branch). ROSE ships them (ROSE-2 and ROSE-1
DVC labels are centerline-level, ROSE-1 SVC has ``thin_gt``; the thick branch trains on the
pixel label ``gt``, where the seed uses ``thick_gt``); for every other dataset this module
derives one from the pixel label with our exact centerline
(:func:`retinaseg.measure.centerline`, reference §3), optionally dilated by ``dilate`` px
(3×3 square steps), once per run when the items are loaded (about 4 ms for a 400² OCTA-500
label: no disk cache is worth having). ``data.derive_centerline: false`` refuses datasets
without their own centerline labels instead.

The centerline goes into :attr:`~retinaseg.training.data.Item.extra` as channel 1 of the loss's
target, so only models whose loss wants it (``targets`` attribute of the model listing
``"centerline"``) see a two-channel target.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from retinaseg.errors import ConfigError
from retinaseg.measure import centerline
from retinaseg.training.data import Item


def derived_centerline(label: np.ndarray, dilate: int = 0) -> np.ndarray:
    """bool ``[H, W]``: the exact centerline of ``label`` (bool ``[H, W]``), dilated by
    ``dilate`` px (a 3×3 square per px), never outside the label."""
    line = centerline(np.asarray(label, bool))
    if dilate:
        line = ndimage.binary_dilation(line, np.ones((3, 3), bool), iterations=dilate)
        line &= np.asarray(label, bool)
    return line


def attach_centerlines(items: list[Item], derive: bool = True, dilate: int = 0,
                       where: str = "") -> int:
    """Set ``item.extra = centerline[None]`` on every item: the dataset's own centerline label
    where it has one, else the derived one (``derive``; else a ConfigError naming ``where``).
    Returns how many were derived."""
    derived = 0
    for it in items:
        if it.centerline is not None:
            line = np.asarray(it.centerline, bool)
            if line.shape != it.label.shape:
                raise ConfigError(f"{where}: the centerline label of '{it.id}' is "
                                  f"{list(line.shape)}, its label {list(it.label.shape)}")
        elif derive:
            line = derived_centerline(it.label, dilate)
            derived += 1
        else:
            raise ConfigError(f"{where}: image '{it.id}' has no centerline label and "
                              "data.derive_centerline is false (set it true to derive the "
                              "centerline from the pixel label)")
        it.extra = line[None]
    return derived

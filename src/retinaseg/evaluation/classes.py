"""Metrics and colours of multi-class segmentation (class maps such as OCTA-500 ``GT_AV``).

A class map is int ``[H, W]`` with values ``0 .. K-1``, 0 the background. Each foreground class
``c`` is scored one-vs-rest (prediction ``== c`` against label ``== c``, inside the FOV) with the
binary :func:`~retinaseg.evaluation.metrics.threshold_metrics`; the ``*_mean`` figures average
the foreground classes (NaN-skipping), so a class missing from an image does not count as 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from retinaseg.evaluation.metrics import confusion_counts, threshold_metrics

CLASS_KEYS: tuple[str, ...] = ("dice", "sen", "spe")
"""Figures reported per foreground class (``<key>_<class name>``) and as ``<key>_mean``."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (220, 40, 40), (40, 90, 230), (240, 200, 30), (40, 190, 80), (200, 60, 200),
    (30, 200, 210), (250, 130, 20), (150, 150, 150), (120, 70, 20),
)
"""RGB colour of class k (k ≥ 10 reuses the list): background black, then red (artery in
OCTA-500 AV), blue (vein), yellow (overlap), green, ..."""


def class_counts(pred: np.ndarray, gt: np.ndarray, n_classes: int,
                 fov: np.ndarray | None = None) -> list[dict[str, int]]:
    """One-vs-rest confusion counts ``{"tp", "fp", "fn", "tn"}`` of every class ``0..K-1``.

    ``pred`` and ``gt`` are int class maps ``[H, W]``; pixels outside ``fov`` are ignored."""
    return [confusion_counts(pred == c, gt == c, fov) for c in range(n_classes)]


def metrics_from_counts(counts: Sequence[Mapping[str, int]],
                        classes: Sequence[str]) -> dict[str, float]:
    """``<key>_<name>`` for every foreground class and ``<key>_mean`` over them, for each key
    of :data:`CLASS_KEYS`, from per-class counts (:func:`class_counts`, summed over images for
    pooled figures)."""
    out: dict[str, float] = {}
    per = [threshold_metrics(c) for c in counts]
    for key in CLASS_KEYS:
        values = [per[c][key] for c in range(1, len(classes))]
        out.update({f"{key}_{name}": v for name, v in zip(classes[1:], values)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[f"{key}_mean"] = float(np.nanmean(values)) if values else float("nan")
    return out


def class_metrics(pred: np.ndarray, gt: np.ndarray, classes: Sequence[str],
                  fov: np.ndarray | None = None) -> dict[str, float]:
    """Per-class Dice, sensitivity and specificity of a predicted class map ``pred`` against
    ``gt`` (int ``[H, W]``) and their means over the foreground classes.

    >>> class_metrics(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 1]]),
    ...               ["bg", "a", "v"])["dice_a"]  # doctest: +ELLIPSIS
    0.666...
    """
    return metrics_from_counts(class_counts(pred, gt, len(classes), fov), classes)


def class_columns(classes: Sequence[str]) -> list[str]:
    """Column names of :func:`class_metrics`, in its order."""
    return [f"{key}_{name}" for key in CLASS_KEYS for name in (*classes[1:], "mean")]


def colour_classes(class_map: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` of an int class map ``[H, W]``, colours from :data:`PALETTE`."""
    palette = np.array(PALETTE, dtype=np.uint8)
    return palette[np.asarray(class_map, np.int64) % len(palette)]

"""Figures for segmentation results: coloured error maps, overlays and set-level plots (§9).

Arrays follow the toolkit conventions (masks bool ``[H, W]``, images float ``[H, W]`` or
``[H, W, 3]`` in [0, 1]); RGB outputs are ``uint8 [H, W, 3]``. Plots are drawn with the Agg
canvas through :class:`matplotlib.figure.Figure` (no ``pyplot`` state and no change of the
global backend, so importing this module is safe in notebooks and on headless servers) and
every file is written atomically with :func:`retinaseg.utils.atomic.atomic_path`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from numpy.typing import ArrayLike, NDArray

from retinaseg.errors import RetinasegError
from retinaseg.evaluation.metrics import DEFAULT_BINS, ScoreHistogram
from retinaseg.utils.atomic import atomic_path

RGB = tuple[int, int, int]

PALETTES: dict[str, dict[str, RGB]] = {
    # TP green, FP red, FN blue: the colours used in most vessel-segmentation papers.
    "classic": {"tp": (0, 255, 0), "fp": (255, 0, 0), "fn": (0, 0, 255), "tn": (0, 0, 0),
                "outside": (64, 64, 64)},
    # Okabe–Ito colour-blind-safe set: TP blue, FP orange, FN reddish purple.
    "colorblind": {"tp": (0, 114, 178), "fp": (230, 159, 0), "fn": (204, 121, 167),
                   "tn": (0, 0, 0), "outside": (64, 64, 64)},
}
"""Error-map colours (RGB uint8) per palette name; keys ``tp fp fn tn outside``."""


def _bool(mask: ArrayLike) -> NDArray[np.bool_]:
    arr = np.asarray(mask)
    return arr if arr.dtype == bool else arr > 0


def error_map(
    pred: ArrayLike, gt: ArrayLike, fov: ArrayLike | None = None, palette: str = "classic"
) -> NDArray[np.uint8]:
    """Colour each pixel by its confusion class.

    Args:
        pred: bool ``[H, W]`` prediction; gt: bool ``[H, W]``; fov: optional bool ``[H, W]``.
        palette: ``"classic"`` (TP green, FP red, FN blue, TN black) or ``"colorblind"``
            (Okabe–Ito: TP blue (0,114,178), FP orange (230,159,0), FN reddish purple
            (204,121,167), TN black); outside the FOV is dark grey (64,64,64) in both.

    Returns:
        uint8 ``[H, W, 3]`` RGB image.
    """
    if palette not in PALETTES:
        raise ValueError(f"palette must be one of {', '.join(PALETTES)}, got {palette!r}")
    p, g = _bool(pred), _bool(gt)
    if p.shape != g.shape or p.ndim != 2 or (fov is not None and np.shape(fov) != p.shape):
        raise ValueError(f"error_map needs 2D masks of one shape, got {p.shape} and {g.shape}")
    colours = PALETTES[palette]
    # class code per pixel: 0 TN, 1 FP, 2 FN, 3 TP, +4 outside the FOV; one table look-up
    code = p.view(np.uint8) | (g.view(np.uint8) << 1)
    if fov is not None:
        code |= (~_bool(fov)).view(np.uint8) << 2
    table = np.array([colours[k] for k in ("tn", "fp", "fn", "tp")]
                     + [colours["outside"]] * 4, dtype=np.uint8)
    return table[code]


def _rgb_source(image: ArrayLike) -> NDArray:
    """Image ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` (uint8 or float in [0, 1]), unconverted."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise ValueError(f"overlay needs an [H, W] or [H, W, 3] image, got shape {np.shape(image)}")
    return arr


def _rgb_float_block(block: NDArray) -> NDArray[np.float32]:
    """Rows of an image from :func:`_rgb_source` → float32 RGB ``[h, W, 3]`` in [0, 1]."""
    if block.dtype == np.uint8:
        img = block.astype(np.float32) / np.float32(255.0)
    else:
        img = np.clip(block.astype(np.float32), 0.0, 1.0)
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img


OVERLAY_BLOCK_PIXELS = 1 << 20
"""Pixels converted to float at a time by :func:`overlay` (bounds its extra memory, ~30 MB)."""


def overlay(
    image: ArrayLike, mask: ArrayLike, color: RGB = (255, 0, 0), alpha: float = 0.5
) -> NDArray[np.uint8]:
    """Blend ``color`` over ``image`` where ``mask`` is True: ``(1-alpha)·image + alpha·color``.

    Works through the image in blocks of rows, so an 8192 × 8192 image needs little more
    memory than its uint8 result.

    Args:
        image: ``[H, W]`` grey or ``[H, W, 3]`` RGB, float in [0, 1] or uint8.
        mask: bool ``[H, W]``.
        color: RGB in 0–255.
        alpha: opacity of the colour, in [0, 1].

    Returns:
        uint8 ``[H, W, 3]``.
    """
    src = _rgb_source(image)
    m = _bool(mask)
    if m.shape != src.shape[:2]:
        raise ValueError(f"overlay: mask shape {m.shape} does not match image {src.shape[:2]}")
    col = np.asarray(color, dtype=np.float32) / np.float32(255.0)
    out = np.empty((*m.shape, 3), dtype=np.uint8)
    rows = max(1, OVERLAY_BLOCK_PIXELS // max(1, m.shape[1]))
    for r0 in range(0, m.shape[0], rows):
        img, bm = _rgb_float_block(src[r0:r0 + rows]), m[r0:r0 + rows]
        img[bm] = (1.0 - alpha) * img[bm] + alpha * col
        img *= np.float32(255.0)
        out[r0:r0 + rows] = np.round(img)
    return out


def _save(fig: Figure, path: str | os.PathLike) -> None:
    """Render ``fig`` with Agg and write it atomically (format from the suffix of ``path``)."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")


def plot_confusion_matrix(
    counts: Mapping[str, int], path: str | os.PathLike, title: str = "Confusion matrix"
) -> None:
    """2×2 confusion matrix (rows = GT, columns = prediction; background first, then vessel).

    Each cell shows the pixel count and the row-normalised percentage (so the vessel row shows
    sensitivity / miss rate and the background row specificity / false-positive rate).

    Args:
        counts: ``{"tp", "fp", "fn", "tn"}`` (see ``metrics.confusion_counts``).
        path: output image file (PNG by suffix).
        title: figure title.
    """
    mat = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]], dtype=np.float64)
    rows = mat.sum(axis=1, keepdims=True)
    pct = np.divide(mat, rows, out=np.full_like(mat, np.nan), where=rows > 0) * 100.0
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.add_subplot()
    ax.imshow(np.nan_to_num(pct), cmap="Blues", vmin=0, vmax=100)
    for (i, j), n in np.ndenumerate(mat):
        text = f"{int(n):,}\n({pct[i, j]:.1f}%)" if not math.isnan(pct[i, j]) else f"{int(n):,}"
        ax.text(j, i, text, ha="center", va="center",
                color="white" if pct[i, j] > 50 else "black")
    labels = ["background", "vessel"]
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels)
    ax.set(xlabel="prediction", ylabel="ground truth", title=title)
    _save(fig, path)


def plot_roc_pr(
    probs: Sequence[ArrayLike],
    gts: Sequence[ArrayLike],
    fovs: Sequence[ArrayLike] | None,
    path: str | os.PathLike,
    bins: int = DEFAULT_BINS,
) -> None:
    """ROC (left) and precision–recall (right) curves of all pixels pooled inside the FOVs.

    The pixels are counted into a :class:`~retinaseg.evaluation.metrics.ScoreHistogram`
    (``bins`` equal bins over [0, 1]) one image at a time, so memory does not grow with the
    number of images; see :func:`plot_roc_pr_histogram`.

    Args:
        probs: list of float ``[H, W]``; gts: list of bool ``[H, W]``; fovs: list of bool
            ``[H, W]`` or None; path: output image file.
    """
    if len(probs) != len(gts) or (fovs is not None and len(fovs) != len(probs)):
        raise ValueError("probs, gts and fovs must have the same length")
    hist = ScoreHistogram(bins)
    for i, (prob, gt) in enumerate(zip(probs, gts, strict=True)):
        hist.add(prob, gt, None if fovs is None else fovs[i])
    plot_roc_pr_histogram(hist, path)


def plot_roc_pr_histogram(hist: ScoreHistogram, path: str | os.PathLike) -> None:
    """ROC (left) and precision–recall (right) curves of a pooled score histogram.

    The legends give the histogram AUC and AP (bins as tied scores; the AUC is within
    ``hist.auc_error_bound()`` of the exact one); the PR curve is a step curve whose area is
    the AP.
    """
    fpr, tpr, _ = hist.roc_curve()
    prec, rec, _ = hist.pr_curve()
    fig = Figure(figsize=(9, 4))
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.plot(fpr, tpr, label=f"AUC = {hist.auc():.4f}")
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_pr.plot(rec, prec, drawstyle="steps-pre", label=f"AP = {hist.average_precision():.4f}")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision–recall")
    for ax in (ax_roc, ax_pr):
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax_roc else "lower left")
    _save(fig, path)


def _read_log(csv_path: str | os.PathLike) -> dict[str, NDArray[np.float64]]:
    """Numeric columns of a training log; empty or non-numeric cells become NaN."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "epoch" not in rows[0]:
        raise RetinasegError(f"training log {csv_path} needs a header with an 'epoch' column "
                             "and at least one row")

    def num(v: str | None) -> float:
        try:
            return float(v) if v not in (None, "") else math.nan
        except ValueError:
            return math.nan

    return {k: np.array([num(r.get(k)) for r in rows]) for k in rows[0] if k is not None}


def plot_training_curves(csv_path: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Plot a training log: losses (left panel, learning rate on a log twin axis if present)
    and the other metrics, e.g. ``val_dice`` (right panel), against ``epoch``.

    Args:
        csv_path: CSV with an ``epoch`` column and any numeric columns; names containing
            ``loss`` go to the left panel, ``lr`` to the twin axis; ``time``, ``seconds`` and
            names ending ``_time``/``_s`` are ignored; everything else goes to the right panel.
        out_png: output image file.
    """
    cols = _read_log(csv_path)
    epoch = cols.pop("epoch")
    lr = cols.pop("lr", None)
    skip = [k for k in cols if k in ("time", "seconds") or k.endswith(("_time", "_s"))]
    losses = {k: v for k, v in cols.items() if "loss" in k and k not in skip}
    others = {k: v for k, v in cols.items() if k not in losses and k not in skip}
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_met = fig.subplots(1, 2)
    lines = [ax_loss.plot(epoch, v, marker=".", label=k)[0] for k, v in losses.items()]
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    if lr is not None and np.isfinite(lr).any():
        lines += _plot_lr(ax_loss, epoch, lr)
    for name, vals in others.items():
        ax_met.plot(epoch, vals, marker=".", label=name)
    ax_met.set(xlabel="epoch", ylabel="value", title="Metrics")
    ax_loss.grid(alpha=0.3)
    ax_met.grid(alpha=0.3)
    if lines:
        ax_loss.legend(handles=lines, loc="best")
    if others:
        ax_met.legend(loc="best")
    _save(fig, out_png)


def _plot_lr(ax: Axes, epoch: NDArray[np.float64], lr: NDArray[np.float64]) -> list[Line2D]:
    """Learning rate on a twin y axis of ``ax`` (log scale when positive); returns its line."""
    ax_lr = ax.twinx()
    line = ax_lr.plot(epoch, lr, color="grey", ls="--", label="lr")
    ax_lr.set_yscale("log" if np.nanmin(lr) > 0 else "linear")
    ax_lr.set_ylabel("learning rate")
    return line


__all__ = [
    "PALETTES", "error_map", "overlay", "plot_confusion_matrix", "plot_roc_pr",
    "plot_roc_pr_histogram",
    "plot_training_curves",
]

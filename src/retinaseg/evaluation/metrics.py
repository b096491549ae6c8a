"""Segmentation metrics for binary vessel masks (reference §9, "Metrics").

NumPy arrays in, Python floats out. Masks are ``bool`` ``[H, W]`` (some functions also accept
``[D, H, W]``), probability maps are ``float`` ``[H, W]`` in [0, 1].

Conventions
-----------
* Binarisation: ``pred = prob > threshold`` (strict, as S3-OCTA's ``p > 0.8`` and SAM-OCTA2's
  ``logit > 0``); see :func:`binarize`.
* FOV: when a ``fov`` mask is given, only pixels inside it are counted; topology and distance
  metrics use ``pred & fov`` and ``gt & fov``.
* Zero denominators (see :func:`threshold_metrics`): Dice and IoU are 1.0 when prediction and
  GT are both empty (perfect agreement) and 0.0 when exactly one is empty; sensitivity is NaN
  when the GT has no positives, specificity NaN when it has no negatives, precision and FDR NaN
  when nothing is predicted positive; balanced accuracy and G-mean are NaN whenever sensitivity
  or specificity is; Cohen's kappa is NaN when p_e = 1 (prediction and GT both all background,
  or both all vessel).
* Thick / thin Dice (:func:`thick_thin_dice`, the split the ROSE paper reports for OCTA-Net):
  NaN for a class with no GT pixels in the image (its partition is then empty by construction).
* AUC / AP are NaN when only one class is present. HD95 is NaN when either mask is empty (§9
  recommends NaN rather than S3-OCTA's score of 0).
* Betti errors are an addition of this toolkit (§9 marks them *(inferred)*; no seed computes them).
* The edge-placement figures (:func:`boundary_distance`, :func:`error_profile`,
  :func:`relaxed_f1`) are additions of this toolkit too; no seed reports them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import euler_number
from skimage.morphology import skeletonize

from retinaseg.measure.centerline import centerline

METRIC_KEYS: tuple[str, ...] = (
    "dice", "iou", "acc", "sen", "spe", "bacc", "precision",
    "auc", "ap", "cldice", "betti0_error", "betti1_error", "hd95", "gmean", "kappa", "fdr",
)
"""Keys of :func:`image_metrics` and :func:`pooled_metrics`, in this order (G-mean, kappa and
FDR, the figures OCTA-Net reports, were added last so older key positions are unchanged)."""

THRESHOLD_KEYS: tuple[str, ...] = ("dice", "iou", "acc", "sen", "spe", "bacc", "precision",
                                   "gmean", "kappa", "fdr")
"""Keys of :func:`threshold_metrics`."""

LOWER_IS_BETTER: frozenset[str] = frozenset({"fdr"})
"""Confusion metrics where smaller is better; :func:`choose_threshold` refuses to maximise them."""

THICK_THIN_KEYS: tuple[str, ...] = ("dice_thick", "dice_thin")
"""Keys of :func:`thick_thin_dice`."""

DEFAULT_THICK_WIDTH_PX: float = 3.0
"""Default ``width_px`` of :func:`split_thick_thin`: vessels at least 3 px wide are thick."""

DEFAULT_GRID: NDArray[np.float64] = np.linspace(0.05, 0.95, 91)
"""Default candidate thresholds of :func:`choose_threshold` (step 0.01)."""

NAN = float("nan")


# --------------------------------------------------------------------------- helpers


def _as_bool(mask: ArrayLike) -> NDArray[np.bool_]:
    """``mask`` as a bool array (non-bool input: ``> 0``)."""
    arr = np.asarray(mask)
    return arr if arr.dtype == bool else arr > 0


def _check_same_shape(**arrays: np.ndarray | None) -> None:
    shapes = {k: np.shape(v) for k, v in arrays.items() if v is not None}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"arrays must have the same shape, got {listed}")


def _div(num: float, den: float) -> float:
    """``num / den`` as a float, NaN when ``den == 0``."""
    return float(num) / float(den) if den else NAN


def binarize(prob: ArrayLike, threshold: float) -> NDArray[np.bool_]:
    """Binary prediction ``prob > threshold`` (bool, same shape as ``prob``)."""
    return np.asarray(prob) > threshold


def _in_fov(
    prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Flatten ``prob`` (float64) and ``gt`` (bool) to 1-D, keeping only pixels inside ``fov``."""
    p = np.asarray(prob, dtype=np.float64)
    g = _as_bool(gt)
    f = None if fov is None else _as_bool(fov)
    _check_same_shape(prob=p, gt=g, fov=f)
    if f is None:
        return p.ravel(), g.ravel()
    return p[f], g[f]


def _masked(
    pred: ArrayLike, gt: ArrayLike, fov: ArrayLike | None
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """``(pred & fov, gt & fov)`` as bool arrays (unchanged when ``fov`` is None)."""
    p, g = _as_bool(pred), _as_bool(gt)
    f = None if fov is None else _as_bool(fov)
    _check_same_shape(pred=p, gt=g, fov=f)
    return (p, g) if f is None else (p & f, g & f)


# --------------------------------------------------------------------------- confusion-based


def confusion_counts(
    pred: ArrayLike, gt: ArrayLike, fov: ArrayLike | None = None
) -> dict[str, int]:
    """Pixel counts ``{"tp", "fp", "fn", "tn"}`` of ``pred`` vs ``gt`` inside ``fov``.

    Args:
        pred: bool ``[H, W]`` (or any shape) binary prediction.
        gt: bool, same shape, ground truth.
        fov: optional bool, same shape; pixels outside it are ignored.
    """
    p, g = _as_bool(pred), _as_bool(gt)
    f = None if fov is None else _as_bool(fov)
    _check_same_shape(pred=p, gt=g, fov=f)
    n = p.size if f is None else np.count_nonzero(f)
    if f is not None:
        p, g = p & f, g & f
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(g)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(n) - tp - fp - fn}


def threshold_metrics(counts: Mapping[str, int]) -> dict[str, float]:
    """Dice, IoU, accuracy, sensitivity, specificity, balanced accuracy, precision, G-mean,
    Cohen's kappa and false discovery rate (§9; the last three are OCTA-Net's).

    Formulas: Dice = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN), Acc = (TP+TN)/N,
    Sen = TP/(TP+FN), Spe = TN/(TN+FP), BAcc = (Sen+Spe)/2, Precision = TP/(TP+FP),
    G-mean = √(Sen·Spe), FDR = FP/(TP+FP) (= 1 − Precision),
    Kappa = (p_o − p_e)/(1 − p_e) with p_o = (TP+TN)/N and
    p_e = [(TP+FP)(TP+FN) + (FN+TN)(FP+TN)]/N², evaluated exactly on integers as
    (N·(TP+TN) − S)/(N² − S), S = N²·p_e.

    Zero denominators: Dice = IoU = 1.0 when TP+FP+FN = 0 (prediction and GT both empty:
    perfect agreement; so Dice stays symmetric and in [0, 1] and IoU = D/(2-D) always holds);
    Sen NaN when the GT is empty; Spe NaN when there are no GT negatives; Precision and FDR NaN
    when no pixel is predicted positive; BAcc and G-mean NaN if Sen or Spe is NaN; Acc NaN when
    N = 0; Kappa NaN when p_e = 1 (prediction and GT agree on a single class for every pixel,
    e.g. both empty) or N = 0. OCTA-Net adds 1e-12 to denominators instead, which gives 0 where
    we give NaN; ``summarise`` skips NaN, so an undefined value never pulls a mean down.

    Args:
        counts: mapping with integer keys ``tp fp fn tn`` (see :func:`confusion_counts`).

    Returns:
        dict with keys :data:`THRESHOLD_KEYS`, float values.
    """
    tp, fp, fn, tn = (int(counts[k]) for k in ("tp", "fp", "fn", "tn"))
    errors = fp + fn
    sen, spe = _div(tp, tp + fn), _div(tn, tn + fp)
    n = tp + fp + fn + tn
    chance = (tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)  # N² · p_e, exact integers
    return {
        "dice": 1.0 if tp + errors == 0 else 2.0 * tp / (2 * tp + errors),
        "iou": 1.0 if tp + errors == 0 else tp / (tp + errors),
        "acc": _div(tp + tn, tp + fp + fn + tn),
        "sen": sen,
        "spe": spe,
        "bacc": (sen + spe) / 2.0,
        "precision": _div(tp, tp + fp),
        "gmean": float(np.sqrt(sen * spe)),
        "kappa": _div(n * (tp + tn) - chance, n * n - chance),
        "fdr": _div(fp, tp + fp),
    }


# --------------------------------------------------------------------------- ranking metrics


def _scores_by_class(
    prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None
) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    """Scores of the positive and of the negative pixels (inside ``fov``), each sorted ascending.

    float32 maps stay float32 (exact: the ordering and ties are those of the float64 values),
    anything else becomes float64. Two sorts of the split arrays are much faster than one
    ``argsort`` of all pixels (NumPy's SIMD sort on plain values).
    """
    arr = np.asarray(prob)
    p = arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)
    g = _as_bool(gt)
    f = None if fov is None else _as_bool(fov)
    _check_same_shape(prob=p, gt=g, fov=f)
    pos, neg = (g, ~g) if f is None else (g & f, f & ~g)
    return np.sort(p[pos], axis=None), np.sort(p[neg], axis=None)


def _auc_sorted(pos: NDArray[np.floating], neg: NDArray[np.floating]) -> float:
    """Mann–Whitney AUC of sorted positive and negative scores (ties count ½), exact integers:
    Σ over positives of (#negatives below + #negatives equal / 2), over n₊·n₋."""
    if pos.size == 0 or neg.size == 0:
        return NAN
    below = np.searchsorted(neg, pos, side="left").sum(dtype=np.int64)
    not_above = np.searchsorted(neg, pos, side="right").sum(dtype=np.int64)
    return (int(below) + int(not_above)) / (2.0 * pos.size * neg.size)


def _ap_sorted(pos: NDArray[np.floating], neg: NDArray[np.floating]) -> float:
    """Step-wise AP of sorted positive and negative scores: Σ over the distinct positive scores
    s (each a threshold ``>= s``) of (positives at s / n₊) · precision(>= s)."""
    if pos.size == 0:
        return NAN
    starts = np.r_[0, np.flatnonzero(np.diff(pos)) + 1]
    values = pos[starts]
    at = np.diff(np.r_[starts, pos.size])
    tp = pos.size - starts
    fp = neg.size - np.searchsorted(neg, values, side="left")
    return float(np.sum(at / pos.size * (tp / (tp + fp))))


def ranking_metrics(prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None = None
                    ) -> dict[str, float]:
    """``{"auc": roc_auc, "ap": average_precision}`` of one image from one pair of sorts.

    Same values as :func:`roc_auc` and :func:`average_precision` (same arguments), with half the
    work; memory: one copy of the pixels inside ``fov``.
    """
    pos, neg = _scores_by_class(prob, gt, fov)
    return {"auc": _auc_sorted(pos, neg), "ap": _ap_sorted(pos, neg)}


def roc_auc(prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None = None) -> float:
    """Exact area under the ROC curve via the Mann–Whitney U statistic.

    AUC = U / (n₊·n₋), U = Σ over positive pixels of (#negatives with a lower score +
    ½·#negatives with the same score): tied scores count ½, as the trapezoidal ROC area. Counted
    exactly in integers from the sorted scores of each class. NaN if a class is absent.

    Args:
        prob: float ``[H, W]`` scores (probabilities).
        gt: bool ``[H, W]``.
        fov: optional bool ``[H, W]``; only pixels inside are used.
    """
    return _auc_sorted(*_scores_by_class(prob, gt, fov))


def _binary_curve(
    prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Cumulative ``(tps, fps, thresholds)`` at each distinct score, scores descending.

    ``tps[i]``/``fps[i]`` count pixels with score ``>= thresholds[i]`` (ties grouped).
    """
    p, g = _in_fov(prob, gt, fov)
    order = np.argsort(-p, kind="mergesort")
    p, g = p[order], g[order]
    last = np.r_[np.flatnonzero(np.diff(p)), p.size - 1] if p.size else np.array([], int)
    tps = np.cumsum(g, dtype=np.float64)[last]
    fps = (last + 1).astype(np.float64) - tps
    return tps, fps, p[last]


def average_precision(prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None = None) -> float:
    """Step-wise average precision AP = Σₙ (Rₙ − Rₙ₋₁)·Pₙ (scikit-learn convention).

    The sum runs over the distinct scores in decreasing order (tied scores form one threshold),
    with R₀ = 0; no interpolation. Only scores held by a positive pixel move the recall, so the
    sum runs over those, computed from the sorted scores of each class. NaN when the GT has no
    positives (scikit-learn returns 0).

    Args:
        prob: float ``[H, W]`` scores; gt: bool ``[H, W]``; fov: optional bool ``[H, W]``.
    """
    return _ap_sorted(*_scores_by_class(prob, gt, fov))


def _subsample(n: int, max_points: int) -> NDArray[np.intp]:
    """At most ``max_points`` evenly spaced indices of ``range(n)``, first and last included."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(max_points, 2)).round().astype(np.intp))


def roc_curve(
    prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None = None, max_points: int = 1000
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """ROC curve for plotting: ``(fpr, tpr, thresholds)``, 1-D, fpr increasing.

    Starts at (0, 0) with threshold +inf and ends at (1, 1); a pixel is positive at threshold t
    when its score is ``>= t``. Subsampled to at most ``max_points`` points (endpoints kept).
    Rates are NaN when a class is absent.
    """
    tps, fps, thr = _binary_curve(prob, gt, fov)
    tps, fps, thr = np.r_[0.0, tps], np.r_[0.0, fps], np.r_[np.inf, thr]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tps / tps[-1], fps / fps[-1]
    keep = _subsample(tpr.size, max_points)
    return fpr[keep], tpr[keep], thr[keep]


def pr_curve(
    prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None = None, max_points: int = 1000
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Precision–recall curve for plotting: ``(precision, recall, thresholds)``, recall increasing.

    Starts at (recall 0, precision 1) with threshold +inf; the step curve drawn with
    ``drawstyle="steps-pre"`` has area :func:`average_precision`. Subsampled to at most
    ``max_points`` points (endpoints kept). Recall is NaN when the GT has no positives.
    """
    tps, fps, thr = _binary_curve(prob, gt, fov)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.r_[1.0, tps / (tps + fps)]
        recall = np.r_[0.0, tps / tps[-1]] if tps.size else np.array([0.0])
    thr = np.r_[np.inf, thr]
    keep = _subsample(recall.size, max_points)
    return precision[keep], recall[keep], thr[keep]


DEFAULT_BINS = 4096
"""Bins of :class:`ScoreHistogram` over [0, 1] (width 1/4096 ≈ 0.00024)."""


class ScoreHistogram:
    """Pooled ROC/PR statistics of any number of images in constant memory.

    Counts positive and negative pixels (inside the FOVs) in ``bins`` equal bins over [0, 1]:
    a score ``s`` goes to bin ``min(floor(s·bins), bins − 1)`` (scores are clipped to [0, 1]).
    Every bin edge ``k / bins`` is a threshold (a pixel is positive when its bin is ``>= k``),
    so pixels sharing a bin count as tied. Memory: ``2 × bins`` int64, whatever the dataset.

    The histogram AUC differs from the exact one (:func:`roc_auc` of all pixels concatenated)
    only through positive–negative pairs in the same bin, which the exact AUC scores 0, ½ or 1
    and the histogram ½; :meth:`auc_error_bound` is that worst case, ½·Σₖ n₊ₖ·n₋ₖ / (n₊·n₋).
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if int(bins) < 1:
            raise ValueError(f"ScoreHistogram needs at least one bin, got {bins}")
        self.bins = int(bins)
        self.counts = np.zeros((2, self.bins), dtype=np.int64)
        """``[2, bins]``: row 0 negative pixels, row 1 positive pixels, per bin."""

    def add(self, prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None = None) -> None:
        """Count the pixels of one image: ``prob`` float ``[H, W]`` in [0, 1], ``gt`` bool, same
        shape, ``fov`` optional bool (pixels outside are ignored)."""
        p = np.asarray(prob)
        g = _as_bool(gt)
        f = None if fov is None else _as_bool(fov)
        _check_same_shape(prob=p, gt=g, fov=f)
        if f is not None:
            p, g = p[f], g[f]
        k = np.clip(np.asarray(p, dtype=np.float64).ravel() * self.bins, 0, self.bins - 1)
        k = k.astype(np.intp)
        g = g.ravel()
        self.counts[1] += np.bincount(k[g], minlength=self.bins)
        self.counts[0] += np.bincount(k[~g], minlength=self.bins)

    def _cumulative(self) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                   NDArray[np.float64]]:
        """``(tps, fps, thresholds)``: pixels with score ``>= thresholds[i]`` (bin edges,
        descending), as :func:`_binary_curve` gives them for exact scores."""
        neg, pos = self.counts[:, ::-1].astype(np.float64)
        thr = np.arange(self.bins - 1, -1, -1, dtype=np.float64) / self.bins
        return np.cumsum(pos), np.cumsum(neg), thr

    def auc(self) -> float:
        """Trapezoidal ROC area over the bin edges (ties within a bin count ½); NaN when a
        class has no pixels."""
        neg, pos = self.counts.astype(np.float64)
        n_neg, n_pos = neg.sum(), pos.sum()
        if n_neg == 0 or n_pos == 0:
            return NAN
        below = np.cumsum(neg) - neg  # negatives in lower bins
        return float(np.sum(pos * (below + 0.5 * neg)) / (n_pos * n_neg))

    def auc_error_bound(self) -> float:
        """Largest possible ``|auc() − exact AUC|``: ½·Σₖ n₊ₖ·n₋ₖ / (n₊·n₋) (NaN as :meth:`auc`)."""
        neg, pos = self.counts.astype(np.float64)
        if neg.sum() == 0 or pos.sum() == 0:
            return NAN
        return float(0.5 * np.sum(pos * neg) / (pos.sum() * neg.sum()))

    def average_precision(self) -> float:
        """Step-wise AP over the bin edges (as :func:`average_precision`, bins as tied scores);
        NaN when there are no positives."""
        tps, fps, _ = self._cumulative()
        if tps.size == 0 or tps[-1] == 0:
            return NAN
        step = np.diff(np.r_[0.0, tps]) / tps[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(step > 0, tps / (tps + fps), 0.0)
        return float(np.sum(step * precision))

    def roc_curve(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """``(fpr, tpr, thresholds)`` as :func:`roc_curve`: from (0, 0) at +inf to (1, 1),
        one point per bin edge (``bins + 1`` points)."""
        tps, fps, thr = self._cumulative()
        tps, fps, thr = np.r_[0.0, tps], np.r_[0.0, fps], np.r_[np.inf, thr]
        with np.errstate(invalid="ignore", divide="ignore"):
            return fps / fps[-1], tps / tps[-1], thr

    def pr_curve(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """``(precision, recall, thresholds)`` as :func:`pr_curve`: from (recall 0, precision
        1) at +inf, one point per non-empty bin edge."""
        tps, fps, thr = self._cumulative()
        keep = (tps + fps) > 0
        tps, fps, thr = tps[keep], fps[keep], thr[keep]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.r_[1.0, tps / (tps + fps)]
            recall = np.r_[0.0, tps / tps[-1]] if tps.size else np.array([0.0])
        return precision, recall, np.r_[np.inf, thr]


# --------------------------------------------------------------------------- topology


def _skeleton(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """skimage skeleton (2D or 3D); a non-empty mask with an empty skeleton keeps itself.

    Thinned on the mask's bounding box only: skimage's thinning decides each pixel from its
    3×3 (3×3×3) neighbourhood and pads the array with background, which is what surrounds the
    box, so the skeleton is the one of the whole array (checked in the tests)."""
    if not mask.any():
        return mask
    box = _bbox(mask)
    skel = np.zeros(mask.shape, bool)
    skel[box] = skeletonize(np.ascontiguousarray(mask[box])).astype(bool)
    return skel if skel.any() else mask


def _cldice_parts(pred: NDArray[np.bool_], gt: NDArray[np.bool_],
                  sp: NDArray[np.bool_] | None = None,
                  sg: NDArray[np.bool_] | None = None) -> NDArray[np.int64]:
    """``[|P∩skel(G)|, |skel(G)|, |G∩skel(P)|, |skel(P)|, |P|, |G|]`` as int64 (``sp`` / ``sg``:
    the skeletons of ``pred`` / ``gt`` when already computed by :func:`_skeleton`)."""
    sg = _skeleton(gt) if sg is None else sg
    sp = _skeleton(pred) if sp is None else sp
    return np.array([
        np.count_nonzero(pred & sg), np.count_nonzero(sg),
        np.count_nonzero(gt & sp), np.count_nonzero(sp),
        np.count_nonzero(pred), np.count_nonzero(gt),
    ], dtype=np.int64)


def _cldice_from_parts(parts: NDArray[np.int64]) -> float:
    p_in_sg, sg, g_in_sp, sp, n_pred, n_gt = (int(v) for v in parts)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    a, b = p_in_sg / sg, g_in_sp / sp
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


def cldice(pred: ArrayLike, gt: ArrayLike) -> float:
    """Centerline Dice, clDice = 2·a·b/(a+b), a = |P∩skel(G)|/|skel(G)|, b = |G∩skel(P)|/|skel(P)|.

    Skeletons by ``skimage.morphology.skeletonize`` (2D ``[H, W]`` or 3D ``[D, H, W]``).
    Both masks empty → 1.0; exactly one empty → 0.0.
    """
    p, g = _masked(pred, gt, None)
    return _cldice_from_parts(_cldice_parts(p, g))


def _structure(ndim: int, connectivity: int) -> NDArray[np.bool_]:
    return ndimage.generate_binary_structure(ndim, connectivity)


def _n_components(mask: NDArray[np.bool_], connectivity: int) -> int:
    return int(ndimage.label(mask, structure=_structure(mask.ndim, connectivity))[1])


def component_count(mask: ArrayLike) -> int:
    """Number of foreground components, 8-connected in 2D and 26-connected in 3D."""
    m = _as_bool(mask)
    return _n_components(m, m.ndim)


def _bounded_background(mask: NDArray[np.bool_]) -> int:
    """Background components (face-connected: 4 in 2D, 6 in 3D) not reaching the array border."""
    padded = np.pad(~mask, 1, constant_values=True)
    return _n_components(padded, 1) - 1


def betti_numbers(mask: ArrayLike, ndim: int | None = None) -> tuple[int, ...]:
    """Betti numbers of a binary mask.

    2D ``[H, W]`` → ``(b0, b1)``: b0 = 8-connected foreground components; b1 = holes = bounded
    4-connected components of the background (4-connected background is the dual of 8-connected
    foreground); the mask is padded with a 1-px background border and b1 = #bg components − 1.

    3D ``[D, H, W]`` → ``(b0, b1, b2)``: b0 = 26-connected components; b2 = cavities = bounded
    6-connected background components; b1 from the Euler characteristic χ = b0 − b1 + b2 with
    χ from ``skimage.measure.euler_number(connectivity=3)``.

    Args:
        mask: bool array, 2D or 3D.
        ndim: expected dimensionality; None infers it from ``mask`` (a mismatch raises).
    """
    m = _as_bool(mask)
    if ndim is not None and ndim != m.ndim:
        raise ValueError(f"betti_numbers: ndim={ndim} but the mask has shape {m.shape}")
    if m.ndim not in (2, 3):
        raise ValueError(f"betti_numbers needs a 2D or 3D mask, got shape {m.shape}")
    b0 = _n_components(m, m.ndim)
    holes = _bounded_background(m)
    if m.ndim == 2:
        return b0, holes
    chi = int(euler_number(np.pad(m, 1), connectivity=3))
    return b0, b0 + holes - chi, holes


def betti_errors(pred: ArrayLike, gt: ArrayLike) -> dict[str, float]:
    """``{"betti0_error": |b0(P)−b0(G)|, "betti1_error": |b1(P)−b1(G)|}`` on whole masks.

    3D masks also give ``"betti2_error"``.
    """
    p, g = _masked(pred, gt, None)
    bp, bg = betti_numbers(p), betti_numbers(g)
    pairs = enumerate(zip(bp, bg, strict=True))
    return {f"betti{i}_error": float(abs(a - b)) for i, (a, b) in pairs}


def betti_errors_patches(
    pred: ArrayLike, gt: ArrayLike, patch: int = 64, n: int = 100, seed: int = 0
) -> dict[str, float]:
    """Mean Betti errors over ``n`` random ``patch``-sized windows (Hu et al. 2019; clDice paper).

    Topology papers report the Betti error as the mean of ``|b_i(P) − b_i(G)|`` over randomly
    placed patches (64×64 in 2D) because whole-image counts are dominated by a few large
    structures. Window corners are uniform over valid positions (``numpy`` generator ``seed``);
    a window side is clipped to the image size. Each window is treated as its own image (its
    border is the background border), identically for prediction and GT.

    Returns:
        dict ``betti0_error``, ``betti1_error`` (and ``betti2_error`` for 3D), float means.
    """
    p, g = _masked(pred, gt, None)
    rng = np.random.default_rng(seed)
    sizes = [min(patch, s) for s in p.shape]
    corners = [[int(rng.integers(0, s - w + 1)) for s, w in zip(p.shape, sizes, strict=True)]
               for _ in range(n)]
    if n <= 0:
        return {}
    if p.ndim == 2:
        (p0, p1), (g0, g1) = _window_betti_2d(p, corners, sizes), _window_betti_2d(g, corners,
                                                                                   sizes)
        return {"betti0_error": float(np.abs(p0 - g0).sum()) / n,
                "betti1_error": float(np.abs(p1 - g1).sum()) / n}
    totals: dict[str, float] = {}
    for corner in corners:
        window = tuple(slice(c, c + w) for c, w in zip(corner, sizes, strict=True))
        for key, val in betti_errors(p[window], g[window]).items():
            totals[key] = totals.get(key, 0.0) + val
    return {k: v / n for k, v in totals.items()}


def _window_betti_2d(mask: NDArray[np.bool_], corners: Sequence[Sequence[int]],
                     sizes: Sequence[int]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(b0, b1)`` (:func:`betti_numbers`) of each window ``mask[r:r+h, c:c+w]`` of a 2D mask,
    ``[n]`` int64 each, from two labellings of one mosaic instead of 2·n small ones.

    The windows are laid out on a grid with one background pixel between and around them. A
    foreground pixel of one window is then never 8-adjacent to one of another, so every
    8-connected component lies in one window (b0). Background touching a window's border
    joins the surrounding lines, which play the role of :func:`_bounded_background`'s padding,
    so the 4-connected background components that lie inside a window are its holes (b1).
    """
    n, (h, w) = len(corners), sizes
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    mosaic = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1), bool)
    owner = np.full(mosaic.shape, n, dtype=np.int64)  # n: the separating lines
    for k, (r, c) in enumerate(corners):
        top, left = 1 + (k // cols) * (h + 1), 1 + (k % cols) * (w + 1)
        mosaic[top:top + h, left:left + w] = mask[r:r + h, c:c + w]
        owner[top:top + h, left:left + w] = k

    def per_window(labels: NDArray[np.int32], n_labels: int, skip: int) -> NDArray[np.int64]:
        window_of = np.full(n_labels + 1, n, dtype=np.int64)
        hit = labels > 0
        window_of[labels[hit]] = owner[hit]
        window_of[[0, skip]] = n
        return np.bincount(window_of, minlength=n + 1)[:n].astype(np.int64)

    fg, n_fg = ndimage.label(mosaic, structure=_structure(2, 2))
    bg, n_bg = ndimage.label(~mosaic, structure=_structure(2, 1))
    return per_window(fg, n_fg, 0), per_window(bg, n_bg, int(bg[0, 0]))


def centerline_length(mask: ArrayLike, spacing: float | Sequence[float] = 1.0) -> float:
    """Length of the centerline of ``mask`` (2D or 3D), in the units of ``spacing``.

    The centerline is :func:`retinaseg.measure.centerline` (exact topology-preserving peeling,
    reference §3), the one the ``centerline`` command writes.
    Sum over every pair of 8-neighbouring (26 in 3D) skeleton pixels, each pair counted once,
    of the step length: 1 for orthogonal steps and √2 for diagonal ones (√3 for 3D corners),
    scaled by ``spacing`` (a scalar or one value per axis). A straight 10-px line gives 9.0.

    The peeling runs on the mask's bounding box, its start rounded down to even indices: a
    pixel's fate depends on its 3×3 (3×3×3) neighbourhood and on the parity of its indices
    (its subfield), both unchanged, and the pixels around the box are background, as the
    peeling's padding is; so the centerline is the same (checked in the tests).
    """
    m = _as_bool(mask)
    return _skeleton_length(_full_centerline(m), spacing)


def centerline_missed_length(pred: ArrayLike, gt: ArrayLike,
                             spacing: float | Sequence[float] = 1.0) -> float:
    """Length of the label's centerline that the prediction misses (broken centerline).

    Each step of the label's centerline (as in :func:`centerline_length`) counts by the share
    of its two pixels lying outside ``pred``: whole when both are missed, half when one is. So
    a gap of n centerline pixels in a straight vessel gives n (a 1-px break gives 1.0, a 3-px
    one 3.0) and a prediction covering the label gives 0.0. Units of ``spacing`` (px by
    default). ``pred`` and ``gt`` have the same 2D or 3D shape.
    """
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")
    return _skeleton_length(_full_centerline(g), spacing, missed=~p)


def _full_centerline(m: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """:func:`retinaseg.measure.centerline` of ``m``, peeled on its bounding box only.

    The box starts at even indices (see :func:`centerline_length`), so the centerline is the
    one of the whole array; it is placed back into an array of ``m``'s shape.
    """
    if m.ndim not in (2, 3):
        return centerline(m)  # raises its own shape error
    out = np.zeros(m.shape, dtype=bool)
    if m.any():
        box = tuple(slice(b.start - b.start % 2, b.stop) for b in _bbox(m))
        out[box] = centerline(m[box])
    return out


def _skeleton_length(skel: NDArray[np.bool_], spacing: float | Sequence[float],
                     missed: NDArray[np.bool_] | None = None) -> float:
    """Sum of the steps between 8- (26-) neighbouring pixels of ``skel``, each pair once.

    With ``missed`` (same shape) a step counts by the share of its two pixels in ``missed``.
    """
    skel = np.asarray(skel, dtype=bool)
    share = None if missed is None else np.asarray(missed, dtype=np.float64) / 2
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (skel.ndim,))
    total = 0.0
    for offset in product((-1, 0, 1), repeat=skel.ndim):
        if offset <= (0,) * skel.ndim:  # keep one of each ± pair (lexicographically positive)
            continue
        axes = list(zip(offset, skel.shape, strict=True))
        a = tuple(slice(max(0, -o), s - max(0, o)) for o, s in axes)
        b = tuple(slice(max(0, o), s - max(0, -o)) for o, s in axes)
        both = skel[a] & skel[b]
        pairs = (np.count_nonzero(both) if share is None
                 else float((share[a][both] + share[b][both]).sum()))
        total += pairs * float(np.sqrt(np.sum((np.asarray(offset) * sp) ** 2)))
    return total


# --------------------------------------------------------------------------- distances


def _shifted_or(out: NDArray[np.bool_], mask: NDArray[np.bool_], offset: Sequence[int]) -> None:
    """``out[x] |= mask[x - offset]`` wherever ``x - offset`` lies inside the array."""
    dst = tuple(slice(max(o, 0), s + min(o, 0)) for o, s in zip(offset, mask.shape, strict=True))
    src = tuple(slice(max(-o, 0), s - max(o, 0)) for o, s in zip(offset, mask.shape, strict=True))
    out[dst] |= mask[src]


def _axis_steps(ndim: int) -> list[tuple[int, ...]]:
    """The 2·ndim unit offsets of the face-connected cross."""
    return [tuple(sign if a == axis else 0 for a in range(ndim))
            for axis in range(ndim) for sign in (-1, 1)]


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Mask minus its erosion by the face-connected cross (border pixels count as surface).

    The erosion (``scipy.ndimage.binary_erosion``, outside the array = background) is written
    as the complement of the dilation of the background by the cross, from shifted views."""
    outside = ~mask
    near_bg = outside.copy()
    for step in _axis_steps(mask.ndim):
        _shifted_or(near_bg, outside, step)
    for axis in range(mask.ndim):  # pixels on the array border have background beyond it
        for end in (0, -1):
            near_bg[(slice(None),) * axis + (end,)] = True
    return mask & near_bg


def _bbox(mask: NDArray[np.bool_]) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every True pixel of a non-empty mask."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=others))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def surface_points(mask: ArrayLike, spacing: float | Sequence[float] | None = None
                   ) -> NDArray[np.float64]:
    """Coordinates ``[n, ndim]`` (rows of index · ``spacing``) of the surface pixels of a
    non-empty mask (:func:`_surface`), computed on the mask's bounding box only: the pixels
    around the box are background, as the erosion's border is, so the surface is the same."""
    m = _as_bool(mask)
    box = _bbox(m)
    pts = np.argwhere(_surface(m[box])).astype(np.float64)
    pts += np.array([b.start for b in box], dtype=np.float64)
    if spacing is not None:
        pts *= np.broadcast_to(np.asarray(spacing, dtype=np.float64), (m.ndim,))
    return pts


def hd95(
    pred: ArrayLike, gt: ArrayLike, spacing: float | Sequence[float] | None = None
) -> float:
    """95th-percentile Hausdorff distance between the surfaces of ``pred`` and ``gt`` (medpy).

    Surface = mask minus its erosion (face connectivity). Directed distances d(P→G) (each
    surface pixel of P to the nearest surface pixel of G) and d(G→P) are **pooled** and the
    95th percentile (NumPy linear interpolation) is returned — exactly
    ``medpy.metric.binary.hd95``, which takes ``percentile(hstack((d1, d2)), 95)``. The nearest
    surface pixels come from k-d trees of the surface coordinates
    (:class:`scipy.spatial.cKDTree`), not from image-sized distance transforms, so time and
    memory follow the surface length. Units: pixels, or the units of ``spacing`` (scalar or per
    axis). NaN if either mask is empty.
    """
    p, g = _masked(pred, gt, None)
    if not p.any() or not g.any():
        return NAN
    sp, sg = surface_points(p, spacing), surface_points(g, spacing)
    d_pg = cKDTree(sg).query(sp)[0]
    d_gp = cKDTree(sp).query(sg)[0]
    return float(np.percentile(np.concatenate([d_pg, d_gp]), 95))


def boundary_distance(gt: ArrayLike) -> NDArray[np.float64]:
    """Euclidean distance (px) of every pixel to the other class of ``gt``, ``[H, W]`` float.

    A vessel pixel gets its distance to the nearest background pixel and a background pixel its
    distance to the nearest vessel pixel, so the pixels on either side of a label edge are at 1.
    An empty or full ``gt`` gives ``inf`` everywhere.
    """
    g = _as_bool(gt)
    if g.all() or not g.any():
        return np.full(g.shape, np.inf)
    return np.where(g, ndimage.distance_transform_edt(g), ndimage.distance_transform_edt(~g))


def _ball(radius: float, ndim: int) -> NDArray[np.bool_]:
    """Structuring element of the offsets at Euclidean distance ``<= radius`` (px)."""
    r = int(np.floor(max(radius, 0.0)))
    grid = np.indices((2 * r + 1,) * ndim) - r
    return (grid ** 2).sum(axis=0) <= radius ** 2


_SHIFT_OFFSETS = 64
"""Balls of at most this many offsets are dilated by shifted views (one OR per offset), larger
ones by ``scipy.ndimage.binary_dilation``; both give the same pixels."""


def _within(mask: NDArray[np.bool_], radius: float) -> NDArray[np.bool_]:
    """Pixels at Euclidean distance ``<= radius`` from a True pixel of ``mask`` (the dilation
    by :func:`_ball`, outside the array = background; the same set as
    ``distance_transform_edt(~mask) <= radius``)."""
    if radius < 1:
        return mask.copy()
    ball = _ball(radius, mask.ndim)
    if ball.sum() > _SHIFT_OFFSETS:
        return ndimage.binary_dilation(mask, structure=ball)
    r = ball.shape[0] // 2
    out = mask.copy()
    for offset in np.argwhere(ball) - r:
        if offset.any():
            _shifted_or(out, mask, offset.tolist())
    return out


class _Near:
    """:func:`_within` of a mask and of its complement, each radius computed once."""

    def __init__(self, mask: NDArray[np.bool_]) -> None:
        self.mask = mask
        self._done: dict[tuple[bool, float], NDArray[np.bool_]] = {}

    def __call__(self, radius: float, complement: bool = False) -> NDArray[np.bool_]:
        """Pixels within ``radius`` of the mask (of its complement when ``complement``)."""
        key = (complement, float(radius))
        if key not in self._done:
            self._done[key] = _within(~self.mask if complement else self.mask, radius)
        return self._done[key]


def error_profile(
    pred: ArrayLike, gt: ArrayLike, bands: Sequence[float] = (1.0, 2.0)
) -> dict[str, int]:
    """Wrong pixels of ``pred`` counted by distance to the label edge (:func:`boundary_distance`).

    Returns ``{"le1": n, "le2": n, "gt2": n}`` for ``bands=(1, 2)`` (ascending): errors at
    distance ≤ 1 px (one-pixel edge placement), in (1, 2] and beyond 2 px (missed or extra
    vessel pieces). A false positive is within ``b`` of the edge when a label pixel lies within
    ``b``, a miss when a background pixel does: dilations by a disc of radius ``b``, the same
    counts as thresholding :func:`boundary_distance` without its two image-sized transforms.
    """
    p, g = _as_bool(pred), _as_bool(gt)
    _check_same_shape(pred=p, gt=g)
    return _error_profile(p, g, bands, _Near(g))


def _error_profile(p: NDArray[np.bool_], g: NDArray[np.bool_], bands: Sequence[float],
                   near_g: _Near) -> dict[str, int]:
    """:func:`error_profile` of bool masks, ``near_g`` the dilations of ``g`` (shared)."""
    fp, fn = p & ~g, g & ~p
    n_err = int(np.count_nonzero(fp)) + int(np.count_nonzero(fn))
    out, lo, below = {}, 0.0, 0
    for b in bands:
        near = int(np.count_nonzero(fp & near_g(b)) + np.count_nonzero(fn & near_g(b, True)))
        out[f"le{b:g}"] = near - below
        lo, below = b, near
    out[f"gt{lo:g}"] = n_err - below
    return out


def relaxed_f1(pred: ArrayLike, gt: ArrayLike, tol: float = 1.0) -> float:
    """F1 that forgives edge placement up to ``tol`` px (relaxed precision and recall).

    Precision: the fraction of predicted pixels within ``tol`` of a label pixel; recall: the
    fraction of label pixels within ``tol`` of a predicted pixel (dilations by a disc of radius
    ``tol``). A prediction shifted by one pixel scores 1.0 at ``tol=1``; ``tol=0`` gives Dice.
    Same empty-mask rules as Dice.
    """
    p, g = _as_bool(pred), _as_bool(gt)
    _check_same_shape(pred=p, gt=g)
    return _relaxed_f1(p, g, tol, _Near(g))


def _relaxed_f1(p: NDArray[np.bool_], g: NDArray[np.bool_], tol: float, near_g: _Near) -> float:
    """:func:`relaxed_f1` of bool masks, ``near_g`` the dilations of ``g`` (shared)."""
    if not p.any() or not g.any():
        return 1.0 if p.any() == g.any() else 0.0
    prec = float(np.count_nonzero(near_g(tol) & p)) / float(np.count_nonzero(p))
    rec = float(np.count_nonzero(_within(p, tol) & g)) / float(np.count_nonzero(g))
    return 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0


# --------------------------------------------------------------------------- thick / thin vessels


def vessel_width(gt: ArrayLike) -> NDArray[np.float64]:
    """Local vessel width (px) at every vessel pixel of ``gt`` (bool ``[H, W]``); 0 elsewhere.

    The width at a skeleton pixel (``skimage.morphology.skeletonize``; a blob with an empty
    skeleton keeps itself) is ``2·dt − 1``, dt = ``scipy.ndimage.distance_transform_edt(gt)``
    (distance to the nearest background pixel), so a 1-px line has width 1 and a 7-px bar 7.
    Every vessel pixel takes the width of its nearest skeleton pixel (Euclidean,
    ``distance_transform_edt(~skeleton, return_indices=True)``). Vessels of even width read one
    less (2 px → 1, 4 px → 3); skeleton end points of tapering vessels read narrower.

    dt is needed at the skeleton pixels only and is computed there (:func:`_skeleton_widths`).
    """
    g = _as_bool(gt)
    out = np.zeros(g.shape)
    if g.any():
        out[g] = _vessel_widths(g, _skeleton(g))
    return out


def _skeleton_widths(g: NDArray[np.bool_], skel_idx: NDArray[np.intp]) -> NDArray[np.float64]:
    """``2·dt − 1`` at the flat pixels ``skel_idx`` of the vessels ``g``, dt as
    ``distance_transform_edt(g)`` gives it: the Euclidean distance to the nearest background
    pixel, found with a k-d tree of the background pixels that touch a vessel (face
    neighbours). Those are enough: from the nearest background pixel q of a vessel pixel, one
    step towards it along an axis is closer, hence a vessel pixel, and is a face neighbour of
    q. The distance is recomputed from integer offsets as the transform does (√ of an exact
    sum), so the values are the same floats. A mask without background (whose transform is
    not a distance to anything) is left to the transform itself."""
    shore = _within(g, 1) & ~g
    if not shore.any():
        return 2.0 * ndimage.distance_transform_edt(g).ravel()[skel_idx] - 1.0
    pts = np.argwhere(shore)
    skel_pts = np.stack(np.unravel_index(skel_idx, g.shape), axis=1)
    nearest = cKDTree(pts).query(skel_pts)[1]
    d2 = ((pts[nearest] - skel_pts) ** 2).sum(axis=1).astype(np.float64)
    return 2.0 * np.sqrt(d2) - 1.0


def _nearest_flat(features: NDArray[np.bool_], where: NDArray[np.intp] | None = None
                  ) -> NDArray[np.intp]:
    """Flat index of the nearest ``features`` pixel of every pixel (or of the flat pixels
    ``where``), ties broken as ``scipy.ndimage.distance_transform_edt(~features,
    return_indices=True)`` breaks them (that is what computes it)."""
    ft = ndimage.distance_transform_edt(~features, return_distances=False,
                                        return_indices=True).reshape(features.ndim, -1)
    picked = ft if where is None else ft[:, where]
    flat = picked[0].astype(np.intp)
    for axis in range(1, features.ndim):
        flat *= features.shape[axis]
        flat += picked[axis]
    return flat


def _vessel_widths(g: NDArray[np.bool_], skel: NDArray[np.bool_]) -> NDArray[np.float64]:
    """:func:`vessel_width` at the vessel pixels ``g`` (in ``np.flatnonzero(g)`` order), with
    ``skel`` = ``_skeleton(g)``."""
    skel_idx = np.flatnonzero(skel)
    width_at = np.zeros(g.size)
    width_at[skel_idx] = _skeleton_widths(g, skel_idx)
    return width_at[_nearest_flat(skel, np.flatnonzero(g))]


def split_thick_thin(
    gt: ArrayLike,
    fov: ArrayLike | None = None,
    width_px: float = DEFAULT_THICK_WIDTH_PX,
    thick_gt: ArrayLike | None = None,
    thin_gt: ArrayLike | None = None,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """Thick and thin GT vessels and the image partition that scores them.

    Without explicit masks the GT vessels (``gt & fov``) are split by :func:`vessel_width`:
    thick where the local width is ``>= width_px``, thin below. With ``thick_gt`` and
    ``thin_gt`` (a dataset's own labels, e.g. ROSE-1 SVC ``thick_gt/`` and ``thin_gt/``) those
    are used instead (inside the FOV; a pixel in both counts as thick) and ``gt`` only fixes
    the shape. Every pixel then belongs to the class of its nearest GT vessel pixel (Euclidean
    distance transform), so a false positive next to a thin vessel counts against thin.

    Returns:
        ``(thick, thin, thick_zone)``, bool ``[H, W]``: the thick and thin GT pixels and the
        pixels assigned to the thick class (the thin zone is ``~thick_zone``; with no GT vessel
        at all the thick zone is empty).
    """
    if (thick_gt is None) != (thin_gt is None):
        raise ValueError("split_thick_thin: give both thick_gt and thin_gt, or neither")
    g = _as_bool(gt)
    f = None if fov is None else _as_bool(fov)
    if thick_gt is None:
        _check_same_shape(gt=g, fov=f)
        g = g if f is None else g & f
        return _split_by_width(g, None, width_px)
    return _split_given(g, f, _as_bool(thick_gt), _as_bool(thin_gt))


def _split_by_width(g: NDArray[np.bool_], skel: NDArray[np.bool_] | None, width_px: float
                    ) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """:func:`split_thick_thin` of the vessels ``g`` (already inside the FOV) by width;
    ``skel`` = ``_skeleton(g)`` when already computed."""
    thick = np.zeros(g.shape, bool)
    if g.any():
        idx = np.flatnonzero(g)
        thick.ravel()[idx] = _vessel_widths(g, _skeleton(g) if skel is None else skel) \
            >= width_px
    return _zones(thick, g & ~thick)


def _split_given(g: NDArray[np.bool_], f: NDArray[np.bool_] | None,
                 thick: NDArray[np.bool_], thin: NDArray[np.bool_]
                 ) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """:func:`split_thick_thin` with the dataset's own thick / thin masks."""
    _check_same_shape(gt=g, fov=f, thick_gt=thick, thin_gt=thin)
    if f is not None:
        thick, thin = thick & f, thin & f
    return _zones(thick, thin & ~thick)


def _zones(thick: NDArray[np.bool_], thin: NDArray[np.bool_]
           ) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """``(thick, thin, thick_zone)``: each pixel takes the class of its nearest vessel pixel
    (:func:`_nearest_flat`); a class alone takes every pixel, none leaves the zone empty."""
    if not thin.any():
        return thick, thin, np.full(thick.shape, thick.any())
    if not thick.any():
        return thick, thin, np.zeros(thick.shape, bool)
    zone = thick.ravel()[_nearest_flat(thick | thin)].reshape(thick.shape)
    return thick, thin, zone


def thick_thin_counts(
    pred: ArrayLike,
    gt: ArrayLike,
    fov: ArrayLike | None = None,
    width_px: float = DEFAULT_THICK_WIDTH_PX,
    thick_gt: ArrayLike | None = None,
    thin_gt: ArrayLike | None = None,
) -> dict[str, dict[str, int]]:
    """Confusion counts ``{"thick": {tp, fp, fn, tn}, "thin": {...}}`` inside each partition.

    The partition and the thick/thin GT come from :func:`split_thick_thin` (same arguments);
    counts are restricted to the FOV. Sum them over images for pooled figures and turn them
    into Dice with :func:`thick_thin_from_counts`.
    """
    p = _as_bool(pred)
    f = np.ones(p.shape, bool) if fov is None else _as_bool(fov)
    _check_same_shape(pred=p, gt=np.asarray(gt), fov=f)
    thick, thin, zone = split_thick_thin(gt, fov, width_px, thick_gt, thin_gt)
    return {"thick": confusion_counts(p, thick, zone & f),
            "thin": confusion_counts(p, thin, ~zone & f)}


def _partition_dice(c: Mapping[str, int]) -> float:
    """Dice of one partition; NaN when it holds no GT pixel (the class is absent)."""
    tp, fp, fn = int(c["tp"]), int(c["fp"]), int(c["fn"])
    return NAN if tp + fn == 0 else 2.0 * tp / (2 * tp + fp + fn)


def thick_thin_from_counts(counts: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """``{"dice_thick", "dice_thin"}`` from :func:`thick_thin_counts` (one image or summed)."""
    return {"dice_thick": _partition_dice(counts["thick"]),
            "dice_thin": _partition_dice(counts["thin"])}


def thick_thin_dice(
    pred: ArrayLike,
    gt: ArrayLike,
    fov: ArrayLike | None = None,
    width_px: float = DEFAULT_THICK_WIDTH_PX,
    thick_gt: ArrayLike | None = None,
    thin_gt: ArrayLike | None = None,
) -> dict[str, float]:
    """Dice of thick and of thin vessels, as the ROSE paper splits OCTA vessels (Ma et al.,
    "ROSE: a retinal OCT-angiography vessel segmentation dataset and new model", IEEE TMI 2021).

    ``Dice_thick = 2TP/(2TP+FP+FN)`` counted inside the thick zone of :func:`split_thick_thin`
    against the thick GT, ``Dice_thin`` likewise in the thin zone; both inside ``fov``. A class
    with no GT pixel gives NaN (nothing to find, and its zone is empty).

    Args:
        pred: bool ``[H, W]`` binary prediction.
        gt: bool ``[H, W]`` ground truth (split by width unless explicit masks are given).
        fov: optional bool ``[H, W]``.
        width_px: width threshold in px (:data:`DEFAULT_THICK_WIDTH_PX` = 3: vessels 1–2 px
            wide are thin, i.e. up to about 20 µm on 3×3 mm en-face OCTA at ~10 µm/px, as
            ROSE-1 and OCTA-500 3M; scale it with the sampling, e.g. ~8 for ROSE-2 at
            ~3.6 µm/px).
        thick_gt, thin_gt: optional bool ``[H, W]`` dataset thick / thin labels (both or none).

    Returns:
        dict with keys :data:`THICK_THIN_KEYS`.
    """
    return thick_thin_from_counts(thick_thin_counts(pred, gt, fov, width_px, thick_gt, thin_gt))


# --------------------------------------------------------------------------- per image / pooled


def image_scores(
    prob: ArrayLike, gt: ArrayLike, threshold: float, fov: ArrayLike | None = None
) -> tuple[dict[str, float], dict[str, int], NDArray[np.int64]]:
    """:func:`image_metrics` of one image plus what pooling over images needs from it.

    Returns:
        ``(metrics, counts, cldice_parts)``: the :data:`METRIC_KEYS` dict, the confusion counts
        inside ``fov`` (:func:`confusion_counts`) and the six skeleton overlaps clDice is made
        of (sum them over images for the pooled clDice, see :class:`PooledScores`).
    """
    scored = _score_image(prob, gt, threshold, fov)
    return scored.metrics, scored.counts, scored.cldice_parts


@dataclass
class ImageEvaluation:
    """What :func:`evaluate_image` computes for one image, with the masks it shares."""

    metrics: dict[str, float]
    """:data:`METRIC_KEYS` (:func:`image_metrics`)."""
    counts: dict[str, int]
    """Confusion counts inside the FOV (:func:`confusion_counts`)."""
    cldice_parts: NDArray[np.int64]
    """The six skeleton overlaps of clDice (summed by :class:`PooledScores`)."""
    pm: NDArray[np.bool_]
    """``pred & fov``."""
    gm: NDArray[np.bool_]
    """``gt & fov``."""
    skel_gt: NDArray[np.bool_]
    """``_skeleton(gm)`` (clDice, and :func:`vessel_width` of the thick / thin split)."""
    components: tuple[int, int]
    """8-connected components of ``pm`` and of ``gm`` (b0 of the Betti errors)."""
    thick_thin: dict[str, dict[str, int]] = field(default_factory=dict)
    """:func:`thick_thin_counts` (filled by :func:`evaluate_image`)."""
    topology: dict[str, float] = field(default_factory=dict)
    """:func:`topology_metrics` (filled by :func:`evaluate_image`)."""


def _score_image(prob: ArrayLike, gt: ArrayLike, threshold: float, fov: ArrayLike | None
                 ) -> ImageEvaluation:
    """:func:`image_scores`, keeping the masks, GT skeleton and component counts."""
    pred = binarize(prob, threshold)
    pm, gm = _masked(pred, gt, fov)
    counts = confusion_counts(pred, gm, fov)
    out: dict[str, float] = dict(threshold_metrics(counts))
    out.update(ranking_metrics(prob, gm, fov))
    sg = _skeleton(gm)
    parts = _cldice_parts(pm, gm, _skeleton(pm), sg)
    out["cldice"] = _cldice_from_parts(parts)
    bp, bg = betti_numbers(pm), betti_numbers(gm)
    out.update({f"betti{i}_error": float(abs(a - b))
                for i, (a, b) in enumerate(zip(bp, bg, strict=True))})
    out["hd95"] = hd95(pm, gm)
    return ImageEvaluation({k: float(out[k]) for k in METRIC_KEYS}, counts, parts, pm, gm, sg,
                           (bp[0], bg[0]))


def evaluate_image(
    prob: ArrayLike,
    gt: ArrayLike,
    threshold: float,
    fov: ArrayLike | None = None,
    width_px: float = DEFAULT_THICK_WIDTH_PX,
    thick_gt: ArrayLike | None = None,
    thin_gt: ArrayLike | None = None,
) -> ImageEvaluation:
    """Everything ``retinaseg evaluate`` reports for one image, each shared piece once.

    The same values as :func:`image_scores` (``metrics``, ``counts``, ``cldice_parts``),
    ``thick_thin_counts(prob > threshold, gt, fov, width_px, thick_gt, thin_gt)``
    (``thick_thin``) and ``topology_metrics(prob > threshold, gt, fov)`` (``topology``), but
    the masks, the GT skeleton (clDice and the width split), the component counts (Betti b0
    and ``components_*``) and the dilations of the GT (edge figures) are computed once.
    """
    if (thick_gt is None) != (thin_gt is None):
        raise ValueError("evaluate_image: give both thick_gt and thin_gt, or neither")
    ev = _score_image(prob, gt, threshold, fov)
    pred = binarize(prob, threshold)
    f = None if fov is None else _as_bool(fov)
    if thick_gt is None:
        thick, thin, zone = _split_by_width(ev.gm, ev.skel_gt, width_px)
    else:
        thick, thin, zone = _split_given(_as_bool(gt), f, _as_bool(thick_gt), _as_bool(thin_gt))
    ev.thick_thin = {"thick": confusion_counts(pred, thick, zone if f is None else zone & f),
                     "thin": confusion_counts(pred, thin, ~zone if f is None else ~zone & f)}
    ev.topology = _topology(ev.pm, ev.gm, ev.components)
    return ev


def image_metrics(
    prob: ArrayLike, gt: ArrayLike, threshold: float, fov: ArrayLike | None = None
) -> dict[str, float]:
    """All metrics of one image; keys :data:`METRIC_KEYS`.

    Args:
        prob: float ``[H, W]`` vessel probability in [0, 1].
        gt: bool ``[H, W]`` ground truth.
        threshold: binarisation threshold, ``pred = prob > threshold``.
        fov: optional bool ``[H, W]``; confusion metrics and AUC/AP use pixels inside it,
            clDice/Betti/HD95 use ``pred & fov`` and ``gt & fov``.

    Betti errors are whole-image counts (see :func:`betti_errors_patches` for the patch version).
    """
    return image_scores(prob, gt, threshold, fov)[0]


class PooledScores:
    """:func:`pooled_metrics` accumulated image by image, in constant memory.

    Confusion counts and clDice skeleton overlaps are summed exactly; AUC and AP come from a
    :class:`ScoreHistogram` (``bins`` equal bins over [0, 1]) instead of sorting every pixel of
    the set, so they can differ from :func:`pooled_metrics` by at most
    ``histogram.auc_error_bound()`` (AUC).
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        self.counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        self.parts = np.zeros(6, dtype=np.int64)
        self.histogram = ScoreHistogram(bins)
        self.n_images = 0

    def add_scored(self, prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None,
                   counts: Mapping[str, int], parts: NDArray[np.int64]) -> None:
        """Add an image already scored by :func:`image_scores` (its counts and parts)."""
        for k in self.counts:
            self.counts[k] += int(counts[k])
        self.parts += parts
        self.histogram.add(prob, gt, fov)
        self.n_images += 1

    def add(self, prob: ArrayLike, gt: ArrayLike, threshold: float,
            fov: ArrayLike | None = None) -> None:
        """Add one image: ``prob`` float ``[H, W]``, ``gt`` bool, ``fov`` optional bool."""
        pred = binarize(prob, threshold)
        pm, gm = _masked(pred, gt, fov)
        self.add_scored(prob, gm, fov, confusion_counts(pred, gm, fov), _cldice_parts(pm, gm))

    def metrics(self) -> dict[str, float]:
        """Keys :data:`METRIC_KEYS`, as :func:`pooled_metrics` (histogram AUC and AP)."""
        out: dict[str, float] = dict(threshold_metrics(self.counts))
        out["auc"] = self.histogram.auc()
        out["ap"] = self.histogram.average_precision()
        out["cldice"] = _cldice_from_parts(self.parts)
        out.update(betti0_error=NAN, betti1_error=NAN, hd95=NAN)
        return {k: float(out[k]) for k in METRIC_KEYS}


def _iter_sets(
    probs: Sequence[ArrayLike], gts: Sequence[ArrayLike], fovs: Sequence[ArrayLike] | None
) -> list[tuple[ArrayLike, ArrayLike, ArrayLike | None]]:
    if len(probs) != len(gts) or (fovs is not None and len(fovs) != len(probs)):
        n_f = "none" if fovs is None else len(fovs)
        raise ValueError(f"got {len(probs)} probability maps, {len(gts)} GT masks, {n_f} FOVs")
    fov_list = list(fovs) if fovs is not None else [None] * len(probs)
    return list(zip(probs, gts, fov_list, strict=True))


def pooled_metrics(
    probs: Sequence[ArrayLike],
    gts: Sequence[ArrayLike],
    threshold: float,
    fovs: Sequence[ArrayLike] | None = None,
) -> dict[str, float]:
    """Set-level metrics with every pixel (inside the FOVs) pooled, as retina-unet reports (§8).

    Keys :data:`METRIC_KEYS`:

    * dice … precision, gmean, kappa, fdr: :func:`threshold_metrics` of the summed confusion
      counts;
    * auc, ap: computed on all pixels of all images concatenated (inside the FOVs);
    * cldice: from summed skeleton overlaps, a = Σ|P∩skel(G)| / Σ|skel(G)|,
      b = Σ|G∩skel(P)| / Σ|skel(P)|, clDice = 2ab/(a+b) (all empty → 1, one side empty → 0);
    * betti0_error, betti1_error, hd95: NaN — they are per-image notions; use
      :func:`summarise` over :func:`image_metrics` for them.

    Args:
        probs: list of float ``[H, W]``; gts: list of bool ``[H, W]``; threshold: ``prob >
            threshold``; fovs: optional list of bool ``[H, W]``.
    """
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    parts = np.zeros(6, dtype=np.int64)
    flat_p, flat_g = [], []
    for prob, gt, fov in _iter_sets(probs, gts, fovs):
        pred = binarize(prob, threshold)
        for k, v in confusion_counts(pred, gt, fov).items():
            counts[k] += v
        parts += _cldice_parts(*_masked(pred, gt, fov))
        p, g = _in_fov(prob, gt, fov)
        flat_p.append(p)
        flat_g.append(g)
    out = threshold_metrics(counts)
    all_p = np.concatenate(flat_p) if flat_p else np.zeros(0)
    all_g = np.concatenate(flat_g) if flat_g else np.zeros(0, bool)
    out.update(ranking_metrics(all_p, all_g))
    out["cldice"] = _cldice_from_parts(parts)
    out.update(betti0_error=NAN, betti1_error=NAN, hd95=NAN)
    return {k: float(out[k]) for k in METRIC_KEYS}


def grid_histogram(prob: ArrayLike, gt: ArrayLike, fov: ArrayLike | None,
                   grid: NDArray[np.float64]) -> NDArray[np.int64]:
    """Per-class histogram ``[2, G + 1]`` (row 0 negatives, row 1 positives) of
    ``k = #{grid values < prob}`` over the pixels of one image inside ``fov`` (``grid`` sorted,
    ``G`` values). Sum it over images and pass it to :func:`grid_counts`."""
    p, g = _in_fov(prob, gt, fov)
    k = np.searchsorted(grid, p, side="left")
    return np.stack([np.bincount(k[~g], minlength=grid.size + 1),
                     np.bincount(k[g], minlength=grid.size + 1)]).astype(np.int64)


def grid_counts(hist: NDArray[np.int64]) -> list[dict[str, int]]:
    """Confusion counts at each threshold of the grid from a :func:`grid_histogram` (summed).

    A pixel with ``k`` is predicted positive exactly for the thresholds ``grid[j]``, ``j < k``;
    reverse cumulative sums give exact counts for every threshold.
    """
    above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # [2, G]: count with prob > t
    n_neg, n_pos = hist.sum(axis=1)
    return [
        {"tp": int(tp), "fp": int(fp), "fn": int(n_pos - tp), "tn": int(n_neg - fp)}
        for fp, tp in zip(above[0], above[1], strict=True)
    ]


def _grid_counts(
    probs: Sequence[ArrayLike],
    gts: Sequence[ArrayLike],
    fovs: Sequence[ArrayLike] | None,
    grid: NDArray[np.float64],
) -> list[dict[str, int]]:
    """Pooled confusion counts at each threshold of the sorted ``grid`` in one pass per image
    (:func:`grid_histogram` summed, then :func:`grid_counts`)."""
    hist = np.zeros((2, grid.size + 1), dtype=np.int64)
    for prob, gt, fov in _iter_sets(probs, gts, fovs):
        hist += grid_histogram(prob, gt, fov, grid)
    return grid_counts(hist)


def _grid_values(probs: Sequence[ArrayLike], gts: Sequence[ArrayLike],
                 fovs: Sequence[ArrayLike] | None, grid: np.ndarray, metric: str,
                 groups: Sequence[str] | None) -> np.ndarray:
    """``metric`` at every threshold of ``grid``: pooled, or the mean of per-group pools."""
    if groups is None:
        return np.array([threshold_metrics(c)[metric]
                         for c in _grid_counts(probs, gts, fovs, grid)])
    curves = []
    for name in dict.fromkeys(groups):
        idx = [i for i, gname in enumerate(groups) if gname == name]
        sub_fovs = None if fovs is None else [fovs[i] for i in idx]
        counts = _grid_counts([probs[i] for i in idx], [gts[i] for i in idx], sub_fovs, grid)
        curves.append([threshold_metrics(c)[metric] for c in counts])
    return np.nanmean(np.array(curves, dtype=np.float64), axis=0)


def choose_threshold(
    probs: Sequence[ArrayLike],
    gts: Sequence[ArrayLike],
    fovs: Sequence[ArrayLike] | None = None,
    metric: str = "dice",
    grid: ArrayLike | None = None,
    groups: Sequence[str] | None = None,
) -> float:
    """Threshold of ``grid`` maximising a pooled confusion metric on a **validation** set.

    Never tune on the test set. Counts are pooled over all images (inside the FOVs) and computed
    exactly for every threshold in one pass (see :func:`_grid_counts`). ``pred = prob > t``.

    Args:
        probs, gts, fovs: as in :func:`pooled_metrics`.
        metric: one of :data:`THRESHOLD_KEYS` (``"dice"`` by default) except those of
            :data:`LOWER_IS_BETTER` (``"fdr"``: maximising it would pick the worst threshold).
        grid: candidate thresholds, default ``np.linspace(0.05, 0.95, 91)``.
        groups: optional group name per image (e.g. its dataset): the metric is then pooled
            within each group and the groups' values are averaged, so that every group counts
            equally however many pixels it has.

    Returns:
        The best threshold; when several tie (within 1e-12), the median one of them (so a flat
        optimum between two well-separated classes gives a threshold in its middle).
    """
    allowed = [k for k in THRESHOLD_KEYS if k not in LOWER_IS_BETTER]
    if metric not in allowed:
        raise ValueError(f"metric must be one of {', '.join(allowed)}, got {metric!r}")
    g = np.unique(np.asarray(DEFAULT_GRID if grid is None else grid, dtype=np.float64))
    if g.size == 0:
        raise ValueError("choose_threshold: the threshold grid is empty")
    return best_threshold(_grid_values(probs, gts, fovs, g, metric, groups), g, metric)


def best_threshold(values: ArrayLike, grid: ArrayLike, metric: str = "dice") -> float:
    """The ``grid`` threshold with the largest ``values`` (one per threshold, NaN allowed);
    the median one of ties within 1e-12, as :func:`choose_threshold` decides."""
    values, g = np.asarray(values, dtype=np.float64), np.asarray(grid, dtype=np.float64)
    if np.all(np.isnan(values)):
        raise ValueError(f"choose_threshold: {metric} is undefined (NaN) at every threshold")
    best = np.flatnonzero(np.abs(values - np.nanmax(values)) <= 1e-12)
    return float(g[best[len(best) // 2]])


def summarise(
    per_image: Sequence[Mapping[str, object]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard deviation of each numeric metric over images, ignoring NaN.

    Uses ``nanmean`` and the population ``nanstd`` (ddof = 0). Keys keep first-seen order;
    non-numeric values (e.g. an ``"id"`` string) are skipped; a key that is NaN (or missing) in
    every image gives NaN.

    Returns:
        ``(mean, std)``, two dicts of floats.
    """
    keys: dict[str, None] = {}
    for row in per_image:
        for k, v in row.items():
            if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                keys.setdefault(k, None)
    mean: dict[str, float] = {}
    std: dict[str, float] = {}
    for k in keys:
        vals = np.array([float(row.get(k, NAN)) for row in per_image], dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean[k], std[k] = float(np.nanmean(vals)), float(np.nanstd(vals, ddof=0))
    return mean, std


__all__ = [
    "DEFAULT_GRID", "METRIC_KEYS", "THRESHOLD_KEYS", "average_precision", "betti_errors",
    "betti_errors_patches", "betti_numbers", "binarize", "boundary_distance", "centerline_length",
    "centerline_missed_length",
    "choose_threshold", "cldice", "component_count", "confusion_counts", "error_profile", "hd95",
    "image_metrics", "pooled_metrics", "pr_curve", "relaxed_f1", "roc_auc", "roc_curve",
    "summarise", "threshold_metrics", "DEFAULT_THICK_WIDTH_PX", "LOWER_IS_BETTER",
    "DEFAULT_BINS", "PooledScores", "ScoreHistogram", "best_threshold", "grid_counts",
    "ImageEvaluation", "evaluate_image",
    "grid_histogram", "image_scores", "ranking_metrics", "surface_points",
    "THICK_THIN_KEYS", "split_thick_thin", "thick_thin_counts", "thick_thin_dice",
    "thick_thin_from_counts", "vessel_width",
]


TOPOLOGY_KEYS = ["betti0_error_patch", "betti1_error_patch", "components_pred", "components_gt",
                 "centerline_length_pred", "centerline_length_gt", "centerline_missed_px",
                 "relaxed_f1_1px", "edge_error_share"]
"""Extra per-image topology and edge figures reported by evaluation next to :data:`METRIC_KEYS`.

``centerline_missed_px`` is :func:`centerline_missed_length` (px of the label centerline
outside the prediction); ``relaxed_f1_1px`` is :func:`relaxed_f1` at 1 px; ``edge_error_share``
the share of wrong pixels at most 1 px from the label edge (:func:`error_profile`; NaN when
nothing is wrong)."""


def topology_metrics(pred: ArrayLike, gt: ArrayLike, fov: ArrayLike | None = None,
                     patch: int = 64, n: int = 100, seed: int = 0) -> dict[str, float]:
    """Patch-wise Betti errors, component counts, centerline lengths (px) and edge figures.

    Everything is computed on ``pred & fov`` and ``gt & fov``; patch Betti errors follow
    :func:`betti_errors_patches` (64² windows, 100 of them, fixed seed, as in the literature).
    """
    p, g = _masked(pred, gt, fov)
    return _topology(p, g, (component_count(p), component_count(g)), patch, n, seed)


def _topology(p: NDArray[np.bool_], g: NDArray[np.bool_], components: tuple[int, int],
              patch: int = 64, n: int = 100, seed: int = 0) -> dict[str, float]:
    """:func:`topology_metrics` of masked ``p`` and ``g`` whose component counts are known."""
    patches = betti_errors_patches(p, g, patch=patch, n=n, seed=seed)
    near_g = _Near(g)
    prof = _error_profile(p, g, (1.0, 2.0), near_g)
    skel_g = _full_centerline(g)
    return {"relaxed_f1_1px": _relaxed_f1(p, g, 1.0, near_g),
            "edge_error_share": _div(prof["le1"], sum(prof.values())),
            "betti0_error_patch": patches.get("betti0_error", float("nan")),
            "betti1_error_patch": patches.get("betti1_error", float("nan")),
            "components_pred": float(components[0]),
            "components_gt": float(components[1]),
            "centerline_length_pred": centerline_length(p),
            "centerline_length_gt": _skeleton_length(skel_g, 1.0),
            "centerline_missed_px": _skeleton_length(skel_g, 1.0, missed=~p)}

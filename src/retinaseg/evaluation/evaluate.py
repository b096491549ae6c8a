"""Scoring a model on a dataset split, honestly (reference §9).

- Metrics are computed inside the FOV where the dataset has one.
- The threshold is the model's own (chosen on validation data when it was trained), a fixed
  number, or chosen here on the dataset's *validation* split; never on the split being scored.
- Both the per-image mean ± std and the figure pooled over all pixels are reported, labelled.
- Thick / thin vessel Dice (as the ROSE paper reports for OCTA-Net) use the dataset's own
  ``thick_gt`` / ``thin_gt`` labels where a sample carries both (ROSE-1), else the GT split by
  local width (:func:`~retinaseg.evaluation.metrics.split_thick_thin`, ``thick_width_px``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from retinaseg.data import build_dataset
from retinaseg.errors import ConfigError, RetinasegError
from retinaseg.evaluation.classes import (
    class_columns,
    class_counts,
    colour_classes,
    metrics_from_counts,
)
from retinaseg.evaluation.figures import error_map, plot_confusion_matrix, plot_roc_pr_histogram
from retinaseg.evaluation.metrics import (
    DEFAULT_GRID,
    DEFAULT_THICK_WIDTH_PX,
    THICK_THIN_KEYS,
    TOPOLOGY_KEYS,
    PooledScores,
    best_threshold,
    confusion_counts,
    evaluate_image,
    grid_counts,
    grid_histogram,
    ranking_metrics,
    summarise,
    thick_thin_from_counts,
    threshold_metrics,
)
from retinaseg.evaluation.metrics import METRIC_KEYS as _IMAGE_KEYS
from retinaseg.inference.segmenter import Segmenter, SegmenterOptions
from retinaseg.io import write_png
from retinaseg.registry import DATASETS
from retinaseg.utils.atomic import make_out_dir, write_text_atomic

METRIC_KEYS = [*_IMAGE_KEYS, *THICK_THIN_KEYS]
"""Metric columns of ``per_image.csv`` (after ``id``; the topology columns follow) and keys of
the summary's ``per_image_mean`` / ``per_image_std`` / ``pooled``: ``dice iou acc sen spe bacc
precision auc ap cldice betti0_error betti1_error hd95 gmean kappa fdr dice_thick dice_thin``."""

EVAL_OPTIONS = ("thick_width_px",)
"""Keys of ``options`` (``--option KEY=VALUE``) that evaluation takes for itself rather than
passing to the dataset."""


@dataclass
class SplitScores:
    """What scoring a split keeps: one row per image and the pooled sums (constant memory)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    pooled: PooledScores = field(default_factory=PooledScores)
    thick_thin: dict[str, dict[str, int]] = field(default_factory=lambda: {
        c: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for c in ("thick", "thin")})
    explicit: int = 0
    """Images scored with the dataset's own thick / thin labels."""
    any_fov: bool = False


MAP_COMPRESSION = 1
"""zlib level of the per-image PNG maps: at HRF size (3504 x 2336) level 1 writes the two maps
3-4x faster than the default 6 (0.5 s against 2.1 s for a noisy probability map), the files
10-100 % larger."""


def labelled_samples(dataset: Any, desc: str) -> Iterator[dict[str, Any]]:
    """The labelled samples of ``dataset`` one at a time, under a progress bar (images/s) that
    covers whatever the caller does with each; raises when there is none."""
    seen = 0
    for i in tqdm(range(len(dataset)), desc=desc, unit="img"):
        s = dataset[i]
        if s["label"] is not None:
            seen += 1
            yield s
    if not seen:
        raise RetinasegError("the chosen split has no labelled images to evaluate")


def _predict(seg: Any, s: dict[str, Any]) -> np.ndarray:
    """Probability map ``[H, W]`` of one sample."""
    return seg(s["image"], source=f"'{s['path']}'")


def choose_split_threshold(seg: Any, dataset: Any, metric: str = "dice") -> float:
    """Threshold of :data:`~retinaseg.evaluation.metrics.DEFAULT_GRID` maximising the pooled
    ``metric`` over ``dataset``, as :func:`~retinaseg.evaluation.metrics.choose_threshold`
    chooses it, one image at a time (a ``[2, 92]`` histogram is all that is kept)."""
    grid = np.unique(DEFAULT_GRID)
    hist = np.zeros((2, grid.size + 1), dtype=np.int64)
    for s in labelled_samples(dataset, "choosing threshold"):
        hist += grid_histogram(_predict(seg, s), s["label"], s["fov"], grid)
    return best_threshold([threshold_metrics(c)[metric] for c in grid_counts(hist)], grid,
                          metric)


def resolve_threshold(threshold: float | str | None, seg: Any, dataset_name: str,
                      root: str | None, split: str, options: dict) -> tuple[float, str]:
    """The decision threshold and a sentence saying where it came from."""

    if threshold is None:
        src = seg.spec.info.get("threshold_source", "stored in the model file")
        return seg.threshold, f"model's own threshold ({src})"
    if isinstance(threshold, str) and threshold.startswith("val"):
        val_split = threshold.partition(":")[2] or getattr(DATASETS.get(dataset_name),
                                                            "val_split", None)
        if not val_split:
            raise RetinasegError(f"dataset '{dataset_name}' has no validation split to choose "
                                 "a threshold on; use threshold=val:SPLIT or a number")
        if val_split in (split, "all") or split == "all":
            raise RetinasegError("the threshold cannot be chosen on the split being scored")
        val = build_dataset(dataset_name, root, val_split, **options)
        return (choose_split_threshold(seg, val, "dice"),
                f"chosen on split '{val_split}' (max pooled Dice)")
    return float(threshold), "fixed"


def _thick_width(options: dict, thick_width_px: float | None) -> float:
    """The thick/thin width threshold (px): the argument, else ``options["thick_width_px"]``
    (removed from ``options``), else :data:`DEFAULT_THICK_WIDTH_PX`."""
    raw = options.pop("thick_width_px", None)
    value = thick_width_px if thick_width_px is not None else raw
    if value is None:
        return DEFAULT_THICK_WIDTH_PX
    try:
        width = float(value)
    except (TypeError, ValueError):
        width = float("nan")
    if not np.isfinite(width) or width <= 0:
        raise ConfigError(f"thick_width_px must be a positive number of pixels, got {value!r}")
    return width


METRIC_SETS = ("full", "fast")
"""``full``: every column; ``fast``: the confusion figures and AUC/AP only (no skeletons,
components, distances or thick / thin split: those columns are NaN), for datasets so large or
images so big that the topology figures would cost several times the prediction."""
SKELETON_KEYS = ("cldice", "betti0_error", "betti1_error", "hd95")
"""The per-image metrics (of ``metrics.METRIC_KEYS``) that ``metrics="fast"`` leaves out."""
FAST_SKIPPED = (*SKELETON_KEYS, *THICK_THIN_KEYS, *TOPOLOGY_KEYS)
"""Every column that ``metrics="fast"`` reports as NaN."""


def score_image_fast(prob: np.ndarray, s: dict[str, Any], thr: float,
                     totals: SplitScores) -> dict[str, Any]:
    """:func:`score_image` with ``metrics="fast"``: the same confusion and AUC/AP values, the
    skeleton, component, distance and thick / thin columns NaN."""
    counts = confusion_counts(prob > thr, s["label"], s["fov"])
    row: dict[str, Any] = {**threshold_metrics(counts),
                           **ranking_metrics(prob, s["label"], s["fov"]),
                           **dict.fromkeys(FAST_SKIPPED, float("nan"))}
    totals.pooled.add_scored(prob, s["label"], s["fov"], counts, np.zeros(6, np.int64))
    totals.any_fov |= s["fov"] is not None
    return {"id": s["id"], **{k: float(row[k]) for k in (*_IMAGE_KEYS, *THICK_THIN_KEYS,
                                                          *TOPOLOGY_KEYS)}}


def score_image(prob: np.ndarray, s: dict[str, Any], thr: float, width_px: float,
                totals: SplitScores) -> dict[str, Any]:
    """The ``per_image.csv`` row of one sample (``prob`` float ``[H, W]``; ``s`` a dataset
    item with ``label``, ``fov`` and optionally ``thick_gt`` / ``thin_gt``), adding its
    confusion counts, clDice parts, score histogram and thick / thin counts to ``totals``.

    One :func:`~retinaseg.evaluation.metrics.evaluate_image` call: the values of
    ``image_scores``, ``thick_thin_counts`` and ``topology_metrics``, with the masks, skeletons
    and component counts they share computed once."""
    label, fov = s["label"], s["fov"]
    thick, thin = s.get("thick_gt"), s.get("thin_gt")
    own = thick is not None and thin is not None
    ev = evaluate_image(prob, label, thr, fov, width_px, thick if own else None,
                        thin if own else None)
    totals.pooled.add_scored(prob, label, fov, ev.counts, ev.cldice_parts)
    for c, cc in ev.thick_thin.items():
        for k, v in cc.items():
            totals.thick_thin[c][k] += v
    totals.explicit += own
    totals.any_fov |= fov is not None
    return {"id": s["id"], **ev.metrics, **thick_thin_from_counts(ev.thick_thin),
            **ev.topology}


def _split_how(explicit: int, n: int, width_px: float) -> str:
    """A sentence saying how the vessels were split into thick and thin."""
    by_width = f"GT vessels split at a local width of {width_px:g} px (thick >= {width_px:g})"
    if explicit == n:
        return "dataset thick_gt / thin_gt labels"
    if explicit == 0:
        return by_width
    return f"dataset thick_gt / thin_gt labels for {explicit} of {n} images, else {by_width}"


def score_split(seg: Any, dataset: Any, thr: float, width_px: float, desc: str,
                maps: Path | None = None, palette: str = "classic",
                metrics: str = "full") -> SplitScores:
    """Predict and score every labelled sample of ``dataset`` one at a time (the progress bar
    covers both), writing ``<id>_prob.png`` / ``<id>_error.png`` into ``maps`` when given.
    Peak memory is one image's working set: no probability map is kept. ``metrics``: one of
    :data:`METRIC_SETS`."""
    totals = SplitScores()
    for s in labelled_samples(dataset, desc):
        prob = _predict(seg, s)
        totals.rows.append(score_image_fast(prob, s, thr, totals) if metrics == "fast"
                           else score_image(prob, s, thr, width_px, totals))
        if maps is not None:
            write_png(maps / f"{s['id']}_prob.png", prob, compress_level=MAP_COMPRESSION)
            write_png(maps / f"{s['id']}_error.png",
                      error_map(prob > thr, s["label"], s["fov"], palette=palette),
                      compress_level=MAP_COMPRESSION)
        del prob  # freed before the next image is predicted
    return totals


def _rows_csv(rows: list[dict]) -> str:

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["id", *METRIC_KEYS, *TOPOLOGY_KEYS])
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def evaluate(model: str | Path, dataset: str, root: str | None, split: str,
             out: str | Path, options: dict | None = None,
             threshold: float | str | None = None, palette: str = "classic",
             save_maps: bool = True, segmenter: SegmenterOptions | None = None,
             thick_width_px: float | None = None, metrics: str = "full",
             **overrides: Any) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset``/``split``; write ``per_image.csv``, ``summary.json``,
    error maps, a confusion matrix and ROC/PR curves to ``out``; return the summary.

    A model with several heads is scored with ``head`` when given, else with the head trained
    on this dataset's labels (same label convention), else with its first head. ``options``
    are the dataset's options; ``segmenter`` (and keyword ``overrides``) the inference options
    (:class:`~retinaseg.inference.segmenter.SegmenterOptions`).

    ``thick_width_px`` (also ``options["thick_width_px"]``, i.e. ``--option thick_width_px=N``;
    default 3) is the local width from which a GT vessel counts as thick for ``dice_thick`` /
    ``dice_thin`` when the dataset has no thick/thin labels of its own.

    ``metrics="fast"`` (:data:`METRIC_SETS`) scores only the confusion figures and AUC/AP;
    clDice, Betti, HD95, thick / thin and the topology columns are NaN (``null`` in JSON).
    """
    if metrics not in METRIC_SETS:
        raise ConfigError(f"metrics must be one of {', '.join(METRIC_SETS)}, not '{metrics}'")
    options = dict(options or {})
    width_px = _thick_width(options, thick_width_px)
    ds = build_dataset(dataset, root, split, **options)
    seg = Segmenter(model, segmenter, dataset=dataset, **overrides)
    out = make_out_dir(out)
    if getattr(seg, "classes", None) or getattr(ds, "classes", None):
        return evaluate_classes(seg, ds, out, save_maps,
                                {"dataset": dataset, "split": split, "model": str(model),
                                 "options": options})
    thr, thr_src = resolve_threshold(threshold, seg, dataset, root, split, options)
    sc = score_split(seg, ds, thr, width_px, f"evaluating {dataset}/{split}",
                     out / "maps" if save_maps else None, palette, metrics)
    rows, hist = sc.rows, sc.pooled.histogram
    mean, std = summarise([{k: v for k, v in r.items() if k != "id"} for r in rows])
    pooled = {**sc.pooled.metrics(), **thick_thin_from_counts(sc.thick_thin)}
    if metrics == "fast":
        pooled.update({k: float("nan") for k in FAST_SKIPPED if k in pooled})
    summary = {"dataset": dataset, "split": split, "model": str(model), "head": seg.head_name,
               "metrics": metrics, "threshold": thr,
               "threshold_source": thr_src, "n_images": len(rows), "options": options,
               "fov": "inside dataset FOV mask" if sc.any_fov else "whole image",
               "thick_width_px": width_px,
               "thick_thin_split": _split_how(sc.explicit, len(rows), width_px),
               "pooled_auc_ap": f"from a {hist.bins}-bin histogram of the probabilities (AUC "
                                f"within {hist.auc_error_bound():.1e} of the exact value)",
               "per_image_mean": mean, "per_image_std": std, "pooled": pooled}
    write_text_atomic(out / "per_image.csv", _rows_csv(rows))
    write_text_atomic(out / "summary.json", json.dumps(_clean(summary), indent=2))
    plot_confusion_matrix(sc.pooled.counts, out / "confusion_matrix.png",
                          title=f"threshold {thr:.3f}")
    plot_roc_pr_histogram(hist, out / "roc_pr.png")
    return summary


def _check_classes(seg: Segmenter, ds: Any) -> list[str]:
    """The class names shared by a multi-class model and dataset (a mismatch is an error)."""
    model, data = seg.classes, list(getattr(ds, "classes", None) or [])
    if not model or not data:
        what = "predicts classes but the dataset gives binary labels" if model else \
            "predicts vessels but the dataset gives class maps"
        raise RetinasegError(f"model '{seg.spec.name}' {what}; evaluate a multi-class model "
                             "on class maps (e.g. octa500 label=AV) and a vessel model on "
                             "binary labels")
    if len(model) != len(data):
        raise RetinasegError(f"the model predicts {len(model)} classes ({', '.join(model)}) but "
                             f"the dataset's labels have {len(data)} ({', '.join(data)})")
    return model


def evaluate_classes(seg: Segmenter, ds: Any, out: Path, save_maps: bool,
                     about: dict[str, Any]) -> dict[str, Any]:
    """Score a multi-class model on a dataset of class maps: per image and pooled Dice,
    sensitivity and specificity of each foreground class and their mean
    (:mod:`retinaseg.evaluation.classes`) on the argmax map, inside the FOV; writes
    ``per_image.csv``, ``summary.json`` and, with ``save_maps``, ``maps/<id>_classes.png``."""
    classes = _check_classes(seg, ds)
    rows, total, any_fov = [], None, False
    for i in tqdm(range(len(ds)), desc=f"evaluating {about['dataset']}/{about['split']}"):
        s = ds[i]
        if s["label"] is None:
            continue
        pred = seg(s["image"], source=f"'{s['path']}'").argmax(0)
        counts = class_counts(pred, s["label"], len(classes), s["fov"])
        total = counts if total is None else [{k: t[k] + c[k] for k in t}
                                              for t, c in zip(total, counts)]
        rows.append({"id": s["id"], **metrics_from_counts(counts, classes)})
        any_fov |= s["fov"] is not None
        if save_maps:
            write_png(out / "maps" / f"{s['id']}_classes.png", colour_classes(pred))
    if total is None:
        raise RetinasegError("the chosen split has no labelled images to evaluate")
    mean, std = summarise([{k: v for k, v in r.items() if k != "id"} for r in rows])
    summary = {**about, "classes": classes, "prediction": "argmax of the class probabilities",
               "n_images": len(rows), "fov": "inside dataset FOV mask" if any_fov
               else "whole image", "per_image_mean": mean, "per_image_std": std,
               "pooled": metrics_from_counts(total, classes)}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["id", *class_columns(classes)])
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(out / "per_image.csv", buf.getvalue())
    write_text_atomic(out / "summary.json", json.dumps(_clean(summary), indent=2))
    return summary


def _clean(obj: Any) -> Any:
    """Make NaN JSON-safe (null) and NumPy scalars plain."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj

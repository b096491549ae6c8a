"""Accuracy diagnostic: where the default models go wrong, edge placement or whole pieces.

For each OCTA val split (OCTA-500 6M, 3M, ROSSA) and DRIVE test (inside the FOV), and each
model, the wrong pixels of the binary mask are counted by their distance to the label edge
(:func:`retinaseg.evaluation.metrics.error_profile`): at most 1 px (a one-pixel disagreement
on where a vessel's edge lies), 1-2 px, and beyond 2 px (vessel pieces missed or added). Next
to Dice it reports the relaxed F1 at 1 px (:func:`~retinaseg.evaluation.metrics.relaxed_f1`),
the figure a model would reach if every edge within one pixel counted as right, and, with
several models, the Dice of their averaged probability (an ensemble at the mean of the models'
thresholds): if errors are shared, no ensemble of these models lifts Dice.

Models are scored as users get them (`Segmenter`, the head trained on the dataset, the
model's own threshold and TTA); all per-image means. DRIVE test is only reported here.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/errors.py
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/errors.py \
        --octa-models octa-vessels,runs/octa_vessels_fr_tl/<stamp>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import SHARED_DATA, md_table, publish
from scipy import ndimage
from tqdm import tqdm

from retinaseg.data import build_dataset
from retinaseg.evaluation.metrics import (
    choose_threshold,
    confusion_counts,
    error_profile,
    relaxed_f1,
    threshold_metrics,
)
from retinaseg.inference.segmenter import Segmenter

SPLITS = [  # (label, modality, dataset, folder, split, options)
    ("OCTA-500 val 6M", "octa", "octa500", "OCTA-500", "val", {"fov": "6M"}),
    ("OCTA-500 val 3M", "octa", "octa500", "OCTA-500", "val", {"fov": "3M"}),
    ("ROSSA val", "octa", "rossa", "ROSSA", "val", {}),
    ("DRIVE test (inside FOV)", "fundus", "drive", "DRIVE", "test", {}),
]


def _shifted_dice(mask: np.ndarray, gt: np.ndarray, fov: np.ndarray) -> float:
    """Mean Dice of ``mask`` moved by one pixel up, down, left and right."""
    moved = [ndimage.shift(mask, step, order=0, cval=False) & fov
             for step in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    return float(np.mean([_dice(m, gt, fov) for m in moved]))


def _dice(mask: np.ndarray, gt: np.ndarray, fov: np.ndarray) -> float:
    return threshold_metrics(confusion_counts(mask, gt, fov))["dice"]


def _short(model: str) -> str:
    p = Path(model)
    return model if not p.exists() else "/".join(p.resolve().parts[-2:])


GRID = np.round(np.arange(0.20, 0.805, 0.02), 2)
"""Thresholds of the diagnostic sweep (the split's own best threshold; never used to choose)."""


def _add(acc: dict, name: str, mask: np.ndarray, gt: np.ndarray, fov: np.ndarray) -> None:
    """Append one image's figures for ``name`` to ``acc``."""
    m = mask & fov
    prof = error_profile(m, gt)
    n_err = max(1, sum(prof.values()))
    row = acc.setdefault(name, {k: [] for k in ("dice", "shift1", "rf1", "le1", "le2", "gt2")})
    row["dice"].append(_dice(m, gt, fov))
    row["shift1"].append(_shifted_dice(m, gt, fov))
    row["rf1"].append(relaxed_f1(m, gt, tol=1))
    for k, v in prof.items():
        row[k].append(v / n_err)


def score_split(models: list[str], dataset: str, root: Path, split: str,
                options: dict) -> list[dict]:
    """One row per model (and one for the ensemble when there are several); on DRIVE test
    also the 2nd human observer against the 1st."""
    ds = build_dataset(dataset, root, split, **options)
    observer = build_dataset(dataset, root, split, observer="2") if dataset == "drive" else None
    segs = [Segmenter(m, dataset=dataset) for m in models]
    acc: dict[str, dict[str, list[float]]] = {}
    kept: dict[str, list[tuple]] = {}  # name -> (prob, gt, fov) per image, for the sweep
    for i in tqdm(range(len(ds)), desc=f"{dataset} {options}", unit="img"):
        item = ds[i]
        fov = item["fov"] if item["fov"] is not None else np.ones_like(item["label"])
        gt = item["label"] & fov
        probs = [seg(item["image"]) * fov for seg in segs]
        for name, p, seg in zip(map(_short, models), probs, segs):
            _add(acc, name, p > seg.threshold, gt, fov)
            kept.setdefault(name, []).append((p, gt, fov))
        if len(segs) > 1:
            thr = float(np.mean([s.threshold for s in segs]))
            _add(acc, "ensemble (mean probability)", np.mean(probs, axis=0) > thr, gt, fov)
        if observer is not None:
            _add(acc, "2nd human observer", observer[i]["label"], gt, fov)
    out = [{"model": n, **{k: float(np.mean(v)) for k, v in r.items()}} for n, r in acc.items()]
    for row in out:
        row["oracle"] = _best_threshold_dice(kept[row["model"]]) if row["model"] in kept \
            else float("nan")
    return out


def _best_threshold_dice(images: list[tuple]) -> float:
    """Per-image-mean Dice at the one GRID threshold that maximises it on ``images`` themselves
    (``choose_threshold`` with one group per image averages per-image Dice)."""
    probs, gts, fovs = zip(*images)
    t = choose_threshold(probs, gts, fovs, grid=GRID, groups=[str(i) for i in range(len(gts))])
    return float(np.mean([_dice(p > t, g, f) for p, g, f in images]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--octa-models", default="octa-vessels",
                    help="comma-separated OCTA models (bundled names, run folders or files)")
    ap.add_argument("--fundus-models", default="fundus-vessels",
                    help="comma-separated fundus models")
    a = ap.parse_args()
    rows, raw = [], {}
    for label, modality, dataset, folder, split, options in SPLITS:
        models = (a.octa_models if modality == "octa" else a.fundus_models).split(",")
        raw[label] = score_split(models, dataset, SHARED_DATA / folder, split, options)
        rows += [[label, r["model"], r["dice"], "–" if np.isnan(r["oracle"]) else r["oracle"],
                  r["shift1"], r["rf1"],
                  *[f"{100 * r[k]:.0f} %" for k in ("le1", "le2", "gt2")]] for r in raw[label]]
    body = ("Per-image means; OCTA on the val splits (which also chose each model's checkpoint "
            "and threshold), DRIVE on its test split inside the FOV. Error shares: wrong pixels "
            "of the mask by distance to the label edge, as a share of that image's wrong "
            "pixels. Relaxed F1 (1 px): precision and recall "
            "with a one-pixel tolerance, i.e. the Dice ceiling if edge placement within one "
            "pixel did not count. "
            "Dice, mask moved 1 px: the same mask moved by one pixel in each of the four "
            "directions (mean), how much one pixel of edge placement costs on these "
            "vessels. Dice at the split's best threshold: one threshold for the whole split, "
            "swept over 0.20-0.80 to maximise the per-image mean on the scored split itself; "
            "a diagnostic of how much a better threshold could give, never used to choose "
            "anything (the figure in the Dice column uses the model's own threshold).\n\n"
            + md_table(["split", "model", "Dice", "Dice at the split's best threshold",
                        "Dice, mask moved 1 px", "relaxed F1 (1 px)", "errors ≤ 1 px",
                        "errors 1-2 px", "errors > 2 px"], rows))
    publish("errors", "Where the default models go wrong: edges or pieces", body, raw)


if __name__ == "__main__":
    main()

"""Accuracy: how much the model's mask errors change the clinical numbers (issue 25).

For every OCTA-500 *validation* subject in ``../shared/data/OCTA-500`` (official split: 6M
10181-10200, 3M 10441-10450) the bundled ``octa-vessels`` model segments ``OCTA(ILM_OPL)``
(default head and threshold) and ``retinaseg.measure`` measures its mask and the subject's
``GT_LargeVessel`` label the same way (3 mm / 304 px, 6 mm / 400 px; no grid). Per field of
view and measurement: the label's mean, the model's mean, the bias (model − label), the 95 %
limits of agreement (bias ± 1.96 SD of the differences, Bland & Altman 1986), the bias as a
percentage of the label's mean, and Pearson's r between the two. The FAZ is compared where a
val subject has ``GT_FAZ`` (3M 10441 only): ``octa-faz`` and the classical route against it.

A Bland-Altman figure (one panel per measurement, both fields of view) is written next to
the results as ``results/measure_agreement.png``.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/measure_agreement.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import RESULTS, SHARED_DATA, md_table, publish

from retinaseg.data.datasets import octa500_split
from retinaseg.io import read_image, read_mask
from retinaseg.measure.api import measure_mask

MM_PER_PX = {"3M": 3 / 304, "6M": 6 / 400}
COLUMNS = ["vessel_area_density", "skeleton_length_density_per_mm",
           "vessel_diameter_index_um", "calibre_mean_um", "tortuosity_arc_chord_mean",
           "tortuosity_curvature_mean_per_mm", "fractal_dimension_skeleton",
           "fractal_dimension_mask", "branch_points", "end_points", "segments"]
FAZ_COLUMNS = ["faz_area_mm2", "faz_perimeter_mm", "faz_circularity"]


def val_subjects(root: Path) -> list[tuple[str, str]]:
    """(fov, id) of the val subjects that have the map and the vessel label."""
    out = []
    for fov in ("6M", "3M"):
        labels = root / f"OCTA_{fov}" / "GT_LargeVessel"
        for path in sorted(labels.glob("*.bmp")) if labels.is_dir() else []:
            image = root / f"OCTA_{fov}" / "Projection Maps" / "OCTA(ILM_OPL)" / path.name
            if octa500_split(fov, int(path.stem)) == "val" and image.is_file():
                out.append((fov, path.stem))
    return out


def measure_pairs(root: Path) -> list[dict]:
    """Per subject: the measurement columns of the label's mask and of the model's."""
    from retinaseg.inference.segmenter import Segmenter

    seg = Segmenter("octa-vessels")
    rows = []
    for fov, sid in val_subjects(root):
        base = root / f"OCTA_{fov}"
        image = read_image(base / "Projection Maps" / "OCTA(ILM_OPL)" / f"{sid}.bmp")
        label = read_mask(base / "GT_LargeVessel" / f"{sid}.bmp")
        model = seg(image) > seg.threshold
        k = MM_PER_PX[fov]
        rows.append({"fov": fov, "id": sid, "image": image, "mask": model,
                     "dice": float(2 * (label & model).sum() / (label.sum() + model.sum())),
                     "label": measure_mask(label, k, "octa", "none"),
                     "model": measure_mask(model, k, "octa", "none")})
    return rows


def agreement(label: np.ndarray, model: np.ndarray) -> dict[str, float]:
    """Bland-Altman figures of paired values (model − label)."""
    diff = model - label
    sd = float(diff.std(ddof=1)) if diff.size > 1 else float("nan")
    bias = float(diff.mean())
    ok = diff.size > 2 and label.std() > 0
    r = float(np.corrcoef(label, model)[0, 1]) if ok else float("nan")
    return {"label_mean": float(label.mean()), "model_mean": float(model.mean()), "bias": bias,
            "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd,
            "bias_pct": 100 * bias / float(label.mean()) if label.mean() else float("nan"),
            "r": r}


def faz_rows(root: Path, rows: list[dict]) -> list[list[object]]:
    """``octa-faz`` and the classical FAZ against ``GT_FAZ`` on the val subjects of ``rows``
    (:func:`measure_pairs`, whose images and vessel masks are reused) that have one."""
    from retinaseg.inference.segmenter import Segmenter

    fazseg = Segmenter("octa-faz")
    out = []
    for r in rows:
        fov, sid, image, mask = r["fov"], r["id"], r["image"], r["mask"]
        truth_path = root / f"OCTA_{fov}" / "GT_FAZ" / f"{sid}.bmp"
        if not truth_path.is_file():
            continue
        k = MM_PER_PX[fov]
        truth = measure_mask(mask, k, "octa", "none", faz=read_mask(truth_path))
        routes = {"octa-faz": measure_mask(mask, k, "octa", "none",
                                           faz=fazseg(image) > fazseg.threshold),
                  "classical": measure_mask(mask, k, "octa", "none", image=image)}
        for name, cols in routes.items():
            out.append([f"{fov} {sid}", name] + [f"{cols[c]:.4f} (label {truth[c]:.4f})"
                                                 for c in FAZ_COLUMNS])
    return out


def plot(rows: list[dict], path: Path) -> None:
    """Bland-Altman panels: mean of the pair vs difference, 6M and 3M marked apart."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 12), layout="constrained")
    axes = fig.subplots(3, 4).ravel()
    for ax, col in zip(axes, COLUMNS, strict=False):
        for fov, colour in (("6M", "tab:blue"), ("3M", "tab:orange")):
            sub = [r for r in rows if r["fov"] == fov]
            a = np.array([r["label"][col] for r in sub], float)
            b = np.array([r["model"][col] for r in sub], float)
            if a.size:
                ax.scatter((a + b) / 2, b - a, s=14, color=colour, label=fov)
        d = np.array([r["model"][col] - r["label"][col] for r in rows], float)
        ax.axhline(d.mean(), color="k")
        for s in (-1.96, 1.96):
            ax.axhline(d.mean() + s * d.std(ddof=1), color="k", ls="--", lw=0.8)
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("mean of model and label")
        ax.set_ylabel("model − label")
    axes[0].legend()
    axes[-1].axis("off")
    fig.suptitle("octa-vessels vs GT_LargeVessel on OCTA-500 val: Bland-Altman")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=SHARED_DATA / "OCTA-500")
    args = parser.parse_args(argv)
    rows = measure_pairs(args.root)
    if not rows:
        sys.exit(f"no OCTA-500 val subjects with OCTA(ILM_OPL) and GT_LargeVessel under "
                 f"{args.root}")
    table, raw = [], {"subjects": [{k: r[k] for k in ("fov", "id", "dice")} for r in rows]}
    for fov in ("6M", "3M"):
        sub = [r for r in rows if r["fov"] == fov]
        for col in COLUMNS if sub else []:
            a = np.array([r["label"][col] for r in sub], float)
            b = np.array([r["model"][col] for r in sub], float)
            fig = agreement(a, b)
            raw[f"{fov}/{col}"] = fig
            table.append([fov, len(sub), col, fig["label_mean"], fig["model_mean"], fig["bias"],
                          f"{fig['loa_low']:.4f} to {fig['loa_high']:.4f}",
                          f"{fig['bias_pct']:+.1f} %", fig["r"]])
    plot(rows, RESULTS / "measure_agreement.png")
    dice = {fov: np.mean([r["dice"] for r in rows if r["fov"] == fov]) for fov in ("6M", "3M")}
    body = (f"OCTA-500 val subjects: {sum(r['fov'] == '6M' for r in rows)} 6M (mask Dice "
            f"{dice['6M']:.3f}), {sum(r['fov'] == '3M' for r in rows)} 3M (Dice {dice['3M']:.3f}). "
            "Bias = model − label; limits of agreement = bias ± 1.96 SD of the differences; "
            "r = Pearson between subjects. Figure: `benchmarks/results/measure_agreement.png`."
            "\n\n" + md_table(["FOV", "n", "measurement", "label mean", "model mean", "bias",
                               "95 % limits", "bias / label", "r"], table))
    faz = faz_rows(args.root, rows)
    if faz:
        body += ("\n\nFAZ on the val subjects with `GT_FAZ` (value, and the label's in brackets; "
                 "one subject, so no limits):\n\n"
                 + md_table(["subject", "FAZ from"] + FAZ_COLUMNS, faz))
        raw["faz"] = faz
    publish("measure_agreement", "Measurements: model mask vs label on OCTA-500 val", body, raw)
    return raw


if __name__ == "__main__":
    main()

"""Robustness of the fundus model to camera resolution (issue: default models, robustness).

Other fundus datasets are shot at other resolutions (CHASE_DB1 999×960, HRF 3504×2336), which we
do not have here. As a stand-in, the DRIVE test images, labels and FOV masks are resized by a
factor (0.75, 1.5, 2, 3) and scored inside the FOV, once with the model's FOV-diameter matching
(default) and once at native scale (``--native-scale``). Labels are resized with nearest
neighbour, so the resized reference has the same vessels, only wider or thinner in pixels.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_resolution.py [--model fundus-vessels]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import SHARED_DATA, md_table, publish
from skimage.transform import resize

from retinaseg.data import build_dataset
from retinaseg.evaluation.metrics import image_metrics, summarise
from retinaseg.inference.pipeline import Segmenter

FACTORS = (0.75, 1.0, 1.5, 2.0, 3.0)


def _resized(sample: dict, f: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = sample["label"].shape
    shape = (round(h * f), round(w * f))
    img = resize(sample["image"], (*shape, 3), order=1, anti_aliasing=f < 1).astype(np.float32)
    lab = resize(sample["label"], shape, order=0, anti_aliasing=False) > 0.5
    fov = resize(sample["fov"], shape, order=0, anti_aliasing=False) > 0.5
    return img, lab, fov


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fundus-vessels")
    a = ap.parse_args()
    ds = build_dataset("drive", str(SHARED_DATA / "DRIVE"), "test")
    samples = [ds[i] for i in range(len(ds))]
    segs = {"FOV matching (default)": Segmenter(a.model),
            "native scale": Segmenter(a.model, match_fov=False)}
    rows, raw = [], {}
    for f in FACTORS:
        scaled = [_resized(s, f) for s in samples]
        for mode, seg in segs.items():
            t0 = time.perf_counter()
            m = [image_metrics(seg(img), lab, seg.threshold, fov) for img, lab, fov in scaled]
            secs = (time.perf_counter() - t0) / len(scaled)
            mean = summarise(m)[0]
            raw[f"{f} {mode}"] = {**mean, "s_per_image": secs}
            rows.append([f"×{f:g} ({scaled[0][1].shape[1]}×{scaled[0][1].shape[0]})", mode,
                         mean["dice"], mean["auc"], mean["sen"], mean["spe"], f"{secs:.2f}"])
    stored = segs["native scale"].spec.info.get("fov_diameter")
    body = (f"Model `{a.model}` (stored FOV diameter: {stored} px). DRIVE test (20 images) "
            "resized by each factor; per-image means inside the FOV; the model's own "
            "threshold.\n\n" + md_table(["images", "inference", "dice", "auc", "sen", "spe",
                                         "s / image"], rows))
    publish("resolution", "Fundus: robustness to camera resolution", body, raw)


if __name__ == "__main__":
    main()

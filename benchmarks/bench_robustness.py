"""Robustness of the default models to acquisition changes (issue: default models).

The default models will meet images from other cameras and OCTA devices, which differ from
their training data in contrast, brightness, colour balance, sharpness, noise and compression.
This benchmark applies one such change at a time to every image of the splits we have, as a
user's file would carry it (8-bit values, then read back as the model reads any image), and
scores the model as users get it (`Segmenter`: the head trained on the dataset, the model's own
threshold, TTA and precision). Per-image means; DRIVE test inside the FOV, OCTA on the whole
image. The OCTA val splits also chose the OCTA model's checkpoint and threshold, so only the
*drop* from the clean row means much there.

Changes (applied to intensities in [0, 1]):

- ``gamma 0.6`` / ``gamma 1.6``: ``x ** g``, a brighter or darker mid-tone curve;
- ``contrast ×0.6``: ``mean + 0.6 (x - mean)``, a flatter image;
- ``brightness ×0.7``: ``0.7 x``, an under-exposed image;
- ``blur σ 1 px``: Gaussian blur per channel (softer optics or a resampled scan);
- ``noise σ 0.04``: additive Gaussian noise (fixed seed per image), a noisier sensor or speckle;
- ``JPEG q 40``: a lossy file as often shared;
- ``colour balance`` (fundus only): red ×1.15, green ×0.9, blue ×0.75, another camera's white
  balance.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_robustness.py
    PYTHONPATH=src .venv/bin/python benchmarks/bench_robustness.py --fundus-model PATH \
        --octa-model PATH
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable

import numpy as np
from common import RESULTS, SHARED_DATA, md_table, write_section
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from retinaseg.data import build_dataset
from retinaseg.evaluation.metrics import confusion_counts, threshold_metrics
from retinaseg.inference.pipeline import Segmenter

SPLITS = [  # (label, modality, dataset, folder, split, options)
    ("DRIVE test (inside FOV)", "fundus", "drive", "DRIVE", "test", {}),
    ("OCTA-500 val 6M", "octa", "octa500", "OCTA-500", "val", {"fov": "6M"}),
    ("OCTA-500 val 3M", "octa", "octa500", "OCTA-500", "val", {"fov": "3M"}),
    ("ROSSA val", "octa", "rossa", "ROSSA", "val", {}),
]

Change = Callable[[np.ndarray, int], np.ndarray]
"""``(image in [0, 1], [H,W] or [H,W,3], seed) -> changed image in [0, 1]``."""


def _per_channel(img: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    if img.ndim == 2:
        return fn(img)
    return np.stack([fn(img[..., c]) for c in range(img.shape[-1])], axis=-1)


def _contrast(img: np.ndarray, _seed: int) -> np.ndarray:
    return _per_channel(img, lambda c: c.mean() + 0.6 * (c - c.mean()))


def _noise(img: np.ndarray, seed: int) -> np.ndarray:
    return img + np.random.default_rng(seed).normal(0.0, 0.04, img.shape)


def _jpeg(img: np.ndarray, _seed: int, quality: int = 40) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(img)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255.0


def _balance(img: np.ndarray, _seed: int) -> np.ndarray:
    return img * np.array([1.15, 0.9, 0.75], dtype=np.float32)


CHANGES: dict[str, tuple[Change, bool]] = {  # name -> (change, colour images only)
    "none": (lambda x, _s: x, False),
    "gamma 0.6": (lambda x, _s: x ** 0.6, False),
    "gamma 1.6": (lambda x, _s: x ** 1.6, False),
    "contrast ×0.6": (_contrast, False),
    "brightness ×0.7": (lambda x, _s: 0.7 * x, False),
    "blur σ 1 px": (lambda x, _s: _per_channel(x, lambda c: ndimage.gaussian_filter(c, 1.0)),
                    False),
    "noise σ 0.04": (_noise, False),
    "JPEG q 40": (_jpeg, False),
    "colour balance": (_balance, True),
}


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def apply_change(name: str, img: np.ndarray, seed: int) -> np.ndarray:
    """``img`` (float in [0, 1]) after change ``name``, quantised to 8 bits like a file."""
    out = CHANGES[name][0](img.astype(np.float32), seed)
    return _to_uint8(np.clip(out, 0.0, 1.0)).astype(np.float32) / 255.0


def score_split(model: str, dataset: str, root, split: str, options: dict,
                changes: list[str]) -> dict[str, dict[str, float]]:
    """Per-image-mean Dice, sensitivity and specificity of ``model`` under each change."""
    ds = build_dataset(dataset, root, split, **options)
    seg = Segmenter(model, dataset=dataset)
    acc: dict[str, dict[str, list[float]]] = {c: {"dice": [], "sen": [], "spe": []}
                                              for c in changes}
    for i in tqdm(range(len(ds)), desc=f"{dataset} {options}", unit="img"):
        item = ds[i]
        fov = item["fov"] if item["fov"] is not None else np.ones_like(item["label"])
        for c in changes:
            prob = seg(apply_change(c, item["image"], seed=i))
            m = threshold_metrics(confusion_counts(prob > seg.threshold, item["label"], fov))
            for k in acc[c]:
                acc[c][k].append(m[k])
    return {c: {k: float(np.mean(v)) for k, v in r.items()} for c, r in acc.items()}


def report(results: dict[str, dict], models: dict[str, str]) -> str:
    """A table per split: Dice, its change from the clean row, sensitivity, specificity."""
    parts = [
        "Each change is applied alone to every image of the split, quantised to 8 bits as a "
        "file would be; the model runs as users get it (own threshold, TTA and precision). "
        "Per-image means; DRIVE inside the FOV. Δ Dice: against the unchanged images. The "
        f"models: fundus `{models['fundus']}`, OCTA `{models['octa']}`. The OCTA val splits "
        "also chose that model's checkpoint and threshold, so read their drops, not their "
        "levels. Definitions of the changes: the script's docstring."]
    for label, rows in results.items():
        clean = rows["none"]["dice"]
        table = [[c, r["dice"], f"{r['dice'] - clean:+.4f}", r["sen"], r["spe"]]
                 for c, r in rows.items()]
        worst = min((r["dice"] - clean, c) for c, r in rows.items() if c != "none")
        parts.append(f"**{label}** (largest drop: {worst[1]}, {worst[0]:+.4f})\n\n"
                     + md_table(["change", "dice", "Δ dice", "sen", "spe"], table))
    return "\n\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fundus-model", default="fundus-vessels")
    ap.add_argument("--octa-model", default="octa-vessels")
    ap.add_argument("--only", default=None,
                    help="comma-separated split labels' first words, e.g. DRIVE,ROSSA")
    a = ap.parse_args()
    models = {"fundus": a.fundus_model, "octa": a.octa_model}
    results: dict[str, dict] = {}
    for label, modality, dataset, folder, split, options in SPLITS:
        if a.only and label.split()[0] not in a.only.split(","):
            continue
        root = SHARED_DATA / folder
        if not root.is_dir():
            print(f"[skip] {label}: {root} is absent")
            continue
        changes = [c for c, (_, colour) in CHANGES.items()
                   if not colour or modality == "fundus"]
        results[label] = score_split(models[modality], dataset, root, split, options, changes)
    (RESULTS / "robustness.json").write_text(json.dumps(results, indent=2))
    body = report(results, models)
    write_section("robustness", "Default models under acquisition changes", body)
    print(body)


if __name__ == "__main__":
    main()

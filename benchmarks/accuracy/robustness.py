"""Accuracy under changed inputs: the default models on other devices' images.

Three modes, each writing its own results section:

- ``acquisition`` (default; section ``robustness``, or ``robustness_oof`` with ``--oof``):
  contrast, brightness, colour, blur, noise and JPEG changes, below;
- ``resolution`` (section ``resolution``): fundus photographs at other camera resolutions;
- ``octa-scale`` (section ``octa_scale``): OCTA maps stored larger than scanned.

**Acquisition changes.**

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

With ``--oof`` a fundus k-fold ensemble is scored out of fold instead: every DRIVE training
image by the member that held it out (validation data only, so it may choose between recipes).

**Resolution.** Other fundus datasets are shot at other resolutions (CHASE_DB1 999×960, HRF
3504×2336). As a stand-in, the DRIVE test images, labels and FOV masks are resized by a factor
(0.75, 1.5, 2, 3) and scored inside the FOV, once with the model's FOV-diameter matching
(default) and once at native scale (``--native-scale``). Labels are resized with nearest
neighbour, so the resized reference has the same vessels, only wider or thinner in pixels.

**OCTA scale.** Some devices export en-face maps interpolated to a larger size than their scan
(for example a 400-A-scan map saved at 1024 px). ``octa-vessels`` has no resolution matching
(an OCTA map carries no landmark like the fundus FOV), so such a map reaches the network with
vessels several pixels wider than in training. Every map of the OCTA val splits is upsampled
by 1.5, 2 and 2.5 (bilinear, 8-bit, as an exported file; labels by nearest neighbour) and
scored as the model runs by default, and with ``Segmenter(scale=1/f)`` (``retinaseg predict
--scale``), which resizes each map back to the scanned size before inference and the
probability map up again after it. Per-image mean Dice at the model's own threshold, on the
enlarged labels; the val splits also chose the model's checkpoint and threshold, so read the
differences, not the levels.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/robustness.py
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/robustness.py --fundus-model PATH \
        --octa-model PATH
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/robustness.py \
        --oof runs/drive_unet_kfold_bce5/ensemble.safetensors,runs/<other>/ensemble.safetensors
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/robustness.py \
        --oof runs/drive_unet_kfold_bce5/ensemble.safetensors@configs/fundus_vessels.yaml
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/robustness.py --mode resolution
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/robustness.py --mode octa-scale
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import (
    OCTA_VAL_SPLITS,
    REPO,
    SHARED_DATA,
    UPSAMPLE,
    dice,
    held_out_images,
    md_table,
    publish,
    upsampled,
)
from tqdm import tqdm

import retinaseg.preprocessing.acquisition as acq
from retinaseg.data import build_dataset
from retinaseg.evaluation.metrics import (
    confusion_counts,
    image_metrics,
    summarise,
    threshold_metrics,
)
from retinaseg.inference.segmenter import Segmenter

SPLITS = [  # (label, modality, dataset, folder, split, options)
    ("DRIVE test (inside FOV)", "fundus", "drive", "DRIVE", "test", {}),
    ("OCTA-500 val 6M", "octa", "octa500", "OCTA-500", "val", {"fov": "6M"}),
    ("OCTA-500 val 3M", "octa", "octa500", "OCTA-500", "val", {"fov": "3M"}),
    ("ROSSA val", "octa", "rossa", "ROSSA", "val", {}),
]

CHANGES: dict[str, tuple[Callable[[np.ndarray, int], np.ndarray], bool]] = {
    # name -> ((image in [0, 1], seed) -> changed image, colour images only)
    "none": (lambda x, _s: x, False),
    "gamma 0.6": (lambda x, _s: acq.gamma(x, 0.6), False),
    "gamma 1.6": (lambda x, _s: acq.gamma(x, 1.6), False),
    "contrast ×0.6": (lambda x, _s: acq.contrast(x, 0.6), False),
    "brightness ×0.7": (lambda x, _s: 0.7 * x, False),
    "blur σ 1 px": (lambda x, _s: acq.blur(x, 1.0), False),
    "noise σ 0.04": (lambda x, s: acq.noise(x, 0.04, np.random.default_rng(s)), False),
    "JPEG q 40": (lambda x, _s: acq.jpeg(x, 40), False),
    "colour balance": (lambda x, _s: acq.colour_balance(x, (1.15, 0.9, 0.75)), True),
}


def apply_change(name: str, img: np.ndarray, seed: int) -> np.ndarray:
    """``img`` (float in [0, 1]) after change ``name``, rounded to 8 bits like a file."""
    return acq.to_8bit(CHANGES[name][0](img.astype(np.float32), seed))


def changes_for(modality: str) -> list[str]:
    """The changes that apply to a modality (colour balance: fundus only)."""
    return [c for c, (_, colour) in CHANGES.items() if not colour or modality == "fundus"]


Scores = dict[str, dict[str, list[float]]]
"""change -> metric (dice, sen, spe) -> one value per image."""


def _score_changes(seg: Segmenter, item: dict, seed: int, threshold: float, acc: Scores) -> None:
    """Add one image's metrics under every change of ``acc`` (inside its FOV, if any)."""
    fov = item["fov"] if item["fov"] is not None else np.ones_like(item["label"])
    for c, row in acc.items():
        prob = seg(apply_change(c, item["image"], seed=seed))
        m = threshold_metrics(confusion_counts(prob > threshold, item["label"], fov))
        for k in row:
            row[k].append(m[k])


def _means(acc: Scores) -> dict[str, dict[str, float]]:
    return {c: {k: float(np.mean(v)) for k, v in r.items()} for c, r in acc.items()}


def _empty(changes: list[str]) -> Scores:
    return {c: {"dice": [], "sen": [], "spe": []} for c in changes}


def score_split(model: str, dataset: str, root, split: str, options: dict,
                changes: list[str]) -> dict[str, dict[str, float]]:
    """Per-image-mean Dice, sensitivity and specificity of ``model`` under each change."""
    ds = build_dataset(dataset, root, split, **options)
    seg = Segmenter(model, dataset=dataset)
    acc = _empty(changes)
    for i in tqdm(range(len(ds)), desc=f"{dataset} {options}", unit="img"):
        _score_changes(seg, ds[i], i, seg.threshold, acc)
    return _means(acc)


def score_oof(entry: str, changes: list[str]) -> dict[str, dict[str, float]]:
    """Out-of-fold Dice of a fundus k-fold ensemble under each change: every DRIVE training
    image scored by the member that held it out (run as users get a model), at the
    ensemble's threshold. Validation data only, so it may choose between ensembles.
    ``entry`` is ``ENSEMBLE`` or ``ENSEMBLE@CONFIG``: the members then run with the config's
    preprocessing (which may add adaptive restorations to theirs)."""
    from retinaseg.models.persistence import read_spec

    ensemble, _, config = entry.partition("@")
    steps = None
    if config:
        from retinaseg.training.config import load_config

        steps = load_config(REPO / config).data.preprocess
    threshold = read_spec(REPO / ensemble).threshold
    acc = _empty(changes)
    for seg, i, item in held_out_images(ensemble, steps):
        _score_changes(seg, item, i, threshold, acc)
    return _means(acc)


def report_oof(results: dict[str, dict]) -> str:
    """One table: each ensemble's out-of-fold Dice per change and its mean over the changes."""
    changes = list(next(iter(results.values())))
    rows = []
    for name, r in results.items():
        changed = [r[c]["dice"] for c in changes if c != "none"]
        rows.append([f"`{name}`", *[r[c]["dice"] for c in changes], float(np.mean(changed))])
    return ("Fundus ensembles out of fold: the 20 DRIVE training images, each scored by the "
            "member that never saw it (as users run a model: bf16 where native, FOV box, no "
            "TTA), at the ensemble's own threshold; per-image mean Dice. `ENSEMBLE@CONFIG`: the "
            "members run with that config's preprocessing (adaptive restorations added). "
            "Validation data only: "
            "this table may choose between recipes (the rule of a robustness stage's "
            "config); DRIVE test is never used to choose.\n\n"
            + md_table(["ensemble", *changes, "mean over the changes"], rows))


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
        mean = np.mean([r["dice"] for c, r in rows.items() if c != "none"])
        parts.append(f"**{label}** (mean Dice over the changes {mean:.4f}; largest drop: "
                     f"{worst[1]}, {worst[0]:+.4f})\n\n"
                     + md_table(["change", "dice", "Δ dice", "sen", "spe"], table))
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------ resolution

FACTORS = (0.75, 1.0, 1.5, 2.0, 3.0)


def _resized(sample: dict, f: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from skimage.transform import resize

    h, w = sample["label"].shape
    shape = (round(h * f), round(w * f))
    img = resize(sample["image"], (*shape, 3), order=1, anti_aliasing=f < 1).astype(np.float32)
    lab = resize(sample["label"], shape, order=0, anti_aliasing=False) > 0.5
    fov = resize(sample["fov"], shape, order=0, anti_aliasing=False) > 0.5
    return img, lab, fov


def resolution(model: str) -> None:
    """DRIVE test resized by each factor, with and without FOV-diameter matching."""
    ds = build_dataset("drive", str(SHARED_DATA / "DRIVE"), "test")
    samples = [ds[i] for i in range(len(ds))]
    segs = {"FOV matching (default)": Segmenter(model),
            "native scale": Segmenter(model, match_fov=False)}
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
    body = (f"Model `{model}` (stored FOV diameter: {stored} px). DRIVE test (20 images) "
            "resized by each factor; per-image means inside the FOV; the model's own "
            "threshold.\n\n" + md_table(["images", "inference", "dice", "auc", "sen", "spe",
                                         "s / image"], rows))
    publish("resolution", "Fundus: robustness to camera resolution", body, raw)


# ------------------------------------------------------------------------------ OCTA scale


def octa_scale(model: str) -> None:
    """Per split: Dice at the scanned size, and per factor by default and with ``--scale``."""
    res = {}
    for label, dataset, folder, options in OCTA_VAL_SPLITS:
        ds = build_dataset(dataset, SHARED_DATA / folder, "val", **options)
        plain = Segmenter(model, dataset=dataset)
        back = {f: Segmenter(model, dataset=dataset, scale=1 / f) for f in UPSAMPLE}
        acc: dict[str, list[float]] = {"scanned size": []}
        for i in tqdm(range(len(ds)), desc=label, unit="img"):
            item = ds[i]
            acc["scanned size"].append(dice(plain(item["image"]), item, plain.threshold))
            for f in UPSAMPLE:
                img, big = upsampled(item, f)
                acc.setdefault(f"×{f}, default", []).append(
                    dice(plain(img), big, plain.threshold))
                acc.setdefault(f"×{f}, --scale {1 / f:.3g}", []).append(
                    dice(back[f](img), big, plain.threshold))
        res[label] = {k: float(np.mean(v)) for k, v in acc.items()}
    cols = list(next(iter(res.values())))
    rows = [[c, *[res[s][c] for s in res]] for c in cols]
    body = (f"Model `{model}`. OCTA val maps upsampled by each factor (bilinear, 8-bit; labels "
            "nearest), scored at the enlarged size: by default, and with `--scale 1/f`, which "
            "runs the network at the scanned size. Per-image mean Dice, the model's own "
            "threshold.\n\n" + md_table(["maps", *res], rows))
    publish("octa_scale", "OCTA maps stored larger than scanned", body, res)


# -------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="acquisition",
                    choices=["acquisition", "resolution", "octa-scale"])
    ap.add_argument("--fundus-model", default="fundus-vessels")
    ap.add_argument("--octa-model", default="octa-vessels")
    ap.add_argument("--only", default=None,
                    help="comma-separated split labels' first words, e.g. DRIVE,ROSSA")
    ap.add_argument("--oof", default=None,
                    help="comma-separated fundus k-fold ensemble files, each optionally "
                         "ENSEMBLE@CONFIG to run the members with that config's preprocessing: "
                         "score them out of fold on the DRIVE training images instead")
    ap.add_argument("--section", default="robustness",
                    help="results section to write (another name keeps the bundles' section)")
    a = ap.parse_args()
    if a.mode == "resolution":
        resolution(a.fundus_model)
        return
    if a.mode == "octa-scale":
        octa_scale(a.octa_model)
        return
    if a.oof:
        oof = {e: score_oof(e, changes_for("fundus")) for e in a.oof.split(",")}
        publish("robustness_oof", "Fundus robustness out of fold (choosing data)",
                report_oof(oof), oof)
        return
    models = {"fundus": a.fundus_model, "octa": a.octa_model}
    results: dict[str, dict] = {}
    for label, modality, dataset, folder, split, options in SPLITS:
        if a.only and label.split()[0] not in a.only.split(","):
            continue
        root = SHARED_DATA / folder
        if not root.is_dir():
            print(f"[skip] {label}: {root} is absent")
            continue
        results[label] = score_split(models[modality], dataset, root, split, options,
                                     changes_for(modality))
    title = ("Default models under acquisition changes" if a.section == "robustness"
             else f"Acquisition changes: candidate models ({a.section})")
    publish(a.section, title, report(results, models), results)


if __name__ == "__main__":
    main()

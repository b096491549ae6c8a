"""Cross-validated Dice of the OCTA-500 class and FAZ models (issue 25).

Two tasks on the few OCTA-500 subjects of ``../shared/data`` with class labels, each in 5
seeded folds whose runs (``runs/<prefix>_f<K>/``, newest) are scored on the 2 subjects they
held out (each fold chose its checkpoint and threshold on them too, so the figures lean
optimistic alike for every row):

- ``cavf``: capillary / artery / vein / FAZ from ``GT_CAVF`` (10 subjects), two recipes:
  from scratch (``configs/octa_cavf.yaml``) and fine-tuned from ``octa-vessels``
  (``configs/octa_cavf_init.yaml``); argmax maps, per-class Dice, sensitivity and specificity.
- ``faz``: the binary FAZ model (``configs/octa_faz.yaml``, ``GT_FAZ``, the same 10 subjects)
  against the classical FAZ of :mod:`retinaseg.measure` (``octa-vessels`` mask + the OCTA
  image) on the same held-out images: Dice and FAZ area error (mm²); plus the one val-split
  subject with ``GT_FAZ`` (3M 10441), which no fold saw, scored by the five folds averaged
  (``--ensemble FILE``, written by ``retinaseg ensemble``).

With ``--train`` the missing folds are trained first (``retinaseg train CONFIG --set
data.fold=K --set name=<prefix>_f<K>``; 1-3 min each). Writes the ``octa_classes`` section.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/octa_classes.py [--train] \
        [--ensemble runs/octa_faz_ensemble.safetensors]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import REPO, md_table, publish

from retinaseg.data import build_dataset
from retinaseg.evaluation.classes import class_metrics
from retinaseg.inference.segmenter import Segmenter
from retinaseg.measure.faz import largest_region
from retinaseg.training.config import RunConfig, load_config
from retinaseg.training.data import carve_validation

CAVF = {"from scratch": ("octa_cavf.yaml", "octa_cavf"),
        "from octa-vessels": ("octa_cavf_init.yaml", "octa_cavf_init")}
FAZ = ("octa_faz.yaml", "octa_faz")
MM_PER_PX = {"3M": 3 / 304, "6M": 6 / 400}


def fold_run(prefix: str, k: int) -> Path | None:
    """The newest finished run of fold ``k`` (None when there is none)."""
    runs = sorted((REPO / "runs" / f"{prefix}_f{k}").glob("*/summary.json"))
    return runs[-1].parent if runs else None


def train_missing(config: str, prefix: str, folds: int) -> None:
    for k in range(folds):
        if fold_run(prefix, k) is None:
            subprocess.run([sys.executable, "-m", "retinaseg", "train",
                            str(REPO / "configs" / config), "--set", f"data.fold={k}",
                            "--set", f"name={prefix}_f{k}"], cwd=REPO, check=True)


def held_out(cfg: RunConfig, prefix: str):
    """Yield ``(fold, run, dataset item)`` for every image a fold held out."""
    ds = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.train_split, **cfg.data.options)
    ids = [s.id for s in ds.samples]
    for k in range(cfg.data.folds or 0):
        run = fold_run(prefix, k)
        if run is None:
            raise SystemExit(f"fold {k} has no run in runs/{prefix}_f{k}/; use --train")
        _, held = carve_validation(ids, cfg.data.val_fraction, cfg.seed, cfg.data.folds, k)
        for sid in held:
            yield k, run, with_meta(ds, ids.index(sid))


def with_meta(ds, i: int) -> dict:
    """Item ``i`` of ``ds`` with its sample's ``meta`` (``fov``, ``subject``)."""
    return {**ds[i], "meta": ds.samples[i].meta}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def classical_faz(image: np.ndarray, seg: Segmenter) -> np.ndarray:
    """The classical FAZ (``octa-vessels`` mask + the OCTA image); empty when not found."""
    from retinaseg.measure.api import analyse_mask

    grey = image[..., 0] if image.ndim == 3 else image
    mask = seg(grey) > seg.threshold
    found = analyse_mask(mask, modality="octa", grid="none", image=grey).faz.mask
    return found if found is not None else np.zeros(mask.shape, bool)


def model_faz(image: np.ndarray, seg: Segmenter) -> np.ndarray:
    """The FAZ model's mask, its largest connected region (as ``retinaseg measure`` does)."""
    found = seg(image) > seg.threshold
    return largest_region(found) if found.any() else found


def faz_row(pred: np.ndarray, label: np.ndarray, fov: str) -> dict[str, float]:
    k = MM_PER_PX[fov] ** 2
    return {"dice": dice(pred, label), "area_err_mm2": float((pred.sum() - label.sum()) * k)}


def cavf_rows(recipe: str, config: str, prefix: str, raw: dict) -> list[list]:
    cfg = load_config(REPO / "configs" / config)
    classes = list(cfg.model.classes or [])
    per = []
    for k, run, item in held_out(cfg, prefix):
        seg = Segmenter(run)
        m = class_metrics(seg(item["image"]).argmax(0), item["label"], classes)
        per.append({"fold": k, **{key: float(v) for key, v in m.items()}})
        raw.setdefault(recipe, {})[item["id"]] = per[-1]
    return [[recipe, c, *[float(np.nanmean([p[f"{key}_{c}"] for p in per]))
                          for key in ("dice", "sen", "spe")]] for c in [*classes[1:], "mean"]]


def faz_rows(raw: dict, ensemble: Path | None) -> tuple[list[list], list[list]]:
    cfg = load_config(REPO / "configs" / FAZ[0])
    octa = Segmenter("octa-vessels")
    per: dict[str, list[dict]] = {"model": [], "classical": []}
    subjects = []
    for k, run, item in held_out(cfg, FAZ[1]):
        label, fov = item["label"].astype(bool), item["meta"]["fov"]
        got = {"model": model_faz(item["image"], Segmenter(run)),
               "classical": classical_faz(item["image"], octa)}
        for name, pred in got.items():
            per[name].append(faz_row(pred, label, fov))
        raw.setdefault("faz", {})[item["id"]] = {"fold": k, **{
            f"{n}_{key}": v for n in got for key, v in per[n][-1].items()}}
        subjects.append([f"{fov} {item['id']}", k, float(label.sum() * MM_PER_PX[fov] ** 2),
                         per["model"][-1]["dice"], per["classical"][-1]["dice"]])
    rows = [[f"FAZ, {name}" + (" (5-fold, held out)" if name == "model" else
                               " (octa-vessels mask + image)"),
             float(np.mean([r["dice"] for r in rs])), float(np.median([r["dice"] for r in rs])),
             float(np.mean([r["area_err_mm2"] for r in rs])),
             float(np.mean([abs(r["area_err_mm2"]) for r in rs]))] for name, rs in per.items()]
    if ensemble is not None:
        rows += val_subject_rows(cfg, ensemble, octa, raw)
    return rows, subjects


def val_subject_rows(cfg: RunConfig, ensemble: Path, octa: Segmenter, raw: dict) -> list[list]:
    """The val-split subjects with ``GT_FAZ`` (no fold saw them), by the fold ensemble."""
    ds = build_dataset(cfg.data.dataset, cfg.data.root, "val", **cfg.data.options)
    seg, rows = Segmenter(ensemble), []
    for item in (with_meta(ds, i) for i in range(len(ds))):
        label, fov = item["label"].astype(bool), item["meta"]["fov"]
        for name, pred in (("model ensemble", model_faz(item["image"], seg)),
                           ("classical", classical_faz(item["image"], octa))):
            r = faz_row(pred, label, fov)
            raw.setdefault("faz_val", {})[f"{item['id']} {name}"] = r
            rows.append([f"FAZ, {name}: val subject {fov} {item['id']}", r["dice"], r["dice"],
                         r["area_err_mm2"], abs(r["area_err_mm2"])])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", action="store_true", help="train the folds that have no run")
    ap.add_argument("--ensemble", type=Path, default=None,
                    help="the FAZ folds averaged (retinaseg ensemble), for the val subject")
    a = ap.parse_args()
    if a.train:
        for config, prefix in [*CAVF.values(), FAZ]:
            train_missing(config, prefix, 5)
    raw: dict = {}
    cavf = [row for recipe, (config, prefix) in CAVF.items()
            for row in cavf_rows(recipe, config, prefix, raw)]
    faz, subjects = faz_rows(raw, a.ensemble)
    body = ("The OCTA-500 subjects of `../shared/data` with class labels (6M 10001-10005, 3M "
            "10301-10305), 5 folds of 2; each image scored by the fold that held it out (that "
            "fold also chose its checkpoint and threshold on it: optimistic alike for every "
            "row). Per-image means over 10 images. Small-sample figures.\n\n"
            "**Capillary / artery / vein / FAZ** (`GT_CAVF`, argmax of a 5-class softmax "
            "U-Net, `dice_ce`): from scratch on OCTA(ILM_OPL) + OCTA(FULL) "
            "(`configs/octa_cavf.yaml`), and fine-tuned from `octa-vessels` on OCTA(ILM_OPL) "
            "(`configs/octa_cavf_init.yaml`).\n\n"
            + md_table(["recipe", "class", "dice", "sen", "spe"], cavf)
            + "\n\n**FAZ** (`GT_FAZ`): the binary FAZ model (`configs/octa_faz.yaml`, its "
            "largest region) against the classical FAZ of `retinaseg measure` on the same "
            "held-out images; area error = ours − label.\n\n"
            + md_table(["route", "dice mean", "dice median", "area error mean (mm²)",
                        "abs. area error mean (mm²)"], faz)
            + "\n\nPer held-out image:\n\n"
            + md_table(["subject", "fold", "GT area (mm²)", "model Dice", "classical Dice"],
                       subjects))
    publish("octa_classes", "OCTA-500 classes and FAZ: cross-validated Dice", body, raw)


if __name__ == "__main__":
    main()

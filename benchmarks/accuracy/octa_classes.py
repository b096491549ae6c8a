"""Cross-validated Dice per class of the OCTA-500 class model (``configs/octa_cavf.yaml``).

The 10 subjects of ``../shared/data`` with ``GT_CAVF`` (capillary, artery, vein, FAZ) in 5 folds:
each fold's run (``runs/octa_cavf_f<K>/``, newest) is scored on the 2 subjects it held out (its
checkpoint was chosen on them too, so the figures lean optimistic), the argmax map against the
label; per-class Dice, sensitivity and specificity, per image, then the mean over the 10
held-out images. The FAZ class is set beside the classical FAZ of ``retinaseg.measure``
(octa-vessels mask + OCTA image) on the same images. With ``--train`` the missing folds are
trained first (``retinaseg train configs/octa_cavf.yaml --set data.fold=K``; 3 min each).

Writes the ``octa_classes`` section.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/octa_classes.py [--train]
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
from retinaseg.training.config import load_config
from retinaseg.training.data import carve_validation

CONFIG = REPO / "configs" / "octa_cavf.yaml"


def fold_run(k: int) -> Path | None:
    """The newest finished run of fold ``k`` (None when there is none)."""
    runs = sorted((REPO / "runs" / f"octa_cavf_f{k}").glob("*/summary.json"))
    return runs[-1].parent if runs else None


def train_missing(folds: int) -> None:
    for k in range(folds):
        if fold_run(k) is None:
            subprocess.run([sys.executable, "-m", "retinaseg", "train", str(CONFIG), "--set",
                            f"data.fold={k}", "--set", f"name=octa_cavf_f{k}"], cwd=REPO,
                           check=True)


def classical_faz_dice(image: np.ndarray, faz: np.ndarray, seg: Segmenter) -> float:
    """Dice of the classical FAZ (octa-vessels mask + the OCTA image) against ``faz``."""
    from retinaseg.measure.api import analyse_mask

    grey = image[..., 0]
    mask = seg(grey) > seg.threshold
    found = analyse_mask(mask, modality="octa", grid="none", image=grey).faz.mask
    if found is None or not found.any():
        return 0.0
    return float(2 * (found & faz).sum() / (found.sum() + faz.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", action="store_true", help="train the folds that have no run")
    a = ap.parse_args()
    cfg = load_config(CONFIG)
    if a.train:
        train_missing(cfg.data.folds)
    ds = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.train_split, **cfg.data.options)
    ids = [s.id for s in ds.samples]
    classes = list(cfg.model.classes)
    octa = Segmenter("octa-vessels")
    rows, raw = [], {"per_image": {}, "runs": {}}
    for k in range(cfg.data.folds):
        run = fold_run(k)
        if run is None:
            raise SystemExit(f"fold {k} has no run in runs/octa_cavf_f{k}/; use --train")
        raw["runs"][k] = str(run.relative_to(REPO))
        _, held = carve_validation(ids, cfg.data.val_fraction, cfg.seed, cfg.data.folds, k)
        seg = Segmenter(run)
        for sid in held:
            item = ds[ids.index(sid)]
            pred = seg(item["image"]).argmax(0)
            m = class_metrics(pred, item["label"], classes)
            m["faz_classical_dice"] = classical_faz_dice(item["image"], item["label"] == 4, octa)
            raw["per_image"][sid] = {"fold": k, **{key: float(v) for key, v in m.items()}}
    per = list(raw["per_image"].values())
    for c in [*classes[1:], "mean"]:
        rows.append([c, *[float(np.nanmean([p[f"{key}_{c}"] for p in per]))
                          for key in ("dice", "sen", "spe")]])
    faz_c = float(np.mean([p["faz_classical_dice"] for p in per]))
    rows.append(["faz, classical (octa-vessels mask + image)", faz_c, "–", "–"])
    body = (f"`configs/octa_cavf.yaml`: MONAI U-Net, softmax over {len(classes)} classes "
            "(`dice_ce`), inputs OCTA(ILM_OPL) + OCTA(FULL); the 10 OCTA-500 subjects with "
            f"`GT_CAVF` in {cfg.data.folds} folds, each image scored by the fold that held it "
            "out (argmax map; that fold also chose its checkpoint on it: optimistic). Per-image "
            f"means over {len(per)} images. A small-sample figure, not a shipped model.\n\n"
            + md_table(["class", "dice", "sen", "spe"], rows))
    publish("octa_classes", "OCTA-500 classes: cross-validated Dice per class", body, raw)


if __name__ == "__main__":
    main()

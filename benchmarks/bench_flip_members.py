"""Flip-diverse ensembles: does showing each member another view of the image help?

An ensemble's members can each see the input in another orientation (none, horizontal,
vertical or both flips; ``Ensemble(member_flips=...)``, ``retinaseg ensemble --member-flips``),
at no extra cost: the same number of network passes. Members trained with flip and rotation
augmentation are as good on a flipped view, but their errors differ more between views, which
the average can use; flip TTA gets its gain the same way, at twice the passes.

Our k-fold ensembles cannot show this out of fold (each training image is held out by one
member only), so this benchmark builds small ensembles whose members all held out the same
images: for fold k, the members of fold k of several recipes trained on the same 16 DRIVE
training images (``drive_unet_kfold_bce``: A, ``drive_unet_kfold`` (BCE + Dice): B,
``drive_unet_kfold_bce_acq``: C). Each fold's 4 held-out images are scored by that fold's
ensembles only, so all 20 training images are out of fold and DRIVE test is not used. Per row:
the per-image mean Dice at the best single threshold for that row (chosen on these images, so
optimistic equally for every row) and the per-image mean AUC inside the FOV.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_flip_members.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import REPO, SHARED_DATA, md_table, publish
from tqdm import tqdm

from retinaseg.data import build_dataset
from retinaseg.evaluation.metrics import confusion_counts, roc_auc, threshold_metrics
from retinaseg.inference.pipeline import Segmenter

RECIPES = {"A": "drive_unet_kfold_bce", "B": "drive_unet_kfold", "C": "drive_unet_kfold_bce_acq"}
VIEWS = {"none": lambda x: x, "h": lambda x: x[:, ::-1], "v": lambda x: x[::-1],
         "hv": lambda x: x[::-1, ::-1]}
ROWS: dict[str, list[tuple[str, str]]] = {  # row -> [(member, view)]
    "A": [("A", "none")],
    "A with hflip TTA (2 passes)": [("A", "none"), ("A", "h")],
    "A + B": [("A", "none"), ("B", "none")],
    "A + B, B sees h": [("A", "none"), ("B", "h")],
    "A + B + C": [("A", "none"), ("B", "none"), ("C", "none")],
    "A + B + C, B sees h, C sees v": [("A", "none"), ("B", "h"), ("C", "v")],
}
THRESHOLDS = np.round(np.arange(0.30, 0.61, 0.02), 2)


def member_file(recipe: str, fold: int) -> Path:
    files = sorted((REPO / "runs").glob(f"{recipe}_f{fold}/*/best.safetensors"))
    if not files:
        raise FileNotFoundError(f"runs/{recipe}_f{fold}/<stamp>/best.safetensors")
    return files[-1]


def held_out(fold: int) -> list[str]:
    """The ids of the DRIVE training images that fold ``fold`` holds out (from the runs'
    summaries, which must agree: every member of a row must have held out the same images)."""
    ids = []
    for recipe in RECIPES.values():
        summary = json.loads((member_file(recipe, fold).parent / "summary.json").read_text())
        ids.append(sorted(s.strip() for s in summary["validation"].split(":")[-1].split(",")))
    if any(i != ids[0] for i in ids):
        raise RuntimeError(f"the fold-{fold} runs of {list(RECIPES.values())} held out "
                           f"different images: {ids}")
    return ids[0]


def view_prob(seg: Segmenter, image: np.ndarray, view: str) -> np.ndarray:
    """The member's probabilities for ``image`` seen in ``view``, mapped back."""
    f = VIEWS[view]
    return np.ascontiguousarray(f(seg(np.ascontiguousarray(f(image)))))


def score(folds: int = 5) -> dict[str, dict[str, float]]:
    ds = build_dataset("drive", SHARED_DATA / "DRIVE", "training")
    index = {sample.id: i for i, sample in enumerate(ds.samples)}
    probs: dict[str, list[np.ndarray]] = {r: [] for r in ROWS}
    items = []
    for k in tqdm(range(folds), desc="folds", unit="fold"):
        segs = {m: Segmenter(member_file(r, k)) for m, r in RECIPES.items()}
        for img_id in held_out(k):
            item = ds[index[img_id]]
            items.append(item)
            cache: dict[tuple[str, str], np.ndarray] = {}
            for row, parts in ROWS.items():
                for part in parts:
                    if part not in cache:
                        cache[part] = view_prob(segs[part[0]], item["image"], part[1])
                probs[row].append(np.mean([cache[p] for p in parts], axis=0))
    out = {}
    for row, ps in probs.items():
        dice = {t: np.mean([threshold_metrics(confusion_counts(p > t, it["label"],
                                                               it["fov"]))["dice"]
                            for p, it in zip(ps, items)]) for t in THRESHOLDS}
        best = max(dice, key=dice.get)
        out[row] = {"dice": float(dice[best]), "threshold": float(best),
                    "auc": float(np.mean([roc_auc(p, it["label"], it["fov"])
                                          for p, it in zip(ps, items)])),
                    "passes": len(ROWS[row]), "n": len(ps)}
    return out


def report(res: dict[str, dict[str, float]]) -> str:
    rows = [[r, v["passes"], v["dice"], v["auc"], f"{v['threshold']:.2f}"] for r, v in res.items()]
    n = next(iter(res.values()))["n"]
    return (f"DRIVE training images out of fold ({n} images; each scored only by members that "
            "never saw it). A, B, C: the fold's members of `drive_unet_kfold_bce` (the bundle's "
            "recipe), `drive_unet_kfold` (BCE + Dice) and `drive_unet_kfold_bce_acq`. Per-image "
            "means inside the FOV; Dice at each row's best threshold on these images.\n\n"
            + md_table(["ensemble", "passes / image", "Dice (mean)", "AUC (mean)",
                        "threshold"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    res = score()
    publish("flip_members", "Fundus: flip-diverse ensemble members (out of fold)", report(res),
            res)


if __name__ == "__main__":
    main()

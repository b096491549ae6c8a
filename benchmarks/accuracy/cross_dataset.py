"""Accuracy across cameras: the bundled fundus models on every fundus dataset we are given.

For each model (``fundus-vessels``; ``fundus-vessels-drive`` when bundled; any ``--model``):
Dice, AUC and clDice (per-image means inside the FOV, at the model's own threshold), with
sensitivity and specificity, on

- DRIVE test (20; ``--drive-root``, default the shared copy);
- CHASE_DB1: the test subjects 11-14 when ``--chase-root`` holds them (a full copy), else the 4
  images of subjects 01-10 that ``configs/fundus_drive_chase.yaml`` holds out for validation
  (the shared copy has only subjects 01-10), labelled as such;
- STARE (``--stare-root``; its 20 labelled images) and HRF (``--hrf-root``; all 45 images),
  when given;

skipping the datasets it does not have. Each image goes through ``Segmenter`` with its default
options, so the inference resolution rule applies: a model that stores a FOV diameter gets each
photograph rescaled to it and the probability map scaled back (the ``scale`` column: the mean
factor applied). The ``seen`` column says how many of the scored images the model trained on,
read from the validation record in the model file (each ensemble member's): 0 = none, ``?`` =
not recorded (a model fine-tuned or distilled from another, or a dataset with its own
validation split). Rows with seen > 0 are not a test of that model.

Writes the ``cross_dataset`` section (``benchmarks/results/cross_dataset.{md,json}``).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/cross_dataset.py \\
        [--model RUN_OR_FILE ...] [--chase-root DIR] [--stare-root DIR] [--hrf-root DIR] \\
        [--datasets drive,chase,stare,hrf]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import REPO, SHARED_DATA, md_table, publish
from tqdm import tqdm

from retinaseg.data import build_dataset
from retinaseg.errors import RetinasegError
from retinaseg.evaluation.metrics import image_metrics
from retinaseg.inference.segmenter import Segmenter
from retinaseg.models.persistence import read_spec, resolve_model_path
from retinaseg.training.config import load_config
from retinaseg.training.data import carve_validation

BUNDLED_FUNDUS = ("fundus-vessels", "fundus-vessels-drive")
"""Bundled fundus models scored when present in ``src/retinaseg/weights``."""
CHASE_CONFIG = REPO / "configs" / "fundus_drive_chase.yaml"
"""The recipe whose CHASE_DB1 validation carve is scored when the test subjects are absent."""
KEYS = ["dice", "auc", "cldice", "sen", "spe"]


@dataclass
class Case:
    """One scored set of images: a dataset split, optionally only some of its ids."""

    key: str
    label: str
    dataset: str
    root: Path
    split: str
    ids: list[str] | None = None
    options: dict = field(default_factory=dict)


def _ids(dataset: str, root: Path, split: str) -> list[str]:
    return [s.id for s in build_dataset(dataset, str(root), split).samples]


def chase_case(root: Path | None) -> Case | None:
    """CHASE_DB1 test (subjects 11-14) when ``root`` has them, else the validation carve of
    :data:`CHASE_CONFIG` on the train subjects; None without any CHASE_DB1 copy."""
    if root is not None:
        try:
            n = len(_ids("chase_db1", root, "test"))
            return Case("chase", f"CHASE_DB1 test (subjects 11-14, {n})", "chase_db1", root,
                        "test")
        except RetinasegError:
            pass  # a copy without the test subjects: the held-out train images below
    root = root or SHARED_DATA / "CHASE_DB1"
    if not root.is_dir():
        return None
    cfg = load_config(CHASE_CONFIG)
    src = next(s for s in cfg.data.sources() if s.dataset == "chase_db1")
    _, held = carve_validation(_ids("chase_db1", root, src.train_split), cfg.data.val_fraction,
                               cfg.seed, cfg.data.folds, cfg.data.fold)
    return Case("chase", f"CHASE_DB1 held-out val images ({len(held)} of subjects 01-10, "
                f"held out by {CHASE_CONFIG.name}: {', '.join(held)})", "chase_db1", root,
                src.train_split, held)


def cases(a: argparse.Namespace) -> list[Case]:
    want = set(a.datasets.split(","))
    out: list[Case | None] = []
    if "drive" in want and (a.drive_root / "test").is_dir():
        out.append(Case("drive", "DRIVE test (20)", "drive", a.drive_root, "test"))
    if "chase" in want:
        out.append(chase_case(a.chase_root))
    if "stare" in want and a.stare_root:
        out.append(Case("stare", "STARE (20 labelled)", "stare", a.stare_root, "all"))
    if "hrf" in want and a.hrf_root:
        out.append(Case("hrf", "HRF (45)", "hrf", a.hrf_root, "all"))
    return [c for c in out if c is not None]


def _records(model: str) -> list[str] | None:
    """The validation record of each training run behind ``model`` ('<dataset> images carved
    from ...; ...'), or None when the model builds on others (init, distillation)."""
    info = read_spec(resolve_model_path(model)).info
    if info.get("init") or info.get("distilled_from"):
        return None
    members = info.get("members")
    if members:
        if any(m.get("distilled_from") or m.get("init") for m in members):
            return None
        return [str(m.get("validation", "")) for m in members]
    src = str(info.get("threshold_source", ""))
    inner = re.fullmatch(r"chosen on validation \((.*)\)", src, re.S)
    return [inner.group(1)] if inner else None


CARVED = re.compile(r"(\S+) images carved from '([^']+)' \([^)]*\): (.*)")


def seen(model: str, case: Case, ids: list[str]) -> int | None:
    """How many of ``ids`` (of ``case``) the model trained on; None when not recorded."""
    records = _records(model)
    if records is None:
        return None
    trained: set[str] = set()
    for record in records:
        for part in record.split("; "):
            if not part.startswith(f"{case.dataset} "):
                continue
            m = CARVED.fullmatch(part)
            if m is None:  # a validation split of its own: the training split is not recorded
                return None
            held = {h.strip() for h in m.group(3).split(",")}
            try:
                trained |= set(_ids(case.dataset, case.root, m.group(2))) - held
            except RetinasegError:
                return None
    return len(trained & set(ids))


def score(model: str, case: Case) -> dict:
    """Per-image means of :data:`KEYS` at the model's threshold, inside the FOV."""
    ds = build_dataset(case.dataset, str(case.root), case.split, **case.options)
    if case.ids is not None:
        ds.samples = [s for s in ds.samples if s.id in set(case.ids)]
    seg = Segmenter(model, dataset=case.dataset)
    rows, scales = [], []
    for i in tqdm(range(len(ds)), desc=f"{model} on {case.key}", leave=False):
        s = ds[i]
        prob = seg(s["image"])
        scales.append(seg.last_scale)
        m = image_metrics(prob, s["label"], seg.threshold, s["fov"])
        rows.append({k: float(m[k]) for k in KEYS})
    ids = [s.id for s in ds.samples]
    return {"n": len(rows), "ids": ids, "threshold": float(seg.threshold),
            "mean": {k: float(np.nanmean([r[k] for r in rows])) for k in KEYS},
            "per_image": dict(zip(ids, rows)), "scale": float(np.mean(scales)),
            "seen": seen(model, case, ids)}


def models(extra: list[str]) -> list[str]:
    weights = Path(resolve_model_path("fundus-vessels")).parent
    return [m for m in BUNDLED_FUNDUS if (weights / f"{m}.safetensors").is_file()] + extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[],
                    help="another model to score (run folder, .safetensors file or bundled "
                         "name); repeatable")
    ap.add_argument("--drive-root", type=Path, default=SHARED_DATA / "DRIVE")
    ap.add_argument("--chase-root", type=Path, default=None,
                    help="a CHASE_DB1 folder; with subjects 11-14 they are scored (the test "
                         "split), else the held-out images of subjects 01-10")
    ap.add_argument("--stare-root", type=Path, default=None)
    ap.add_argument("--hrf-root", type=Path, default=None)
    ap.add_argument("--datasets", default="drive,chase,stare,hrf",
                    help="comma-separated subset of drive,chase,stare,hrf")
    a = ap.parse_args()
    todo = cases(a)
    names = models(a.model)
    rows, raw = [], {"cases": {c.key: c.label for c in todo}, "results": {}}
    for model in names:
        for case in todo:
            t0 = time.time()
            r = score(model, case)
            r["seconds"] = time.time() - t0
            raw["results"][f"{model} | {case.key}"] = {"model": model, "data": case.label, **r}
            mark = "?" if r["seen"] is None else str(r["seen"])
            rows.append([model, case.label, r["n"], *[r["mean"][k] for k in KEYS],
                         f"{r['scale']:.2f}", f"{r['threshold']:.3f}", mark])
    skipped = sorted({"drive", "chase", "stare", "hrf"} & set(a.datasets.split(","))
                     - {c.key for c in todo})
    body = ("Fundus models on the datasets given (per-image means inside each dataset's FOV, "
            "the model's own threshold; default inference, so a model that stores a FOV "
            "diameter gets each photograph rescaled to it: `scale` is the mean factor). "
            "`seen`: images of the row the model trained on (from the validation record in "
            "the model file; `?` = not recorded); a row with seen > 0 is not a test. "
            "DRIVE test and unseen datasets are reported, never used to choose a model."
            + (f" Not scored (no data given): {', '.join(skipped)}." if skipped else "")
            + "\n\n" + md_table(["model", "data", "n", *KEYS, "scale", "threshold", "seen"],
                                rows))
    publish("cross_dataset", "Fundus models across datasets and cameras", body, raw)


if __name__ == "__main__":
    main()

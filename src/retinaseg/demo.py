"""``retinaseg demo``: the whole pipeline on generated images, with no download.

The demo segments generated OCTA-like and fundus-like images with the bundled default models
(``octa-vessels``, ``fundus-vessels``), scores them against the generator's labels, and writes
overlays, a side-by-side figure and a summary. Where a bundled model is missing, or ``epochs`` is
given, it first trains a small model on synthetic images (about a minute on a laptop CPU).

With ``roots`` (``retinaseg demo --root PATH``), each folder's dataset is recognised from its
layout (DRIVE, CHASE_DB1, STARE, HRF, OCTA-500, ROSE, ROSSA, OCTA-25K) and a few of its real
images are segmented with the default model of that modality and shown as extra rows; where the
images have labels, their Dice (inside the FOV) is reported too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from retinaseg.utils.atomic import atomic_path, write_text_atomic

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _figure(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
            path: Path) -> None:
    """One row per image: input | probability | mask | error map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3 * len(rows)), squeeze=False)
    for r, (title, img, prob, mask, err) in enumerate(rows):
        panels = [(img, "input " + title), (prob, "probability"), (mask, "mask"),
                  (err, "errors: TP green, FP red, FN blue")]
        for c, (arr, name) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1
                      if arr.dtype != np.uint8 else 255)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def _demo_model(kind: str, out: Path, epochs: int | None) -> tuple[str, str]:
    """The bundled default model for ``kind`` if installed, else a small one trained now."""
    from retinaseg.inference.modality import DEFAULT_MODELS
    from retinaseg.models.cards import WEIGHTS_DIR
    from retinaseg.training import load_config, train

    name = DEFAULT_MODELS[kind]
    if (WEIGHTS_DIR / f"{name}.safetensors").is_file() and not epochs:
        return name, f"bundled model '{name}'"
    overrides = [f"runs_dir={out / 'runs'}"] + ([f"train.epochs={epochs}"] if epochs else [])
    cfg = load_config(CONFIG_DIR / f"synthetic_{kind}.yaml", overrides)
    run = train(cfg)["run_dir"]
    return str(Path(run) / "best.safetensors"), "small model trained on synthetic images"


def _run_kind(kind: str, out: Path, epochs: int | None) -> dict[str, Any]:
    from retinaseg.data.synthetic import make_fundus_sample, make_octa_sample
    from retinaseg.evaluation.figures import error_map, overlay
    from retinaseg.evaluation.metrics import image_metrics
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.io import write_png

    model, how = _demo_model(kind, out, epochs)
    seg = Segmenter(model)
    make = make_octa_sample if kind == "octa" else make_fundus_sample
    size = 400 if kind == "octa" else 512
    rows, dices = [], []
    for k in range(3):
        s = make(size, seed=10_000 + k)
        prob = seg(s["image"])
        mask = prob > seg.threshold
        dices.append(image_metrics(prob, s["label"], seg.threshold, s["fov"])["dice"])
        name = f"{kind}_{k}"
        write_png(out / "predictions" / f"{name}_image.png", s["image"])
        write_png(out / "predictions" / f"{name}_prob.png", prob)
        write_png(out / "predictions" / f"{name}_mask.png", mask)
        write_png(out / "predictions" / f"{name}_overlay.png", overlay(s["image"], mask))
        rows.append((name, s["image"], prob, mask, error_map(mask, s["label"], s["fov"])))
    return {"model": model, "how": how, "threshold": seg.threshold,
            "dice_mean": float(np.mean(dices)), "rows": rows}


DETECT_ORDER = ("drive", "chase_db1", "stare", "hrf", "octa500", "rossa", "rose1", "rose2",
                "octa25k")
"""Datasets tried, in this order, when recognising a ``--root`` folder from its layout."""

EVAL_SPLITS = ("test", "val", "all")
"""Split shown from a real dataset: the first of these that the dataset has."""


def detect_dataset(root: str | Path) -> str:
    """The name of the first dataset in :data:`DETECT_ORDER` whose layout ``root`` has.

    Raises :class:`~retinaseg.errors.DatasetLayoutError` naming the folder when none matches.
    """
    from retinaseg.data import build_dataset
    from retinaseg.errors import DatasetLayoutError, RetinasegError

    for name in DETECT_ORDER:
        try:
            if len(build_dataset(name, root, "all")) > 0:
                return name
        except RetinasegError:
            continue
    raise DatasetLayoutError(f"'{root}' is not a dataset folder that retinaseg recognises "
                             f"(tried {', '.join(DETECT_ORDER)}); see 'retinaseg datasets'")


def _real_samples(root: str | Path, name: str, n: int) -> tuple[str, list[dict]]:
    """Up to ``n`` samples of dataset ``name`` at ``root``, from a test/val split if any."""
    from retinaseg.data import build_dataset
    from retinaseg.errors import RetinasegError
    from retinaseg.registry import DATASETS

    splits = [s for s in EVAL_SPLITS if s in DATASETS.get(name).valid_splits()]
    for split in splits:
        try:
            ds = build_dataset(name, root, split)
        except RetinasegError:  # a split missing from a partial copy: try the next
            continue
        if len(ds):
            picked = [ds[i] for i in range(len(ds))[:n]]
            return f"{name} ({split})", picked
    return name, []


def _run_real(root: str | Path, dataset: str, out: Path, n: int) -> dict[str, Any]:
    """Segment ``n`` real images of the dataset at ``root`` with the default model."""
    from retinaseg.evaluation.figures import error_map
    from retinaseg.evaluation.metrics import image_metrics
    from retinaseg.inference.batch import write_outputs
    from retinaseg.inference.modality import DEFAULT_MODELS
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.registry import DATASETS

    what, samples = _real_samples(root, dataset, n)
    model = DEFAULT_MODELS[DATASETS.get(dataset).modality]
    seg = Segmenter(model, dataset=dataset)
    rows, images = [], []
    for s in samples:
        prob = seg(s["image"], source=str(s["path"]))
        mask = prob > seg.threshold
        rec: dict[str, Any] = {"id": s["id"], "path": str(s["path"]), **write_outputs(
            out / "predictions", f"{dataset}_{s['id']}", s["image"], prob, seg.threshold)}
        err = np.zeros((*mask.shape, 3), np.uint8)
        if s["label"] is not None:
            rec["dice"] = image_metrics(prob, s["label"], seg.threshold, s["fov"])["dice"]
            err = error_map(mask, s["label"], s["fov"])
        images.append(rec)
        title = f"{dataset} {s['id']}" + (f" (Dice {rec['dice']:.3f})" if "dice" in rec else "")
        rows.append((title, s["image"], prob, mask, err))
    dices = [r["dice"] for r in images if "dice" in r]
    return {"dataset": what, "root": str(root), "model": model, "head": seg.head_name,
            "threshold": seg.threshold, "images": images,
            "dice_mean": float(np.mean(dices)) if dices else None, "rows": rows}


def run_demo(out: str | Path = "demo_out", epochs: int | None = None,
             roots: list[str | Path] | None = None, dataset: str | None = None,
             n_real: int = 2) -> dict[str, Any]:
    """Predict and score on synthetic OCTA and fundus images (and real ones); return a summary.

    Args:
        out: output folder.
        epochs: train small synthetic models for this many epochs instead of using the
            bundled default models.
        roots: dataset folders whose real images are shown too (layout recognised, or
            ``dataset`` names it).
        n_real: real images shown per root.
    """
    out = Path(out)
    names = [dataset or detect_dataset(r) for r in roots or []]  # bad roots fail first
    results = {kind: _run_kind(kind, out, epochs) for kind in ("octa", "fundus")}
    real = [_run_real(r, name, out, n_real) for r, name in zip(roots or [], names)]
    rows = [r for res in [*results.values(), *real] for r in res.pop("rows")]
    _figure(rows, out / "side_by_side.png")
    summary = {"out": str(out), "figure": str(out / "side_by_side.png"), **results,
               "real": real}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary

"""``retinaseg demo``: the whole pipeline on generated images, with no download.

The demo segments generated OCTA-like and fundus-like images with the bundled default models
(``octa-vessels``, ``fundus-vessels``), scores them against the generator's labels, and writes
overlays, a side-by-side figure and a summary. Where a bundled model is missing, or ``epochs`` is
given, it first trains a small model on synthetic images (about a minute on a laptop CPU).
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
    from retinaseg.inference.pipeline import Segmenter
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


def run_demo(out: str | Path = "demo_out", epochs: int | None = None) -> dict[str, Any]:
    """Train, predict and score on synthetic OCTA and fundus images; return a summary."""
    out = Path(out)
    results = {kind: _run_kind(kind, out, epochs) for kind in ("octa", "fundus")}
    rows = [r for res in results.values() for r in res.pop("rows")]
    _figure(rows, out / "side_by_side.png")
    summary = {"out": str(out), "figure": str(out / "side_by_side.png"), **results}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary

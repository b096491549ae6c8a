"""Accuracy: the bundled default models on every labelled split we have.

- ``fundus-vessels`` on DRIVE test, inside the FOV, plus the 2nd human observer as reference;
- ``octa-vessels`` on OCTA-500 val (6M and 3M apart) and ROSSA val, each with the head trained
  on that dataset's labels, and how the heads differ.

Thresholds, TTA and precision are the models' own (as ``retinaseg evaluate`` runs them);
per-image means and pooled figures. The figures are checked against the accuracy targets to
five decimals. Inference speed is measured by ``benchmarks/speed/inference.py``; re-bundling
and model cards are ``tools/bundle.py``.

Writes the ``default_models`` section (``benchmarks/results/default_models.{md,json}``; the
per-split evaluation folders ``benchmarks/results/default_*`` stay out of git).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/default_models.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import (
    KEYS,
    RESULTS,
    SHARED_DATA,
    TARGET_CHECKS,
    md_table,
    publish,
    second_observer,
    target_status,
)

from retinaseg.evaluation.evaluate import evaluate
from retinaseg.models.persistence import read_spec, resolve_model_path

CASES = [  # (model, dataset, root, split, options, label)
    ("fundus-vessels", "drive", "DRIVE", "test", {}, "DRIVE test (20, inside FOV)"),
    ("octa-vessels", "octa500", "OCTA-500", "val", {"fov": "6M"}, "OCTA-500 val 6M (20)"),
    ("octa-vessels", "octa500", "OCTA-500", "val", {"fov": "3M"}, "OCTA-500 val 3M (10)"),
    ("octa-vessels", "rossa", "ROSSA", "val", {}, "ROSSA val (100)"),
]


def head_agreement(model: str = "octa-vessels") -> str:
    """For a model with heads: on each OCTA val split, how much its heads' masks differ and
    how each head scores against that split's labels (per-image means, own thresholds)."""
    from retinaseg.data import build_dataset
    from retinaseg.evaluation.metrics import confusion_counts, image_metrics, threshold_metrics
    from retinaseg.inference.segmenter import Segmenter

    spec = read_spec(resolve_model_path(model))
    if len(spec.heads) < 2:
        return ""
    segs = [Segmenter(model, head=h["name"]) for h in spec.heads]
    rows = []
    for _, ds, folder, split, opts, label in CASES[1:]:
        data = build_dataset(ds, str(SHARED_DATA / folder), split, **opts)
        agree, frac, dice = [], [], [[] for _ in segs]
        for i in range(len(data)):
            smp = data[i]
            probs = [seg(smp["image"]) for seg in segs]
            masks = [p > seg.threshold for p, seg in zip(probs, segs)]
            agree.append(threshold_metrics(confusion_counts(masks[1], masks[0]))["dice"])
            frac.append(masks[1].sum() / max(1, masks[0].sum()))
            for k, (p, seg) in enumerate(zip(probs, segs)):
                dice[k].append(image_metrics(p, smp["label"], seg.threshold)["dice"])
        rows.append([label, float(np.mean(agree)), float(np.mean(frac)),
                     *[float(np.mean(d)) for d in dice]])
    names = [h["name"] for h in spec.heads]
    return ("\n\nHeads of `octa-vessels` on each split (per-image means, each head with its own "
            f"threshold): Dice between the `{names[1]}` and `{names[0]}` masks, the ratio of "
            "their vessel areas, and each head's Dice against the split's labels.\n\n"
            + md_table(["split", "Dice between heads", "area ratio",
                        *[f"{n} Dice" for n in names]], rows))


def observer_rows() -> list[list]:
    mean, pooled = second_observer(SHARED_DATA / "DRIVE")
    return [["2nd observer vs 1st", "DRIVE test, per-image mean", *[mean[k] for k in KEYS]],
            ["2nd observer vs 1st", "DRIVE test, pooled", *[pooled[k] for k in KEYS]]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    rows, raw = [], {}
    for model, ds, folder, split, opts, label in CASES:
        t0 = time.time()
        s = evaluate(model, ds, str(SHARED_DATA / folder), split,
                     RESULTS / f"default_{model}_{ds}_{opts.get('fov', '')}", options=opts,
                     save_maps=False)
        raw[label] = {"model": model, "summary": s, "seconds": time.time() - t0}
        label += f", head {s['head']}" if s.get("head") else ""
        rows.append([model, f"{label}, per-image mean", *[s["per_image_mean"][k] for k in KEYS]])
        rows.append([model, f"{label}, pooled", *[s["pooled"][k] for k in KEYS]])
    rows += observer_rows()
    body = ("Accuracy: thresholds are each model's own (chosen on validation data at training "
            "time); DRIVE metrics inside the FOV mask, OCTA on the whole image. A model with "
            "several output heads is scored on each dataset with the head trained on that "
            "dataset's labels (`retinaseg evaluate` does the same by default). Default "
            "precision (see the inference speed section).\n\n"
            + md_table(["model", "data", *KEYS], rows)
            + "\n\nAgainst the accuracy targets (per-image means, five decimals): "
            + "; ".join(target_status(n, raw) for n in TARGET_CHECKS) + "."
            + head_agreement())
    publish("default_models", "Bundled default models", body, raw)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()

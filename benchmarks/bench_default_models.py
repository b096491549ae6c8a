"""Bundled default models (issue: default models): accuracy on every split we have, speed,
peak memory and training time.

- ``fundus-vessels`` on DRIVE test, inside the FOV, plus the 2nd human observer as reference;
- ``octa-vessels`` on OCTA-500 val (6M and 3M apart) and ROSSA val.

Thresholds are the models' own, chosen on validation data when they were trained.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_default_models.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
from common import REPO, RESULTS, SHARED_DATA, md_table, write_section

from retinaseg.evaluation.evaluate import evaluate
from retinaseg.models.persistence import read_spec, resolve_model_path

KEYS = ["dice", "auc", "acc", "sen", "spe", "cldice"]
CASES = [  # (model, dataset, root, split, options, label)
    ("fundus-vessels", "drive", "DRIVE", "test", {}, "DRIVE test (20, inside FOV)"),
    ("octa-vessels", "octa500", "OCTA-500", "val", {"fov": "6M"}, "OCTA-500 val 6M (20)"),
    ("octa-vessels", "octa500", "OCTA-500", "val", {"fov": "3M"}, "OCTA-500 val 3M (10)"),
    ("octa-vessels", "rossa", "ROSSA", "val", {}, "ROSSA val (100)"),
]
SPEED_CHILD = """
import resource, sys, time, json
import numpy as np
from retinaseg.inference.pipeline import Segmenter
seg = Segmenter(sys.argv[1])
shape = tuple(int(v) for v in sys.argv[2].split("x"))
img = np.random.default_rng(0).random(shape, dtype=np.float32)
seg(img)
ts = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); seg(img); ts.append(time.perf_counter() - t0)
import torch
print(json.dumps({"median_s": float(np.median(ts)), "threads": torch.get_num_threads(),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def speed(model: str, shape: str, repeats: int = 21) -> dict:
    """Median inference seconds (preprocessing included) and peak RSS, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", SPEED_CHILD, model, shape, str(repeats)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def observer_rows() -> list[list]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_drive_unet import second_observer

    mean, pooled = second_observer(SHARED_DATA / "DRIVE")
    return [["2nd observer vs 1st", "DRIVE test, per-image mean", *[mean[k] for k in KEYS]],
            ["2nd observer vs 1st", "DRIVE test, pooled", *[pooled[k] for k in KEYS]]]


def main() -> None:
    rows, raw = [], {}
    for model, ds, folder, split, opts, label in CASES:
        t0 = time.time()
        s = evaluate(model, ds, str(SHARED_DATA / folder), split,
                     RESULTS / f"default_{model}_{ds}_{opts.get('fov', '')}", options=opts,
                     save_maps=False)
        raw[label] = {"model": model, "summary": s, "seconds": time.time() - t0}
        rows.append([model, f"{label}, per-image mean", *[s["per_image_mean"][k] for k in KEYS]])
        rows.append([model, f"{label}, pooled", *[s["pooled"][k] for k in KEYS]])
    rows += observer_rows()
    sp_rows = []
    for model, shape, what in (("fundus-vessels", "584x565x3", "584×565 colour fundus"),
                               ("octa-vessels", "400x400", "400×400 OCTA"),
                               ("octa-vessels", "304x304", "304×304 OCTA")):
        sp = speed(model, shape)
        spec = read_spec(resolve_model_path(model))
        raw[f"speed {what}"] = sp
        sp_rows.append([model, what, f"{sp['median_s']:.4f}", sp["threads"],
                        f"{sp['peak_rss_mb']:.0f}",
                        f"{spec.info.get('train_seconds', float('nan')) / 60:.1f}"])
    body = ("Accuracy: thresholds are each model's own (chosen on validation data at training "
            "time); DRIVE metrics inside the FOV mask, OCTA on the whole image.\n\n"
            + md_table(["model", "data", *KEYS], rows)
            + "\n\nSpeed: median of 21 runs after one warm-up, whole image, preprocessing "
              "included, default threads, fresh process per model (peak RSS of that process).\n\n"
            + md_table(["model", "input", "seconds / image", "threads", "peak RSS MB",
                        "training min"], sp_rows))
    write_section("default_models", "Bundled default models", body)
    (RESULTS / "default_models.json").write_text(json.dumps(raw, indent=2, default=float))
    print(body)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()

"""DRIVE U-Net benchmark (issue: core toolkit): train with ``configs/drive_unet.yaml`` on the 20
DRIVE training images (4 of them held out for checkpoint and threshold selection), then score the
20 test images inside the FOV. The second human observer is scored the same way, as a reference.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_drive_unet.py            # train, then score
    PYTHONPATH=src .venv/bin/python benchmarks/bench_drive_unet.py --run runs/drive_unet/<stamp>
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import REPO, SHARED_DATA, md_table, publish

from retinaseg.data import build_dataset
from retinaseg.evaluation.evaluate import evaluate
from retinaseg.evaluation.metrics import image_metrics, pooled_metrics, summarise
from retinaseg.inference.pipeline import Segmenter
from retinaseg.models.persistence import read_spec
from retinaseg.training import train

KEYS = ["dice", "auc", "acc", "sen", "spe", "cldice"]


def second_observer(root: Path) -> tuple[dict, dict]:
    """Per-image mean and pooled metrics of the 2nd observer against the 1st, inside the FOV."""
    first = build_dataset("drive", str(root), "test")
    second = build_dataset("drive", str(root), "test", observer="2")
    probs = [second[i]["label"].astype(np.float32) for i in range(len(second))]
    gts = [first[i]["label"] for i in range(len(first))]
    fovs = [first[i]["fov"] for i in range(len(first))]
    rows = [image_metrics(p, g, 0.5, f) for p, g, f in zip(probs, gts, fovs)]
    return summarise(rows)[0], pooled_metrics(probs, gts, 0.5, fovs)


def inference_time(run: Path, root: Path, repeats: int = 5) -> float:
    """Median seconds to segment one 565×584 DRIVE image (preprocessing included)."""
    seg = Segmenter(run)
    img = build_dataset("drive", str(root), "test")[0]["image"]
    seg(img)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        seg(img)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="an existing run folder (skip training)")
    a = ap.parse_args()
    root = SHARED_DATA / "DRIVE"
    if a.run:
        run = Path(a.run)
    else:
        run = Path(train(REPO / "configs" / "drive_unet.yaml")["run_dir"])
    out = REPO / "benchmarks" / "results" / "drive_eval"
    s = evaluate(run, "drive", str(root), "test", out, save_maps=False)
    spec = read_spec(run / "best.safetensors")
    obs_mean, obs_pooled = second_observer(root)
    rows = [["U-Net (configs/drive_unet.yaml), per-image mean"] + [s["per_image_mean"][k]
                                                                   for k in KEYS],
            ["U-Net, pooled over all FOV pixels"] + [s["pooled"][k] for k in KEYS],
            ["2nd observer vs 1st, per-image mean"] + [obs_mean[k] for k in KEYS],
            ["2nd observer vs 1st, pooled"] + [obs_pooled[k] for k in KEYS]]
    secs = inference_time(run, root)
    body = (f"DRIVE test (20 images), metrics inside the FOV mask. Threshold "
            f"{s['threshold']:.3f}, {s['threshold_source']}. The 2nd observer's binary map "
            f"is scored as a prediction (its AUC is that of a single operating point).\n\n"
            + md_table(["", *KEYS], rows)
            + f"\n\n- training time: {spec.info.get('train_seconds', float('nan')) / 60:.1f} "
              f"min on CPU ({spec.info.get('threads')} threads), best epoch "
              f"{spec.info.get('epoch')}\n- inference: {secs:.3f} s per 565×584 image "
              f"(median of 5, whole image, preprocessing included)\n- run folder: `{run}`")
    publish("drive_unet", "DRIVE: U-Net trained on CPU (core toolkit)", body,
            {"run": str(run), "summary": s, "observer2_mean": obs_mean,
             "observer2_pooled": obs_pooled, "inference_s": secs})


if __name__ == "__main__":
    main()

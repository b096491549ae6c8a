"""Accuracy regression of DRIVE training: a U-Net trained on CPU, scored on DRIVE test.

Trains ``configs/seed/retina_unet_drive.yaml`` on the 20 DRIVE training images (4 of them held
out for checkpoint and threshold selection; about 20-30 min on 2 cores), then scores the 20 test
images inside the FOV. The second human observer is scored the same way, as a reference. A
training run: not part of ``make bench`` (``benchmarks/run_all.py --training`` runs it).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/drive_unet.py         # train, then score
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/drive_unet.py --run runs/drive_unet/<stamp>
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import KEYS, REPO, RESULTS, SHARED_DATA, md_table, publish, second_observer

from retinaseg.data import build_dataset
from retinaseg.evaluation.evaluate import evaluate
from retinaseg.inference.segmenter import Segmenter
from retinaseg.models.persistence import read_spec
from retinaseg.training import train

CONFIG = "configs/seed/retina_unet_drive.yaml"


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
        run = Path(train(REPO / CONFIG)["run_dir"])
    out = RESULTS / "drive_eval"
    s = evaluate(run, "drive", str(root), "test", out, save_maps=False)
    spec = read_spec(run / "best.safetensors")
    obs_mean, obs_pooled = second_observer(root)
    rows = [[f"U-Net ({CONFIG}), per-image mean"] + [s["per_image_mean"][k] for k in KEYS],
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

"""Volumes: IPN against "project, then a 2-D U-Net" on generated OCTA cubes, and IPN on a real
cube.

Trains (or takes the runs of) ``configs/seed/ipn_synthetic.yaml`` (IPN, CPU preset, learning
the projection from 96 × 96 × 64 cubes) and ``configs/examples/unet_synthetic_projection.yaml``
(the same cubes projected inside the automatic inner-retina slab, then a 2-D U-Net), each with
an 18-minute limit, and scores both on the same held-out synthetic test cubes. Then times the
trained IPN on the real OCTA-500 volume 10225 (640 × 400 × 400; a test-split subject, used for
speed and memory only) in a fresh process, whole volume, with its peak RSS. A training run: not
part of ``make bench`` (``benchmarks/run_all.py --training`` runs it).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/volumes.py
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/volumes.py --ipn-run R1 --unet-run R2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

from common import REPO, RESULTS, SHARED_DATA, md_table, publish

from retinaseg.evaluation.evaluate import evaluate
from retinaseg.models.persistence import read_spec
from retinaseg.training import train
from retinaseg.training.config import load_config

IPN = "configs/seed/ipn_synthetic.yaml"
UNET = "configs/examples/unet_synthetic_projection.yaml"
KEYS = ["dice", "auc", "sen", "spe", "cldice", "betti0_error"]
VOLUME = SHARED_DATA / "OCTA-500/OCTA_6M/OCTA/10225"

TIMING = """
import json, sys, time, torch
torch.set_num_threads(2)
from retinaseg.inference.segmenter import Segmenter
from retinaseg.io import read_volume
seg = Segmenter(sys.argv[1])
t0 = time.perf_counter(); vol = read_volume(sys.argv[2]); t1 = time.perf_counter()
prob = seg(vol); t2 = time.perf_counter()
hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0]
print(json.dumps({"read_s": t1 - t0, "infer_s": t2 - t1, "peak_rss_mib": hwm / 1024,
                  "shape": list(prob.shape)}))
"""


def score(run: Path) -> dict:
    """Evaluate ``run`` on the synthetic test split its config names (whole volumes/maps)."""
    cfg = load_config(run / "config.yaml")
    opts = {k: str(v) for k, v in cfg.data.options.items()}
    return evaluate(run, cfg.data.dataset, None, "test", RESULTS / f"volumes_{cfg.name}",
                    options=opts, save_maps=False, tta="none")


def real_volume_timing(run: Path) -> dict | None:
    if not VOLUME.is_dir():
        return None
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", TIMING, str(run), str(VOLUME)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipn-run", default=None, help="an IPN run folder (skip its training)")
    ap.add_argument("--unet-run", default=None, help="a U-Net run folder (skip its training)")
    a = ap.parse_args()
    runs = {"IPN (learned projection)": Path(a.ipn_run) if a.ipn_run
            else Path(train(REPO / IPN)["run_dir"]),
            "auto-slab mean projection + 2-D U-Net": Path(a.unet_run) if a.unet_run
            else Path(train(REPO / UNET)["run_dir"])}
    rows, raw = [], {}
    for name, run in runs.items():
        s = score(run)
        info = read_spec(run / "best.safetensors").info
        minutes = info.get("train_seconds", float("nan")) / 60
        rows.append([name, s["n_images"], *[s["per_image_mean"][k] for k in KEYS],
                     f"{minutes:.1f}", info.get("epoch")])
        raw[name] = {"run": str(run), "summary": s, "train_minutes": minutes}
    timing = real_volume_timing(runs["IPN (learned projection)"])
    raw["real_volume_timing"] = timing
    spec = read_spec(runs["IPN (learned projection)"] / "best.safetensors")
    depth = spec.params.get("depth")
    real = ("OCTA-500 10225 not available" if timing is None else
            f"IPN on the whole real volume 10225 (640 × 400 × 400, depth resampled to {depth} "
            f"planes, 96 px tiles): read {timing['read_s']:.2f} s, inference "
            f"{timing['infer_s']:.2f} s, peak RSS {timing['peak_rss_mib']:.0f} MiB (2 threads, "
            "fresh process; trained on synthetic cubes only, so its map of a real eye is not "
            "scored)")
    body = (f"Synthetic OCTA cubes (`synthetic_volume`, 96 × 96 en face × 64 deep), the same "
            f"train/val/test cubes for both routes; val chose checkpoint and threshold, test is "
            f"held out; per-image means. Recipes: `{IPN}`, `{UNET}`, each with an 18-minute "
            "CPU limit (`train min`: what each used; the U-Net may stop early).\n\n"
            + md_table(["route", "test cubes", *KEYS, "train min", "best epoch"], rows)
            + f"\n\n- {real}\n" + "".join(f"- run folder: `{r}`\n" for r in runs.values()))
    publish("volumes_ipn", "Volumes: IPN against project then U-Net", body, raw)


if __name__ == "__main__":
    main()

"""OCTA-Net (reference §5): coarse only, coarse + fine, and our ``octa-vessels``, on one table.

Trains ``configs/octanet_cpu.yaml`` (the CPU preset; coarse stage then fine stage in one run
folder, each with its own time limit) unless ``--run`` gives a finished run, then scores on
OCTA-500 val 6M, val 3M and ROSSA val (the validation splits: the runs chose their checkpoints
and thresholds there, so the figures are optimistic for every row alike; the test splits are
held out of this project):

- coarse: ``RUN/best.safetensors`` (the fused output, max(thick, thin));
- coarse + fine: ``RUN/fine/best.safetensors`` (the learned 3×3 propagation on the frozen
  coarse checkpoint(s));
- ``octa-vessels``: the bundled default OCTA model (a MONAI U-Net), for reference.

Per-image means of Dice, clDice, Dice on thick and thin vessels (GT split by local width,
3 px), G-mean and Cohen's kappa, at each model's own threshold; the CPU minutes each model's
training took. A training run: not part of ``make bench`` (``run_all.py --training``).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/octanet.py [--run RUN]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

from common import REPO, RESULTS, SHARED_DATA, md_table, publish

from retinaseg.evaluation.evaluate import evaluate
from retinaseg.models.persistence import read_spec, resolve_model_path
from retinaseg.training import train

CONFIG = "configs/octanet_cpu.yaml"
KEYS = ["dice", "cldice", "dice_thick", "dice_thin", "gmean", "kappa"]
SPLITS = [("octa500", "OCTA-500", "val", {"fov": "6M", "maps": "ILM_OPL"}, "OCTA-500 val 6M"),
          ("octa500", "OCTA-500", "val", {"fov": "3M", "maps": "ILM_OPL"}, "OCTA-500 val 3M"),
          ("rossa", "ROSSA", "val", {}, "ROSSA val")]


def _minutes(model: str | Path) -> str:
    info = read_spec(resolve_model_path(model)).info
    secs = info.get("total_train_seconds", info.get("train_seconds"))
    return f"{secs / 60:.0f}" if isinstance(secs, int | float) else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a finished two-stage run folder (no training)")
    a = ap.parse_args()
    run = Path(a.run) if a.run else Path(train(REPO / CONFIG)["run_dir"])
    coarse, fine = run / "best.safetensors", run / "fine" / "best.safetensors"
    fine_minutes = float(_minutes(fine)) if _minutes(fine) != "?" else float("nan")
    models = [("OCTA-Net coarse", coarse, _minutes(coarse)),
              ("OCTA-Net coarse + fine", fine,
               f"{float(_minutes(coarse)) + fine_minutes:.0f}"),
              ("octa-vessels (bundled U-Net)", "octa-vessels", _minutes("octa-vessels"))]
    rows, raw = [], {"run": str(run)}
    for label, model, minutes in models:
        for ds, folder, split, opts, where in SPLITS:
            s = evaluate(model, ds, str(SHARED_DATA / folder), split,
                         RESULTS / f"octanet_{label.split()[0]}_{ds}_{opts.get('fov', '')}",
                         options=opts, save_maps=False)
            raw[f"{label} / {where}"] = s
            rows.append([label, where, minutes, f"{s['threshold']:.3f}",
                         *[s["per_image_mean"].get(k, float("nan")) for k in KEYS]])
            print(rows[-1], flush=True)
    body = (f"Run `{run}` of `{CONFIG}` (CPU preset). Per-image means on the validation "
            "splits, which chose every model's checkpoint and threshold (optimistic alike for "
            "all rows). Thick/thin: GT vessels split at a local width of 3 px (distance "
            "transform), predicted pixels assigned to the nearest GT vessel's class.\n\n"
            + md_table(["model", "split", "train CPU min", "threshold", *KEYS], rows))
    publish("octanet", "OCTA-Net: coarse, coarse + fine, and octa-vessels", body, raw)


if __name__ == "__main__":
    main()

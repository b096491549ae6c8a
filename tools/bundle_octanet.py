"""Maintainer tool: bundle the trained OCTA-Net (reference §5) as the model ``octanet``.

Reads the table of ``benchmarks/accuracy/octanet.py`` (``benchmarks/results/octanet.json``,
run first on the same run folder), picks the coarse model or coarse + fine by the mean of their
OCTA-500 val 6M and 3M Dice (validation splits only: the test splits are held out), refuses a
file over 15 MB, copies it to ``src/retinaseg/weights/octanet.safetensors`` and writes its model
card with the scores of every row (``octa-vessels`` included for comparison).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/octanet.py --run RUN
    PYTHONPATH=src .venv/bin/python tools/bundle_octanet.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # common

from common import RESULTS, md_table

from retinaseg.models.cards import WEIGHTS_DIR, bundle, card_text
from retinaseg.utils.atomic import write_text_atomic

LIMIT_MB = 15.0
CHOICE = ("OCTA-500 val 6M", "OCTA-500 val 3M")
KEYS = ["dice", "cldice", "dice_thick", "dice_thin", "gmean", "kappa"]
DATA = (
    "- OCTA-500 (Li et al., \"OCTA-500: A retinal dataset for optical coherence tomography\n"
    "  angiography study\", Medical Image Analysis 93:103092, 2024): official train split, 3M "
    "(140)\n  and 6M (180) subjects, input `OCTA(ILM_OPL)` projection, label `GT_LargeVessel`, "
    "centerline\n  labels derived from it (exact centerline); val split (10 + 20) for the "
    "checkpoints, the\n  threshold and the choice between coarse and coarse + fine. Research use "
    "only; cite the paper.\n"
    "- Method: OCTA-Net (Ma et al., \"ROSE: a retinal OCT-angiography vessel segmentation "
    "dataset and\n  new model\", IEEE TMI 2021), our CPU preset; recipe "
    "`configs/octanet_cpu.yaml`.")


def main() -> None:
    raw = json.loads((RESULTS / "octanet.json").read_text())
    run = Path(raw["run"])
    candidates = {"OCTA-Net coarse": run / "best.safetensors",
                  "OCTA-Net coarse + fine": run / "fine" / "best.safetensors"}
    score = {label: sum(raw[f"{label} / {s}"]["per_image_mean"]["dice"] for s in CHOICE) / 2
             for label in candidates}
    chosen = max(score, key=score.get)
    path = candidates[chosen]
    size = path.stat().st_size / 1e6
    if size > LIMIT_MB:
        raise SystemExit(f"{chosen} ({path}) is {size:.1f} MB, over the {LIMIT_MB:g} MB limit "
                         "of a bundled model; train the fine stage with fine.checkpoints: one")
    rows = []
    for key, s in raw.items():
        if key == "run":
            continue
        label, where = key.split(" / ")
        rows.append([label, where, *[s["per_image_mean"].get(k, float("nan")) for k in KEYS]])
    scores = ("Per-image means at each model's own threshold, on the validation splits that "
              "chose the checkpoints, thresholds and this bundle (optimistic alike for every "
              "row; `benchmarks/RESULTS.md`, \"OCTA-Net\"). ROSSA labels every visible vessel, "
              "OCTA-500 only large ones: OCTA-Net has one output and learnt OCTA-500's rule, "
              "`octa-vessels` scores ROSSA with its own ROSSA head.\n\n"
              + md_table(["model", "split", *KEYS], rows))
    notes = (f"Chosen: {chosen} (mean OCTA-500 val Dice "
             + ", ".join(f"{k} {v:.4f}" for k, v in score.items()) + ").")
    dst = bundle(path, "octanet", DATA, scores, notes)
    summary = ("OCTA en-face maps: OCTA-Net (seed 002), large vessels, trained on OCTA-500 "
               f"({chosen.removeprefix('OCTA-Net ')}); pass --model octanet")
    write_text_atomic(WEIGHTS_DIR / "octanet.md",
                      card_text("octanet", dst, DATA, scores, notes, summary=summary))
    print(f"bundled {path} as {dst} ({size:.1f} MB): {notes}")


if __name__ == "__main__":
    main()

"""Maintainer tool: bundle the five OCTA-500 FAZ folds as the model ``octa-faz`` (issue 25).

Averages the newest run of each fold of ``configs/octa_faz.yaml`` (``runs/octa_faz_f<K>/``)
with :func:`retinaseg.training.ensemble.build_ensemble` (the threshold chosen on the
out-of-fold predictions), refuses a file over 10 MB, copies it to
``src/retinaseg/weights/octa-faz.safetensors`` and writes its card with the cross-validated
figures of ``benchmarks/accuracy/octa_classes.py`` (run it first with ``--ensemble`` on the
file this tool writes to ``runs/octa_faz_ensemble.safetensors``; the tool re-reads its
section).

Usage::

    PYTHONPATH=src .venv/bin/python tools/bundle_faz.py --ensemble-only
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/octa_classes.py \
        --ensemble runs/octa_faz_ensemble.safetensors
    PYTHONPATH=src .venv/bin/python tools/bundle_faz.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # common

from common import REPO, RESULTS

from retinaseg.models.cards import WEIGHTS_DIR, bundle, card_text
from retinaseg.training.ensemble import build_ensemble
from retinaseg.utils.atomic import write_text_atomic

LIMIT_MB = 10.0
ENSEMBLE = REPO / "runs" / "octa_faz_ensemble.safetensors"
SUMMARY = ("OCTA en-face maps: the foveal avascular zone (FAZ), five folds trained on 10 "
           "OCTA-500 subjects averaged; used by retinaseg measure for OCTA images")
DATA = (
    "- OCTA-500 (Li et al., \"OCTA-500: A retinal dataset for optical coherence tomography\n"
    "  angiography study\", Medical Image Analysis 93:103092, 2024): the 10 train-split "
    "subjects with\n  `GT_FAZ` in `../shared/data` (6M 10001-10005, 3M 10301-10305), input "
    "`OCTA(ILM_OPL)`, in 5\n  folds of 2; each fold chose its checkpoint and threshold on the 2 "
    "it held out, the ensemble's\n  threshold was chosen on the out-of-fold predictions. The "
    "val-split subject 3M 10441 was\n  used by no fold. Research use only; cite the paper.\n"
    "- Recipe: `configs/octa_faz.yaml` (MONAI U-Net, BCE + Dice, 60 epochs of 192² patches).")


def fold_runs() -> list[Path]:
    runs = []
    for k in range(5):
        found = sorted((REPO / "runs" / f"octa_faz_f{k}").glob("*/summary.json"))
        if not found:
            raise SystemExit(f"fold {k} has no finished run in runs/octa_faz_f{k}/")
        runs.append(found[-1].parent)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ensemble-only", action="store_true",
                    help="write runs/octa_faz_ensemble.safetensors and stop")
    a = ap.parse_args()
    if a.ensemble_only or not ENSEMBLE.is_file():
        r = build_ensemble(fold_runs(), ENSEMBLE)
        print(f"ensemble {ENSEMBLE}: threshold {r['threshold']:.3f}, out-of-fold Dice "
              f"{r['oof_dice_mean']:.4f} over {r['n_images']} images")
        if a.ensemble_only:
            return
    size = ENSEMBLE.stat().st_size / 1e6
    if size > LIMIT_MB:
        raise SystemExit(f"{ENSEMBLE} is {size:.1f} MB, over the {LIMIT_MB:g} MB limit")
    section = (RESULTS / "octa_classes.md").read_text(encoding="utf-8")
    faz = section[section.index("**FAZ**"):]
    scores = ("Cross-validated on the 10 subjects (each image scored by the fold that held it "
              "out), and the val subject by the ensemble (`benchmarks/RESULTS.md`, \"OCTA-500 "
              "classes and FAZ\"):\n\n" + faz.strip())
    notes = ("Small-sample model: 10 training subjects from one device (Optovue). "
             "`retinaseg measure` uses it for the FAZ of OCTA images when it is installed "
             "(`--faz-model classical` for the model-free route).")
    dst = bundle(ENSEMBLE, "octa-faz", DATA, scores, notes)
    write_text_atomic(WEIGHTS_DIR / "octa-faz.md",
                      card_text("octa-faz", dst, DATA, scores, notes, summary=SUMMARY))
    print(f"bundled {ENSEMBLE} as {dst} ({size:.1f} MB)")


if __name__ == "__main__":
    main()

"""SAM 2 LoRA fine-tuning on CPU with the random-weight ``test-tiny`` model (reference §7).

Trains (or reads) three runs, each with a time limit, and tabulates validation Dice before
training (epoch 0: LoRA B = 0, the base model) and at the best epoch:

- ``configs/examples/sam2_test_tiny_enface.yaml``: en-face mode, OCTA-500 6M large vessels,
  OCTA(ILM_OPL), component-centroid prompts, 20 min;
- ``configs/examples/sam2_test_tiny_layers.yaml``: layer sequences as video, the SAM-OCTA2 RV
  samples (one train subject, one val subject), points on 1-2 frames, 15 min;
- ``configs/examples/sam2_test_tiny_faz.yaml``: the FAZ, en-face, few-shot (10 train labels,
  one val label), centroid + border prompts, 10 min.

The backbone is untrained (random weights, 1.2 M parameters): the figures show that each
training mode runs on a laptop CPU and moves the model, not what SAM-OCTA2 reaches with
pretrained SAM 2 weights. A training run: not part of ``make bench``
(``benchmarks/run_all.py --training`` runs it).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/sam2_finetune.py          # train all 3
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/sam2_finetune.py \\
        --enface RUN --layers RUN --faz RUN                                      # read runs
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

from common import REPO, md_table, publish

from retinaseg.training import train

CONFIGS = {
    "enface": ("configs/examples/sam2_test_tiny_enface.yaml",
               "en-face, OCTA-500 6M large vessels (ILM_OPL), centroid prompts"),
    "layers": ("configs/examples/sam2_test_tiny_layers.yaml",
               "layer sequences, SAM-OCTA2 RV samples, points on frame 0 (val)"),
    "faz": ("configs/examples/sam2_test_tiny_faz.yaml",
            "FAZ en-face, few-shot, centroid + 3 border points"),
}


def _read(run: Path) -> tuple[dict, list[dict[str, str]]]:
    summary = json.loads((run / "summary.json").read_text())
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return summary, rows


def _row(mode: str, run: Path) -> tuple[list[object], dict]:
    summary, rows = _read(run)
    first = next(r for r in rows if r["epoch"] == "0")
    best = next(r for r in rows if int(r["epoch"]) == summary["best_epoch"])
    tracked = "val_tracked" in best
    val = summary["validation"]
    cells = [CONFIGS[mode][1], val,
             f"{summary['train_seconds'] / 60:.1f}", summary["epochs_run"],
             float(first["val_dice"]), float(best["val_dice"]),
             f"{float(first['val_tracked']):.4f} → {float(best['val_tracked']):.4f}"
             if tracked else "",
             f"{summary['trainable_parameters']:,} / {summary['total_parameters']:,}"]
    return cells, {"run": str(run), "summary": summary, "epoch0": first, "best": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for mode in CONFIGS:
        ap.add_argument(f"--{mode}", type=Path, default=None,
                        help=f"an existing {mode} run folder (skip training)")
    a = ap.parse_args()
    rows, raw = [], {}
    for mode, (config, _) in CONFIGS.items():
        run = getattr(a, mode) or Path(train(REPO / config)["run_dir"])
        cells, raw[mode] = _row(mode, run)
        rows.append(cells)
    header = ["mode", "validation", "CPU min", "epochs", "val Dice epoch 0",
              "val Dice best", "tracked frames' Dice (0 → best)", "trainable / all parameters"]
    body = ("Random-weight `test-tiny` SAM 2 (untrained backbone): LoRA r 8 on the image "
            "encoder's `qkv` and the mask decoder's attention, Adam lr 1e-3, 1 thread. "
            "'epoch 0' is the validation before any step (LoRA B = 0), 'best' the best "
            "validation epoch; Dice at logit > 0. Layer sequences: validation as SAM-OCTA2 "
            "(4 layers evenly spaced, one positive point on frame 0); 'tracked' is the Dice "
            "of the frames after the prompted one, what the memory carried. Validation sets: "
            "en-face, OCTA-500 6M val; layers, subject 10441 (the one val sequence); FAZ, "
            "the single val-split FAZ label in ../shared (10441), so its figure is one image's "
            "Dice after training on ten. These runs show "
            "that the three training modes run on a laptop CPU and move the model; they say "
            "nothing about SAM-OCTA2's accuracy with pretrained weights (none can be "
            "downloaded here).\n\n" + md_table(header, rows)
            + "\n\n" + "\n".join(f"- {m}: `{CONFIGS[m][0]}`, run `{raw[m]['run']}`"
                                 for m in CONFIGS))
    publish("sam2_finetune", "SAM 2 fine-tuning on CPU (test-tiny)", body, raw)


if __name__ == "__main__":
    main()

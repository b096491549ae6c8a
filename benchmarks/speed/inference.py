"""Speed: inference time and peak memory of the bundled default models on CPU.

Each row runs in a fresh process (:func:`common.speed`): the median of 21 runs after one
warm-up, whole image, preprocessing included, default threads, and the peak RSS of that
process. Rows: the default inference (the model's own flip TTA, BatchNorm folded, precision
``auto``, TorchScript-frozen in bfloat16), the same without freezing (``--no-jit``), float32,
and the first default (float32, one pass, BatchNorm separate, not frozen), on uniform-noise
inputs of the usual sizes and on one real DRIVE photograph. Then frozen against plain in
interleaved rounds, so that a slow minute on a shared machine hits every setting. The last
column is each model's training time (all members of an ensemble, plus the model it was
fine-tuned from).

Writes the ``inference_speed`` section (``benchmarks/results/inference_speed.{md,json}``);
``tools/bundle.py`` copies its default rows into the model cards.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/inference.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import SHARED_DATA, md_table, publish, speed, training_minutes

SPEED_CASES = [  # (model, input shape, what, precision, tta, graph): the default first
    # (BatchNorm folded; TorchScript-frozen in bfloat16), then "eager" (folded, not frozen:
    # `--no-jit`), float32 with the same TTA (a CPU without native bfloat16; not frozen by
    # default), and "nofuse" (float32, one pass, BatchNorm separate, not frozen: the first
    # default)
    ("fundus-vessels", "584x565x3", "584×565 colour fundus", "auto", "model", "default"),
    ("fundus-vessels", "584x565x3", "584×565 colour fundus", "auto", "model", "eager"),
    ("fundus-vessels", "584x565x3", "584×565 colour fundus", "fp32", "model", "default"),
    ("fundus-vessels", "584x565x3", "584×565 colour fundus", "fp32", "model", "eager"),
    ("fundus-vessels", "584x565x3", "584×565 colour fundus", "fp32", "none", "nofuse"),
    ("fundus-vessels", str(SHARED_DATA / "DRIVE" / "test" / "images" / "01_test.tif"),
     "DRIVE test 01_test.tif (584×565)", "auto", "model", "default"),
    ("octa-vessels", "400x400", "400×400 OCTA", "auto", "model", "default"),
    ("octa-vessels", "400x400", "400×400 OCTA", "auto", "model", "eager"),
    ("octa-vessels", "400x400", "400×400 OCTA", "fp32", "model", "default"),
    ("octa-vessels", "400x400", "400×400 OCTA", "fp32", "none", "nofuse"),
    ("octa-vessels", "304x304", "304×304 OCTA", "auto", "model", "default"),
]


def freeze_ab(rounds: int = 3, model: str = "fundus-vessels") -> str:
    """Frozen against plain, interleaved: ``rounds`` rounds of the four settings (bfloat16 and
    float32, each frozen and not), so that a slow minute on the shared machine hits all four."""
    settings = [("auto", "default"), ("auto", "eager"), ("fp32", "jit"), ("fp32", "eager")]
    times: dict[tuple[str, str], list[float]] = {k: [] for k in settings}
    for _ in range(rounds):
        for prec, graph in settings:
            times[(prec, graph)].append(speed(model, "584x565x3", precision=prec,
                                              graph=graph)["median_s"])
    rows = []
    for prec in ("auto", "fp32"):
        frozen = times[(prec, "default" if prec == "auto" else "jit")]
        plain = times[(prec, "eager")]
        ratio = [p / f for f, p in zip(frozen, plain)]
        rows.append([f"{model}, 584×565, {'bfloat16' if prec == 'auto' else 'float32'}",
                     ", ".join(f"{t:.3f}" for t in frozen), ", ".join(f"{t:.3f}" for t in plain),
                     f"{min(ratio):.2f}-{max(ratio):.2f}×"])
    return ("\n\nTorchScript freezing, frozen against plain (BatchNorm folded in both), "
            f"{rounds} interleaved rounds of fresh processes, each the median of 21 runs; the "
            "default freezes in bfloat16 only:\n\n"
            + md_table(["model, input, precision", "frozen s / image", "plain s / image",
                        "plain / frozen, per round"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of the frozen-against-plain comparison")
    a = ap.parse_args()
    raw, sp_rows = {}, []
    for model, shape, what, precision, tta, graph in SPEED_CASES:
        sp = speed(model, shape, precision=precision, tta=tta, graph=graph)
        default = (precision, tta, graph) == ("auto", "model", "default")
        key = f"speed {what}" + ("" if default else f" {precision} {tta} {graph}")
        raw[key] = {**sp, "model": model, "what": what, "asked": precision, "default": default}
        how = ("**default**: " if default else "") + (
            f"{sp['precision']}, TTA {sp['tta']}, BatchNorm "
            f"{'separate' if graph == 'nofuse' else 'folded'}, "
            + ("TorchScript-frozen" if sp["jit"] else "not frozen"))
        sp_rows.append([model, what, f"{sp['median_s']:.4f}", how, sp["threads"],
                        f"{sp['peak_rss_mb']:.0f}", f"{training_minutes(model)[0]:.1f}"])
    body = ("Speed: median of 21 runs after one warm-up, whole image, preprocessing "
            "included, default threads, fresh process per row (peak RSS of that process). "
            "Default inference: the model's own flip TTA (chosen on validation data, "
            "`tools/choose_tta.py`), BatchNorm folded into the convolutions, and precision "
            "`auto` = bfloat16 on CPUs with native bfloat16, float32 "
            "elsewhere, and in bfloat16 the network TorchScript-frozen (tracing costs "
            "0.5-3 s once per model, which the median after a warm-up leaves out; see the "
            "interleaved comparison below). The other rows: the same without "
            "freezing (`--no-jit`), float32 (what a CPU without bfloat16 gets), and the first "
            "default (float32, one pass, BatchNorm separate, not frozen). The timing "
            "inputs are uniform noise, which has no dark surround, so fundus models run on the "
            "whole image there (the worst case), and `fundus-vessels` also denoises it over "
            "the whole frame first (its `denoise` step takes uniform noise for a very noisy "
            "photograph); the DRIVE test row is a real photograph, "
            "where the network runs on the box of the retina only "
            "(`retinaseg.inference.crop`).\n\n"
            + md_table(["model", "input", "seconds / image", "inference", "threads",
                        "peak RSS MB",
                        "training min (all members of an ensemble; incl. the model it "
                        "was fine-tuned from)"], sp_rows)
            + freeze_ab(a.rounds))
    publish("inference_speed", "Bundled default models: inference speed", body, raw)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()

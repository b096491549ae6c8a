"""Speed: one training step on CPU, float32 against bfloat16 mixed precision (``train.amp: true``).

One optimiser step (AdamW, BCE on the logits, gradient clipping as in the trainer) of our
full-resolution ``unet`` (depth 4, widths 8/12/16) on a batch of 8 × 1 × 128² patches, the DRIVE
recipe's batch. Modes: float32; bfloat16 autocast; bfloat16 autocast with the network and input
channels-last, which is what the trainer runs when ``train.amp`` is on and the CPU computes
bfloat16 natively. Reports the median wall time over ``--repeats`` steps after two warm-ups.

Writes ``benchmarks/results/train_precision.md`` and prints the table.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/train_step.py [--threads 1] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import torch
from common import md_table, write_section
from torch import nn

from retinaseg.models import build_model
from retinaseg.utils.runtime import cpu_has_bf16

WIDTHS = (8, 12, 16)
MODES = ("fp32", "bf16", "bf16 + channels-last")


def step_time(width: int, mode: str, repeats: int) -> float:
    """Median seconds of one training step of ``unet`` width ``width`` in ``mode``."""
    torch.manual_seed(0)
    net = build_model("unet", 1, out_channels=1, depth=4, width=width, norm="batch").train()
    x = torch.randn(8, 1, 128, 128)
    y = (torch.rand(8, 1, 128, 128) > 0.85).float()
    if mode.endswith("channels-last"):
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
            logits = net(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()[0]
    rows = []
    for w in WIDTHS:
        t = {m: step_time(w, m, a.repeats) for m in MODES}
        rows.append([f"unet width {w}", *(f"{t[m]:.3f}" for m in MODES),
                     f"{t['fp32'] / t[MODES[-1]]:.2f}×"])
        print(rows[-1], flush=True)
    body = (f"CPU native bfloat16: {'yes' if cpu_has_bf16() else 'no (emulated: slower)'}; "
            f"{a.threads} torch thread(s); median of {a.repeats} steps after two warm-ups; "
            f"1-min load average {load0:.1f} at start. One step = forward, BCE, backward, "
            "gradient clipping and AdamW on 8 × 1 × 128² patches. The trainer uses the last "
            "mode when `train.amp: true` on such a CPU; `train.amp` is off by default on CPU, "
            "so older configs train exactly as before.\n\n"
            + md_table(["network", *(f"s / step, {m}" for m in MODES), "speed-up"], rows))
    write_section("train_precision", "Training on CPU: float32 vs bfloat16", body)
    print(body)


if __name__ == "__main__":
    main()

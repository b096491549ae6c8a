"""Speed: one training step with the ``ibp_cldice`` loss against a Dice-only step (issue 27 part 1).

One optimiser step (forward, loss, backward, AdamW) of the ``octa-vessels`` network (MONAI U-Net
16-256, two residual units; configs/octa_vessels) on two inputs: a batch of 8 × 1 × 128² patches
(the octa_vessels recipe) and one whole 400² map at batch 1 (S3-OCTA's whole-image training,
reference §8 table). Labels are real OCTA-500 6M ``GT_LargeVessel`` masks (patches cropped from
10001-10008, the whole map of 10001), or generated vessels when ../shared/data is absent. The
network is freshly initialised, so its prediction is noisy: the stochastic binarisation of the
IBP skeleton (reference §3) peels all 5 iterations, the worst case for early stopping.

Rows: Dice only (``dice``), ``ibp_cldice`` as implemented now, and, with ``--baseline-rev``,
``ibp_cldice`` with ``losses/skeleton.py`` read from that git revision (the 7× figure of the
earlier "OCTA-500: Dice vs topology-aware training", git 022c15b). Settings run in interleaved
rounds so that a slow minute on the shared machine hits each of them; each figure is the median
over all rounds. Then the loss alone (forward and backward on fixed logits) per skeleton
implementation.

Writes the ``ibp_speed`` section (``benchmarks/results/ibp_speed.{md,json}``).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/ibp_step.py [--threads 1] [--rounds 3]
        [--steps 3] [--baseline-rev f88e6e4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
import torch
from common import REPO, SHARED_DATA, md_table, publish

import retinaseg.losses.topology as topology
from retinaseg.data.synthetic import make_octa_sample
from retinaseg.io import read_mask
from retinaseg.losses import build_loss
from retinaseg.models import build_model

CASES = {"8 × 128² patches": (8, 128), "1 × 400² map": (1, 400)}
LABELS = SHARED_DATA / "OCTA-500" / "OCTA_6M" / "GT_LargeVessel"


def labels(batch: int, size: int) -> tuple[torch.Tensor, str]:
    """``[batch, 1, size, size]`` float labels in {0, 1} and where they came from."""
    if LABELS.is_dir():
        masks = [read_mask(LABELS / f"{10001 + i}.bmp") for i in range(batch)]
        off = (400 - size) // 2
        crops = [m[off:off + size, off:off + size] for m in masks]
        where = f"OCTA-500 6M GT_LargeVessel {10001}-{10000 + batch}"
    else:
        crops = [make_octa_sample(size, seed=i)["label"] for i in range(batch)]
        where = "generated OCTA-like vessels (../shared/data absent)"
    return torch.from_numpy(np.stack(crops)[:, None].astype(np.float32)), where


def skeleton_from_rev(rev: str) -> Callable[..., torch.Tensor]:
    """``ibp_skeleton`` of ``src/retinaseg/losses/skeleton.py`` at git revision ``rev``."""
    src = subprocess.run(["git", "show", f"{rev}:src/retinaseg/losses/skeleton.py"], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"skeleton_{rev}")
    exec(compile(src, f"{rev}:skeleton.py", "exec"), module.__dict__)  # noqa: S102 - our own file
    old = module.ibp_skeleton

    def call(*args: object, early_stop: bool = True, **kw: object) -> torch.Tensor:
        return old(*args, **kw)  # the old function has no early stop

    return call


class Setting:
    """A loss plus the ``ibp_skeleton`` implementation the ``ibp_cldice`` loss should call."""

    def __init__(self, name: str, loss: str, skeleton: Callable[..., torch.Tensor]) -> None:
        self.name, self.loss, self.skeleton = name, build_loss(loss), skeleton

    def __enter__(self) -> Setting:
        self.saved, topology.ibp_skeleton = topology.ibp_skeleton, self.skeleton
        return self

    def __exit__(self, *exc: object) -> None:
        topology.ibp_skeleton = self.saved


def step_times(setting: Setting, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    """Seconds of ``steps`` training steps (after one warm-up) of a fresh seeded network."""
    torch.manual_seed(0)
    net = build_model("monai_unet", 1, out_channels=1, channels=[16, 32, 64, 128, 256],
                      num_res_units=2).train()
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    times = []
    with setting:
        for i in range(steps + 1):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            setting.loss(net(x), y).backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - t0)
    return times


def loss_times(setting: Setting, y: torch.Tensor, steps: int) -> tuple[float, float]:
    """Median seconds of the loss forward and backward on fixed noisy logits."""
    gen = torch.Generator().manual_seed(0)
    fwd, bwd = [], []
    with setting:
        for _ in range(steps + 1):
            logits = torch.randn(y.shape, generator=gen).requires_grad_(True)
            t0 = time.perf_counter()
            loss = setting.loss(logits, y)
            t1 = time.perf_counter()
            loss.backward()
            fwd.append(t1 - t0)
            bwd.append(time.perf_counter() - t1)
    return statistics.median(fwd[1:]), statistics.median(bwd[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all settings")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setting and round")
    ap.add_argument("--baseline-rev", default=None,
                    help="git revision whose losses/skeleton.py gives the 'before' row")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()[0]
    now = topology.ibp_skeleton
    settings = [Setting("Dice only", "dice", now), Setting("ibp_cldice (now)", "ibp_cldice", now)]
    if a.baseline_rev:
        settings.append(Setting(f"ibp_cldice (before, {a.baseline_rev})", "ibp_cldice",
                                skeleton_from_rev(a.baseline_rev)))
    raw: dict[str, dict[str, object]] = {}
    rows, loss_rows = [], []
    for case, (batch, size) in CASES.items():
        y, where = labels(batch, size)
        x = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        times: dict[str, list[float]] = {s.name: [] for s in settings}
        for _ in range(a.rounds):
            for s in settings:
                times[s.name] += step_times(s, x, y, a.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        for s in settings:
            rows.append([case, s.name, f"{1000 * med[s.name]:.0f}",
                         f"{med[s.name] / med['Dice only']:.2f}×"])
            print(rows[-1], flush=True)
        for s in settings[1:]:
            fwd, bwd = loss_times(s, y, a.steps)
            loss_rows.append([case, s.name, f"{1000 * fwd:.1f}", f"{1000 * bwd:.1f}"])
            print(loss_rows[-1], flush=True)
        raw[case] = {"labels": where, "step_s": times, "median_s": med}
    body = (f"{a.threads} torch thread(s); {a.rounds} interleaved rounds × {a.steps} steps per "
            f"setting (after one warm-up each), medians; 1-min load average {load0:.1f} at start. "
            "One step = forward, loss, backward and AdamW of the octa-vessels network (MONAI "
            "U-Net 16-256, 2 residual units) from a fresh initialisation, labels "
            f"{raw[next(iter(CASES))]['labels']} (patches: centre crops). `ibp_cldice` at its "
            "defaults (5 iterations, α 0.5, stochastic binarisation; the prediction of a fresh "
            "network is noisy, so early stopping cannot cut its sweeps).\n\n"
            + md_table(["input", "loss", "ms / step", "× Dice-only step"], rows)
            + "\n\nThe loss alone, on fixed noisy logits (ms, median):\n\n"
            + md_table(["input", "loss", "forward ms", "backward ms"], loss_rows))
    publish("ibp_speed", "Training step with the IBP clDice loss (issue 27)", body, raw)


if __name__ == "__main__":
    main()

"""Speed: OCTA-Net (reference §5) coarse and fine stages on CPU, full ResNeSt-50 and CPU preset.

For each preset (``resnest50``, ``cpu``) and stage (``octanet`` coarse, ``octanet_fine`` with two
frozen coarse nets, as the seed): parameters (all / trainable), one training step (forward in
training mode, the ``octanet`` loss, backward, Adam) on a batch of 2 × 1 × 304² whole images
(the seed's batch and OCTA-500 3M size), and one inference forward on a 1 × 1 × 400² image
(OCTA-500 6M), each the median of ``--repeats`` after one warm-up, with the peak RSS of a fresh
process per measurement.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/octanet.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

from common import md_table, publish

CHILD = """
import json, sys, time
import numpy as np
import torch
from retinaseg.losses import build_loss
from retinaseg.models import build_model
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
name, preset, task, repeats, threads = sys.argv[1:6]
torch.set_num_threads(int(threads))
torch.manual_seed(0)
extra = {"two_coarse": True} if name == "octanet_fine" else {}
net = build_model(name, 1, preset=preset, **extra)
n_all = sum(p.numel() for p in net.parameters())
n_train = sum(p.numel() for p in net.parameters() if p.requires_grad)
ts = []
if task == "train":
    net.train()
    loss_fn = build_loss("octanet")
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], 3e-4)
    x = torch.randn(2, 1, 304, 304)
    y = (torch.rand(2, 2, 304, 304) > 0.85).float()
    for i in range(int(repeats) + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        if i:
            ts.append(time.perf_counter() - t0)
else:
    net.eval()
    x = torch.randn(1, 1, 400, 400)
    with torch.inference_mode():
        for i in range(int(repeats) + 1):
            t0 = time.perf_counter()
            net(x)
            if i:
                ts.append(time.perf_counter() - t0)
print(json.dumps({"median_s": float(np.median(ts)), "params": n_all, "trainable": n_train,
                  "peak_rss_mb": hwm_mb()}))
"""

CASES = [("octanet", "resnest50"), ("octanet_fine", "resnest50"),
         ("octanet", "cpu"), ("octanet_fine", "cpu")]


def measure(name: str, preset: str, task: str, repeats: int, threads: int) -> dict:
    """One measurement in a fresh process (so that its peak RSS is its own)."""
    out = subprocess.run([sys.executable, "-c", CHILD, name, preset, task, str(repeats),
                          str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    rows, raw = [], {}
    for name, preset in CASES:
        tr = measure(name, preset, "train", a.repeats, a.threads)
        inf = measure(name, preset, "infer", a.repeats, a.threads)
        raw[f"{name}/{preset}"] = {"train": tr, "infer": inf}
        rows.append([name, preset, f"{tr['params'] / 1e6:.2f} M",
                     f"{tr['trainable'] / 1e6:.2f} M", f"{tr['median_s']:.2f}",
                     f"{tr['peak_rss_mb']:.0f}", f"{inf['median_s']:.2f}",
                     f"{inf['peak_rss_mb']:.0f}"])
        print(rows[-1], flush=True)
    body = (f"{a.threads} torch threads; median of {a.repeats} after one warm-up; 1-min load "
            f"average {load0:.1f} at start; a fresh process per cell (peak RSS = VmHWM). "
            "Training step: forward in training mode, the `octanet` loss, backward and Adam on "
            "2 × 1 × 304² (the seed's batch, OCTA-500 3M); the fine stage's frozen coarse nets "
            "(two, as the seed) run forward only. Inference: one 1 × 1 × 400² image "
            "(OCTA-500 6M), eval mode.\n\n"
            + md_table(["stage", "preset", "parameters", "trainable", "s / train step",
                        "train peak RSS MB", "s / 400² image", "inference peak RSS MB"], rows))
    publish("octanet_speed", "OCTA-Net: parameters, CPU time and memory", body, raw)


if __name__ == "__main__":
    main()

"""Speed: one DSConv layer (reference §2.1) against a plain 3×3 conv on CPU.

Cases: DSConv 32→32 channels with K = 9 and 11, morph 0 and 1, on 1×32×304×304 and 1×32×400×400
inputs (the OCTA-500 3M and 6M sizes), forward only (``torch.no_grad``) and forward+backward
(sum of outputs; the input requires grad, as inside a network), versus
``nn.Conv2d(32, 32, 3, padding=1)`` on the same input. Reports the median wall time of
``--repeats`` runs after one warm-up, and the ratio to the 3×3 conv.

"before" rows time the layer with its previous aggregation (the 1×1 convolution over the
``C·K`` sampled channels, which PyTorch runs on its slow im2col path on one thread with a batch
below 16) next to the current one (the same sum as one matrix product); the last table times a
training step's forward + backward of the S3-OCTA ``cpu`` network (8 × 1 × 128² patches) both
ways, interleaved.

Writes ``benchmarks/results/dsconv.json`` (raw numbers) and ``benchmarks/results/dsconv.md``
(section for RESULTS.md) and prints the markdown table.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/dsconv.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import torch
import torch.nn.functional as F
from common import RESULTS, machine, md_table, write_section
from torch import nn

from retinaseg.models.factory import build_model
from retinaseg.models.snake import DSConv
from retinaseg.utils.atomic import write_text_atomic

CHANNELS = 32
SIZES = (304, 400)
KERNELS = (9, 11)


def median_ms(fn: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median and minimum wall time (ms) of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def step(layer: nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    """A closure running ``layer`` on ``x``: forward only, or forward + backward."""
    def run() -> None:
        if backward:
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x).sum().backward()
        else:
            with torch.no_grad():
                layer(x)
    return run


class ConvAggregatedDSConv(DSConv):
    """DSConv as it was before: the k-major samples aggregated by a 1×1 ``F.conv2d``."""

    def forward(self, x: torch.Tensor, return_prenorm: bool = False) -> torch.Tensor:
        b, cin, h, w = x.shape
        k, conv = self.kernel_size, self.dsc_conv
        weight = conv.weight.reshape(conv.out_channels, cin * k, 1, 1)
        y = F.conv2d(self.sample(x).view(b, cin * k, h, w), weight, conv.bias)
        return y if return_prenorm else self.relu(self.norm(y))


def cases() -> list[tuple[str, int | None, int | None, nn.Module]]:
    """(name, K, morph, layer) for every layer under test, the 3×3 conv first."""
    out: list[tuple[str, int | None, int | None, nn.Module]] = [
        ("conv3x3", None, None, nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1))]
    for k in KERNELS:
        for morph in (0, 1):
            layer = DSConv(CHANNELS, CHANNELS, k, extend_scope=1.0, morph=morph)
            before = ConvAggregatedDSConv(CHANNELS, CHANNELS, k, extend_scope=1.0, morph=morph)
            before.load_state_dict(layer.state_dict())
            out += [("dsconv", k, morph, layer), ("dsconv (before)", k, morph, before)]
    return out


def network_step(repeats: int) -> list[dict[str, object]]:
    """Forward + backward of the S3-OCTA cpu network on 8×1×128², current vs before, interleaved."""
    torch.manual_seed(0)
    net = build_model("s3octa", in_channels=1, out_channels=1, preset="cpu").train()
    x = torch.randn(8, 1, 128, 128)

    def run() -> None:
        net.zero_grad(set_to_none=True)
        net(x).sum().backward()

    def set_before(on: bool) -> None:
        for m in net.modules():
            if isinstance(m, DSConv):
                m.forward = (ConvAggregatedDSConv.forward.__get__(m) if on  # type: ignore
                             else DSConv.forward.__get__(m))
    times: dict[str, list[float]] = {"now": [], "before": []}
    for _ in range(repeats):
        for mode in times:
            set_before(mode == "before")
            times[mode].append(median_ms(run, 1)[0])
    return [{"op": "s3octa cpu net", "mode": mode, "median_ms": statistics.median(t),
             "min_ms": min(t)} for mode, t in times.items()]


def measure(repeats: int) -> list[dict[str, object]]:
    """Time every case on every size and mode; returns one record per measurement."""
    torch.manual_seed(0)
    rows: list[dict[str, object]] = []
    for size in SIZES:
        for backward in (False, True):
            mode = "fwd+bwd" if backward else "fwd"
            x = torch.randn(1, CHANNELS, size, size, requires_grad=backward)
            base = None
            for name, k, morph, layer in cases():
                med, best = median_ms(step(layer.train(), x, backward), repeats)
                base = med if base is None else base
                rows.append({"op": name, "kernel_size": k, "morph": morph, "size": size,
                             "mode": mode, "median_ms": med, "min_ms": best,
                             "ratio_vs_conv3x3": med / base})
                print(f"{name:8s} K={k} morph={morph} {size}² {mode:8s} {med:9.1f} ms",
                      flush=True)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    header = ["layer", "input", "mode", "median ms", "min ms", "× conv3×3"]
    body = []
    for r in rows:
        name = ("conv 3×3" if r["op"] == "conv3x3"
                else f"DSConv K={r['kernel_size']} morph {r['morph']}"
                + (", before (1×1 conv aggregation)" if "before" in str(r["op"]) else ""))
        body.append([name, f"1×{CHANNELS}×{r['size']}²", r["mode"], f"{r['median_ms']:.1f}",
                     f"{r['min_ms']:.1f}", f"{r['ratio_vs_conv3x3']:.1f}"])
    return md_table(header, body)


def net_table(rows: list[dict[str, object]]) -> str:
    """The S3-OCTA network rows: current aggregation against the previous one."""
    now = next(r["median_ms"] for r in rows if r["mode"] == "now")
    body = [["S3-OCTA cpu, 8×1×128², fwd+bwd",
             "matrix product (now)" if r["mode"] == "now" else "1×1 conv (before)",
             f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}",
             f"{float(r['median_ms']) / float(now):.2f}"] for r in rows]  # type: ignore[arg-type]
    return md_table(["network", "DSConv aggregation", "median ms", "min ms", "× now"], body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    rows = measure(a.repeats)
    net_rows = network_step(a.repeats)
    load1 = os.getloadavg()
    md = table(rows) + "\n\n" + net_table(net_rows)
    note = (f"CPU, {torch.get_num_threads()} torch threads, median of {a.repeats} runs after one "
            f"warm-up; 1-min load average {load0[0]:.1f} at start, {load1[0]:.1f} at end "
            "(other jobs were running: absolute times are pessimistic, ratios more telling). "
            "fwd+bwd back-propagates the output sum to the parameters and to the input, as for "
            "a layer inside a network.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "threads": torch.get_num_threads(), "repeats": a.repeats,
               "loadavg_start": load0, "loadavg_end": load1, "channels": CHANNELS,
               "results": rows, "network": net_rows}
    write_text_atomic(RESULTS / "dsconv.json", json.dumps(payload, indent=2))
    write_section("dsconv", "DSConv layer vs 3×3 conv (CPU)", f"{note}\n\n{md}")
    print(f"\n{note}\n\n{md}")


if __name__ == "__main__":
    main()

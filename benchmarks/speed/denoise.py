"""Speed: total-variation denoising, scikit-image against our Torch implementation.

``fundus-vessels`` carries the adaptive ``denoise`` step (:mod:`retinaseg.preprocessing.restore`),
which runs Chambolle's total-variation algorithm on photographs far noisier than DRIVE's. With
``skimage.restoration.denoise_tv_chambolle`` (single-threaded) the step pushed the model past
its 0.15 s target on the speed benchmark's uniform-noise input in one of two runs; it now runs
:func:`retinaseg.preprocessing.restore.tv_chambolle`. This benchmark times both on the inputs
the step meets, at the weight the step uses there (``0.7 × sqrt(std² − 0.01²)``), ours with
Torch's 2 intra-op threads (the fundus model's default) and with 1, and checks that they agree:
the largest absolute difference of the outputs (intensities in [0, 1]). Median of 15 runs after
one warm-up, one process; run it on an otherwise idle machine.

Inputs: 584×565 uniform noise (the speed benchmark's input), and the green channel of DRIVE
test image 01 with white noise of std 0.02, 0.04 and 0.06 added (the noise levels that chose
the step), where ``../shared/data`` is present.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/denoise.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
import torch
from common import SHARED_DATA, md_table, publish

from retinaseg.preprocessing.restore import DENOISE_TRIGGER, noise_std, tv_chambolle

REPEATS = 15
NOISE = (0.02, 0.04, 0.06)


def inputs() -> list[tuple[str, np.ndarray]]:
    """(name, grey float32 image in [0, 1]) pairs: uniform noise, then noisy DRIVE photographs."""
    rng = np.random.default_rng(0)
    out = [("584×565 uniform noise", rng.random((584, 565), dtype=np.float32))]
    photo = SHARED_DATA / "DRIVE" / "test" / "images" / "01_test.tif"
    if photo.is_file():
        from retinaseg.io import read_image

        green = read_image(photo)[..., 1].astype(np.float32)
        for std in NOISE:
            noisy = np.clip(green + rng.normal(0, std, green.shape), 0, 1).astype(np.float32)
            out.append((f"DRIVE 01_test green + noise σ {std}", noisy))
    return out


def median_ms(fn: Callable[[np.ndarray, float], object], img: np.ndarray,
              weight: float) -> float:
    """Median milliseconds of ``fn(img, weight)`` over :data:`REPEATS` runs after a warm-up."""
    fn(img, weight)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn(img, weight)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from skimage.restoration import denoise_tv_chambolle

    rows, raw = [], {}
    for name, img in inputs():
        std = noise_std(img)
        weight = 0.7 * float(np.sqrt(max(std**2 - DENOISE_TRIGGER**2, 0.0)))
        torch.set_num_threads(1)
        ours1_ms = median_ms(tv_chambolle, img, weight)
        torch.set_num_threads(2)
        ours_ms = median_ms(tv_chambolle, img, weight)
        sk_ms = median_ms(denoise_tv_chambolle, img, weight)
        diff = float(np.abs(tv_chambolle(img, weight)
                            - denoise_tv_chambolle(img, weight=weight)).max())
        raw[name] = {"noise_std": std, "weight": weight, "skimage_ms": sk_ms, "ours_ms": ours_ms,
                     "ours_1thread_ms": ours1_ms, "max_abs_diff": diff}
        rows.append([name, f"{std:.4f}", f"{weight:.4f}", f"{sk_ms:.1f}", f"{ours_ms:.1f}",
                     f"{sk_ms / ours_ms:.1f}×", f"{ours1_ms:.1f}", f"{diff:.1e}"])
    body = ("Chambolle's total-variation denoising on the inputs the `denoise` step of "
            "`fundus-vessels` meets, at the weight it uses there; median of 15 runs after a "
            "warm-up, on an otherwise idle machine. Before: "
            "`skimage.restoration.denoise_tv_chambolle` (single-threaded; what the step ran "
            "until 2026-12-03); after: `retinaseg.preprocessing.restore.tv_chambolle` (our "
            "Torch implementation, the same step and stopping rule), with 2 threads (the "
            "default) and with 1. With other processes busy on the cores, 2 threads can be "
            "several times slower than shown (see the function's docstring). Max |Δ|: the "
            "largest difference between their outputs, intensities in [0, 1].\n\n"
            + md_table(["input", "noise estimate", "TV weight", "scikit-image ms",
                        "ours ms, 2 threads", "speed-up", "ours ms, 1 thread", "max |Δ|"],
                       rows))
    publish("denoise_speed", "Total-variation denoising: before and after", body, raw)


if __name__ == "__main__":
    main()

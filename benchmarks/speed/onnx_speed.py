"""Speed: ONNX Runtime against PyTorch per image, bundled models, same threads, one process.

For each model (``fundus-vessels`` on DRIVE test ``01_test.tif``, ``octa-vessels`` and
``octanet`` on OCTA-500 6M ``10001``; uniform noise of the same size where ``../shared/data`` is
absent) three Segmenters run the same image: PyTorch's default, our fastest path (precision
``auto``: bfloat16 and TorchScript-frozen on CPUs with native bfloat16, else float32), PyTorch
in float32, and ONNX Runtime (float32, :class:`retinaseg.deploy.OnnxSegmenter` on the file that
``retinaseg export`` writes). Each is timed per image (preprocessing, FOV crop/rescale and the
model's flip TTA included, as ``retinaseg predict`` runs them) and for one network pass on the
padded input alone, in ``--rounds`` interleaved rounds of ``--repeats`` runs, each block after
one untimed run (the median over all), so that a slow minute on a shared machine hits every
backend. The difference column is the largest |probability difference| to PyTorch float32 on
that image.

Writes the ``onnx`` section (``benchmarks/results/onnx.{md,json}``).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/onnx_speed.py [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
import torch
from common import SHARED_DATA, md_table, publish

from retinaseg.deploy import OnnxSegmenter, export_onnx
from retinaseg.inference.segmenter import Segmenter
from retinaseg.io import read_image

CASES = [  # (model, real image under ../shared/data, stand-in shape)
    ("fundus-vessels", ("DRIVE", "test", "images", "01_test.tif"), (584, 565, 3)),
    ("octa-vessels", ("OCTA-500", "OCTA_6M", "Projection Maps", "OCTA(ILM_OPL)", "10001.bmp"),
     (400, 400)),
    ("octanet", ("OCTA-500", "OCTA_6M", "Projection Maps", "OCTA(ILM_OPL)", "10001.bmp"),
     (400, 400)),
]


def load_image(parts: tuple[str, ...], shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """The real image, or seeded uniform noise of ``shape`` where it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if path.is_file():
        return read_image(path), "/".join(parts)
    return np.random.default_rng(0).random(shape, dtype=np.float32), f"noise {shape}"


def network_input(seg: Segmenter, image: np.ndarray) -> torch.Tensor:
    """The padded network input ``[1, C, H, W]`` of one pass (whole image, no crop)."""
    x = torch.from_numpy(seg.prepare(image))[None]
    m = int(getattr(seg.net, "size_multiple", 1))
    h, w = x.shape[-2:]
    return torch.nn.functional.pad(x, (0, -w % m, 0, -h % m), mode="replicate")


def one_pass(seg: Segmenter, x: torch.Tensor) -> None:
    """One forward pass of ``seg``'s network as its precision runs it."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                enabled=seg.precision == "bf16"):
        seg.net(x.contiguous(memory_format=torch.channels_last) if seg.precision == "bf16"
                else x)


def timed(fn, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after one untimed call (ONNX Runtime plans its
    memory anew when the input shape changes, as it does between the two timings)."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(name: str, image: np.ndarray, threads: int, rounds: int, repeats: int,
            folder: Path) -> dict:
    t0 = time.perf_counter()
    report = export_onnx(name, folder / f"{name}.onnx")
    export_s = time.perf_counter() - t0
    segs = {"torch default": Segmenter(name, threads=threads),
            "torch fp32": Segmenter(name, threads=threads, precision="fp32"),
            "onnxruntime fp32": OnnxSegmenter(report.path, threads=threads)}
    probs = {k: s(image) for k, s in segs.items()}  # warm-up, and the maps compared
    inputs = {k: network_input(s, image) for k, s in segs.items()}
    for k, s in segs.items():
        one_pass(s, inputs[k])
    per_image: dict[str, list[float]] = {k: [] for k in segs}
    per_pass: dict[str, list[float]] = {k: [] for k in segs}
    for _ in range(rounds):
        for k, s in segs.items():
            per_image[k] += timed(lambda s=s: s(image), repeats)
            per_pass[k] += timed(lambda s=s, k=k: one_pass(s, inputs[k]), repeats)
    ref = probs["torch fp32"]
    return {"export_s": export_s, "file_mb": report.size_bytes / 2**20,
            "export_check_diff": report.max_abs_diff, "threads": torch.get_num_threads(),
            "input": list(inputs["onnxruntime fp32"].shape),
            "tta": segs["onnxruntime fp32"].tta,
            "backends": {k: {"median_image_s": float(np.median(per_image[k])),
                             "median_pass_s": float(np.median(per_pass[k])),
                             "precision": segs[k].precision, "jit": bool(segs[k].jit),
                             "max_abs_diff_vs_torch_fp32":
                                 float(np.abs(probs[k] - ref).max())}
                         for k in segs}}


def rows_of(name: str, what: str, r: dict) -> list[list[object]]:
    ort_s = r["backends"]["onnxruntime fp32"]["median_image_s"]
    out = []
    for k, b in r["backends"].items():
        how = f"{b['precision']}" + (", TorchScript-frozen" if b["jit"] else "")
        out.append([name, what, k, how, f"{b['median_image_s']:.4f}",
                    f"{b['median_pass_s']:.4f}", f"{b['median_image_s'] / ort_s:.2f}",
                    f"{b['max_abs_diff_vs_torch_fp32']:.1e}"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="threads of both runtimes")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per round")
    a = ap.parse_args()
    raw, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, parts, shape in CASES:
            image, what = load_image(parts, shape)
            r = measure(name, image, a.threads, a.rounds, a.repeats, Path(tmp))
            raw[name] = {**r, "image": what}
            rows += rows_of(name, f"{what.split('/')[-1]} {image.shape[0]}×{image.shape[1]}", r)
    exports = "; ".join(f"`{n}` {r['export_s']:.1f} s, {r['file_mb']:.1f} MiB (check "
                        f"{r['export_check_diff']:.0e})" for n, r in raw.items())
    body = (f"Per image: median of {a.rounds} interleaved rounds × {a.repeats} runs (each "
            f"block after one untimed run), one process, {a.threads} thread(s) for PyTorch "
            "and ONNX Runtime alike, "
            "whole image with preprocessing, the FOV crop and rescaling of fundus photographs "
            "and the model's own flip TTA (`fundus-vessels`: none; `octa-vessels`: hflip, "
            "batched), as `retinaseg predict` runs them; per pass: one network forward on the "
            "padded whole input. `torch default` is our fastest PyTorch path (precision "
            "`auto`: bfloat16 and TorchScript-frozen on this CPU, which computes bfloat16 "
            "natively); ONNX Runtime runs float32 on the CPU execution provider. The last "
            "column is the largest |probability difference| to PyTorch float32 on the image "
            "(bfloat16 rounding for the default).\n\n"
            + md_table(["model", "image", "backend", "precision", "s / image", "s / pass",
                        "÷ onnxruntime", "max |Δp| vs torch fp32"], rows)
            + f"\n\nExport (`retinaseg export`, once per model, incl. its ONNX Runtime check): "
            f"{exports}.")
    publish("onnx", "ONNX Runtime against PyTorch (bundled models)", body, raw)


if __name__ == "__main__":
    main()

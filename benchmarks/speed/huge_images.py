"""Speed and memory: time and peak memory of segmenting HRF-size and 8192 x 8192 images on CPU.

Each case runs in a fresh Python process, so its peak resident memory (``VmHWM`` from
``/proc/self/status``, the high-water mark of the whole process: Python, torch, the model, the
image and every intermediate) is measured alone. Images are random noise written to a temporary
PNG (content does not change memory or time) and removed afterwards. The model is the
architecture the toolkit ships for DRIVE (``monai_unet``, default parameters) with untrained
weights, saved with :func:`retinaseg.models.persistence.save_model`.

Two modes per image:

- ``segment``: ``read_image`` + :class:`retinaseg.inference.segmenter.Segmenter` (preprocessing
  and tiled inference, probability map in memory);
- ``predict``: :func:`retinaseg.inference.batch.predict_files`, i.e. ``retinaseg predict``
  (also writes the probability, mask and overlay PNGs and measures the centerline length).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/huge_images.py [--cases hrf,8192]
        [--modes segment,predict] [--limit-gb 4] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import REPO, md_table, write_section

CASES: dict[str, dict] = {
    "hrf": {"title": "HRF size, RGB", "shape": (2336, 3504, 3),
            "preprocess": [{"name": "green"}, {"name": "clahe"}, {"name": "standardise"}]},
    "8192": {"title": "8192 x 8192, grey", "shape": (8192, 8192),
             "preprocess": [{"name": "grey"}, {"name": "standardise"}]},
}
MODES = ("segment", "predict")
GB = 2**30


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (``VmHWM``; ``ru_maxrss`` where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_noise_png(path: Path, shape: tuple[int, ...], seed: int = 0) -> None:
    """Random uint8 noise of ``shape`` written as PNG (low compression: noise does not shrink)."""
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(arr).save(path, compress_level=1)


def save_drive_model(path: Path, in_channels: int, preprocess: list[dict]) -> None:
    """The DRIVE-size architecture (``monai_unet`` defaults), untrained, as a model file."""
    from retinaseg.models import build_model
    from retinaseg.models.persistence import ModelSpec, save_model

    net = build_model("monai_unet", in_channels)
    save_model(path, net, ModelSpec("monai_unet", in_channels, {}, preprocess=preprocess))


# ------------------------------------------------------------------------------------ child


def child(job: dict) -> dict:
    """Run one case in this (fresh) process and return its measurements."""
    import torch

    from retinaseg.inference import predictor
    from retinaseg.inference.batch import predict_files
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.io import read_image

    tiles = {"n": 0}
    real = predictor._forward_tiled

    def counting(*a, **k):
        tiles["n"] += 1
        return real(*a, **k)

    predictor._forward_tiled = counting
    out: dict = {"threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    if job["mode"] == "segment":
        seg = Segmenter(job["model"], device="cpu")
        out["baseline_rss_gb"] = peak_rss_bytes() / GB  # Python + torch + model, before the image
        t1 = time.perf_counter()
        image = read_image(job["image"])
        out["read_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        prob = seg(image)
        out["segment_s"] = time.perf_counter() - t2
        out["shape"] = list(prob.shape)
    else:
        rep = predict_files([job["image"]], job["model"], job["out"], device="cpu")
        if rep.skipped:
            raise RuntimeError(f"skipped: {rep.skipped}")
        out["shape"] = list(image_hw(Path(job["out"]) / "noise_prob.png"))
    out["total_s"] = time.perf_counter() - t0
    out["tiled"] = tiles["n"] > 0
    out["peak_rss_gb"] = peak_rss_bytes() / GB
    return out


def image_hw(path: Path) -> tuple[int, int]:
    """(H, W) of an image file without decoding it."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size[1], im.size[0]


# ----------------------------------------------------------------------------------- parent


def run_case(name: str, mode: str, tmp: Path) -> dict:
    """Prepare the image and model for ``name``, run ``mode`` in a fresh process."""
    case = CASES[name]
    image, model = tmp / "noise.png", tmp / f"model_{name}.safetensors"
    if not image.is_file():
        write_noise_png(image, case["shape"])
    if not model.is_file():
        save_drive_model(model, 1, case["preprocess"])
    job = {"mode": mode, "image": str(image), "model": str(model), "out": str(tmp / "out")}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{name}/{mode} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update(case=name, mode=mode, wall_s=wall)
    return res


def table(results: list[dict], limit_gb: float) -> str:
    rows = []
    for r in results:
        case = CASES[r["case"]]
        h, w = case["shape"][:2]
        rows.append([case["title"], f"{w}x{h}", r["mode"], "yes" if r["tiled"] else "no",
                     f"{r['total_s']:.1f}", f"{r['wall_s']:.1f}", f"{r['peak_rss_gb']:.2f}",
                     "yes" if r["peak_rss_gb"] < limit_gb else "**no**"])
    return md_table(["image", "W x H", "mode", "tiled", "run s", "wall s (incl. start)",
                     "peak RSS GB", f"< {limit_gb:g} GB"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--limit-gb", type=float, default=4.0)
    ap.add_argument("--no-write", action="store_true", help="print only, keep results/ as is")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    results = []
    for name in a.cases.split(","):
        with tempfile.TemporaryDirectory(prefix="retinaseg-huge-") as tmp:
            for mode in a.modes.split(","):
                res = run_case(name, mode, Path(tmp))
                print(json.dumps(res), flush=True)
                results.append(res)
    body = table(results, a.limit_gb)
    print(body)
    if not a.no_write:
        notes = (
            "Model: `monai_unet` with default parameters (the DRIVE config's architecture), "
            "untrained; CPU, sliding window 512 px, overlap 0.25, Gaussian weighting. Input: "
            "random-noise PNG. *run s*: inside the measured process (model load, read, "
            "preprocess, inference and, for `predict`, writing the three PNGs); *wall s* adds "
            "the Python/torch start-up. *peak RSS*: `VmHWM` of that process (everything "
            "resident, including ~0.3-0.5 GB for Python + torch).")
        raw = "\n".join(json.dumps(r) for r in results)
        write_section("huge_images", "Huge images: time and peak memory (CPU)",
                      f"{body}\n\n{notes}\n\nRaw measurements:\n\n```\n{raw}\n```")


if __name__ == "__main__":
    main()

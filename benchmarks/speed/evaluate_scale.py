"""Speed and memory of ``evaluate`` on HRF-size images, against ``predict`` on the same images.

HRF (45 photographs of 3504 × 2336) is not in ``../shared``, so the 10 first DRIVE test
photographs are upscaled to 3504 × 2336 (image bilinear, label and FOV mask nearest) into a
temporary ``folder`` dataset (``images/``, ``labels/``, ``fov/``). Both commands run in fresh
processes, one after the other, with the bundled ``fundus-vessels`` model and ``threads``
CPU threads:

- ``predict``: :func:`retinaseg.api.predict` on ``images/`` (probability, mask and overlay
  PNGs, ``predictions.csv``);
- ``evaluate``: :func:`retinaseg.api.evaluate` on the folder dataset (``fov=fov``), with the
  error maps (the default); then with ``metrics="fast"``, and with ``save_maps=False`` too.

Both runs are checked to have produced one row per image (a ``predict`` that did nothing once
made ``evaluate`` look 7× slower than it is).

Each child reports its wall time and its peak memory: ``VmHWM`` (its own high-water mark) and
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (which also counts what the parent held when it
forked, so it can read higher). Targets: evaluate ≤ 1.5 × predict, peak ≤ 4 GB.

Also measured on the real DRIVE test split (20 photographs at their own size): the pooled AUC
and AP of ``evaluate`` (a 4096-bin histogram, :class:`retinaseg.evaluation.metrics.
ScoreHistogram`) against the exact sort-based figures of
:func:`retinaseg.evaluation.metrics.pooled_metrics`.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/evaluate_scale.py [--n 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import SHARED_DATA, md_table, publish

HRF_SHAPE = (2336, 3504)
"""(height, width) of an HRF photograph."""

CHILD = """
import json, resource, sys, time
mode, root, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import retinaseg
t0 = time.perf_counter()
if mode == "predict":
    retinaseg.predict(root + "/images", model="fundus-vessels", out=out, threads=threads)
else:
    retinaseg.evaluate("fundus-vessels", "folder", root, "all", out, options={"fov": "fov"},
                       threads=threads, metrics="full" if mode == "evaluate" else "fast",
                       save_maps=mode != "evaluate-fast-nomaps")
seconds = time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "vmhwm_mb": hwm / 1024,
                  "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_dataset(root: Path, n: int) -> None:
    """``n`` DRIVE test photographs, labels and FOV masks upscaled to :data:`HRF_SHAPE`."""
    from PIL import Image

    drive = SHARED_DATA / "DRIVE" / "test"
    for sub in ("images", "labels", "fov"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    size = HRF_SHAPE[::-1]
    for i in range(1, n + 1):
        img = Image.open(drive / "images" / f"{i:02d}_test.tif").convert("RGB")
        img.resize(size, Image.BILINEAR).save(root / "images" / f"{i:02d}.png")
        for sub, src in (("labels", f"1st_manual/{i:02d}_manual1.gif"),
                         ("fov", f"mask/{i:02d}_test_mask.gif")):
            mask = Image.open(drive / src).convert("L").resize(size, Image.NEAREST)
            mask.point(lambda v: 255 if v > 127 else 0).save(root / sub / f"{i:02d}.png")


def run_child(mode: str, root: Path, out: Path, threads: int) -> dict:
    """Wall time and peak memory of ``predict`` or ``evaluate`` in a fresh process."""
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(root), str(out), str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def drive_auc_gap() -> dict:
    """Pooled AUC / AP on DRIVE test: exact (all pixels sorted) against the histogram."""
    from retinaseg.data import build_dataset
    from retinaseg.evaluation.metrics import PooledScores, pooled_metrics
    from retinaseg.inference.segmenter import Segmenter

    ds = build_dataset("drive", str(SHARED_DATA / "DRIVE"), "test")
    seg = Segmenter("fundus-vessels")
    probs, gts, fovs, acc = [], [], [], PooledScores()
    for i in range(len(ds)):
        s = ds[i]
        probs.append(seg(s["image"]))
        gts.append(s["label"])
        fovs.append(s["fov"])
        acc.add(probs[-1], gts[-1], seg.threshold, fovs[-1])
    exact = pooled_metrics(probs, gts, seg.threshold, fovs)
    hist = acc.metrics()
    return {"n_images": len(ds), "bins": acc.histogram.bins,
            "auc_exact": exact["auc"], "auc_histogram": hist["auc"],
            "auc_diff": hist["auc"] - exact["auc"],
            "auc_error_bound": acc.histogram.auc_error_bound(),
            "ap_exact": exact["ap"], "ap_histogram": hist["ap"],
            "ap_diff": hist["ap"] - exact["ap"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="number of HRF-size images (≤ 20)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of both commands")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "hrf_like"
        make_dataset(root, a.n)
        pred = run_child("predict", root, Path(tmp) / "pred", a.threads)
        ev = run_child("evaluate", root, Path(tmp) / "eval", a.threads)
        fast = run_child("evaluate-fast", root, Path(tmp) / "fast", a.threads)
        bare = run_child("evaluate-fast-nomaps", root, Path(tmp) / "bare", a.threads)
        n_rows = len((Path(tmp) / "eval" / "per_image.csv").read_text().splitlines()) - 1
        n_pred = len((Path(tmp) / "pred" / "predictions.csv").read_text().splitlines()) - 1
    if n_pred != a.n or n_rows != a.n:
        sys.exit(f"predict wrote {n_pred} rows and evaluate {n_rows}, expected {a.n} each")
    ratio = ev["seconds"] / pred["seconds"]
    fast_ratio = fast["seconds"] / pred["seconds"]
    bare_ratio = bare["seconds"] / pred["seconds"]
    gap = drive_auc_gap()
    raw = {"n_images": a.n, "shape": list(HRF_SHAPE), "threads": a.threads, "predict": pred,
           "evaluate": ev, "evaluate_rows": n_rows, "ratio": ratio,
           "evaluate_fast": fast, "fast_ratio": fast_ratio,
           "evaluate_fast_nomaps": bare, "fast_nomaps_ratio": bare_ratio, "drive_auc": gap}
    rows = [[name, f"{r['seconds']:.1f}", f"{r['seconds'] / a.n:.2f}", f"{r['vmhwm_mb']:.0f}",
             f"{r['ru_maxrss_mb']:.0f}"] for name, r in (("predict", pred), ("evaluate", ev),
                                                ("evaluate --metrics fast", fast),
                                                ("evaluate --metrics fast --no-maps", bare))]
    body = (f"`evaluate` and `predict` on {a.n} HRF-size photographs ({HRF_SHAPE[1]} × "
            f"{HRF_SHAPE[0]}: DRIVE test 01-{a.n:02d} upscaled, with labels and FOV masks, as a "
            f"`folder` dataset), bundled `fundus-vessels`, {a.threads} thread(s), each command "
            "in a fresh process. Evaluate scores each image as it is predicted (per-image "
            "metrics incl. HD95, thick/thin Dice and topology columns, error maps) and keeps "
            "only a 4096-bin score histogram for the pooled ROC/PR.\n\n"
            + md_table(["command", "total s", "s / image", "peak RSS MB (VmHWM)",
                        "ru_maxrss MB"], rows)
            + f"\n\nevaluate / predict = **{ratio:.2f}×** with every column, "
              f"**{fast_ratio:.2f}×** with `--metrics fast` (confusion figures and AUC/AP "
              f"only), **{bare_ratio:.2f}×** adding `--no-maps` (target ≤ 1.5×). Both "
              "commands pay the same start-up (imports, model loading: a few seconds) and the "
              "same reading of the photographs; evaluate also reads the labels and FOV masks at "
              f"full size. Evaluate peak {ev['vmhwm_mb'] / 1024:.2f} GB "
              "(target ≤ 4 GB).\n\n"
            f"Pooled AUC on DRIVE test ({gap['n_images']} photographs, inside the FOV, "
            f"`fundus-vessels`): exact (every pixel sorted) {gap['auc_exact']:.6f}, "
            f"{gap['bins']}-bin histogram {gap['auc_histogram']:.6f}, difference "
            f"{gap['auc_diff']:+.2e} (worst case from the within-bin ties "
            f"{gap['auc_error_bound']:.1e}); pooled AP exact {gap['ap_exact']:.6f}, histogram "
            f"{gap['ap_histogram']:.6f}, difference {gap['ap_diff']:+.2e}.")
    publish("evaluate_scale", "Evaluation at HRF size: time and memory", body, raw)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()

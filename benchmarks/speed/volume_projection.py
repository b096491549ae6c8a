"""Speed, memory and agreement of volume reading, projection and IPN inference on a real cube.

Data: OCTA-500 6M subject 10225 (``../shared/data/OCTA-500/OCTA_6M/OCTA/10225``, 400 B-scans of
640 × 400 px), the only real OCTA volume available. It belongs to the OCTA-500 *test* split: it is
used here to check IO, orientation, projection and inference only; nothing is tuned on it.

Whole commands (``retinaseg project`` and ``predict`` on the B-scan folder, against a plain
Pillow + NumPy script that reads the 400 files, averages them and saves the map) are timed as
fresh processes from start to exit, imports included. Each timed in-process case runs in a fresh
Python process, so its peak resident memory (``VmHWM``) is its
own; ``import RSS`` is the resident memory after the imports, before any work. Cases:

- ``pillow+numpy``: the floor: ``np.stack`` of the 400 BMPs read with Pillow, ``mean`` over depth;
- ``read_volume``: :func:`retinaseg.io.read_volume` alone (float32 ``[640, 400, 400]``);
- ``read+project mean``: ``read_volume`` + :func:`retinaseg.project` (full-depth mean);
- ``read+project auto``: the same with the automatic inner-retina slab;
- ``ipn small``: ``read_volume`` + :func:`retinaseg.inference.volume.predict_volume` with an
  untrained ``ipn`` ``small`` preset (160 planes, area resampling, 96 px tiles, overlap 0.25);
- ``ipn paper, 1 tile``: the ``paper`` preset on one 96 × 96 tile of the resampled volume
  (time per tile and peak memory; the whole volume takes about 36 such tiles).

Agreement: Pearson correlation with the official ``Projection Maps/OCTA(ILM_OPL)/10225.bmp`` of
every projection method over the full depth, over one global automatic slab and over the
per-A-scan automatic slab, and of the mean projection under the 8 flips/transposes.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/volume_projection.py [--repeats 3]
        [--skip-ipn] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import REPO, SHARED_DATA, md_table, publish

VOLUME = SHARED_DATA / "OCTA-500/OCTA_6M/OCTA/10225"
OFFICIAL = SHARED_DATA / "OCTA-500/OCTA_6M/Projection Maps/OCTA(ILM_OPL)/10225.bmp"
GT = SHARED_DATA / "OCTA-500/OCTA_6M/GT_LargeVessel/10225.bmp"

_PRELUDE = """
import json, time, torch
torch.set_num_threads({threads})
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
"""
WARM_RUNS = 2
"""Calls after the first in the same process (``warm``: freed memory is reused)."""
CASES: dict[str, str] = {
    "pillow+numpy": """
import numpy as np
from PIL import Image
rss0 = status('VmRSS')
def work():
    vol = np.stack([np.asarray(Image.open(f'{folder}/{{k}}.bmp')) for k in range(1, 401)])
    out = vol.mean(axis=1)
""",
    "read_volume": """
from retinaseg.io import read_volume
rss0 = status('VmRSS')
def work():
    out = read_volume('{folder}')
""",
    "read+project mean": """
from retinaseg import project
from retinaseg.io import read_volume
rss0 = status('VmRSS')
def work():
    out = project(read_volume('{folder}'), 'mean')
""",
    "read+project auto": """
from retinaseg import project
from retinaseg.io import read_volume
rss0 = status('VmRSS')
def work():
    out = project(read_volume('{folder}'), 'mean', slab='auto')
""",
    "ipn small": """
from retinaseg.io import read_volume
from retinaseg.models import build_model
from retinaseg.inference.volume import predict_volume
net = build_model('ipn', 1, preset='small').eval()
rss0 = status('VmRSS')
def work():
    out = predict_volume(net, read_volume('{folder}'), planes=160, roi=96, overlap=0.25)
""",
    "ipn paper, 1 tile": """
from retinaseg.io import read_volume
from retinaseg.models import build_model
from retinaseg.inference.volume import predict_volume
net = build_model('ipn', 1, preset='paper').eval()
rss0 = status('VmRSS')
def work():
    out = predict_volume(net, read_volume('{folder}')[:, :96, :96], planes=160, roi=96)
""",
}
_EPILOGUE = """
times = []
for _ in range({runs}):
    t = time.perf_counter(); work(); times.append(time.perf_counter() - t)
print(json.dumps({{"cold": times[0], "warm": min(times[1:], default=None), "import_rss": rss0,
                  "peak_rss": status('VmHWM')}}))
"""


def run_case(name: str, threads: int, warm: bool = True) -> dict[str, float]:
    """Run one case in a fresh interpreter: ``cold`` (first call) and ``warm`` (best later
    call) seconds, import and peak RSS (bytes)."""
    code = (_PRELUDE.format(threads=threads) + CASES[name].format(folder=VOLUME)
            + _EPILOGUE.format(runs=1 + (WARM_RUNS if warm else 0)))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN for a constant map."""
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def agreement() -> tuple[list[list[str]], list[list[str]], dict[str, object]]:
    """Correlation tables: per method (full / global slab / per-A-scan slab), per flip."""
    from retinaseg import project
    from retinaseg.io import read_image, read_volume
    from retinaseg.preprocessing.projection import METHODS, auto_slab

    vol, official = read_volume(VOLUME), read_image(OFFICIAL)
    slab, flat = auto_slab(vol), auto_slab(vol, block=None)
    rows = []
    for method in METHODS:
        values = [corr(project(vol, method, depth=d), official) for d in (None, flat, slab)]
        rows.append([method, *(f"{v:.3f}" if v == v else "n/a (constant)" for v in values)])
    mean = project(vol, "mean")
    flips = {"as read (chosen)": mean, "flip rows": mean[::-1], "flip columns": mean[:, ::-1],
             "rotate 180": mean[::-1, ::-1], "transpose": mean.T, "transpose, flip rows":
             mean.T[::-1], "transpose, flip columns": mean.T[:, ::-1],
             "transpose, rotate 180": mean.T[::-1, ::-1]}
    flip_rows = [[name, f"{corr(m, official):.3f}"] for name, m in flips.items()]
    thick = slab[1] - slab[0]
    facts = {"global slab": flat, "slab top planes": (int(slab[0].min()), int(slab[0].max())),
             "slab thickness planes": (int(thick.min()), int(np.median(thick)),
                                       int(thick.max()))}
    return rows, flip_rows, facts


FLOOR_COMMAND = """
import sys
import numpy as np
from PIL import Image
folder = sys.argv[1]
vol = np.stack([np.asarray(Image.open(f'{folder}/{k}.bmp')) for k in range(1, 401)])
Image.fromarray(vol.mean(axis=1).astype(np.uint8)).save(sys.argv[2])
"""


def time_command(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, GNU time) of one fresh process from start to exit."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with tempfile.NamedTemporaryFile(suffix=".txt") as rss:
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv], env=env,
                       check=True, capture_output=True)
        wall = time.perf_counter() - t0
        return wall, int(Path(rss.name).read_text().split()[-1]) / 1024


def command_rows(repeats: int, out: Path) -> tuple[list[list[object]], dict[str, object]]:
    """The whole commands, from the files on disk to the files written, interleaved."""
    py = sys.executable
    cases = {
        "Pillow + NumPy script (read 400 BMPs, mean, save)":
            [py, "-c", FLOOR_COMMAND, str(VOLUME), str(out / "floor.png")],
        "retinaseg project (mean, full depth)":
            [py, "-m", "retinaseg.cli", "project", str(VOLUME), "--out", str(out / "m.png")],
        "retinaseg project --slab auto --method max":
            [py, "-m", "retinaseg.cli", "project", str(VOLUME), "--out", str(out / "a.png"),
             "--slab", "auto", "--method", "max"],
        "retinaseg predict (volume → octa-vessels)":
            [py, "-m", "retinaseg.cli", "predict", str(VOLUME), "--out", str(out / "pred")],
    }
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, argv in cases.items():
            got[name].append(time_command(argv))
    floor = statistics.median(w for w, _ in got[next(iter(cases))])
    rows = []
    for name in cases:
        wall = statistics.median(w for w, _ in got[name])
        rows.append([name, f"{wall:.2f}", f"{wall / floor:.2f}×",
                     f"{max(r for _, r in got[name]):.0f}"])
    return rows, {k: v for k, v in got.items()}


def predict_check(out: Path) -> dict[str, float]:
    """Dice of ``predict``'s mask on 10225 against the official GT_LargeVessel (a check)."""
    from retinaseg.io import read_mask

    mask = read_mask(out / "pred" / "10225_mask.png")
    gt = read_mask(GT)
    return {"dice": float(2 * (mask & gt).sum() / (mask.sum() + gt.sum()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-ipn", action="store_true")
    args = parser.parse_args()
    if not VOLUME.is_dir():
        sys.exit(f"OCTA-500 volume 10225 not found at {VOLUME} (set RETINASEG_SHARED_DATA)")
    with tempfile.TemporaryDirectory() as tmp:
        cmd_rows, cmd_raw = command_rows(args.repeats, Path(tmp))
        check = predict_check(Path(tmp))
    names = [n for n in CASES if not (args.skip_ipn and n.startswith("ipn"))]
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for i in range(args.repeats):  # interleaved, so load changes hit every case alike
        for name in names:
            if name.startswith("ipn") and i > 0:
                continue  # minutes per run: once is enough
            runs[name].append(run_case(name, args.threads, warm=not name.startswith("ipn")))

    def med(name: str, key: str) -> float | None:
        values = [r[key] for r in runs[name] if r[key] is not None]
        return statistics.median(values) if values else None

    floor = {key: med("pillow+numpy", key) for key in ("cold", "warm")}
    rows = []
    for name in names:
        cells = [name]
        for key in ("cold", "warm"):
            value, base = med(name, key), floor[key]
            cells += ["–", "–"] if value is None or base is None else \
                [f"{value:.2f}", f"{value / base:.2f}×"]
        cells += [f"{max(r['import_rss'] for r in runs[name]) / 2**20:.0f}",
                  f"{max(r['peak_rss'] for r in runs[name]) / 2**20:.0f}"]
        rows.append(cells)
    method_rows, flip_rows, facts = agreement()
    body = "\n".join([
        f"OCTA-500 6M subject 10225 (640×400×400 B-scans; a test-split subject, used for IO, "
        f"orientation and inference checks only, nothing tuned on it). Median of "
        f"{args.repeats} fresh processes, interleaved; {args.threads} threads.",
        "", "### Whole commands, from the files on disk to the files written", "",
        md_table(["command", "wall s", "vs Pillow + NumPy", "peak RSS MiB"], cmd_rows), "",
        f"`predict` on the volume, its mask against the official GT_LargeVessel/10225.bmp: "
        f"Dice {check['dice']:.4f} (a check, not a score to tune).", "",
        "### Inside one process: reading, projecting, IPN", "",
        md_table(["case", "cold s", "cold vs floor", f"warm s (best of {WARM_RUNS})",
                  "warm vs floor", "import RSS MiB", "peak RSS MiB"], rows), "",
        "cold: the first call in a fresh process (pays first-touch page faults of the new "
        "arrays); warm: later calls in the same process; floor: pillow+numpy. The IPN rows "
        "use untrained weights (speed and memory only).", "",
        "### Correlation with the official OCTA(ILM_OPL) map", "",
        md_table(["method", "full depth", f"global auto slab {facts['global slab']}",
                  "per-A-scan auto slab"], method_rows), "",
        f"Per-A-scan slab: top planes {facts['slab top planes']}, thickness min/median/max "
        f"{facts['slab thickness planes']} planes.", "",
        "### Orientation: full-depth mean under the 8 flips/transposes", "",
        md_table(["orientation", "correlation"], flip_rows)])
    publish("volume_projection", "Volumes: reading, projection and inference on a real cube",
            body, {"commands": cmd_raw, "predict_check": check, "cases": runs,
                   "methods": method_rows, "orientation": flip_rows})


if __name__ == "__main__":
    main()

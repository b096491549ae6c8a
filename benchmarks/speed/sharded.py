"""Speed: sharded batch inference, images per second with one and with two shards.

``retinaseg predict`` with the bundled ``fundus-vessels`` model on the 20 DRIVE test
photographs, three ways, each a fresh process (or two) started from the command line:

- one process, 1 thread;
- one process, 2 threads;
- two shards at once (``--shard 1/2`` and ``--shard 2/2``), 1 thread each, then
  ``retinaseg merge``.

Throughput = images / wall time (process start and model loading included; for two shards,
from the start of both to the end of the slower one, merge included). The merged
``predictions.csv`` is checked to hold the same rows as the single process's.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/sharded.py [--n 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

from common import SHARED_DATA, md_table, publish

CLI = [sys.executable, "-m", "retinaseg.cli"]


def _predict(src: Path, out: Path, threads: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([*CLI, "predict", str(src), "--out", str(out), "--model",
                             "fundus-vessels", "--threads", str(threads), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _timed(procs: list[subprocess.Popen], t0: float) -> float:
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"predict failed: {p.args}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="DRIVE test photographs (≤ 20)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for f in sorted((SHARED_DATA / "DRIVE" / "test" / "images").glob("*.tif"))[:a.n]:
            shutil.copy(f, src / f.name)
        runs = {}
        for name, threads in (("1 process, 1 thread", 1), ("1 process, 2 threads", 2)):
            t0 = time.perf_counter()
            runs[name] = _timed([_predict(src, Path(tmp) / f"one{threads}", threads)], t0)
        t0 = time.perf_counter()
        shards = [_predict(src, Path(tmp) / "two", 1, "--shard", f"{i}/2") for i in (1, 2)]
        _timed(shards, t0)
        subprocess.run([*CLI, "merge", str(Path(tmp) / "two")], check=True,
                       stdout=subprocess.DEVNULL)
        runs["2 shards at once, 1 thread each"] = time.perf_counter() - t0
        same = (Path(tmp) / "two" / "predictions.csv").read_bytes() == \
            (Path(tmp) / "one1" / "predictions.csv").read_bytes()
    rows = [[name, f"{s:.1f}", f"{a.n / s:.2f}"] for name, s in runs.items()]
    raw = {"n_images": a.n, "seconds": runs, "images_per_s": {k: a.n / s for k, s in runs.items()},
           "merged_csv_identical": same}
    body = (f"`retinaseg predict` with `fundus-vessels` on {a.n} DRIVE test photographs; wall "
            "time from process start (model loading included) to the last output, for two "
            "shards to the end of the slower one plus `retinaseg merge`.\n\n"
            + md_table(["run", "seconds", "images / s"], rows)
            + f"\n\nMerged `predictions.csv` identical to the single process's: {same}.")
    publish("sharded_inference", "Sharded batch inference: throughput", body, raw)


if __name__ == "__main__":
    main()

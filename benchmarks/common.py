"""The one helper module of ``benchmarks/`` and ``tools/``: paths, machine facts, result
sections, and the measurements that several scripts share (inference timing in a fresh process,
the 2nd DRIVE observer, Dice of one image, held-out DRIVE images of a k-fold ensemble, upsampled
OCTA maps, training minutes of a model).

Each benchmark writes ``benchmarks/results/<name>.md`` (a self-contained section with date,
machine, threads and the command that produced it) and, where useful, a JSON file with the raw
numbers. ``benchmarks/run_all.py`` re-runs the scripts and joins the sections into RESULTS.md.

Scripts find this module by putting ``benchmarks/`` on ``sys.path`` (their first lines); they
import nothing from one another, only this module and ``retinaseg``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retinaseg.utils.atomic import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("RETINASEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def machine() -> str:
    """One line describing the machine the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = float("nan")
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {ncpu} cores, {mem_gb:.0f} GB RAM, no GPU used; Python "
            f"{platform.python_version()}, torch {torch.__version__}, "
            f"torch threads {torch.get_num_threads()}")


def command() -> str:
    """The command line that ran this script, relative to the repo."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    return "PYTHONPATH=src .venv/bin/python " + " ".join(
        shlex.quote(a) for a in [str(script), *sys.argv[1:]])


def write_section(name: str, title: str, body: str) -> Path:
    """Write ``results/<name>.md`` with a header (date, machine, command) and ``body``."""
    text = (f"## {title}\n\n- date: {date.today().isoformat()}\n- machine: {machine()}\n"
            f"- command: `{command()}`\n\n{body.strip()}\n")
    path = RESULTS / f"{name}.md"
    write_text_atomic(path, text)
    return path


def publish(name: str, title: str, body: str, raw: object) -> None:
    """Write ``results/<name>.json`` (the raw figures) and the ``results/<name>.md`` section,
    both atomically, and print the section body."""
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(raw, indent=2, default=float))
    write_section(name, title, body)
    print(body)


def md_table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table; floats are printed with 4 significant decimals."""
    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- shared measurements

KEYS = ["dice", "auc", "acc", "sen", "spe", "cldice"]
"""The metric columns of the accuracy tables."""

BUNDLED = ("fundus-vessels", "octa-vessels")
"""The default models shipped in ``src/retinaseg/weights``."""

TARGET_CHECKS = {  # (case label, metric, name, target): per-image means against the bar
    "fundus-vessels": [("DRIVE test (20, inside FOV)", "dice", "DRIVE test F1", 0.82),
                       ("DRIVE test (20, inside FOV)", "auc", "DRIVE test AUC", 0.980)],
    "octa-vessels": [("OCTA-500 val 6M (20)", "dice", "OCTA-500 val 6M Dice", 0.90),
                     ("OCTA-500 val 3M (10)", "dice", "OCTA-500 val 3M Dice", 0.92),
                     ("ROSSA val (100)", "dice", "ROSSA val Dice", 0.90)],
}


def target_status(name: str, raw: dict) -> str:
    """Each accuracy target of ``name`` with its per-image mean to five decimals and whether it
    is met, so that a figure rounded to four decimals cannot hide a miss."""
    parts = []
    for label, key, what, need in TARGET_CHECKS[name]:
        v = float(raw[label]["summary"]["per_image_mean"][key])
        parts.append(f"{what} {v:.5f} ({'met' if v >= need else 'not met'}, target ≥ {need:g})")
    return "; ".join(parts)


SPEED_CHILD = """
import sys, time, json
def hwm_mb():  # VmHWM: this process's own peak (ru_maxrss would include the parent's at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
import numpy as np
from retinaseg.inference.segmenter import Segmenter
tta = None if sys.argv[5] == "model" else sys.argv[5]
graph = sys.argv[6]
seg = Segmenter(sys.argv[1], precision=sys.argv[4], tta=tta, fuse=graph != "nofuse",
                jit={"default": None, "jit": True}.get(graph, False))
if sys.argv[2].endswith((".tif", ".png")):  # a real image
    from retinaseg.io import read_image
    img = read_image(sys.argv[2])
else:
    shape = tuple(int(v) for v in sys.argv[2].split("x"))
    img = np.random.default_rng(0).random(shape, dtype=np.float32)
seg(img)
ts = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); seg(img); ts.append(time.perf_counter() - t0)
import torch
print(json.dumps({"median_s": float(np.median(ts)), "threads": torch.get_num_threads(),
                  "precision": seg.precision, "tta": seg.tta, "jit": seg.jit,
                  "peak_rss_mb": hwm_mb()}))
"""


def speed(model: str, shape: str, repeats: int = 21, precision: str = "auto",
          tta: str = "model", graph: str = "default") -> dict:
    """Median inference seconds of ``model`` (preprocessing included) and peak RSS, in a fresh
    process. ``shape``: ``HxW[xC]`` of a uniform-noise input, or a ``.tif``/``.png`` file;
    ``tta``: ``model`` (its own) or a mode; ``graph``: ``default``, ``eager`` (not frozen),
    ``jit`` (frozen) or ``nofuse`` (BatchNorm separate, not frozen)."""
    out = subprocess.run([sys.executable, "-c", SPEED_CHILD, model, shape, str(repeats),
                          precision, tta, graph], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def second_observer(root: Path) -> tuple[dict, dict]:
    """Per-image mean and pooled metrics of the 2nd DRIVE observer against the 1st, inside
    the FOV (test split)."""
    from retinaseg.data import build_dataset
    from retinaseg.evaluation.metrics import image_metrics, pooled_metrics, summarise

    first = build_dataset("drive", str(root), "test")
    second = build_dataset("drive", str(root), "test", observer="2")
    probs = [second[i]["label"].astype(np.float32) for i in range(len(second))]
    gts = [first[i]["label"] for i in range(len(first))]
    fovs = [first[i]["fov"] for i in range(len(first))]
    rows = [image_metrics(p, g, 0.5, f) for p, g, f in zip(probs, gts, fovs)]
    return summarise(rows)[0], pooled_metrics(probs, gts, 0.5, fovs)


def dice(prob: np.ndarray, item: dict, threshold: float) -> float:
    """Dice of ``prob > threshold`` against ``item["label"]``, inside ``item["fov"]`` if any."""
    from retinaseg.evaluation.metrics import confusion_counts, threshold_metrics

    fov = item["fov"] if item["fov"] is not None else np.ones_like(item["label"])
    return threshold_metrics(confusion_counts(prob > threshold, item["label"], fov))["dice"]


def held_out_images(ensemble: str, preprocess: object = None) -> Iterator[tuple[Any, int, dict]]:
    """``(segmenter of the member, dataset index, item)`` for every DRIVE training image that a
    member of the fundus k-fold ``ensemble`` held out (its unchanged image; acquisition copies
    are skipped). ``preprocess`` replaces the members' stored steps when given."""
    from tqdm import tqdm

    from retinaseg.data import build_dataset
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.training.data import COPY_MARK
    from retinaseg.training.runs import ensemble_members

    ds = build_dataset("drive", SHARED_DATA / "DRIVE", "training")
    index = {sample.id: i for i, sample in enumerate(ds.samples)}
    for m in tqdm(ensemble_members(REPO / ensemble, REPO), desc=ensemble, unit="member"):
        seg = Segmenter(m.run / "best.safetensors", preprocess=preprocess)
        for it in m.val:
            if COPY_MARK not in it.id:
                yield seg, index[it.id], ds[index[it.id]]


OCTA_VAL_SPLITS = [("OCTA-500 val 6M", "octa500", "OCTA-500", {"fov": "6M"}),
                   ("OCTA-500 val 3M", "octa500", "OCTA-500", {"fov": "3M"}),
                   ("ROSSA val", "rossa", "ROSSA", {})]
"""(label, dataset, folder, options) of the labelled OCTA val splits we have."""

UPSAMPLE = [1.5, 2.0, 2.5]
"""Factors by which OCTA maps are enlarged to mimic interpolated device exports."""


def upsampled(item: dict, factor: float) -> tuple[np.ndarray, dict]:
    """The image enlarged ``factor`` times by bilinear interpolation (8-bit, as an exported
    file), and its label enlarged by nearest neighbour: an interpolated device export."""
    from skimage.transform import resize

    import retinaseg.preprocessing.acquisition as acq

    h, w = item["label"].shape
    size = (round(h * factor), round(w * factor))
    img = resize(item["image"].astype(np.float32), size, order=1, anti_aliasing=False)
    label = resize(item["label"].astype(np.float32), size, order=0) > 0.5
    return acq.to_8bit(img), {"label": label, "fov": None}


def training_minutes(run: str) -> tuple[float, str]:
    """Training minutes of a model (bundled name, run or file) including the model it was
    fine-tuned from or distilled from, and a note saying how they add up ('' when alone)."""
    from retinaseg.models.persistence import read_spec, resolve_model_path
    from retinaseg.training.config import load_config

    spec = read_spec(resolve_model_path(run))
    own = float(spec.info.get("train_seconds", float("nan")))
    total = spec.info.get("total_train_seconds")
    init = spec.info.get("init")
    cfg_path = resolve_model_path(run).parent / "config.yaml"
    if total is None and cfg_path.is_file():
        init = load_config(cfg_path).model.init
        if init:
            before = read_spec(resolve_model_path(init)).info
            total = own + float(before.get("total_train_seconds", before.get("train_seconds")))
    members = spec.info.get("members") or []
    if total is None and any(m.get("distilled_from") for m in members):
        mine = sum(float(m.get("train_seconds") or 0) for m in members)
        return own / 60, (f"{mine / 60:.0f} min for the {len(members)} members plus "
                          f"{(own - mine) / 60:.0f} min for the teachers they were distilled "
                          "from")
    if total is None:
        return own / 60, ""
    if not init:  # a single distilled run: the rest is its teachers
        return float(total) / 60, (f"{own / 60:.0f} min for this network plus "
                                   f"{(float(total) - own) / 60:.0f} min for its teachers")
    start = f"`{Path(init).name}`"
    if Path(init).name in BUNDLED:  # a bundled name: the bundle it was, not the one it becomes
        start = f"the previous {start} bundle (see the config's header)"
    return float(total) / 60, (f"{own / 60:.0f} min fine-tuning from {start} plus "
                               f"{(float(total) - own) / 60:.0f} min for that model")

"""SAM 2 propagation through SAM-OCTA2's RV layer sequences (reference §7.2, sparse annotation).

Per subject of ``OCTA-500/derived_SAM-OCTA2`` (RV, all splits), and per synthetic volume with
known vessels in each plane (``--synthetic N``, default 2): the middle layer is prompted
with its ground-truth vessel-object masks, SAM 2's memory propagates them forward and backward
through the whole layer stack (:func:`retinaseg.inference.propagate.sparse_annotation`, at the
frames' own 512×512 size on the model's 1024×1024 canvas), and the union of the predicted
objects is scored per frame against the union of the labelled objects (Dice).

``--model`` takes a SAM 2 model folder (``retinaseg sam2 convert`` of an official checkpoint), a
LoRA file, or a SAM 2 training run folder (its ``best_lora.safetensors``). Without it the
script writes a *random-weight* model of ``--size`` (default ``tiny``) into a temporary folder:
an untrained backbone, so the figures only show that the mechanics run end to end (the prompted
frame comes back as given, up to SAM 2's 256×256 mask grid; the other frames are noise).
Not part of ``make bench`` (minutes on CPU).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/propagation.py [--model DIR]
        [--size tiny|test-tiny] [--device cpu|cuda]
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

from retinaseg.data import build_dataset
from retinaseg.data.volumes import make_volume_sample
from retinaseg.inference.propagate import frame_dice, sparse_annotation
from retinaseg.models.sam2.lora import load_model
from retinaseg.models.sam2.weights import init_weights, read_info

ROOT = SHARED_DATA / "OCTA-500" / "derived_SAM-OCTA2"


def run(model_dir: Path, label: str, device: str) -> tuple[list[list[object]], dict]:
    ds = build_dataset("sam_octa2_layers", str(ROOT), "all", target="RV", view="sequence")
    model = load_model(model_dir, video=True, device=device)
    rows, raw = [], {"model": label, "device": device, "subjects": {}}
    for i, files in enumerate(ds.sequences):
        seq = ds.sequence(i)
        mid = len(seq.layers) // 2
        prompted = {oid: seq.objects[k, mid] for k, oid in enumerate(seq.object_ids)
                    if seq.objects[k, mid].any()}
        start = time.perf_counter()
        out = sparse_annotation(seq.frames, model, {mid: prompted}, device=device)
        secs = time.perf_counter() - start
        dice = frame_dice(out["union"], seq.union)
        others = [d for t, d in enumerate(dice) if t != mid]
        rows.append([f"{seq.id} ({files.split})", f"{len(prompted)}/{len(seq.object_ids)}",
                     f"{seq.layers[mid]}", " ".join(f"{d:.2f}" for d in dice),
                     float(np.mean(dice)), float(np.mean(others)), f"{secs:.0f}"])
        raw["subjects"][seq.id] = {"split": files.split, "layers": list(seq.layers),
                                   "prompt_layer": seq.layers[mid],
                                   "prompted_objects": sorted(prompted),
                                   "objects": list(seq.object_ids), "dice_per_frame": dice,
                                   "mean": float(np.mean(dice)),
                                   "mean_unprompted": float(np.mean(others)), "seconds": secs}
    return rows, raw


def run_synthetic(model_dir: Path, device: str, n: int) -> tuple[list[list[object]], dict]:
    """Synthetic volumes with known vessels per plane (``make_volume_sample(return_vessels)``):
    the planes that hold labelled vessels become the frames, the middle one is prompted with
    its true vessel mask, and every frame is scored against its own plane's vessels."""
    model = load_model(model_dir, video=True, device=device)
    rows, raw = [], {}
    for seed in range(n):
        item = make_volume_sample(size=128, depth=64, seed=1000 + seed, return_vessels=True)
        truth = item["vessels"] >= 0.5  # [D, H, W]
        planes = [t for t in range(truth.shape[0]) if truth[t].sum() >= 20]
        frames, labels = item["image"][planes], truth[planes]
        mid = len(planes) // 2
        start = time.perf_counter()
        out = sparse_annotation(frames, model, {mid: {1: labels[mid]}}, device=device)
        secs = time.perf_counter() - start
        dice = frame_dice(out["union"], labels)
        others = [d for t, d in enumerate(dice) if t != mid]
        rows.append([item["id"], f"{planes[0]}-{planes[-1]} ({len(planes)})", planes[mid],
                     " ".join(f"{d:.2f}" for d in dice), float(np.mean(dice)),
                     float(np.mean(others)), f"{secs:.0f}"])
        raw[item["id"]] = {"planes": planes, "prompt_plane": planes[mid],
                           "dice_per_frame": dice, "seconds": secs}
    return rows, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a SAM 2 model folder, LoRA file or SAM 2 "
                        "training run folder (default: random weights of --size, an untrained "
                        "backbone)")
    parser.add_argument("--size", default="tiny", help="size of the random model (no --model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--synthetic", type=int, default=2,
                        help="synthetic volumes with known per-plane vessels to add (0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            model_dir = init_weights(args.size, Path(tmp) / args.size)
            label = f"random-weight `{args.size}` (untrained backbone: mechanics only)"
        else:
            model_dir = args.model
            info = read_info(model_dir) if (model_dir / "config.json").is_file() else None
            label = f"`{model_dir}`" + (f" ({info.size}, {info.source})" if info else "")
        rows, raw = run(model_dir, label, args.device)
        syn_rows, raw["synthetic"] = run_synthetic(model_dir, args.device, args.synthetic)
    header = ["subject (split)", "objects prompted", "prompt layer",
              "Dice per frame (layer order)", "mean", "mean w/o prompt frame", "seconds"]
    body = (f"Model: {label}; device {args.device}, {torch.get_num_threads()} threads. Each RV "
            "layer sequence of OCTA-500/derived_SAM-OCTA2: the middle layer is prompted with its "
            "ground-truth vessel-object masks, propagated both ways through all layers "
            "(frames 512×512 on the 1024 canvas), and the union of objects is scored per frame "
            "against the labelled union (Dice).\n\n" + md_table(header, rows))
    if syn_rows:
        body += ("\n\nSynthetic volumes (`make_volume_sample(size=128, depth=64, "
                 "return_vessels=True)`, the volume generator's known vessels per plane): the "
                 "planes holding labelled vessels are the frames, the middle one is prompted "
                 "with its true mask, each frame is scored against its own plane.\n\n"
                 + md_table(["volume", "planes (frames)", "prompt plane",
                             "Dice per frame", "mean", "mean w/o prompt frame", "seconds"],
                            syn_rows))
    if args.model is None:
        body += ("\n\nThe weights are random: the prompted frame returns its mask (Dice about "
                 "0.97, not 1: a mask prompt comes back through SAM 2's 256×256 mask grid, "
                 "which blurs thin vessels), the other frames show only that propagation runs, "
                 "not how well SAM 2 tracks vessels. Pass `--model` with converted official or "
                 "fine-tuned weights for meaningful figures.")
    publish("propagation", "SAM 2 propagation through SAM-OCTA2 RV layers", body, raw)


if __name__ == "__main__":
    main()

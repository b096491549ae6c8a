"""Command-line interface: a thin shell over :mod:`retinaseg.api`.

Every error a user can cause ends in one sentence on stderr and exit code 2; an interrupted run
exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from retinaseg.errors import RetinasegError
from retinaseg.utils.checks import check_number

METHODS = ("mean", "max", "min", "std", "sum", "median")
"""Reductions over depth (:data:`retinaseg.preprocessing.projection.METHODS`; repeated here so
that parsing the command line imports no numerical library)."""


def _kv(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise RetinasegError(f"option '{item}' must look like key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _threshold(text: str | None, allow_val: bool = True) -> float | str | None:
    """``--threshold``: None, ``val`` (where allowed) or a number strictly between 0 and 1."""
    if text is None or (allow_val and text.startswith("val")):
        return text
    try:
        value = float(text)
    except ValueError:
        what = "a number or 'val'" if allow_val else "a number"
        raise RetinasegError(f"--threshold must be {what}, not '{text}'") from None
    check_number("--threshold", value, 0, 1, lo_open=True, hi_open=True)
    return value


def _options(a: argparse.Namespace):  # -> SegmenterOptions (imported late: fast --help)
    """The inference options of ``predict``/``evaluate``, checked before any work starts."""
    from retinaseg.inference.segmenter import SegmenterOptions

    try:
        return SegmenterOptions(device=a.device, threads=a.threads, tile=a.tile,
                                overlap=a.overlap, tta=a.tta, match_fov=not a.native_scale,
                                crop_fov=a.crop_fov, scale=a.scale, head=a.head,
                                precision=a.precision, jit=a.jit)
    except RetinasegError as err:
        raise RetinasegError(f"--{err}") from None


def cmd_train(a: argparse.Namespace) -> None:
    from retinaseg.api import train, train_folds

    if a.all_folds:
        if a.resume:
            raise RetinasegError("--all-folds resumes killed folds by itself; do not give "
                                 "--resume")
        if not a.config:
            raise RetinasegError("--all-folds needs a config file")
        r = train_folds(a.config, overrides=a.set)
        print(f"ensemble of {len(r['members'])} fold models: {r['path']} (threshold "
              f"{r['threshold']:.3f} chosen on {r['n_images']} out-of-fold images, their "
              f"mean Dice {r['oof_dice_mean']:.4f})")
        return
    s = train(a.config, overrides=a.set, resume=a.resume)
    if os.environ.get("RANK", "0") not in ("", "0"):  # torchrun: rank 0 reports for all
        return
    best = Path(s['run_dir']) / s.get("lora", "best.safetensors")
    decides = f"classes {', '.join(s['classes'])}" if s.get("classes") \
        else f"threshold {s['threshold']:.3f}"
    print(f"best model: {best} (epoch {s['best_epoch']}, "
          f"val {s['monitor']} {s['best_score']:.4f}, {decides})")
    fine = s.get("fine")
    if fine:
        print(f"fine stage: {Path(fine['run_dir']) / 'best.safetensors'} (epoch "
              f"{fine['best_epoch']}, val {fine['monitor']} {fine['best_score']:.4f}, "
              f"threshold {fine['threshold']:.3f})")


def cmd_ensemble(a: argparse.Namespace) -> None:
    from retinaseg.api import build_ensemble

    flips = [v.strip() for v in a.member_flips.split(",")] if a.member_flips else None
    r = build_ensemble(a.runs, a.out, tta=a.tta, member_flips=flips)
    how = ("validation images every member held out, the ensemble's"
           if r["validation_mode"] == "shared" else "out-of-fold images, their")
    print(f"ensemble of {len(r['members'])} models: {r['path']} (threshold {r['threshold']:.3f} "
          f"chosen on {r['n_images']} {how} mean Dice {r['oof_dice_mean']:.4f})")


def cmd_predict(a: argparse.Namespace) -> None:
    from retinaseg.api import predict

    opts, thr = _options(a), _threshold(a.threshold, allow_val=False)
    measure = None
    if a.measure:
        from retinaseg.measure.api import predict_columns as measure
    shard = None
    if a.shard is not None:
        from retinaseg.inference.shards import parse_shard

        shard = parse_shard(a.shard)  # a bad spec is one sentence before any work
    rep = predict(a.inputs, model=a.model, out=a.out, threshold=thr, options=opts,
                  backend=a.backend, volume=a.volume, projection=a.projection, measure=measure,
                  shard=shard, resume=a.resume)
    csv_name = "predictions.csv" if shard is None else shard.csv_name
    print(f"wrote {len(rep.rows)} result(s) to {a.out} ({csv_name})")
    if shard is not None:
        print(f"shard {shard.index} of {shard.count} done; when all are, join them with "
              f"'retinaseg merge {a.out}'")
    _report_skipped(rep.skipped)
    if not rep.rows and (shard is None or rep.skipped):
        raise RetinasegError("no input could be segmented")


def cmd_merge(a: argparse.Namespace) -> None:
    from retinaseg.inference.shards import merge_predictions

    print(f"wrote {merge_predictions(a.out)}")


def cmd_export(a: argparse.Namespace) -> None:
    from retinaseg.api import export_onnx

    r = export_onnx(a.model, a.out, opset=a.opset, check=not a.no_check)
    checked = ("not checked" if r.max_abs_diff is None else
               f"ONNX Runtime matches PyTorch to {r.max_abs_diff:.1e} in probability at "
               + ", ".join(f"{s[0]}×{s[2]}×{s[3]}" for s in r.checked))
    print(f"wrote {r.path} ({r.size_bytes / 2**20:.1f} MiB, opset {r.opset}, architecture "
          f"'{r.spec.name}'; {checked})")


def _depth(text: str | None) -> tuple[int, int] | None:
    """``--depth A:B`` → (A, B), planes A <= d < B."""
    if text is None:
        return None
    a, sep, b = text.partition(":")
    try:
        lo, hi = int(a), int(b)
    except ValueError:
        lo = hi = -1
    if not sep or lo < 0 or hi <= lo:
        raise RetinasegError(f"--depth must look like A:B with whole numbers 0 <= A < B (planes "
                             f"A to B-1), not '{text}'")
    return lo, hi


def cmd_project(a: argparse.Namespace) -> None:
    from retinaseg.preprocessing.projection import project_volume  # light: no torch

    depth = _depth(a.depth)
    if depth is not None and a.slab:
        raise RetinasegError("give either --depth A:B or --slab auto, not both")
    r = project_volume(a.volume, a.out, method=a.method, depth=depth, slab=a.slab,
                       equalise=a.equalise, preview=not a.no_preview)
    how = (f"read and projected B-scan by B-scan in {r['seconds_read']:.2f} s" if r["streamed"]
           else f"read {r['seconds_read']:.2f} s, projected {r['seconds_project']:.2f} s")
    print(f"{a.method} projection ({r['depth']} planes) {r['shape'][0]}×{r['shape'][1]} px: "
          f"{', '.join(r['files'])} ({how})")


def cmd_layers(a: argparse.Namespace) -> None:
    from retinaseg.preprocessing.projection import layer_frames_of  # light: no torch

    check_number("--step", a.step, 1, integer=True)
    check_number("--thickness", a.thickness, 1, integer=True)
    path = layer_frames_of(a.volume, a.out, depth=_depth(a.depth), step=a.step,
                           thickness=a.thickness, method=a.method, bits=a.bits)
    print(f"wrote layer frames to {a.out} (depths in {path})")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from retinaseg.api import evaluate

    opts, thr = _options(a), _threshold(a.threshold)
    s = evaluate(a.model, a.dataset, a.root, a.split, a.out, options=_kv(a.option),
                 threshold=thr, palette=a.palette, segmenter=opts, metrics=a.metrics,
                 save_maps=a.maps)
    if s.get("classes"):
        _print_class_scores(s)
        print(f"wrote {Path(a.out) / 'summary.json'}")
        return
    keys = ["dice", "auc", "acc", "sen", "spe", "cldice"]
    head = f"head {s['head']}, " if s.get("head") else ""
    print(f"{s['dataset']}/{s['split']}: {s['n_images']} images, {head}threshold "
          f"{s['threshold']:.3f} ({s['threshold_source']}), {s['fov']}")
    for label, d in (("per-image mean", s["per_image_mean"]), ("pooled", s["pooled"])):
        print(f"  {label:15s} " + "  ".join(f"{k}={d[k]:.4f}" for k in keys))
    m = s["per_image_mean"]
    if s.get("metrics") == "fast":
        print("  (--metrics fast: clDice, Betti, HD95, thick/thin and edge figures not computed)")
    else:
        print(f"  edges          relaxed_f1_1px={m['relaxed_f1_1px']:.4f} (per-image mean; "
              f"edges within 1 px count as right), {100 * m['edge_error_share']:.0f} % of "
              "wrong pixels lie within 1 px of a label edge")
    print(f"wrote {Path(a.out) / 'summary.json'}")


def _print_class_scores(s: dict) -> None:
    """The per-class Dice lines of a multi-class evaluation summary."""
    print(f"{s['dataset']}/{s['split']}: {s['n_images']} images, classes "
          f"{', '.join(s['classes'])} (argmax), {s['fov']}")
    names = [*s["classes"][1:], "mean"]
    for label, d in (("per-image mean", s["per_image_mean"]), ("pooled", s["pooled"])):
        print(f"  {label:15s} " + "  ".join(f"dice_{n}={d[f'dice_{n}']:.4f}" for n in names))


def cmd_datasets(a: argparse.Namespace) -> None:
    from retinaseg.api import list_datasets

    for name, modality, splits, layout in list_datasets():
        print(f"{name}  [{modality}]  splits: {', '.join(splits)}")
        for line in layout.strip().splitlines():
            print(f"    {line}")


def cmd_models(a: argparse.Namespace) -> None:
    from retinaseg.api import list_bundled_models, list_models

    print("bundled models (pass the name to --model):")
    for name, summary in list_bundled_models():
        print(f"  {name:16s} {summary}")
    print("architectures (model.name in a training config):")
    for name, doc in list_models():
        print(f"  {name:16s} {doc}")


def cmd_centerline(a: argparse.Namespace) -> None:
    from retinaseg.inference.batch import collect_inputs, unique_stem
    from retinaseg.io import read_mask, write_png
    from retinaseg.measure import centerline
    from retinaseg.utils.atomic import make_out_dir

    check_number("--prune", a.prune, 0)
    files = collect_inputs(a.inputs)
    out = make_out_dir(a.out)
    bad: list[tuple[Path, str]] = []
    used: set[str] = set()
    for f in files:
        try:
            skeleton = centerline(read_mask(f), prune=a.prune)
        except RetinasegError as err:
            bad.append((f, str(err)))
            continue
        write_png(out / f"{unique_stem(f, used)}.png", skeleton)
    print(f"wrote {len(files) - len(bad)} centerline(s) to {a.out}")
    _report_skipped(bad)
    if len(bad) == len(files):
        raise RetinasegError("no input mask could be read")


def cmd_measure(a: argparse.Namespace) -> None:
    if a.mm_per_px is not None:
        check_number("--mm-per-px", a.mm_per_px, 0, 10, lo_open=True)
        if a.fov is not None:
            raise RetinasegError("give either --mm-per-px or --fov, not both")
    from retinaseg.measure.api import measure_files

    r = measure_files(a.inputs, a.out, mm_per_px=a.mm_per_px, fov=a.fov, grid=a.grid,
                      modality=a.modality, eye=a.eye, kind=a.kind, faz=a.faz, model=a.model,
                      html=not a.no_html, faz_model=a.faz_model)
    masks = sum(row["input"] == "mask" for row in r.rows)
    if masks and a.modality is None:
        print(f"{masks} mask(s) measured as OCTA (give --modality fundus for fundus masks)")
    unit = "pixels" if a.mm_per_px is None and a.fov is None else "mm"
    pages = ", <stem>.html and index.html" if not a.no_html else ""
    print(f"measured {len(r.rows)} input(s) in {unit}: measurements.csv, <stem>_measure.png"
          f"{pages} in {a.out}")
    _report_skipped(r.skipped)
    if not r.rows:
        raise RetinasegError("no input could be measured")


def _report_skipped(skipped: list[tuple[Path, str]] | list[tuple[str, str]]) -> None:
    """List skipped inputs on stderr (the reason names the file)."""
    if skipped:
        print(f"skipped {len(skipped)} file(s):", file=sys.stderr)
    for path, why in skipped:
        print(f"  {why}" if str(path) in why else f"  {path}: {why}", file=sys.stderr)


def cmd_demo(a: argparse.Namespace) -> None:
    from retinaseg.demo import run_demo

    check_number("--n", a.n, 1, 1000, integer=True)
    if a.epochs is not None:
        check_number("--epochs", a.epochs, 1, 10_000, integer=True)
    s = run_demo(a.out, epochs=a.epochs, roots=a.root, dataset=a.dataset, n_real=a.n)
    for kind in ("octa", "fundus"):
        r = s[kind]
        print(f"{kind:6s} {r['how']}: {r['model']}  Dice on generated images "
              f"{r['dice_mean']:.3f}")
    for r in s["real"]:
        dice = "no labels" if r["dice_mean"] is None else f"Dice {r['dice_mean']:.3f}"
        head = f" (head {r['head']})" if r.get("head") else ""
        print(f"real   {r['dataset']} at {r['root']}: {len(r['images'])} image(s) with "
              f"{r['model']}{head}, {dice}")
    print(f"figure:  {s['figure']}")
    print(f"outputs: {s['out']}/predictions, summary: {s['out']}/summary.json")


SAM2_SIZES = ("tiny", "small", "base_plus", "large", "test-tiny")
"""SAM 2 sizes (:data:`retinaseg.models.sam2.config.SIZES`; repeated here so that parsing the
command line imports no transformers)."""


def _sam2_written(folder: Path, what: str) -> None:
    from retinaseg.models.sam2.weights import read_info, weights_sha256

    info = read_info(folder)
    size = f"SAM {info.version} {info.size}" if info else "SAM 2"
    print(f"wrote {size} ({what}) to {folder}: config.json, model.safetensors (sha256 "
          f"{weights_sha256(folder)[:12]}...), retinaseg.json")


def cmd_sam2_init(a: argparse.Namespace) -> None:
    check_number("--seed", a.seed, 0, integer=True)
    from retinaseg.models.sam2 import init_weights

    _sam2_written(init_weights(a.size, a.out, seed=a.seed), f"random weights, seed {a.seed}")


def cmd_sam2_convert(a: argparse.Namespace) -> None:
    from retinaseg.models.sam2 import convert_checkpoint

    folder = convert_checkpoint(a.checkpoint, a.out, size=a.size)
    _sam2_written(folder, f"converted from {Path(a.checkpoint).name}")


def cmd_prompt(a: argparse.Namespace) -> None:
    from retinaseg.api import prompt_image

    if a.points is None and a.box is None:
        raise RetinasegError("give --points 'x,y,1;x,y,0' or --box x0,y0,x1,y1 (or both): a "
                             "SAM 2 prompt needs at least one point or a box")
    r = prompt_image(a.image, a.model, points=a.points, box=a.box, out=a.out, refine=a.refine,
                     device=a.device)
    n_pos = int((r["labels"] == 1).sum())
    box = "" if r["box"] is None else ", a box"
    how = "refined mask" if r["refined"] else "mask"
    print(f"{how} of {int(r['mask'].sum())} px from {n_pos} positive and "
          f"{len(r['labels']) - n_pos} negative point(s){box} (predicted IoU {r['score']:.3f}): "
          f"{', '.join(Path(f).name for f in r['files'])} in {a.out}")


def cmd_propagate(a: argparse.Namespace) -> None:
    from retinaseg.api import propagate_layers

    for name, value in (("--step", a.step), ("--thickness", a.thickness)):
        if value is not None:
            check_number(name, value, 1, integer=True)
    if a.points is None and a.box is None and not a.prompt_mask:
        raise RetinasegError("give --prompt-frame K with --points 'x,y,1;x,y,0' and/or --box "
                             "x0,y0,x1,y1, or --prompt-mask K:MASK.png: propagation needs a "
                             "prompt")
    if (a.points is not None or a.box is not None) and a.prompt_frame is None:
        raise RetinasegError("--points and --box need --prompt-frame K: the frame they are on")
    r = propagate_layers(a.source, a.model, a.out, prompt_frame=a.prompt_frame, points=a.points,
                         box=a.box, prompt_masks=a.prompt_mask, direction=a.direction,
                         obj_id=a.obj_id, device=a.device, step=a.step, thickness=a.thickness)
    found = int(r["union"].any(axis=(1, 2)).sum())
    print(f"propagated object {', '.join(map(str, r['object_ids']))} from frame(s) "
          f"{', '.join(map(str, r['prompted_frames']))} ({r['direction']}) through "
          f"{len(r['union'])} frames, {found} with a mask: masks/, objects/, prompts/ and "
          f"propagation.json in {a.out}")


def cmd_serve(a: argparse.Namespace) -> None:
    from retinaseg.serve import Limits, run_server  # fastapi only inside run_server

    check_number("--max-mb", a.max_mb, 0, 1024, lo_open=True)
    check_number("--max-pixels", a.max_pixels, 256, 1 << 31, integer=True)
    if a.threads is not None:
        check_number("--threads", a.threads, 1, 1024, integer=True)
    run_server(a.host, a.port, Limits(max_bytes=int(a.max_mb * 2**20),
                                      max_pixels=a.max_pixels), threads=a.threads)


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads, 1-1024 (default: the cores, at most 8)")
    p.add_argument("--tile", type=int, default=None,
                   help="sliding-window tile size in px, at least 16 (default: the whole image "
                        "at once)")
    p.add_argument("--overlap", type=float, default=0.25,
                   help="overlap of neighbouring tiles with --tile, in [0, 1) (default 0.25)")
    p.add_argument("--tta", nargs="?", const="flips", default=None,
                   choices=["none", "hflip", "flips"],
                   help="flip test-time augmentation: hflip (2 passes) or flips (3; the "
                        "default of a bare --tta); without it, the model's own setting")
    p.add_argument("--native-scale", action="store_true",
                   help="do not rescale colour fundus images to the model's field-of-view "
                        "size (default: rescale when the model stores one)")
    p.add_argument("--scale", type=float, default=None, metavar="F",
                   help="resize every image by F, in [0.05, 20], before inference and the map "
                        "back (e.g. 0.4 "
                        "for OCTA maps exported at 1024 px from a 400-px scan); replaces the "
                        "fundus field-of-view matching")
    p.add_argument("--crop-fov", action=argparse.BooleanOptionalAction, default=True,
                   help="run fundus models on the box of the retina only, probability 0 "
                        "outside it (default; OCTA is never cropped); --no-crop-fov runs the "
                        "whole image")
    p.add_argument("--threshold", default=None,
                   help="a number in (0, 1); evaluate also takes 'val', to choose it on the "
                        "dataset's validation split (default: the model's own)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="network arithmetic: auto = bfloat16 on CPUs with native bfloat16 "
                        "(AVX512-BF16/AMX), else float32")
    p.add_argument("--head", default=None,
                   help="output head of a model with several label conventions, e.g. "
                        "large_vessel or all_vessel for octa-vessels (default: its first)")
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                   help="trace and freeze the network with TorchScript (default: when it runs "
                        "in bfloat16 on CPU, where fundus-vessels is 1.1-1.6x faster per "
                        "image; 0.5-3 s to build once, so --no-jit is quicker for a single "
                        "image); --jit insists, also in float32; --no-jit never freezes")


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one ``error: ...`` line (exit 2), like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="retinaseg", description=__doc__.splitlines()[0])
    from retinaseg import __version__

    ap.add_argument("--version", action="version", version=f"retinaseg {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", nargs="?", help="YAML config (not needed with --resume)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a killed run")
    p.add_argument("--all-folds", action="store_true",
                   help="train every fold of data.folds (reusing finished folds, resuming "
                        "killed ones), then average them into runs/<name>/ensemble.safetensors")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("ensemble", help="average the models of k-fold or seed runs into one file")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folders of one recipe: disjoint validation folds (k-fold) or "
                        "the same held-out images (seeds sharing data.split_seed)")
    p.add_argument("--out", required=True, help="the ensemble's .safetensors file")
    p.add_argument("--tta", default="none", choices=["none", "hflip", "flips"],
                   help="flip TTA for the out-of-fold threshold and the model's default")
    p.add_argument("--member-flips", default=None, metavar="V1,V2,...",
                   help="the view each member sees, one per run: none, h, v or hv (e.g. "
                        "none,h,v,hv,none); free diversity, the same passes as without")
    p.set_defaults(func=cmd_ensemble)
    p = sub.add_parser("predict", help="segment images or folders")
    p.add_argument("inputs", nargs="+",
                   help="image files, volumes or folders (a folder: the images and volumes "
                        "directly in it, or itself one volume of B-scans)")
    p.add_argument("--model", default=None,
                   help="safetensors file, run folder or bundled name (default: the bundled "
                        "model for each image's modality: fundus-vessels or octa-vessels)")
    p.add_argument("--out", required=True,
                   help="output folder: probability, mask and overlay PNGs per image and "
                        "predictions.csv")
    _device_args(p)
    p.set_defaults(func=cmd_predict)
    p.add_argument("--volume", action=argparse.BooleanOptionalAction, default=None,
                   help="read every input as a volume (--volume) or as images (--no-volume); "
                        "default: decided by content (a folder of numbered, equal-sized, "
                        "non-square images is a volume of B-scans; .npy, NIfTI and multi-page "
                        "TIFF files are volumes) and logged")
    p.add_argument("--projection", default="max",
                   choices=METHODS,
                   help="how a volume is projected inside the automatic inner-retina slab "
                        "before a 2-D model segments it (default max)")
    p.add_argument("--measure", action="store_true",
                   help="add the measurements of each mask to predictions.csv (in pixels, "
                        "quadrant grid; 'retinaseg measure' takes a scale and writes reports)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"],
                   help="what runs the network: torch (default) or onnxruntime (float32, "
                        "the deploy extra; --model may then be an exported .onnx file, and "
                        "any other model is exported in memory first)")
    p.add_argument("--shard", default=None, metavar="I/N|auto",
                   help="segment only shard I of N of the inputs (counted from 1: 1/2 and 2/2; "
                        "every N-th input of the sorted list) and write predictions-I.csv; "
                        "auto takes it from RANK/WORLD_SIZE (torchrun) or SLURM_PROCID/"
                        "SLURM_NTASKS; join the shards with 'retinaseg merge OUT'. Resumes "
                        "like --resume")
    p.add_argument("--resume", action="store_true",
                   help="keep the results of images an earlier --resume or --shard run into "
                        "--out finished with the same settings, and do not redo them")
    p = sub.add_parser("merge", help="join the predictions-I.csv of a sharded predict into "
                                     "predictions.csv")
    p.add_argument("out", help="the --out folder the shards wrote into")
    p.set_defaults(func=cmd_merge)
    p = sub.add_parser("export", help="export a model to an ONNX file for ONNX Runtime")
    p.add_argument("model", help="bundled name, run folder or .safetensors file")
    p.add_argument("--format", default="onnx", choices=["onnx"],
                   help="file format (onnx, the only one)")
    p.add_argument("--out", required=True,
                   help="the .onnx file to write (the model's recipe goes into its metadata)")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset, 7-21 (default 17)")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the file with ONNX Runtime at two sizes and comparing "
                        "it with PyTorch")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("evaluate", help="score a model on a dataset split")
    p.add_argument("--model", required=True,
                   help="safetensors file, run folder or bundled name")
    p.add_argument("--dataset", required=True,
                   help="dataset name, e.g. drive, octa500, rossa ('retinaseg datasets' lists "
                        "them)")
    p.add_argument("--root", default=None,
                   help="the dataset's folder, in the layout 'retinaseg datasets' shows "
                        "(not needed for the synthetic datasets)")
    p.add_argument("--split", required=True, help="a split name, or 'all'")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. fov=6M, maps=ILM_OPL, label=LargeVessel")
    p.add_argument("--out", required=True,
                   help="output folder: summary.json, per_image.csv, maps/ and plots")
    p.add_argument("--palette", default="classic", choices=["classic", "colorblind"],
                   help="colours of the error maps: classic (correct vessel green, false "
                        "positive red, missed blue) or colorblind (a colour-blind-safe set)")
    p.add_argument("--metrics", default="full", choices=["full", "fast"],
                   help="full (default): every column; fast: confusion figures and AUC/AP "
                        "only, skipping clDice, Betti, HD95, thick/thin and topology (NaN) - "
                        "for very large datasets or images")
    p.add_argument("--maps", action=argparse.BooleanOptionalAction, default=True,
                   help="write maps/<id>_prob.png and <id>_error.png (default); --no-maps "
                        "skips them, which saves two full-size PNG encodings per image")
    _device_args(p)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("centerline", help="extract 1-px centerlines from binary masks")
    p.add_argument("inputs", nargs="+",
                   help="binary mask files or folders (a folder: the images directly in it)")
    p.add_argument("--out", required=True, help="output folder: one centerline PNG per mask")
    p.add_argument("--prune", type=float, default=0, help="remove spurs shorter than this (px)")
    p.set_defaults(func=cmd_centerline)
    p = sub.add_parser("measure", help="measure vessel masks or images: densities, calibre, "
                                       "tortuosity, fractal dimension, FAZ, sector grid")
    p.add_argument("inputs", nargs="+",
                   help="binary masks and/or images (segmented first with the bundled model for "
                        "their modality), files or folders")
    p.add_argument("--out", required=True,
                   help="output folder: measurements.csv, <stem>_measure.png, <stem>.html, "
                        "index.html (and <stem>_mask.png for images)")
    p.add_argument("--mm-per-px", type=float, default=None, metavar="X",
                   help="pixel size in mm, above 0 and at most 10 (default: measure in pixels)")
    p.add_argument("--fov", default=None, choices=["3M", "6M"],
                   help="OCTA-500 scan size instead of --mm-per-px: 3M = 3 mm / 304 px, "
                        "6M = 6 mm / 400 px")
    p.add_argument("--grid", default="etdrs", choices=["etdrs", "quadrants", "none"],
                   help="sector grid: etdrs (1, 3, 6 mm rings; needs the scale), quadrants "
                        "(four diagonal sectors) or none (default etdrs)")
    p.add_argument("--modality", default=None, choices=["octa", "fundus"],
                   help="octa (FAZ, grid on the FAZ) or fundus (grid on the image centre); "
                        "default: images by their colour, masks octa")
    p.add_argument("--eye", default="unknown", choices=["OD", "OS", "unknown"],
                   help="the eye, to name nasal and temporal sectors (default unknown: right "
                        "and left as seen in the image)")
    p.add_argument("--kind", default="auto", choices=["auto", "mask", "image"],
                   help="read inputs as masks, as images, or auto (default: a file with at most "
                        "two grey levels is a mask)")
    p.add_argument("--faz", default=None, metavar="MASK",
                   help="a FAZ mask (one input) or a folder of FAZ masks named like the inputs, "
                        "measured instead of the classical FAZ")
    p.add_argument("--faz-model", default="auto", metavar="NAME|classical",
                   help="the FAZ of OCTA images without --faz: a FAZ model (name or file), "
                        "classical (the largest vessel-free region around the centre), or auto "
                        "(default: the bundled octa-faz where installed, else classical)")
    p.add_argument("--model", default=None,
                   help="model that segments image inputs (default: the bundled model for "
                        "their modality)")
    p.add_argument("--no-html", action="store_true",
                   help="write no HTML pages (the CSV and the PNG figures only)")
    p.set_defaults(func=cmd_measure)
    p = sub.add_parser("project", help="project an OCTA/OCT volume to an en-face map")
    p.add_argument("volume", help="a folder of B-scans (OCTA-500 layout), .npy, .nii/.nii.gz "
                                  "or multi-page .tif")
    p.add_argument("--out", required=True,
                   help="map file: .png (16-bit) or .tif (float32), plus <stem>_preview.png")
    p.add_argument("--method", default="mean",
                   choices=METHODS,
                   help="reduction over depth (default mean)")
    p.add_argument("--depth", default=None, metavar="A:B",
                   help="project planes A to B-1 only (0 = top of the B-scan)")
    p.add_argument("--slab", default=None, choices=["auto"],
                   help="auto: the inner-retina slab found from the depth profile of the "
                        "signal (approximates ILM-OPL without layer labels)")
    p.add_argument("--equalise", action="store_true",
                   help="histogram-equalise the map (the U-Net student project's step)")
    p.add_argument("--no-preview", action="store_true", help="do not write the 8-bit preview")
    p.set_defaults(func=cmd_project)
    p = sub.add_parser("layers", help="write a volume as en-face frames at successive depths")
    p.add_argument("volume", help="a folder of B-scans, .npy, .nii/.nii.gz or multi-page .tif")
    p.add_argument("--out", required=True, help="folder for frame_<i>.png and frames.json")
    p.add_argument("--depth", default=None, metavar="A:B",
                   help="planes A to B-1 only (default: the whole depth)")
    p.add_argument("--step", type=int, default=1, help="planes between frame starts (>= 1)")
    p.add_argument("--thickness", type=int, default=1,
                   help="planes reduced into each frame (>= 1)")
    p.add_argument("--method", default="mean",
                   choices=METHODS,
                   help="reduction over each frame's planes (default mean)")
    p.add_argument("--bits", type=int, default=8, choices=[8, 16], help="PNG bit depth")
    p.set_defaults(func=cmd_layers)
    p = sub.add_parser("demo", help="run the whole pipeline on generated images")
    p.add_argument("--out", default="demo_out",
                   help="output folder: predictions/, side_by_side.png and summary.json")
    p.add_argument("--epochs", type=int, default=None,
                   help="train small synthetic models for this many epochs instead of using "
                        "the bundled ones")
    p.add_argument("--root", action="append", default=[], metavar="DATASET_DIR",
                   help="also segment real images of this dataset folder (repeatable; the "
                        "dataset is recognised from its layout)")
    p.add_argument("--dataset", default=None, help="name the --root dataset instead")
    p.add_argument("--n", type=int, default=2, help="real images shown per --root")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("sam2", help="write SAM 2 model folders (convert official weights, or "
                                    "random init)")
    sam = p.add_subparsers(dest="sam2_command", required=True, metavar="{init,convert}")
    q = sam.add_parser("init", help="write a model folder with random weights (to try the "
                                    "mechanics; no download)")
    q.add_argument("--size", required=True, choices=SAM2_SIZES,
                   help="the SAM 2 size (test-tiny: about 1 M parameters, for tests)")
    q.add_argument("--out", required=True, help="the model folder to write")
    q.add_argument("--seed", type=int, default=0, help="random seed of the weights (>= 0)")
    q.set_defaults(func=cmd_sam2_init)
    q = sam.add_parser("convert", help="convert an official SAM 2 / 2.1 checkpoint (.pt) on "
                                       "disk into a model folder")
    q.add_argument("checkpoint", help="an official sam2*_hiera_*.pt file (loaded with "
                                      "weights_only=True)")
    q.add_argument("--out", required=True, help="the model folder to write")
    q.add_argument("--size", default=None, choices=SAM2_SIZES,
                   help="check that the checkpoint is of this size (default: read from its "
                        "shapes)")
    q.set_defaults(func=cmd_sam2_convert)
    p = sub.add_parser("prompt", help="segment what points and a box mark in one image with "
                                      "SAM 2")
    p.add_argument("image", help="the image file (grey or RGB)")
    p.add_argument("--model", required=True,
                   help="a SAM 2 model folder ('retinaseg sam2 convert' or 'sam2 init'), a "
                        "fine-tuned LoRA file, or a SAM 2 training run folder")
    p.add_argument("--points", default=None, metavar="X,Y,L;...",
                   help="points in image pixels (x = column, y = row), label 1 on the object, "
                        "0 background, e.g. '120,80,1;60,90,0'")
    p.add_argument("--box", default=None, metavar="X0,Y0,X1,Y1",
                   help="a box around the object, top-left corner first")
    p.add_argument("--out", required=True,
                   help="output folder: <stem>_prob.png, _mask.png, _prompt_overlay.png, "
                        "_logits.npy and _prompt.json")
    p.add_argument("--refine", action="store_true",
                   help="refine the previous answer in --out (its <stem>_logits.npy) with "
                        "these points; give all points again, with the new ones")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:N")
    p.set_defaults(func=cmd_prompt)
    p = sub.add_parser("propagate", help="prompt an object on a layer frame and carry it through "
                                         "the stack with SAM 2's memory")
    p.add_argument("source", metavar="FRAMES_DIR|VOLUME",
                   help="a folder of frames ('retinaseg layers', or images of one size in "
                        "natural order) or a volume file (.npy, .nii/.nii.gz, multi-page .tif)")
    p.add_argument("--model", required=True,
                   help="a SAM 2 model folder ('retinaseg sam2 convert' or 'sam2 init'), a "
                        "fine-tuned LoRA file, or a SAM 2 training run folder")
    p.add_argument("--prompt-frame", type=int, default=None, metavar="K",
                   help="the frame (0-based) that --points and --box are on")
    p.add_argument("--points", default=None, metavar="X,Y,L;...",
                   help="points on frame K in pixels (x = column, y = row), label 1 on the "
                        "object, 0 background, e.g. '120,80,1;60,90,0'")
    p.add_argument("--box", default=None, metavar="X0,Y0,X1,Y1",
                   help="a box around the object on frame K, top-left corner first")
    p.add_argument("--prompt-mask", action="append", default=[], metavar="K:MASK.png",
                   help="a binary mask of the object on frame K instead of points (repeatable, "
                        "one frame each; all masks are the same object)")
    p.add_argument("--out", required=True,
                   help="output folder: masks/frame_<i>.png, objects/<id>/frame_<i>.png, "
                        "prompts/frame_<i>.png and propagation.json")
    p.add_argument("--direction", default="both", choices=["both", "forward", "backward"],
                   help="both (default), forward (frames before the first prompted one stay "
                        "empty) or backward (frames after the last prompted one stay empty)")
    p.add_argument("--obj-id", type=int, default=1, help="the object's id (default 1)")
    p.add_argument("--step", type=int, default=None,
                   help="for a volume: planes between frame starts (default 1)")
    p.add_argument("--thickness", type=int, default=None,
                   help="for a volume: planes averaged into each frame (default 1)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:N")
    p.set_defaults(func=cmd_propagate)
    p = sub.add_parser("serve", help="a local web page: drop images, see masks and "
                                     "measurements (the 'web' extra)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; "
                        "0.0.0.0 opens the page to the network, with a warning)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument("--max-mb", type=float, default=20, metavar="MB",
                   help="largest upload per file, MB (default 20; larger: HTTP 413)")
    p.add_argument("--max-pixels", type=int, default=25_000_000, metavar="N",
                   help="largest image, pixels, checked in the header before decoding "
                        "(default 25000000)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per image, 1-1024 (default: the cores, at most 8)")
    p.set_defaults(func=cmd_serve)
    sub.add_parser("datasets", help="list datasets and layouts").set_defaults(func=cmd_datasets)
    sub.add_parser("models", help="list bundled models and architectures").set_defaults(
        func=cmd_models)
    return ap


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show warnings as one ``warning: ...`` line each, without the source line.

    The library also logs them; the CLI relies on the warning alone, so each appears once.
    """
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: object = None, line: str | None = None) -> None:
        print(f"warning: {message}", file=sys.stderr)

    quiet = logging.NullHandler()
    logger = logging.getLogger("retinaseg")
    logger.addHandler(quiet)
    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            yield
        finally:
            logger.removeHandler(quiet)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return int(done.code or 0)
    if args.command == "train" and not args.config and not args.resume:
        print("error: train needs a CONFIG file or --resume RUN_DIR", file=sys.stderr)
        return 2
    try:
        with _one_line_warnings():
            args.func(args)
    except RetinasegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permission denied, ... while reading or writing
        where = f" '{err.filename}'" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

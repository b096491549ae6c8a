"""Batch prediction: files and folders in, probability/mask/overlay PNGs and
``predictions.csv`` out, one :class:`~retinaseg.inference.segmenter.Segmenter` per model.

Bad files in a batch are skipped and reported at the end; every good result is still written.
Options that are wrong for the whole run (a scale, a device, a model) stop it before the first
image.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from retinaseg.errors import RetinasegError
from retinaseg.evaluation.classes import colour_classes
from retinaseg.evaluation.figures import overlay
from retinaseg.evaluation.metrics import centerline_length
from retinaseg.inference.modality import DEFAULT_MODELS, detect_modality
from retinaseg.inference.segmenter import Segmenter, SegmenterOptions
from retinaseg.inference.shards import (
    DoneLedger,
    Shard,
    output_files,
    parse_shard,
    progress,
    run_settings,
    write_manifest,
)
from retinaseg.io import list_images, natural_key, read_image, read_volume, write_png
from retinaseg.io.volumes import NIFTI_SUFFIXES, bscan_folder_reason, volume_file_reason
from retinaseg.models.persistence import ModelSpec, read_spec, resolve_model_path
from retinaseg.preprocessing.projection import (
    METHODS,
    auto_slab,
    project,
    project_slab_streamed,
    save_projection,
)
from retinaseg.preprocessing.restore import recording
from retinaseg.utils.atomic import make_out_dir, write_text_atomic
from retinaseg.utils.checks import check_number

VOLUME_PROJECTION = "max"
"""How ``predict`` projects a volume inside the automatic inner-retina slab by default: the
maximum over depth, as OCTA en-face angiograms are usually made (reference §1.1 checks the
volume orientation with a max projection)."""


@dataclass
class PredictReport:
    """What a batch prediction produced: one row per good image, and the files skipped."""

    rows: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    spec: ModelSpec | None = None
    positions: list[int] = field(default_factory=list)
    """The place of each row's input in the whole input list (0-based; for sharded runs)."""


def check_threshold(threshold: float | None) -> None:
    """A decision threshold must lie strictly between 0 and 1 (None: the model's own)."""
    if threshold is not None:
        check_number("threshold", threshold, 0, 1, lo_open=True, hi_open=True)


@dataclass
class Input:
    """One thing to segment: an image file, or a volume (``why`` says how that was decided)."""

    path: Path
    volume: bool = False
    why: str = ""


def _check_exists(p: Path) -> None:
    if p.is_symlink() and not p.exists():
        raise RetinasegError(f"input '{p}' is a broken symbolic link or a symlink loop")
    if not p.exists():
        raise RetinasegError(f"input '{p}' does not exist")


def _folder_inputs(p: Path, volume: bool | None) -> list[Input]:
    """A folder: one volume of B-scans (by content, or ``volume=True``), else its images,
    its volume files and its sub-folders that hold B-scans (``volume=False``: images only)."""
    why = "--volume: read as one volume of B-scans" if volume else bscan_folder_reason(p) \
        if volume is None else None
    if why:
        return [Input(p, True, why)]
    found = [_file_input(f, volume) for f in list_images(p)]
    if volume is None:
        found += [Input(f, True, r) for f in sorted(p.iterdir(), key=lambda q: natural_key(q.name))
                  if f.is_file() and f.name.lower().endswith((".npy", *NIFTI_SUFFIXES))
                  and (r := volume_file_reason(f))]
        found += [Input(d, True, r) for d in sorted(p.iterdir(), key=lambda q: natural_key(q.name))
                  if d.is_dir() and not d.name.startswith(".") and (r := bscan_folder_reason(d))]
    return found


def _file_input(p: Path, volume: bool | None) -> Input:
    if volume is False:
        return Input(p)
    why = "--volume: read as a volume" if volume else volume_file_reason(p)
    return Input(p, bool(why), why or "")


def collect_predict_inputs(inputs: Iterable[str | Path],
                           volume: bool | None = None) -> list[Input]:
    """Expand files and folders (natural order) into images and volumes.

    ``volume=None`` decides by content (:func:`~retinaseg.io.volumes.bscan_folder_reason`,
    :func:`~retinaseg.io.volumes.volume_file_reason`); True reads every input as a volume;
    False reads every file as an image.
    """
    found: list[Input] = []
    for item in inputs:
        p = Path(item)
        _check_exists(p)
        found += _folder_inputs(p, volume) if p.is_dir() else [_file_input(p, volume)]
    if not found:
        raise RetinasegError("no image files or volumes found in the inputs")
    return found


def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (natural order) into a list of image files."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        _check_exists(p)
        files.extend(list_images(p) if p.is_dir() else [p])
    if not files:
        raise RetinasegError("no image files found in the inputs")
    return files


def unique_stem(path: Path, used: set[str]) -> str:
    """``path.stem``, or ``<stem>-2``, ``<stem>-3``, ... when taken; adds the result to ``used``."""
    stem, k = path.stem, 2
    while stem.lower() in used:  # lower(): case-insensitive file systems
        stem, k = f"{path.stem}-{k}", k + 1
    used.add(stem.lower())
    return stem


def assign_stems(items: list[Input]) -> list[str]:
    """Output stems of all inputs, in order (:func:`unique_stem` over the whole list, so that
    every shard of a sharded run names its files as one process would)."""
    used: set[str] = set()
    return [unique_stem(item.path, used) for item in items]


def write_outputs(out: Path, stem: str, image: np.ndarray, prob: np.ndarray,
                   thr: float) -> dict:
    """Write probability, mask and overlay PNGs; return the per-image measurements."""
    mask = prob > thr
    write_png(out / f"{stem}_prob.png", prob)
    write_png(out / f"{stem}_mask.png", mask)
    write_png(out / f"{stem}_overlay.png", overlay(image, mask))
    return {"vessel_fraction": round(float(mask.mean()), 6),
            "centerline_length_px": round(centerline_length(mask), 2)}


def write_class_outputs(out: Path, stem: str, prob: np.ndarray, classes: list[str]) -> dict:
    """A multi-class model's outputs: ``<stem>_classes.png`` (grey class values 0..K-1, the
    argmax of ``prob [K, H, W]``) and ``<stem>_classes_colour.png``; returns each foreground
    class's area fraction (``fraction_<class>``)."""
    labels = prob.argmax(0).astype(np.uint8)
    write_png(out / f"{stem}_classes.png", labels)
    write_png(out / f"{stem}_classes_colour.png", colour_classes(labels))
    return {f"fraction_{name}": round(float((labels == k).mean()), 6)
            for k, name in enumerate(classes) if k}


class _ModelPicker:
    """One :class:`Segmenter` per model reference, chosen per image when none was given."""

    def __init__(self, model: str | Path | None, options: SegmenterOptions,
                 make: Callable[..., Segmenter] = Segmenter) -> None:
        self.model, self.options, self.make = model, options, make
        self.cache: dict[str, Segmenter] = {}

    def __call__(self, image: np.ndarray) -> tuple[str, Segmenter]:
        ref = str(self.model) if self.model is not None else \
            DEFAULT_MODELS[detect_modality(image)]
        if ref not in self.cache:
            if self.model is None:
                tqdm.write(f"no --model given: using bundled model '{ref}' for this image type")
            self.cache[ref] = self._load(ref)
        return ref, self.cache[ref]

    def explicit_volume_model(self) -> bool:
        """True when the model given (not picked by modality) takes volumes (e.g. IPN)."""
        return self.model is not None and self(np.zeros((8, 8), np.float32))[1].takes_volumes

    def _load(self, ref: str) -> Segmenter:
        """A head asked for applies to the models that have heads; a bundled model picked by
        modality without heads (fundus-vessels) ignores it."""
        if self.model is None and self.options.head is not None \
                and not read_spec(resolve_model_path(ref)).heads:
            return self.make(ref, self.options, head=None)
        return self.make(ref, self.options)


def predict_files(inputs: Iterable[str | Path], model: str | Path | None, out: str | Path,
                  threshold: float | None = None, options: SegmenterOptions | None = None,
                  volume: bool | None = None, projection: str = VOLUME_PROJECTION,
                  measure: Callable[[np.ndarray, np.ndarray], dict] | None = None,
                  segmenter: Callable[..., Segmenter] = Segmenter,
                  shard: Shard | str | None = None, resume: bool = False,
                  **overrides: Any) -> PredictReport:
    """Segment every image in ``inputs`` and write ``<stem>_prob/_mask/_overlay.png`` to ``out``
    (a multi-class model: ``<stem>_classes.png`` and ``<stem>_classes_colour.png``, see
    :func:`write_class_outputs`).

    ``model`` is a model file, a run folder or a bundled name; ``None`` picks the bundled model
    by modality (colour → ``fundus-vessels``, grey → ``octa-vessels``) per image. Also writes
    ``predictions.csv`` with one row per image (vessel area fraction, centerline length, and
    the adaptive restoration applied, if any: :mod:`retinaseg.preprocessing.restore`).
    Unreadable files are skipped and listed in the report's ``skipped``. Two inputs with the
    same file stem (``a/x.png``, ``b/x.tif``) get ``x`` and ``x-2`` outputs, never overwrite.
    Volumes (a folder of B-scans, ``.npy``, NIfTI, a multi-page TIFF; ``volume``: see
    :func:`collect_predict_inputs`) are projected inside the automatic inner-retina slab with
    ``projection`` (default ``max``) and the projection segmented (``<stem>_projection.png``
    is written too); a volume model (IPN) gets the volume itself.
    ``measure(mask, image)`` (e.g. :func:`retinaseg.measure.api.predict_columns`), when given,
    returns more columns for each image's row.
    ``segmenter`` makes each model's :class:`Segmenter` (``(ref, options, **overrides)``; e.g.
    :class:`retinaseg.deploy.runtime.OnnxSegmenter` to run the networks with ONNX Runtime).
    ``options`` (:class:`~retinaseg.inference.segmenter.SegmenterOptions`) and keyword
    ``overrides`` say how inference runs; they, the threshold and the model are checked before
    the first image, and a model that cannot be loaded later stops the run (it is no fault of
    one file).
    ``shard`` (``"I/N"``, ``"auto"`` or a :class:`~retinaseg.inference.shards.Shard`) segments
    only shard I of N of the inputs and writes ``predictions-<I>.csv``; ``resume`` (always on
    for a shard) keeps the rows of images an earlier run with the same settings finished and
    does not redo them (:mod:`retinaseg.inference.shards`).
    """
    opts = (options or SegmenterOptions()).updated(**overrides)
    check_threshold(threshold)
    if projection not in METHODS:
        raise RetinasegError(f"projection must be one of {', '.join(METHODS)}, not "
                             f"'{projection}'")
    files = collect_predict_inputs(inputs, volume)
    pick = _ModelPicker(model, opts, segmenter)
    if model is not None:
        pick(np.zeros((8, 8), np.float32))  # load now: a bad model is one error, not N skips
    out = make_out_dir(out)
    report = PredictReport()
    part = parse_shard(shard) if isinstance(shard, str) else shard
    stems = assign_stems(files)
    ledger = DoneLedger(out, run_settings(model, threshold, opts, volume, projection, measure,
                                          segmenter)) if resume or part else None
    todo = part.take(len(files)) if part else list(range(len(files)))
    done = {} if ledger is None else ledger.done_rows(todo, files, stems)
    desc = "predicting" if part is None else f"predicting shard {part.index}/{part.count}"
    for pos in progress(todo, done, desc):
        item, stem = files[pos], stems[pos]
        if pos in done:
            report.rows.append(done[pos])
            report.positions.append(pos)
            continue
        path = item.path
        if item.volume:
            tqdm.write(f"{path}: {item.why}")
        try:
            image, volume_data, how = _read_input(item, pick, projection)
        except RetinasegError as err:
            report.skipped.append((str(path), str(err)))
            continue
        ref, seg = pick(image)  # a model or option error stops the run
        try:
            with recording() as restored:
                prob = seg(image if volume_data is None else volume_data,
                           source=f"'{path}'")
        except RetinasegError as err:
            report.skipped.append((str(path), str(err)))
            continue
        thr = seg.threshold if threshold is None else float(threshold)
        report.spec = seg.spec
        row = {"image": str(path), "input": "volume" if item.volume else "image",
               "projection": how if not seg.takes_volumes else "learned (volume model)",
               "model": ref, "head": seg.head_name,
               "threshold": round(thr, 4), "rescaled": round(seg.last_scale, 4),
               "restoration": "; ".join(dict.fromkeys(restored)) or "none"}
        if restored:
            tqdm.write(f"{path.name}: {restored[0]}")
        if item.volume:
            save_projection(out / f"{stem}_projection.png", image, preview=False)
        if seg.classes:  # argmax decides: no threshold, no binary mask
            row["threshold"] = ""
            row.update(write_class_outputs(out, stem, prob, seg.classes))
            _finish(report, row, pos, ledger, item, stem, classes=True)
            continue
        row.update(write_outputs(out, stem, image, prob, thr))
        if measure is not None:
            row.update(measure(prob > thr, image))
        _finish(report, row, pos, ledger, item, stem, classes=False)
    _write_csv(out / ("predictions.csv" if part is None else part.csv_name), report.rows)
    if part is not None:
        write_manifest(out, part, report.positions)
    return report


def _finish(report: PredictReport, row: dict, pos: int, ledger: DoneLedger | None,
            item: Input, stem: str, classes: bool) -> None:
    """Add an image's row to the report and, when resumable, record it as done."""
    report.rows.append(row)
    report.positions.append(pos)
    if ledger is not None:
        ledger.record(item.path, stem, row, output_files(stem, classes, item.volume))


def _read_input(item: Input, pick: _ModelPicker, projection: str
                ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(image to segment and show, the volume or None, how it was projected)."""
    if not item.volume:
        return read_image(item.path), None, ""
    takes_volumes = pick.explicit_volume_model()
    streamed = None if takes_volumes else project_slab_streamed(item.path, projection)
    if streamed is not None:  # a B-scan folder for a 2-D model: never held whole
        image, depth, n_depth = streamed
        volume = None
    else:
        volume = read_volume(item.path)
        depth, n_depth = auto_slab(volume), volume.shape[0]
        image = project(volume, projection, depth=depth)
    top, bottom = (float(np.median(d)) for d in depth)
    how = f"{projection}, auto slab (median planes {top:.0f}-{bottom:.0f} of {n_depth})"
    return image, volume if takes_volumes else None, how


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())

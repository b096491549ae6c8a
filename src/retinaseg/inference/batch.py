"""Batch prediction: files and folders in, probability/mask/overlay PNGs and
``predictions.csv`` out, one :class:`~retinaseg.inference.segmenter.Segmenter` per model.

Bad files in a batch are skipped and reported at the end; every good result is still written.
Options that are wrong for the whole run (a scale, a device, a model) stop it before the first
image.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from retinaseg.errors import RetinasegError
from retinaseg.evaluation.figures import overlay
from retinaseg.evaluation.metrics import centerline_length
from retinaseg.inference.modality import DEFAULT_MODELS, detect_modality
from retinaseg.inference.segmenter import Segmenter, SegmenterOptions
from retinaseg.io import list_images, read_image, write_png
from retinaseg.models.persistence import ModelSpec, read_spec, resolve_model_path
from retinaseg.preprocessing.restore import recording
from retinaseg.utils.atomic import make_out_dir, write_text_atomic
from retinaseg.utils.checks import check_number


@dataclass
class PredictReport:
    """What a batch prediction produced: one row per good image, and the files skipped."""

    rows: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    spec: ModelSpec | None = None


def check_threshold(threshold: float | None) -> None:
    """A decision threshold must lie strictly between 0 and 1 (None: the model's own)."""
    if threshold is not None:
        check_number("threshold", threshold, 0, 1, lo_open=True, hi_open=True)


def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (natural order) into a list of image files."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(list_images(p))
        elif p.exists():
            files.append(p)
        elif p.is_symlink():
            raise RetinasegError(f"input '{p}' is a broken symbolic link or a symlink loop")
        else:
            raise RetinasegError(f"input '{p}' does not exist")
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


def write_outputs(out: Path, stem: str, image: np.ndarray, prob: np.ndarray,
                   thr: float) -> dict:
    """Write probability, mask and overlay PNGs; return the per-image measurements."""
    mask = prob > thr
    write_png(out / f"{stem}_prob.png", prob)
    write_png(out / f"{stem}_mask.png", mask)
    write_png(out / f"{stem}_overlay.png", overlay(image, mask))
    return {"vessel_fraction": round(float(mask.mean()), 6),
            "centerline_length_px": round(centerline_length(mask), 2)}


class _ModelPicker:
    """One :class:`Segmenter` per model reference, chosen per image when none was given."""

    def __init__(self, model: str | Path | None, options: SegmenterOptions) -> None:
        self.model, self.options = model, options
        self.cache: dict[str, Segmenter] = {}

    def __call__(self, image: np.ndarray) -> tuple[str, Segmenter]:
        ref = str(self.model) if self.model is not None else \
            DEFAULT_MODELS[detect_modality(image)]
        if ref not in self.cache:
            if self.model is None:
                tqdm.write(f"no --model given: using bundled model '{ref}' for this image type")
            self.cache[ref] = self._load(ref)
        return ref, self.cache[ref]

    def _load(self, ref: str) -> Segmenter:
        """A head asked for applies to the models that have heads; a bundled model picked by
        modality without heads (fundus-vessels) ignores it."""
        if self.model is None and self.options.head is not None \
                and not read_spec(resolve_model_path(ref)).heads:
            return Segmenter(ref, self.options, head=None)
        return Segmenter(ref, self.options)


def predict_files(inputs: Iterable[str | Path], model: str | Path | None, out: str | Path,
                  threshold: float | None = None, options: SegmenterOptions | None = None,
                  **overrides: Any) -> PredictReport:
    """Segment every image in ``inputs`` and write ``<stem>_prob/_mask/_overlay.png`` to ``out``.

    ``model`` is a model file, a run folder or a bundled name; ``None`` picks the bundled model
    by modality (colour → ``fundus-vessels``, grey → ``octa-vessels``) per image. Also writes
    ``predictions.csv`` with one row per image (vessel area fraction, centerline length, and
    the adaptive restoration applied, if any: :mod:`retinaseg.preprocessing.restore`).
    Unreadable files are skipped and listed in the report's ``skipped``. Two inputs with the
    same file stem (``a/x.png``, ``b/x.tif``) get ``x`` and ``x-2`` outputs, never overwrite.
    ``options`` (:class:`~retinaseg.inference.segmenter.SegmenterOptions`) and keyword
    ``overrides`` say how inference runs; they, the threshold and the model are checked before
    the first image, and a model that cannot be loaded later stops the run (it is no fault of
    one file).
    """
    opts = (options or SegmenterOptions()).updated(**overrides)
    check_threshold(threshold)
    files = collect_inputs(inputs)
    pick = _ModelPicker(model, opts)
    if model is not None:
        pick(np.zeros((8, 8), np.float32))  # load now: a bad model is one error, not N skips
    out = make_out_dir(out)
    report = PredictReport()
    used: set[str] = set()
    for path in tqdm(files, desc="predicting", unit="img"):
        try:
            image = read_image(path)
        except RetinasegError as err:
            report.skipped.append((str(path), str(err)))
            continue
        ref, seg = pick(image)  # a model or option error stops the run
        try:
            with recording() as restored:
                prob = seg(image, source=f"'{path}'")
        except RetinasegError as err:
            report.skipped.append((str(path), str(err)))
            continue
        thr = seg.threshold if threshold is None else float(threshold)
        report.spec = seg.spec
        row = {"image": str(path), "model": ref, "head": seg.head_name,
               "threshold": round(thr, 4), "rescaled": round(seg.last_scale, 4),
               "restoration": "; ".join(dict.fromkeys(restored)) or "none"}
        if restored:
            tqdm.write(f"{path.name}: {restored[0]}")
        row.update(write_outputs(out, unique_stem(path, used), image, prob, thr))
        report.rows.append(row)
    _write_csv(out / "predictions.csv", report.rows)
    return report


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())

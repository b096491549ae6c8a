"""The Python API: everything the CLI does, callable from scripts and notebooks.

>>> import retinaseg
>>> summary = retinaseg.train("configs/seed/retina_unet_drive.yaml")   # doctest: +SKIP
>>> report = retinaseg.predict(["img.png"], model=summary["run_dir"], out="out")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from retinaseg.evaluation.evaluate import evaluate
from retinaseg.inference.batch import PredictReport, predict_files
from retinaseg.inference.segmenter import Segmenter, SegmenterOptions
from retinaseg.io import read_volume
from retinaseg.models import MODELS
from retinaseg.models.cards import bundled_models
from retinaseg.models.persistence import load_model
from retinaseg.preprocessing.projection import (
    auto_slab,
    layer_frames,
    project,
    save_layer_frames,
    save_projection,
)
from retinaseg.training.ensemble import build_ensemble, train_folds
from retinaseg.training.trainer import train
from retinaseg.utils.atomic import make_out_dir


def predict(inputs: list[str | Path] | str | Path, model: str | Path | None = None,
            out: str | Path = "predictions", threshold: float | None = None,
            options: SegmenterOptions | None = None, **overrides: Any) -> PredictReport:
    """Segment images or folders with ``model`` (safetensors file, run folder or bundled name;
    ``None`` picks the bundled model by each image's modality). ``options`` and keyword
    ``overrides`` (``tta="flips"``, ``scale=0.4``, ...) are :class:`SegmenterOptions`."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    return predict_files(inputs, model, out, threshold, options, **overrides)


def project_volume(volume: str | Path, out: str | Path, method: str = "mean",
                   depth: tuple[int, int] | None = None, slab: str | None = None,
                   equalise: bool = False, preview: bool = True) -> dict[str, Any]:
    """Read a volume, project it en face (:func:`retinaseg.preprocessing.projection.project`)
    and write the map losslessly (16-bit ``.png`` or float32 ``.tif``) plus an 8-bit preview.

    Returns ``{"files", "shape", "depth", "method", "seconds_read", "seconds_project"}``; the
    output is written only after the volume was read and projected.
    """
    t0 = time.perf_counter()
    vol = read_volume(volume)
    t1 = time.perf_counter()
    bounds = auto_slab(vol) if slab == "auto" else depth
    image = project(vol, method, depth=bounds, equalise=equalise)
    t2 = time.perf_counter()
    del vol
    files = save_projection(out, image, preview=preview)
    where = "all" if bounds is None else "auto slab" if slab == "auto" else f"{depth[0]}:{depth[1]}"
    return {"files": [str(f) for f in files], "shape": list(image.shape), "depth": where,
            "method": method, "seconds_read": t1 - t0, "seconds_project": t2 - t1}


def layer_frames_of(volume: str | Path, out: str | Path, depth: tuple[int, int] | None = None,
                    step: int = 1, thickness: int = 1, method: str = "mean",
                    bits: int = 8) -> Path:
    """Read a volume and write it as en-face frames (thin slabs at successive depths):
    ``frame_<i>.png`` and ``frames.json`` with each frame's depth range (returned)."""
    vol = read_volume(volume)
    frames, ranges = layer_frames(vol, depth, step, thickness, method)
    del vol
    info = {"volume": str(volume), "method": method, "step": step, "thickness": thickness}
    return save_layer_frames(make_out_dir(out), frames, ranges, bits=bits, info=info)


def list_datasets() -> list[tuple[str, str, tuple[str, ...], str]]:
    """(name, modality, splits, expected layout) for every registered dataset."""
    from retinaseg.data import describe_datasets

    return describe_datasets()


def list_models() -> list[tuple[str, str]]:
    """(name, first docstring line) for every registered architecture."""
    return [(n, (MODELS.get(n).__doc__ or "").strip().splitlines()[0]) for n in MODELS.names()]


def list_bundled_models() -> list[tuple[str, str]]:
    """(name, one-line summary from its model card) for every bundled model: the names
    ``--model`` and ``predict(model=...)`` take besides files and run folders."""
    return bundled_models()


__all__ = ["train", "train_folds", "build_ensemble", "predict", "evaluate", "load_model",
           "Segmenter", "SegmenterOptions", "list_datasets", "list_models",
           "list_bundled_models", "project", "project_volume", "layer_frames_of"]

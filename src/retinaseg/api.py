"""The Python API: everything the CLI does, callable from scripts and notebooks.

>>> import retinaseg
>>> summary = retinaseg.train("configs/synthetic_octa.yaml")          # doctest: +SKIP
>>> report = retinaseg.predict(["img.png"], model=summary["run_dir"], out="out")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retinaseg.evaluation.evaluate import evaluate
from retinaseg.inference.pipeline import PredictReport, Segmenter, predict_files
from retinaseg.models.persistence import load_model
from retinaseg.training.ensemble import build_ensemble, train_folds
from retinaseg.training.trainer import train


def predict(inputs: list[str | Path] | str | Path, model: str | Path | None = None,
            out: str | Path = "predictions", **kw: Any) -> PredictReport:
    """Segment images or folders with ``model`` (safetensors file, run folder or bundled name;
    ``None`` picks the bundled model by each image's modality)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    return predict_files(inputs, model, out, **kw)


def list_datasets() -> list[tuple[str, str, tuple[str, ...], str]]:
    """(name, modality, splits, expected layout) for every registered dataset."""
    from retinaseg.data import describe_datasets

    return describe_datasets()


def list_models() -> list[tuple[str, str]]:
    """(name, first docstring line) for every registered architecture."""
    import retinaseg.models  # noqa: F401
    from retinaseg.registry import MODELS

    return [(n, (MODELS.get(n).__doc__ or "").strip().splitlines()[0]) for n in MODELS.names()]


__all__ = ["train", "train_folds", "build_ensemble", "predict", "evaluate", "load_model",
           "Segmenter", "list_datasets", "list_models"]

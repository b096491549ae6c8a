"""retinaseg: segment and measure retinal vessels in OCTA and colour fundus images.

The public API lives in :mod:`retinaseg.api` and is re-exported here lazily, so that
``import retinaseg`` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {"train", "train_folds", "build_ensemble", "predict", "evaluate", "load_model",
        "Segmenter", "SegmenterOptions", "list_datasets", "list_models",
        "list_bundled_models", "prompt_image", "propagate_layers", "export_onnx"}
_SUBPACKAGES = {"io", "data", "preprocessing", "models", "losses", "training", "inference",
                "evaluation", "measure", "deploy"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from retinaseg import api

        return getattr(api, name)
    if name == "centerline":
        from retinaseg.measure import centerline

        return centerline
    if name == "project":
        from retinaseg.preprocessing.projection import project

        return project
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"retinaseg.{name}")
    raise AttributeError(f"module 'retinaseg' has no attribute '{name}'")

"""The Python API: everything the CLI does, callable from scripts and notebooks.

>>> import retinaseg
>>> summary = retinaseg.train("configs/seed/retina_unet_drive.yaml")   # doctest: +SKIP
>>> report = retinaseg.predict(["img.png"], model=summary["run_dir"], out="out")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retinaseg.evaluation.evaluate import evaluate
from retinaseg.inference.batch import PredictReport, predict_files
from retinaseg.inference.segmenter import Segmenter, SegmenterOptions
from retinaseg.models import MODELS
from retinaseg.models.cards import bundled_models
from retinaseg.models.persistence import load_model
from retinaseg.preprocessing.projection import layer_frames_of, project, project_volume
from retinaseg.training.ensemble import build_ensemble, train_folds
from retinaseg.training.trainer import train


def predict(inputs: list[str | Path] | str | Path, model: str | Path | None = None,
            out: str | Path = "predictions", threshold: float | None = None,
            options: SegmenterOptions | None = None, backend: str = "torch",
            **overrides: Any) -> PredictReport:
    """Segment images or folders with ``model`` (safetensors file, run folder or bundled name;
    ``None`` picks the bundled model by each image's modality). ``options`` and keyword
    ``overrides`` (``tta="flips"``, ``scale=0.4``, ...) are :class:`SegmenterOptions`.
    ``backend="onnxruntime"`` runs the networks with ONNX Runtime (the ``deploy`` extra;
    ``model`` may then also be an exported ``.onnx`` file; see
    :class:`retinaseg.deploy.runtime.OnnxSegmenter`)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if backend != "torch":
        from retinaseg.deploy.runtime import segmenter_backend

        overrides["segmenter"] = segmenter_backend(backend)
    return predict_files(inputs, model, out, threshold, options, **overrides)


def export_onnx(model: str | Path, out: str | Path, *, opset: int | None = None,
                check: bool = True) -> Any:
    """Export a model (bundled name, run folder or ``.safetensors`` file) to the ONNX file
    ``out``, its recipe in the file's metadata, checked against PyTorch with ONNX Runtime unless
    ``check=False`` (``retinaseg export``; the ``deploy`` extra). Returns an
    :class:`~retinaseg.deploy.onnx.ExportReport`. See :mod:`retinaseg.deploy.onnx`."""
    from retinaseg.deploy.onnx import OPSET
    from retinaseg.deploy.onnx import export_onnx as run

    return run(model, out, opset=OPSET if opset is None else opset, check=check)


def prompt_image(image: str | Path, model: Any, points: object = None, box: object = None,
                 out: str | Path | None = None, refine: bool = False, *,
                 device: str = "auto") -> dict[str, Any]:
    """Segment what ``points`` (``"x,y,1;x,y,0"``: 1 object, 0 background) and/or ``box``
    (``"x0,y0,x1,y1"``) mark in ``image`` with a SAM 2 model folder, and write the probability,
    mask, overlay, logits and prompt record into ``out`` (``retinaseg prompt``); ``refine``
    passes the previous answer's logits in ``out`` back to refine the mask. Needs the ``sam``
    extra. See :func:`retinaseg.inference.prompting.prompt_image`."""
    from retinaseg.inference.prompting import prompt_image as run

    return run(image, model, points=points, box=box, out=out, refine=refine, device=device)


def propagate_layers(source: str | Path, model: Any, out: str | Path,
                     prompt_frame: int | None = None, points: object = None, box: object = None,
                     prompt_masks: list[object] | None = None, direction: str = "both",
                     obj_id: int = 1, device: str = "auto", *, step: int | None = None,
                     thickness: int | None = None) -> dict[str, Any]:
    """Prompt one object on a layer frame (``points``/``box`` on ``prompt_frame``) or on a few
    (``prompt_masks``: ``["FRAME:MASK.png", ...]``) and carry it through the whole stack with
    SAM 2's memory (``direction`` both, forward or backward); ``source`` is a folder of frames
    (``retinaseg layers``) or a volume file (cut with ``step``/``thickness``, default 1). Writes
    ``masks/frame_<i>.png``, ``objects/<obj>/frame_<i>.png``, ``prompts/`` overlays and
    ``propagation.json`` into ``out`` (``retinaseg propagate``). Needs the ``sam`` extra. See
    :func:`retinaseg.inference.layer_prompting.propagate_layers`."""
    from retinaseg.inference.layer_prompting import propagate_layers as run

    return run(source, model, out, prompt_frame=prompt_frame, points=points, box=box,
               prompt_masks=prompt_masks, direction=direction, obj_id=obj_id, device=device,
               step=step, thickness=thickness)


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
           "list_bundled_models", "project", "project_volume", "layer_frames_of",
           "prompt_image", "propagate_layers", "export_onnx"]

"""Deployment: retinaseg models as ONNX files, and inference with ONNX Runtime.

- :mod:`retinaseg.deploy.onnx` exports a model (bundled name, run folder, ``.safetensors`` file
  or a network with its spec) to one ``.onnx`` file whose metadata holds the model's recipe
  (:func:`export_onnx`, ``retinaseg export``), and reads that recipe back
  (:func:`read_onnx_spec`).
- :mod:`retinaseg.deploy.runtime` runs such a file with ONNX Runtime behind the
  :class:`~retinaseg.inference.segmenter.Segmenter` interface (:class:`OnnxSegmenter`,
  ``retinaseg predict --backend onnxruntime``), so that preprocessing, padding, FOV cropping and
  rescaling, flip TTA and thresholds are retinaseg's own code, unchanged.

Needs the ``deploy`` extra (``pip install 'retinaseg[deploy]'``: ``onnx`` to write files,
``onnxruntime`` to run them); both are imported only when used. How-to:
``docs/how-to/export.md``.
"""

from __future__ import annotations

from retinaseg.deploy.onnx import ExportReport, export_onnx, read_onnx_spec
from retinaseg.deploy.runtime import BACKENDS, OnnxSegmenter, segmenter_backend

__all__ = ["export_onnx", "read_onnx_spec", "ExportReport", "OnnxSegmenter", "BACKENDS",
           "segmenter_backend"]

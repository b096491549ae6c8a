"""ONNX Runtime inference behind the :class:`~retinaseg.inference.segmenter.Segmenter` interface.

:class:`OnnxSegmenter` is a Segmenter whose network is an ``onnxruntime.InferenceSession``
(:class:`OrtNetwork`): everything around the network's forward pass, i.e. preprocessing, channel
matching, padding to the size multiple, FOV cropping and FOV rescaling of fundus images, the
model's flip TTA (batched as in PyTorch), sliding-window tiles, head selection and thresholds, is
the Segmenter's own code, so both backends give the same maps up to float32 rounding.

The model may be an exported ``.onnx`` file (its recipe comes from the file's metadata,
:mod:`retinaseg.deploy.onnx`) or anything :func:`~retinaseg.models.persistence.load_model`
takes (bundled name, run folder, ``.safetensors`` file), which is then exported in memory
(no temporary file; about 0.3-2 s once per model, checked against PyTorch like
``retinaseg export``). ONNX Runtime runs on the CPU in float32 with the Segmenter's thread count
(``threads``); ``precision="bf16"`` and ``jit=True`` are refused, and BatchNorm folding is
already in the exported graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from retinaseg.deploy.onnx import (
    INPUT,
    META_MULTIPLE,
    onnx_bytes,
    prepare,
    session,
    spec_from_metadata,
    verify,
)
from retinaseg.errors import ModelLoadError, OptionError
from retinaseg.inference.segmenter import Segmenter, SegmenterOptions
from retinaseg.models.persistence import ModelSpec


class OrtNetwork(nn.Module):
    """An ONNX Runtime session that a retinaseg predictor can call like a network.

    ``forward``: float32 ``[B, C, H, W]`` (H, W multiples of ``size_multiple``) → float32
    logits ``[B, K, H, W]`` on the input's device; the session itself runs on the CPU.
    """

    def __init__(self, sess: Any, size_multiple: int) -> None:
        super().__init__()
        self.session = sess
        self.size_multiple = int(size_multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(None, {INPUT: feed})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)


def is_onnx_file(model: object) -> bool:
    """True for a path (str or Path) ending in ``.onnx``."""
    return isinstance(model, (str, Path)) and str(model).lower().endswith(".onnx")


def load_onnx_network(model: str | Path, threads: int | None = None
                      ) -> tuple[OrtNetwork, ModelSpec]:
    """(:class:`OrtNetwork`, spec) of an exported ``.onnx`` file, or of a PyTorch model
    reference exported in memory and checked first."""
    if is_onnx_file(model):
        path = Path(model)
        if not path.is_file():
            raise ModelLoadError(f"ONNX model file '{path}' does not exist")
        sess = session(path, threads)
        spec, meta = spec_from_metadata(dict(sess.get_modelmeta().custom_metadata_map),
                                        f"'{path}'")
        return OrtNetwork(sess, int(meta.get(META_MULTIPLE, "1"))), spec
    net, spec, name = prepare(model)
    data = onnx_bytes(net, spec, name)
    verify(net, data, spec)
    return OrtNetwork(session(data, threads), int(getattr(net, "size_multiple", 1))), spec


class OnnxSegmenter(Segmenter):
    """A :class:`~retinaseg.inference.segmenter.Segmenter` that runs the network with ONNX
    Runtime: ``seg(image) -> [H, W]`` probabilities (``[K, H, W]`` for a multi-class model).

    ``model``: an exported ``.onnx`` file, or a bundled name, run folder or ``.safetensors``
    file (exported in memory first). Options as the Segmenter's; precision is float32 (asking
    for ``bf16`` or ``jit=True`` is an :class:`~retinaseg.errors.OptionError`). Needs the
    ``deploy`` extra.
    """

    backend = "onnxruntime"

    def __init__(self, model: str | Path, options: SegmenterOptions | None = None, *,
                 dataset: str | None = None, preprocess: Any = None, **overrides: Any) -> None:
        opt = (options or SegmenterOptions()).updated(**overrides)
        if opt.precision == "bf16":
            raise OptionError("the onnxruntime backend runs float32 only; use precision auto "
                              "or fp32")
        if opt.jit:
            raise OptionError("the onnxruntime backend runs its own graph; TorchScript "
                              "freezing (jit) applies to the torch backend only")
        opt = opt.updated(precision="fp32", jit=False, fuse=False)
        super().__init__(model, opt, dataset=dataset, preprocess=preprocess)

    def _load_network(self, model: str | Path) -> tuple[nn.Module, ModelSpec]:
        return load_onnx_network(model, torch.get_num_threads())


BACKENDS: dict[str, type[Segmenter]] = {"torch": Segmenter, "onnxruntime": OnnxSegmenter}
"""Backend name → Segmenter class (``retinaseg predict --backend``)."""


def segmenter_backend(name: str) -> type[Segmenter]:
    """The Segmenter class of backend ``name`` (``torch`` or ``onnxruntime``)."""
    if name not in BACKENDS:
        raise OptionError(f"backend must be one of {', '.join(BACKENDS)}, not '{name}'")
    return BACKENDS[name]

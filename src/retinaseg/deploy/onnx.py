"""ONNX export: one retinaseg network as one ``.onnx`` file that carries its own recipe.

What the file holds (format ``retinaseg.format`` = 1):

- **The network only.** Input ``image``: float32 ``[B, C, H, W]``, already preprocessed, with
  H and W multiples of ``retinaseg.size_multiple`` (retinaseg pads the bottom and right by
  reflection, as :mod:`retinaseg.inference.predictor` does); output ``logits``: float32
  ``[B, K, H, W]`` (K = heads, classes, or 1). Batch, height and width are dynamic axes.
  Probabilities are ``sigmoid(logits)`` (softmax over K for a multi-class model).
- **Everything else as metadata** (``metadata_props``): ``retinaseg.spec``, the model's
  :class:`~retinaseg.models.persistence.ModelSpec` JSON (architecture, preprocessing steps,
  threshold, heads and their thresholds, classes, modality, and ``info`` with ``tta`` and
  ``fov_diameter``), ``retinaseg.size_multiple``, ``retinaseg.output`` (what the output is),
  ``retinaseg.source`` (what was exported), ``retinaseg.version`` and ``retinaseg.exporter``.
  Preprocessing, padding, FOV cropping and rescaling, flip TTA and thresholding stay outside the
  graph, so :class:`retinaseg.deploy.runtime.OnnxSegmenter` repeats them with retinaseg's own
  code, and a plain script (docs/how-to/export.md) can read them from the file.

How it is made:

- The exporter is ``torch.onnx.export(..., dynamo=False)`` (the TorchScript-based exporter,
  which needs no ``onnxscript``), opset :data:`OPSET`, with BatchNorm folded into the
  convolutions first (:func:`retinaseg.inference.fuse.fold_batchnorm`, as the fast PyTorch path
  does) and constant folding on.
- An **ensemble** becomes one graph: every member, their sigmoid average and its logit
  (:class:`retinaseg.models.ensemble.Ensemble` traces as it is), so one file and one run per
  image, as in PyTorch.
- Tracing records one run, so Python code that reads the input's size could bake that size in
  (OCTA-Net pads its input to a multiple of 32 inside ``forward``). The example input is
  therefore an odd multiple of the size multiple (so such padding is traced), and, unless
  ``check=False``, the file is run with ONNX Runtime at two other sizes (one not square, batch
  2) and compared with PyTorch; a maximum probability difference above :data:`TOLERANCE` is an
  :class:`~retinaseg.errors.ExportError`.
- A network with an operator the exporter cannot convert ends in one sentence naming the
  operator (:class:`~retinaseg.errors.ExportError`); volume models (IPN) are refused.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from retinaseg.errors import ExportError, MissingDependencyError, ModelLoadError
from retinaseg.inference.fuse import fold_batchnorm
from retinaseg.models.persistence import ModelSpec, load_model
from retinaseg.utils.atomic import write_bytes_atomic

OPSET = 17
"""Default ONNX opset (ONNX Runtime ≥ 1.12 runs it)."""
FORMAT = "1"
"""Version of the metadata layout below."""
INPUT, OUTPUT = "image", "logits"
"""Names of the graph's input and output."""
TOLERANCE = 1e-4
"""Largest probability difference to PyTorch (float32) that the export check accepts."""
META_SPEC, META_MULTIPLE = "retinaseg.spec", "retinaseg.size_multiple"
META_FORMAT, META_OUTPUT = "retinaseg.format", "retinaseg.output"
META_SOURCE, META_VERSION, META_EXPORTER = "retinaseg.source", "retinaseg.version", \
    "retinaseg.exporter"
INSTALL = "pip install 'retinaseg[deploy]'"


def require(module: str) -> ModuleType:
    """Import ``onnx`` or ``onnxruntime``, or raise one sentence saying how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise MissingDependencyError(f"ONNX export and ONNX Runtime inference need the "
                                     f"'{module}' package: install the deploy extra with "
                                     f"{INSTALL}") from None


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote: ``path``, ``opset``, ``size_bytes``, the spec, and the
    check's largest probability difference to PyTorch (``max_abs_diff``, None without a check)
    at the input shapes ``checked`` (``[B, C, H, W]`` each)."""

    path: Path
    opset: int
    size_bytes: int
    spec: ModelSpec
    max_abs_diff: float | None = None
    checked: list[tuple[int, ...]] = field(default_factory=list)


def size_multiple(net: nn.Module) -> int:
    """The side multiple the network's input needs (``net.size_multiple``, default 1)."""
    return int(getattr(net, "size_multiple", 1))


def example_sides(multiple: int) -> tuple[int, int]:
    """(H, W) of the traced example: the smallest odd multiple k of ``multiple`` with
    k·multiple ≥ 64, and the next odd one, so sizes differ and padding inside is traced."""
    k = -(-64 // multiple)
    k += 1 - k % 2
    return multiple * k, multiple * (k + 2)


def check_shapes(multiple: int, in_channels: int) -> list[tuple[int, ...]]:
    """Input shapes ``[B, C, H, W]`` the export check runs: other sizes than the traced one,
    one with an even multiple (≥ 96 px) and a batch of two."""
    h, w = example_sides(multiple)
    even = multiple * (-(-96 // multiple) + (-(-96 // multiple)) % 2)
    return [(2, in_channels, h + 2 * multiple, w - multiple), (1, in_channels, even, even)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence warnings and anything written to file descriptors 1 and 2 (the legacy
    exporter logs the whole graph there when a conversion fails)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _failure(err: Exception, name: str, opset: int) -> ExportError:
    """One sentence for an exporter failure, naming the operator where the message has one."""
    text = str(err).strip()
    op = re.search(r"'((?:aten|prim|quantized|onnx|torchvision)::[\w.]+)'", text)
    if op:
        return ExportError(f"model '{name}' cannot be exported to ONNX: the exporter has no "
                           f"conversion for operator '{op.group(1)}' at opset {opset}")
    first = text.splitlines()[0] if text else type(err).__name__
    return ExportError(f"model '{name}' cannot be exported to ONNX ({first})")


def _trace_to_onnx(net: nn.Module, in_channels: int, name: str, opset: int) -> bytes:
    """The bare ONNX graph of eval-mode ``net`` (dynamic batch, height and width), as bytes."""
    h, w = example_sides(size_multiple(net))
    example = torch.zeros(1, in_channels, h, w)
    axes = {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    try:
        with _quiet(), torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(net, (example,), buf, dynamo=False, opset_version=opset,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: axes, OUTPUT: axes},
                              do_constant_folding=True)
    except Exception as err:  # the exporter raises many kinds; each becomes one sentence
        raise _failure(err, name, opset) from None
    return buf.getvalue()


def _version() -> str:
    """The installed retinaseg version (read from the package metadata: importing the
    ``retinaseg`` package here would make an import cycle through its lazy API)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("retinaseg")
    except PackageNotFoundError:
        return "unknown"


def metadata(spec: ModelSpec, multiple: int, source: str, opset: int) -> dict[str, str]:
    """The ``metadata_props`` of an exported file (see the module docstring)."""
    what = ("softmax over the K class logits" if spec.classes else
            "sigmoid of each head's logit" if spec.heads else "sigmoid of the logit")
    return {META_FORMAT: FORMAT, META_SPEC: spec.to_json(), META_MULTIPLE: str(multiple),
            META_OUTPUT: f"logits [B, {spec.outputs}, H, W]; probability = {what}",
            META_SOURCE: source, META_VERSION: _version(),
            META_EXPORTER: f"torch {torch.__version__} torch.onnx.export(dynamo=False), "
                           f"opset {opset}"}


def _with_metadata(raw: bytes, props: dict[str, str], spec: ModelSpec) -> bytes:
    onnx = require("onnx")
    model = onnx.load_from_string(raw)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "retinaseg"
    model.doc_string = (f"retinaseg model '{spec.name}' ({spec.modality}): {props[META_OUTPUT]}; "
                        f"input {INPUT} [B, {spec.in_channels}, H, W] preprocessed, H and W "
                        f"multiples of {props[META_MULTIPLE]}; recipe in {META_SPEC}")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def prepare(model: str | Path | nn.Module, spec: ModelSpec | None = None
            ) -> tuple[nn.Module, ModelSpec, str]:
    """(eval-mode network with BatchNorm folded, its spec, a name for messages) of a model
    reference (bundled name, run folder, ``.safetensors`` file) or of a network and its spec
    (copied first, so the caller's network is left unchanged)."""
    if isinstance(model, nn.Module):
        if spec is None:
            raise ExportError("exporting a network object needs its ModelSpec (spec=...)")
        net, name = copy.deepcopy(model), spec.name  # the caller's network stays as it was
    else:
        net, spec = load_model(model)
        name = str(model)
    net = net.eval()
    if spec.info.get("input") == "volume":
        raise ExportError(f"model '{name}' takes volumes; ONNX export covers 2-D image models "
                          "only")
    fold_batchnorm(net)
    return net, spec, name


def onnx_bytes(net: nn.Module, spec: ModelSpec, source: str, opset: int = OPSET) -> bytes:
    """The ONNX file of eval-mode ``net`` with its metadata, in memory."""
    raw = _trace_to_onnx(net, spec.in_channels, source, opset)
    return _with_metadata(raw, metadata(spec, size_multiple(net), source, opset), spec)


def session(model: bytes | str | Path, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for a file or in-memory model;
    ``threads`` sets intra-op threads (None: ONNX Runtime's default), one inter-op thread."""
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: no warnings about unused initialisers
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = int(threads)
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own error types (InvalidGraph, Fail, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = "the exported model" if isinstance(model, bytes) else f"'{model}'"
        raise ModelLoadError(f"ONNX Runtime cannot load {where} ({first})") from None


def activation(logits: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Probabilities of ``logits [B, K, H, W]``: softmax over K (classes) or sigmoid."""
    x = logits.astype(np.float64)
    if spec.classes:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-x))


def compare(net: nn.Module, sess: Any, spec: ModelSpec,
            shapes: list[tuple[int, ...]]) -> float:
    """Largest |probability difference| between ``net`` (PyTorch, float32) and the ONNX
    Runtime ``sess`` on seeded random inputs of ``shapes``; a run that fails is an
    :class:`~retinaseg.errors.ExportError`."""
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            want = activation(net(x).float().numpy(), spec)
        try:
            got = activation(sess.run(None, {INPUT: x.numpy()})[0], spec)
        except Exception as err:  # noqa: BLE001 - onnxruntime's own error types
            first = str(err).strip().splitlines()[0]
            raise ExportError(f"the ONNX graph of model '{spec.name}' fails at input size "
                              f"{shape[2]}×{shape[3]} (shape-dependent Python code in the "
                              f"model; {first[:200]})") from None
        if got.shape != want.shape:
            raise ExportError(f"the ONNX graph of model '{spec.name}' gives shape "
                              f"{list(got.shape)} instead of {list(want.shape)} at another "
                              "input size (shape-dependent Python code in the model)")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def verify(net: nn.Module, data: bytes, spec: ModelSpec,
           tolerance: float = TOLERANCE) -> tuple[float, list[tuple[int, ...]]]:
    """Run ``data`` with ONNX Runtime at :func:`check_shapes` and compare with ``net``;
    returns (max |Δ probability|, shapes), or raises :class:`~retinaseg.errors.ExportError`
    when the difference exceeds ``tolerance``."""
    shapes = check_shapes(size_multiple(net), spec.in_channels)
    diff = compare(net, session(data), spec, shapes)
    if diff > tolerance:
        raise ExportError(f"the ONNX graph of model '{spec.name}' differs from PyTorch by up to "
                          f"{diff:.2g} in probability at other input sizes (limit "
                          f"{tolerance:g}); the model has shape-dependent Python code")
    return diff, shapes


def export_onnx(model: str | Path | nn.Module, out: str | Path, *,
                spec: ModelSpec | None = None, opset: int = OPSET,
                check: bool = True) -> ExportReport:
    """Export ``model`` to the ONNX file ``out`` (written atomically) and return a report.

    ``model``: a bundled name, a run folder or a ``.safetensors`` file, or a network
    (``nn.Module``) together with its ``spec``. ``check`` runs the file with ONNX Runtime at
    two other input sizes and compares the probabilities with PyTorch (limit
    :data:`TOLERANCE`). Raises :class:`~retinaseg.errors.ExportError` (one sentence, naming the
    operator where one cannot be converted), :class:`~retinaseg.errors.ModelLoadError` for a
    bad model reference, :class:`~retinaseg.errors.MissingDependencyError` without the deploy
    extra.

    >>> export_onnx("octa-vessels", "octa-vessels.onnx").max_abs_diff  # doctest: +SKIP
    1.1e-07
    """
    if not 7 <= int(opset) <= 21:
        raise ExportError(f"opset must be between 7 and 21, not {opset}")
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"--out '{out}' is a folder; give the .onnx file to write")
    require("onnx")
    net, spec, name = prepare(model, spec)
    data = onnx_bytes(net, spec, name if not isinstance(model, nn.Module) else spec.name,
                      int(opset))
    diff, shapes = verify(net, data, spec) if check else (None, [])
    write_bytes_atomic(out, data)
    return ExportReport(out, int(opset), len(data), spec, diff, shapes)


def read_onnx_spec(model: str | Path | bytes) -> tuple[ModelSpec, dict[str, str]]:
    """(spec, all ``retinaseg.*`` metadata) of an exported file or in-memory model; a file
    without retinaseg metadata is a :class:`~retinaseg.errors.ModelLoadError`."""
    meta = dict(session(model).get_modelmeta().custom_metadata_map)
    return spec_from_metadata(meta, "the model" if isinstance(model, bytes) else f"'{model}'")


def spec_from_metadata(meta: dict[str, str], where: str) -> tuple[ModelSpec, dict[str, str]]:
    """(spec, ``retinaseg.*`` entries) from an ONNX file's ``metadata_props``."""
    if META_SPEC not in meta:
        raise ModelLoadError(f"{where} has no retinaseg metadata; export it with "
                             "'retinaseg export MODEL --format onnx'")
    if meta.get(META_FORMAT) != FORMAT:
        raise ModelLoadError(f"{where} has retinaseg metadata format "
                             f"'{meta.get(META_FORMAT)}'; this retinaseg reads format {FORMAT}")
    try:
        spec = ModelSpec.from_json(meta[META_SPEC])
        int(meta.get(META_MULTIPLE, "1"))
    except (ValueError, TypeError, AttributeError) as err:
        raise ModelLoadError(f"{where} has unreadable retinaseg metadata ({err})") from None
    return spec, {k: v for k, v in meta.items() if k.startswith("retinaseg.")}


__all__ = ["export_onnx", "read_onnx_spec", "ExportReport", "onnx_bytes", "session", "verify",
           "OPSET", "TOLERANCE"]

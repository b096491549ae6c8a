"""Saving and loading models as safetensors, with their recipe in the file's metadata.

A model file is self-describing: the safetensors header's metadata holds one JSON string under the
key ``retinaseg`` with the model name, its parameters, the input channels, the preprocessing steps,
the decision threshold and provenance. Pickle-based files (``.pt``, ``.pth``, ``.pkl``, ``.ckpt``)
from users are refused: unpickling can run arbitrary code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from retinaseg.errors import ModelLoadError
from retinaseg.utils.atomic import atomic_path

PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar"}


@dataclass
class ModelSpec:
    """Everything needed to rebuild and apply a trained model."""

    name: str
    in_channels: int
    params: dict[str, Any] = field(default_factory=dict)
    preprocess: str | list[Any] = "none"
    threshold: float = 0.5
    modality: str = "any"
    info: dict[str, Any] = field(default_factory=dict)
    heads: list[dict[str, Any]] = field(default_factory=list)
    """Models with several output heads (one per label convention): per output channel, its
    ``name``, ``threshold`` and the datasets it was ``trained_on``; empty for one output."""
    classes: list[str] = field(default_factory=list)
    """Multi-class models: the class names in output-channel order (background first); the
    outputs are softmax logits and the prediction is their argmax. Empty for vessel models
    (sigmoid outputs, one per head)."""

    @property
    def outputs(self) -> int:
        """Output channels of the network: one per class, per head, or 1."""
        return len(self.classes) or len(self.heads) or 1

    def head_index(self, name: str | None) -> int:
        """Output channel of head ``name`` (None: the first); a clear error for unknown names."""
        if name is None:
            return 0
        names = [h["name"] for h in self.heads]
        if name not in names:
            known = ", ".join(names) if names else "none (the model has one output)"
            raise ModelLoadError(f"model '{self.name}' has no head '{name}'; its heads: {known}")
        return names.index(name)

    def head_for(self, dataset: str) -> str | None:
        """The head trained on ``dataset``'s labels (its label convention), or None."""
        for h in self.heads:
            if dataset in h.get("trained_on", []):
                return str(h["name"])
        return None

    def head_threshold(self, name: str | None) -> float:
        """The decision threshold of head ``name`` (None: the first head, or the only output)."""
        if not self.heads:
            self.head_index(name)  # one output: only None is valid
            return float(self.threshold)
        return float(self.heads[self.head_index(name)]["threshold"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def save_model(path: str | Path, net: nn.Module, spec: ModelSpec) -> Path:
    """Write weights + spec to ``path`` (``.safetensors``) atomically and return the path."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"retinaseg": spec.to_json()})
    return path


def read_spec(path: str | Path) -> ModelSpec:
    """Read only the spec from a model file's header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelLoadError(f"'{path}' is not a readable safetensors model file ({err})") from None
    if "retinaseg" not in meta:
        raise ModelLoadError(f"'{path}' has no retinaseg metadata; it was not saved by retinaseg")
    try:
        return ModelSpec.from_json(meta["retinaseg"])
    except (ValueError, TypeError, AttributeError) as err:
        raise ModelLoadError(f"'{path}' has unreadable retinaseg metadata ({err})") from None


def resolve_model_path(ref: str | Path) -> Path:
    """Turn a model reference (file, run folder or bundled name) into a safetensors path."""
    p = Path(ref)
    if p.is_dir():
        for cand in (p / "best.safetensors", p / "model.safetensors"):
            if cand.is_file():
                return cand
        raise ModelLoadError(f"folder '{p}' holds no best.safetensors or model.safetensors")
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelLoadError(f"refusing to load '{p}': pickle-based model files can run code; "
                             "only .safetensors model files are accepted")
    if p.suffix.lower() == ".onnx":
        raise ModelLoadError(f"'{p}' is an ONNX file; run it with the onnxruntime backend "
                             "(retinaseg predict --backend onnxruntime)")
    if p.is_file():
        return p
    bundled = Path(__file__).resolve().parents[1] / "weights" / f"{ref}.safetensors"
    if bundled.is_file():
        return bundled
    raise ModelLoadError(f"model '{ref}' is neither a file, a run folder nor a bundled model")


def load_model(ref: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Load a model from a safetensors file, a run folder or a bundled name; eval mode."""
    from retinaseg.models import build_model

    path = resolve_model_path(ref)
    spec = read_spec(path)
    net = build_model(spec.name, spec.in_channels, **spec.params)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ModelLoadError(f"cannot read weights from '{path}': {err}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        first = lines[1] if len(lines) > 1 else (lines[0] if lines else "mismatch")
        raise ModelLoadError(
            f"weights in '{path}' do not fit model '{spec.name}': {first}") from None
    return net.to(device).eval(), spec

"""LoRA on SAM 2 with peft, and LoRA files that hold only the trainable tensors.

Reference §7.2 (SAM-OCTA2): peft LoRA on every module named ``qkv`` in the Hiera image encoder,
r = 32, α = 32, dropout 0.1, bias ``lora_only``; everything else frozen. Here the targets, rank
and scale are settings (:class:`LoraSettings`), and the mask decoder's attention projections can
be adapted too.

A LoRA file (safetensors) holds the trainable tensors only (the LoRA matrices and, with bias
``lora_only``, the biases of the adapted layers) plus, in its header, the settings and a
reference to the base model folder with the SHA-256 of its weights. Loading refuses a base whose
weights hash differently: the adapters are deltas that only mean something on their own base.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from retinaseg.errors import ConfigError, ModelLoadError
from retinaseg.models.sam2.deps import require_sam_extras
from retinaseg.utils.atomic import atomic_path

require_sam_extras()

from peft import LoraConfig, inject_adapter_in_model  # noqa: E402

from retinaseg.models.sam2.weights import load_sam2, weights_sha256  # noqa: E402

HEADER_KEY = "retinaseg_sam2_lora"
ENCODER = r"vision_encoder\.backbone\."
DECODER = r"mask_decoder\.transformer\."
DECODER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
"""The mask decoder's attention projections (two-way transformer), adapted with
``mask_decoder=True``."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class LoraSettings:
    """Where and how big the LoRA adapters are; the defaults are the seed's (reference §7.2)."""

    rank: int = 32
    alpha: float = 32.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ("qkv",)
    """Names of the image encoder's linear layers to adapt (``qkv``, ``proj``, ``proj_in``,
    ``proj_out``)."""
    mask_decoder: bool = False
    bias: str = "lora_only"
    """peft's bias mode: ``none``, ``lora_only`` (biases of adapted layers train) or ``all``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        if int(self.rank) != self.rank or self.rank < 1:
            raise ConfigError(f"LoRA rank must be a positive integer, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"LoRA alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets or not all(_NAME.fullmatch(t) for t in self.targets):
            raise ConfigError(f"LoRA targets must be layer names such as 'qkv', got "
                              f"{list(self.targets)}")
        if self.bias not in ("none", "lora_only", "all"):
            raise ConfigError(f"LoRA bias must be none, lora_only or all, got '{self.bias}'")

    def target_pattern(self) -> str:
        """The regex that peft matches against whole module names."""
        names = "|".join(re.escape(t) for t in self.targets)
        pattern = rf"{ENCODER}(?:.*\.)?(?:{names})"
        if self.mask_decoder:
            pattern += rf"|{DECODER}(?:.*\.)?(?:{'|'.join(DECODER_TARGETS)})"
        return pattern

    def to_peft(self) -> LoraConfig:
        return LoraConfig(r=int(self.rank), lora_alpha=self.alpha, lora_dropout=self.dropout,
                          bias=self.bias, target_modules=self.target_pattern())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraSettings:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown LoRA setting(s): {', '.join(sorted(unknown))}; known: "
                              f"{', '.join(cls.__dataclass_fields__)}")
        return cls(**data)


def apply_lora(model: nn.Module, settings: LoraSettings | None = None) -> nn.Module:
    """Add LoRA adapters to ``model`` (a SAM 2 image or video model) in place, freeze every
    other parameter, and return it. A target that matches no layer is a ConfigError."""
    settings = settings or LoraSettings()
    try:
        inject_adapter_in_model(settings.to_peft(), model)
    except ValueError as err:  # peft: "Target modules ... not found in the base model"
        raise ConfigError(f"LoRA targets {list(settings.targets)} match no layer of the SAM 2 "
                          f"image encoder ({str(err).splitlines()[0]})") from None
    for name, param in model.named_parameters():
        param.requires_grad = _trains(name, settings)
    return model


def _trains(name: str, settings: LoraSettings) -> bool:
    if ".lora_" in name:
        return True
    if settings.bias == "all":
        return name.endswith(".bias")
    return settings.bias == "lora_only" and name.endswith(".base_layer.bias")


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors of ``model`` by name (copies on the CPU)."""
    return {n: p.detach().cpu().clone().contiguous()
            for n, p in model.named_parameters() if p.requires_grad}


@dataclass(frozen=True)
class LoraHeader:
    """What a LoRA file says about its base and adapters."""

    base: str
    base_sha256: str
    settings: LoraSettings
    info: dict[str, Any]


def save_lora(path: str | Path, model: nn.Module, base: str | Path, settings: LoraSettings,
              info: dict[str, Any] | None = None) -> Path:
    """Write the trainable tensors of ``model`` to ``path`` (safetensors, atomically) with the
    settings, ``info`` (e.g. epoch) and the base folder and its weights' SHA-256."""
    path = Path(path)
    header = {"base": str(Path(base).resolve()), "base_sha256": weights_sha256(base),
              "settings": asdict(settings), "info": info or {}}
    with atomic_path(path) as tmp:
        save_file(trainable_state(model), str(tmp), metadata={HEADER_KEY: json.dumps(header)})
    return path


def read_lora_header(path: str | Path) -> LoraHeader:
    """The header of a LoRA file, with clear errors for other files."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"LoRA file '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        data = json.loads(meta[HEADER_KEY])
        return LoraHeader(data["base"], data["base_sha256"],
                          LoraSettings.from_dict(data["settings"]), data.get("info", {}))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"'{path}' is not a SAM 2 LoRA file written by retinaseg "
                             f"({type(err).__name__}: {err})") from None


def load_lora(path: str | Path, base: str | Path | None = None, video: bool = False,
              device: str | torch.device = "cpu") -> nn.Module:
    """Load the base model folder (``base``, else the one the file names), check that its
    weights have the recorded SHA-256, add the adapters and load the trainable tensors.

    Returns the model in eval mode. Raises ModelLoadError when the base differs.
    """
    header = read_lora_header(path)
    base = Path(base) if base is not None else Path(header.base)
    digest = weights_sha256(base)
    if digest != header.base_sha256:
        raise ModelLoadError(
            f"LoRA file '{path}' was trained on base weights with SHA-256 "
            f"{header.base_sha256[:12]}…, but '{base}' has {digest[:12]}…; give the base "
            "model folder it was trained on")
    model = apply_lora(load_sam2(base, video=video), header.settings)
    state = load_file(str(path))
    expected = set(trainable_state(model))
    if set(state) != expected:
        odd = sorted(set(state) ^ expected)
        raise ModelLoadError(f"LoRA file '{path}' does not fit its settings: e.g. '{odd[0]}'")
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


LORA_FILE = "best_lora.safetensors"
"""The LoRA file a SAM 2 training run writes into its run folder."""


def load_model(path: str | Path, video: bool = False,
               device: str | torch.device = "cpu") -> nn.Module:
    """A SAM 2 model from any of: a model folder (``sam2 init`` / ``sam2 convert``), a LoRA
    file, or a training run folder holding ``best_lora.safetensors`` (its base is the folder
    the file names, SHA-256 checked). Image model, or the video model with ``video``."""
    p = Path(path)
    if p.is_file():
        return load_lora(p, video=video, device=device)
    if p.is_dir() and (p / LORA_FILE).is_file() and not (p / "config.json").is_file():
        return load_lora(p / LORA_FILE, video=video, device=device)
    return load_sam2(p, video=video, device=device)

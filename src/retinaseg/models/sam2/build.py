"""Build the registered ``sam2`` model: a size, optional weights, optional LoRA (reference §7.2).

Without ``weights`` the model has random weights (tests, speed checks); with them, the folder's
size must be the one asked for, so that a config cannot silently train another model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from retinaseg.errors import ConfigError
from retinaseg.models.sam2.deps import require_sam_extras

require_sam_extras()

from transformers import Sam2Model, Sam2VideoModel  # noqa: E402

from retinaseg.models.sam2.config import check_size, image_config, size_of, video_config  # noqa: E402
from retinaseg.models.sam2.lora import LoraSettings, apply_lora  # noqa: E402
from retinaseg.models.sam2.weights import load_sam2, read_config  # noqa: E402


def lora_settings(lora: bool | dict[str, Any] | LoraSettings) -> LoraSettings | None:
    """``True``: the seed's LoRA; a dict: those settings; ``False``: no LoRA."""
    if isinstance(lora, LoraSettings):
        return lora
    if lora is True:
        return LoraSettings()
    if lora is False or lora is None:
        return None
    if isinstance(lora, dict):
        return LoraSettings.from_dict(lora)
    raise ConfigError(f"lora must be true, false or a mapping of settings, got {lora!r}")


def build_sam2(size: str = "tiny", weights: str | Path | None = None, video: bool = False,
               lora: bool | dict[str, Any] | LoraSettings = True, seed: int = 0) -> nn.Module:
    """A SAM 2 model (``Sam2Model``, or ``Sam2VideoModel`` with ``video``) of ``size``, from
    ``weights`` (a model folder) or random (``seed``), with LoRA unless ``lora`` is False."""
    check_size(size)
    settings = lora_settings(lora)
    if weights is not None:
        found = size_of(read_config(weights))
        if found != size:
            raise ConfigError(f"SAM 2 weights '{weights}' are size '{found}', but the config "
                              f"asks for size '{size}'")
        model = load_sam2(weights, video=video)
    else:
        config = video_config(size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Sam2VideoModel(config) if video else Sam2Model(image_config(config))
        model.eval()
    return apply_lora(model, settings) if settings else model

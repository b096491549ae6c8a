"""SAM 2 (Hiera) for OCTA: interactive prompting and SAM-OCTA2 fine-tuning (reference §7.2).

Built on Hugging Face ``transformers`` (``Sam2Model``, ``Sam2VideoModel``) and ``peft`` (LoRA),
the optional ``sam`` extra (``pip install 'retinaseg[sam]'``). Importing this package (which
``import retinaseg.models`` does, to register ``sam2``) imports neither; the names below load
their module on first use, and a missing extra is one clear
:class:`~retinaseg.errors.MissingDependencyError`.

Modules, in the order of the data flow: :mod:`.config` (sizes), :mod:`.keymap` and
:mod:`.weights` (model folders: random init, conversion of official checkpoints, loading),
:mod:`.lora`, :mod:`.build` (the registered model), :mod:`.preprocess` (frames onto the
1024×1024 canvas and back), :mod:`.predictor` (prompting with cached image embeddings),
:mod:`.footprint` (GPU memory estimate).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from torch import nn

from retinaseg.errors import ConfigError
from retinaseg.models.sam2.deps import require_sam_extras
from retinaseg.registry import MODELS

_EXPORTS = {
    "SIZES": "config",
    "video_config": "config",
    "init_weights": "weights",
    "convert_checkpoint": "weights",
    "load_sam2": "weights",
    "weights_sha256": "weights",
    "LoraSettings": "lora",
    "apply_lora": "lora",
    "trainable_state": "lora",
    "parameter_counts": "lora",
    "save_lora": "lora",
    "load_lora": "lora",
    "load_model": "lora",
    "build_sam2": "build",
    "Sam2Prompter": "predictor",
    "PromptResult": "predictor",
    "check_prompt": "predictor",
    "gpu_memory_estimate": "footprint",
    "MemoryEstimate": "footprint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load the module of a public name on first use (so that transformers loads lazily)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_sam_extras()
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)


@MODELS.register("sam2")
def sam2(in_channels: int = 3, out_channels: int = 1, size: str = "tiny",
         weights: str | Path | None = None, video: bool = False,
         lora: bool | dict[str, Any] = True) -> nn.Module:
    """SAM 2 (Hiera), promptable with points and boxes, LoRA on its image encoder (ref. §7.2).

    ``size``: tiny, small, base_plus, large or test-tiny; ``weights``: a model folder (else
    random weights); ``lora``: True (the seed's settings), False, or a mapping of
    :class:`~retinaseg.models.sam2.lora.LoraSettings` fields.

    A promptable model, not a ``[B, C, H, W]`` → logits network: use it through
    :class:`~retinaseg.models.sam2.predictor.Sam2Prompter` or the SAM 2 training. Grey images
    (``in_channels`` 1) are repeated into three channels by its preprocessing.
    """
    if in_channels not in (1, 3) or out_channels != 1:
        raise ConfigError(f"sam2 takes 1 or 3 input channels and gives 1 output, got "
                          f"in_channels={in_channels}, out_channels={out_channels}")
    require_sam_extras()
    from retinaseg.models.sam2.build import build_sam2

    return build_sam2(size=size, weights=weights, video=video, lora=lora)

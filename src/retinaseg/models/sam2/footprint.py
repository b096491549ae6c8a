"""GPU memory of SAM 2 per number of frames, estimated from the model's dimensions.

Reference §7.2: SAM-OCTA2 trains LoRA on sequences of T = 4..8 frames of 1024×1024 and
propagates masks through layer sequences. What a GPU must hold, in values of ``b`` bytes
(4 for float32, 2 for bfloat16), with N = 64² embedding tokens of width D = 256 (the same for
every size), Hiera stage s of ``B_s`` blocks over ``N_s = (256 / 2^s)²`` tokens of width ``C_s``,
``P`` parameters of which ``P_t`` train (LoRA):

- weights: ``P·b``; training adds ``3·P_t·b`` (gradients and Adam's two moments);
- training, per frame t of a sequence (0 = the prompted frame), what autograd keeps:
  ``K_ENC·Σ_s B_s·N_s·C_s + K_FPN·F·D`` (image encoder: Hiera blocks, and patch embedding and
  FPN neck, F = 256² tokens of its finest level) + ``(K_DEC + K_MEM_ENC)·N·D`` (prompt
  encoder, mask decoder, memory encoder) + for t > 0 ``(K_MEM_Q + K_MEM_K·m_t)·N·D`` (memory
  attention over ``m_t = min(t, num_maskmem)`` memory frames);
- inference (propagation), per frame kept: its image embeddings ``K_KEEP·N·D`` + its memory
  ``2·N·M`` (features and position, M = 64); plus, once, the encoder's working set
  ``K_INF·max_s N_s·C_s + K_INF_FPN·F·D`` and the memory attention's ``2·m·N·D``.

``memory=False`` leaves out the memory parts (the single-image model, frames independent).

Where the constants come from. ``K_ENC`` = 11.7 and ``K_FPN`` = 10.4 are a least-squares fit
to the peak GPU memory of LoRA training steps of the image model on 1, 4 and 8 frames for all
four sizes (H200, PyTorch 2.11, float32; ``benchmarks/results/sam2_gpu.md``): the fit is within
1 % per frame for tiny, small and large and 3 % for base_plus. ``K_DEC`` = 19 (prompt encoder and
mask decoder), ``K_MEM_ENC`` = 29 (memory encoder) and the memory attention's 67 + 17.5 per
memory frame were counted with ``torch.autograd.graph.saved_tensors_hooks`` on the CPU for
``tiny`` with fused attention (no attention matrix kept, as on a GPU); they are not checked on
a GPU. ``K_KEEP`` = 2.6, ``K_INF`` = 20 and ``K_INF_FPN`` = 8 are fitted to the peak GPU
memory of encoding 8 and 64 frames one by one without gradients, keeping their embeddings
(within 2 % for all four sizes). A CUDA context and allocator slack add ``overhead_gib``. Plan
with a margin of about 20 % for the parts not measured on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from retinaseg.errors import OptionError
from retinaseg.models.sam2.deps import require_sam_extras
from retinaseg.models.sam2.preprocess import IMAGE_SIZE

require_sam_extras()

from transformers import Sam2Model, Sam2VideoModel  # noqa: E402

from retinaseg.models.sam2.config import (  # noqa: E402
    HIERA,
    check_size,
    image_config,
    video_config,
)
from retinaseg.models.sam2.lora import LoraSettings, apply_lora, parameter_counts  # noqa: E402

K_ENC = 11.7
K_FPN = 10.4
K_DEC = 19.0
K_MEM_ENC = 29.0
K_MEM_Q = 67.0
K_MEM_K = 17.5
K_KEEP = 2.6
K_INF = 20.0
K_INF_FPN = 8.0
GIB = 2.0**30


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated GPU memory (GiB) of a SAM 2 size for ``frames`` frames × ``batch``."""

    size: str
    frames: int
    batch: int
    training: bool
    parameters: int
    trainable: int
    weights_gib: float
    optimizer_gib: float
    activations_gib: float
    overhead_gib: float

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.optimizer_gib + self.activations_gib + self.overhead_gib


_COUNTS: dict[tuple[str, LoraSettings, bool], tuple[int, int]] = {}


def _counts(size: str, lora: LoraSettings, video: bool) -> tuple[int, int]:
    """(trainable, total) parameters of the video (or image) model of ``size`` with ``lora``."""
    key = (size, lora, video)
    if key not in _COUNTS:
        config = video_config(size)
        with torch.device("meta"):
            model = Sam2VideoModel(config) if video else Sam2Model(image_config(config))
            _COUNTS[key] = parameter_counts(apply_lora(model, lora))
    return _COUNTS[key]


def encoder_token_channels(size: str, image_size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(Σ_s B_s·N_s·C_s, max_s N_s·C_s) of the Hiera trunk of ``size`` (patch stride 4, then
    ×2 pooling per stage)."""
    trunk = HIERA[check_size(size)]
    side = image_size // 4
    total, widest = 0, 0
    for blocks, width in zip(trunk["blocks_per_stage"], trunk["embed_dim_per_stage"]):
        total += blocks * side * side * width
        widest = max(widest, side * side * width)
        side //= 2
    return total, widest


def gpu_memory_estimate(size: str, frames: int, batch: int = 1, *, training: bool = True,
                        memory: bool = True, lora: LoraSettings | None = None,
                        bytes_per_value: int = 4, overhead_gib: float = 0.5) -> MemoryEstimate:
    """Estimated GPU memory for ``frames`` 1024×1024 frames (× ``batch`` sequences) of SAM 2
    ``size``: LoRA training (``training``) or propagation; see the module docstring.

    >>> round(gpu_memory_estimate("tiny", 8).total_gib)  # doctest: +SKIP
    16
    """
    if frames < 1 or batch < 1:
        raise OptionError(f"frames and batch must be at least 1, got {frames} and {batch}")
    config = video_config(size)
    trainable, total = _counts(size, lora or LoraSettings(), memory)
    n, finest = (IMAGE_SIZE // 16) ** 2, (IMAGE_SIZE // 4) ** 2
    d = config.memory_attention_hidden_size
    enc, widest = encoder_token_channels(size)
    values = 0.0
    if training:
        for t in range(frames):
            values += K_ENC * enc + K_FPN * finest * d + K_DEC * n * d
            if memory:
                values += K_MEM_ENC * n * d
                m = min(t, config.num_maskmem)
                values += (K_MEM_Q + K_MEM_K * m) * n * d if t > 0 else 0.0
    else:
        values = frames * K_KEEP * n * d + K_INF * widest + K_INF_FPN * finest * d
        if memory:
            values += frames * 2 * n * config.memory_encoder_output_channels
            values += 2 * min(frames - 1, config.num_maskmem) * n * d
    b = bytes_per_value / GIB
    return MemoryEstimate(size, frames, batch, training, total, trainable if training else 0,
                          total * b, 3 * trainable * b if training else 0.0,
                          batch * values * b, overhead_gib)

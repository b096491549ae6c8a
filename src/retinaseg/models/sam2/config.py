"""SAM 2 sizes as transformers configs (reference §7.2: SAM-OCTA2 on the Hiera image encoder).

The four official sizes (``tiny``, ``small``, ``base_plus``, ``large``) differ only in the Hiera
trunk; the dimensions are those of the official ``sam2.1_hiera_*.yaml`` configs, as transformers'
own conversion script sets them. ``test-tiny`` is the same architecture family shrunk to about
1.2 M parameters (4.7 MB; 0.7 M without the memory) for tests and CI: a narrow four-stage
Hiera, a 128-wide neck, prompt encoder and one-layer mask decoder, and one memory-attention
layer over 64-wide memories (the narrowest that transformers' video model propagates with),
still taking 1024×1024 frames.

Version ``2.1`` (the default) adds the temporal encoding of object pointers and the occlusion
embedding to version ``2``; both load into the same classes.
"""

from __future__ import annotations

from typing import Any

from retinaseg.errors import ConfigError
from retinaseg.models.sam2.deps import require_sam_extras
from retinaseg.models.sam2.preprocess import IMAGE_SIZE

require_sam_extras()

from transformers import (  # noqa: E402
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2VideoConfig,
    Sam2VideoMaskDecoderConfig,
    Sam2VideoPromptEncoderConfig,
    Sam2VisionConfig,
)

VERSIONS = ("2", "2.1")

HIERA: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=96, embed_dim_per_stage=[96, 192, 384, 768],
                 num_attention_heads_per_stage=[1, 2, 4, 8], blocks_per_stage=[1, 2, 7, 2],
                 global_attention_blocks=[5, 7, 9], window_size_per_stage=[8, 4, 14, 7],
                 window_positional_embedding_background_size=[7, 7]),
    "small": dict(hidden_size=96, embed_dim_per_stage=[96, 192, 384, 768],
                  num_attention_heads_per_stage=[1, 2, 4, 8], blocks_per_stage=[1, 2, 11, 2],
                  global_attention_blocks=[7, 10, 13], window_size_per_stage=[8, 4, 14, 7],
                  window_positional_embedding_background_size=[7, 7]),
    "base_plus": dict(hidden_size=112, embed_dim_per_stage=[112, 224, 448, 896],
                      num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 3, 16, 3],
                      global_attention_blocks=[12, 16, 20], window_size_per_stage=[8, 4, 14, 7],
                      window_positional_embedding_background_size=[14, 14]),
    "large": dict(hidden_size=144, embed_dim_per_stage=[144, 288, 576, 1152],
                  num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 6, 36, 4],
                  global_attention_blocks=[23, 33, 43], window_size_per_stage=[8, 4, 16, 8],
                  window_positional_embedding_background_size=[7, 7]),
    "test-tiny": dict(hidden_size=16, embed_dim_per_stage=[16, 32, 64, 128],
                      num_attention_heads_per_stage=[1, 1, 2, 2], blocks_per_stage=[1, 1, 2, 1],
                      global_attention_blocks=[3], window_size_per_stage=[8, 4, 14, 7],
                      window_positional_embedding_background_size=[7, 7]),
}
"""Hiera trunk of each size (``Sam2HieraDetConfig`` fields)."""

SIZES = tuple(HIERA)

# test-tiny: neck, prompt encoder, mask decoder and memory attention width. 128 is the least
# that propagation through frames allows in transformers' Sam2VideoModel: its memory attention
# takes memories 64 wide (kv_in_dim=64, fixed), and object pointers (this width) are only
# reshaped into memory tokens when they are wider than the memory (split into width/64 tokens).
_TEST_WIDTH = 128
_TEST_MEM = 64  # memory_encoder_output_channels: must be 64 (see above)
_TEST_TINY: dict[str, Any] = dict(
    memory_attention_hidden_size=_TEST_WIDTH, memory_attention_feed_forward_hidden_size=64,
    memory_attention_num_layers=1,
    memory_encoder_hidden_size=_TEST_WIDTH, memory_encoder_output_channels=_TEST_MEM,
    mask_downsampler_embed_dim=_TEST_WIDTH, memory_fuser_embed_dim=_TEST_WIDTH,
    memory_fuser_intermediate_dim=64,
)


def check_size(size: str) -> str:
    """``size`` if it is known; else a ConfigError listing the sizes."""
    if size not in HIERA:
        raise ConfigError(f"unknown SAM 2 size '{size}'; known: {', '.join(SIZES)}")
    return size


def video_config(size: str, version: str = "2.1") -> Sam2VideoConfig:
    """The full SAM 2 config (image encoder, prompt encoder, mask decoder and memory) of
    ``size``; this is what ``config.json`` of a model folder holds."""
    check_size(size)
    if version not in VERSIONS:
        raise ConfigError(f"unknown SAM 2 version '{version}'; known: {', '.join(VERSIONS)}")
    trunk = Sam2HieraDetConfig(**HIERA[size])
    vision: dict[str, Any] = dict(backbone_config=trunk,
                                  backbone_channel_list=trunk.embed_dim_per_stage[::-1])
    extra: dict[str, Any] = {}
    if size == "test-tiny":
        vision["fpn_hidden_size"] = _TEST_WIDTH
        extra = dict(_TEST_TINY,
                     prompt_encoder_config=dict(hidden_size=_TEST_WIDTH),
                     mask_decoder_config=dict(hidden_size=_TEST_WIDTH, mlp_dim=64,
                                              num_hidden_layers=1, iou_head_hidden_dim=32))
    new = version == "2.1"
    return video_config_from_dict(dict(
        vision_config=vision, image_size=IMAGE_SIZE,
        enable_temporal_pos_encoding_for_object_pointers=new,
        enable_occlusion_spatial_embedding=new, **extra))


_VIDEO_PARTS = {"vision_config": Sam2VisionConfig,
                "prompt_encoder_config": Sam2VideoPromptEncoderConfig,
                "mask_decoder_config": Sam2VideoMaskDecoderConfig}


def video_config_from_dict(data: dict[str, Any]) -> Sam2VideoConfig:
    """``Sam2VideoConfig`` from plain data (e.g. ``config.json``). The parts are built first:
    some transformers 5 releases build the mask decoder's part from a dict with the wrong
    class."""
    data = dict(data)
    for key, cls in _VIDEO_PARTS.items():
        if isinstance(data.get(key), dict):
            data[key] = cls.from_dict(data[key])
    return Sam2VideoConfig.from_dict(data)


def image_config(config: Sam2VideoConfig | Sam2Config) -> Sam2Config:
    """The single-image model's config (no memory) with the same encoder and decoder."""
    if isinstance(config, Sam2Config):
        return config
    return Sam2Config(vision_config=config.vision_config.to_dict(),
                      prompt_encoder_config=config.prompt_encoder_config.to_dict(),
                      mask_decoder_config=config.mask_decoder_config.to_dict())


def size_from_dims(embed_dim: int, n_blocks: int) -> str | None:
    """The size whose Hiera has this first-stage width and block count, or None."""
    for size, trunk in HIERA.items():
        if trunk["hidden_size"] == embed_dim and sum(trunk["blocks_per_stage"]) == n_blocks:
            return size
    return None


def size_of(config: Sam2VideoConfig | Sam2Config) -> str | None:
    """The size of a config (None for an architecture that is none of :data:`SIZES`)."""
    trunk = config.vision_config.backbone_config
    return size_from_dims(trunk.hidden_size, sum(trunk.blocks_per_stage))

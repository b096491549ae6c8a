"""Parameter names of official SAM 2 / 2.1 checkpoints ↔ transformers' ``Sam2VideoModel``.

Reference §7.2 (SAM-OCTA2) fine-tunes the official SAM 2 weights. Official checkpoints
(``sam2.1_hiera_*.pt``) hold ``{"model": state_dict}`` with the module names of Meta's code;
transformers renames modules. This table is ours, written after reading transformers' conversion
script (``convert_sam2_video_to_hf.py``), and is applied in both directions: official → ours when
converting, ours → official in the tests that fabricate an official checkpoint.

A rule is a pair of name prefixes ``(official, transformers)``; ``{n}`` stands for a number and
``{a}`` for one name part. A name is renamed by the first rule whose prefix matches it whole or
up to a ``.``; the rest (``.weight``, ``.bias``) is kept. Two names have no rule: the four
official ``point_embeddings.{i}.weight`` rows become one ``point_embed.weight`` [4, C], and the
prompt encoder's Gaussian matrix is stored twice by transformers (also as
``shared_image_embedding.positional_embedding``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_PE = "sam_prompt_encoder"
_MD = "sam_mask_decoder"
_ENC = "image_encoder.trunk"
_BB = "vision_encoder.backbone"
_TF = f"{_MD}.transformer"  # the decoder's two-way transformer, official and ours
_TF2 = "mask_decoder.transformer"
_FU = "memory_encoder.fuser.layers.{n}"
_FU2 = "memory_encoder.memory_fuser.layers.{n}"
_MLP3 = [("layers.0", "proj_in"), ("layers.1", "layers.0"), ("layers.2", "proj_out")]
"""Three-layer MLPs: transformers names the first and last layers apart."""

RULES: list[tuple[str, str]] = [
    # --- image encoder (Hiera trunk + FPN neck)
    (f"{_ENC}.patch_embed.proj", f"{_BB}.patch_embed.projection"),
    (f"{_ENC}.blocks.{{n}}.norm{{n}}", f"{_BB}.blocks.{{n}}.layer_norm{{n}}"),
    (f"{_ENC}.blocks.{{n}}.mlp.layers.0", f"{_BB}.blocks.{{n}}.mlp.proj_in"),
    (f"{_ENC}.blocks.{{n}}.mlp.layers.1", f"{_BB}.blocks.{{n}}.mlp.proj_out"),
    (_ENC, _BB),  # pos_embed, pos_embed_window, attn.qkv, attn.proj, proj
    ("image_encoder.neck.convs.{n}.conv", "vision_encoder.neck.convs.{n}"),
    # --- prompt encoder
    (f"{_PE}.pe_layer.positional_encoding_gaussian_matrix",
     "prompt_encoder.shared_embedding.positional_embedding"),
    (f"{_PE}.mask_downscaling.0", "prompt_encoder.mask_embed.conv1"),
    (f"{_PE}.mask_downscaling.1", "prompt_encoder.mask_embed.layer_norm1"),
    (f"{_PE}.mask_downscaling.3", "prompt_encoder.mask_embed.conv2"),
    (f"{_PE}.mask_downscaling.4", "prompt_encoder.mask_embed.layer_norm2"),
    (f"{_PE}.mask_downscaling.6", "prompt_encoder.mask_embed.conv3"),
    (_PE, "prompt_encoder"),  # not_a_point_embed, no_mask_embed
    # --- mask decoder
    (f"{_MD}.output_upscaling.0", "mask_decoder.upscale_conv1"),
    (f"{_MD}.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    (f"{_MD}.output_upscaling.3", "mask_decoder.upscale_conv2"),
    *[(f"{_MD}.output_hypernetworks_mlps.{{n}}.{a}",
       f"mask_decoder.output_hypernetworks_mlps.{{n}}.{b}") for a, b in _MLP3],
    *[(f"{_MD}.iou_prediction_head.{a}", f"mask_decoder.iou_prediction_head.{b}")
      for a, b in _MLP3],
    *[(f"{_MD}.pred_obj_score_head.{a}", f"mask_decoder.pred_obj_score_head.{b}")
      for a, b in _MLP3],
    (f"{_TF}.layers.{{n}}.mlp.layers.0", f"{_TF2}.layers.{{n}}.mlp.proj_in"),
    (f"{_TF}.layers.{{n}}.mlp.layers.1", f"{_TF2}.layers.{{n}}.mlp.proj_out"),
    (f"{_TF}.layers.{{n}}.norm{{n}}", f"{_TF2}.layers.{{n}}.layer_norm{{n}}"),
    (f"{_TF}.layers.{{n}}.{{a}}.out_proj", f"{_TF2}.layers.{{n}}.{{a}}.o_proj"),
    (f"{_TF}.final_attn_token_to_image.out_proj", f"{_TF2}.final_attn_token_to_image.o_proj"),
    (f"{_TF}.norm_final_attn", f"{_TF2}.layer_norm_final_attn"),
    (_MD, "mask_decoder"),  # tokens, conv_s0/1, attention q/k/v projections
    # --- memory attention
    ("memory_attention.layers.{n}.norm{n}", "memory_attention.layers.{n}.layer_norm{n}"),
    ("memory_attention.layers.{n}.{a}.out_proj", "memory_attention.layers.{n}.{a}.o_proj"),
    ("memory_attention.norm", "memory_attention.layer_norm"),
    ("memory_attention", "memory_attention"),  # q/k/v projections, linear1, linear2
    # --- memory encoder; its mask downsampler is a Sequential of (conv, norm, GELU) × 4 and a
    # last conv (total stride 16)
    *[(f"memory_encoder.mask_downsampler.encoder.{3 * i + j}",
       f"memory_encoder.mask_downsampler.layers.{i}.{part}")
      for i in range(4) for j, part in ((0, "conv"), (1, "layer_norm"))],
    ("memory_encoder.mask_downsampler.encoder.12", "memory_encoder.mask_downsampler.final_conv"),
    ("memory_encoder.pix_feat_proj", "memory_encoder.feature_projection"),
    (f"{_FU}.dwconv", f"{_FU2}.depthwise_conv"),
    (f"{_FU}.norm", f"{_FU2}.layer_norm"),
    (f"{_FU}.pwconv{{n}}", f"{_FU2}.pointwise_conv{{n}}"),
    (f"{_FU}.gamma", f"{_FU2}.scale"),
    ("memory_encoder.out_proj", "memory_encoder.projection"),
    # --- memory and object-pointer parameters of the video model
    ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
    ("no_mem_embed", "no_memory_embedding"),
    ("no_mem_pos_enc", "no_memory_positional_encoding"),
    ("no_obj_ptr", "no_object_pointer"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    *[(f"obj_ptr_proj.{a}", f"object_pointer_proj.{b}") for a, b in _MLP3],
    ("obj_ptr_tpos_proj", "temporal_positional_encoding_projection_layer"),
    ("mask_downsample", "mask_downsample"),
]
"""(official prefix, transformers prefix), most specific first."""

POINT_EMBEDDINGS = "point_embed.weight"
OFFICIAL_POINT_EMBEDDING = f"{_PE}.point_embeddings.{{}}.weight"
GAUSSIAN = "prompt_encoder.shared_embedding.positional_embedding"
GAUSSIAN_COPY = "shared_image_embedding.positional_embedding"


def _compile(template: str) -> tuple[re.Pattern[str], list[str]]:
    """A regex matching ``template`` whole or up to a ``.``, and its placeholders in order."""
    kinds: list[str] = []
    parts = re.split(r"(\{[na]\})", template)
    pattern = ""
    for part in parts:
        if part in ("{n}", "{a}"):
            kinds.append(part)
            pattern += r"(\d+)" if part == "{n}" else r"([A-Za-z_][A-Za-z0-9_]*)"
        else:
            pattern += re.escape(part)
    return re.compile(pattern + r"(?=\.|$)"), kinds


def _fill(template: str, values: tuple[str, ...]) -> str:
    it = iter(values)
    return re.sub(r"\{[na]\}", lambda _: next(it), template)


for _a, _b in RULES:  # a rule must carry the same placeholders on both sides
    assert _compile(_a)[1] == _compile(_b)[1], (_a, _b)

_FORWARD = [(_compile(a)[0], b) for a, b in RULES]
_BACKWARD = [(_compile(b)[0], a) for a, b in RULES]


def _rename(name: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, target in rules:
        m = pattern.match(name)
        if m:
            return _fill(target, m.groups()) + name[m.end():]
    return None


def official_name(name: str) -> str | None:
    """The official name of a transformers parameter name (None: no official counterpart)."""
    return _rename(name, _BACKWARD)


def transformers_name(name: str) -> str | None:
    """The transformers name of an official parameter name (None: not a SAM 2 name)."""
    return _rename(name, _FORWARD)


def official_to_transformers(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an official state dict; returns ``(renamed, names without a rule)``."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    rows: dict[int, torch.Tensor] = {}
    point = re.compile(re.escape(OFFICIAL_POINT_EMBEDDING).replace(r"\{\}", r"(\d+)") + "$")
    for name, value in state.items():
        if m := point.match(name):
            rows[int(m.group(1))] = value
        elif (new := transformers_name(name)) is not None:
            out[new] = value
        else:
            unknown.append(name)
    if rows:
        out[f"prompt_encoder.{POINT_EMBEDDINGS}"] = torch.cat([rows[i] for i in sorted(rows)])
    if GAUSSIAN in out:
        out[GAUSSIAN_COPY] = out[GAUSSIAN].clone()
    return out, unknown


def transformers_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`official_to_transformers` (the copy of the Gaussian matrix is
    dropped); a name without a rule is a KeyError."""
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name == GAUSSIAN_COPY:
            continue
        if name == f"prompt_encoder.{POINT_EMBEDDINGS}":
            for i, row in enumerate(value):
                out[OFFICIAL_POINT_EMBEDDING.format(i)] = row[None].clone()
            continue
        old = official_name(name)
        if old is None:
            raise KeyError(f"no official name for '{name}'")
        out[old] = value
    return out

"""SAM 2 (reference §7.2): model folders, the official key mapping, LoRA, frames and prompting.

Everything runs on ``test-tiny`` (the SAM 2 architecture at about 0.7 M parameters, 1.2 M with
the video memory) with random weights that go through the same writing and loading code as a
converted official checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from retinaseg.errors import ConfigError, MissingDependencyError, ModelLoadError, OptionError
from retinaseg.models import build_model
from retinaseg.models.sam2 import keymap
from retinaseg.models.sam2.config import SIZES, size_of, video_config
from retinaseg.models.sam2.footprint import gpu_memory_estimate
from retinaseg.models.sam2.lora import (
    LoraSettings,
    apply_lora,
    load_lora,
    parameter_counts,
    read_lora_header,
    save_lora,
    trainable_state,
)
from retinaseg.models.sam2.predictor import Sam2Prompter, check_prompt
from retinaseg.models.sam2.preprocess import (
    FrameGeometry,
    from_canvas,
    preprocess_image,
    scale_box,
    scale_points,
    to_canvas,
    to_unit_rgb,
)
from retinaseg.models.sam2.weights import (
    WEIGHTS_FILE,
    convert_checkpoint,
    init_weights,
    load_sam2,
    load_state,
    read_info,
    weights_sha256,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_weights("test-tiny", tmp_path_factory.mktemp("sam2") / "test-tiny")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 300×500 grey uint8 image with a bright disc around (x=350, y=120)."""
    yy, xx = np.mgrid[:300, :500]
    return np.where((xx - 350) ** 2 + (yy - 120) ** 2 < 30**2, 220, 30).astype(np.uint8)


# ---------------------------------------------------------------- model folders


def test_init_writes_a_folder_that_loads_back(folder: Path) -> None:
    info = read_info(folder)
    assert info is not None and (info.size, info.version) == ("test-tiny", "2.1")
    assert info.sha256 == weights_sha256(folder)
    assert (folder / WEIGHTS_FILE).stat().st_size < 5e6  # a few MB
    state = load_state(folder)
    image_model = load_sam2(folder)
    video_model = load_sam2(folder, video=True)
    assert type(image_model).__name__ == "Sam2Model"
    assert type(video_model).__name__ == "Sam2VideoModel"
    for model in (image_model, video_model):
        for name, value in model.state_dict().items():
            assert torch.equal(value, state[name]), name
    assert size_of(image_model.config) == "test-tiny"


KNOWN_PAIRS = [  # official name → transformers name, as transformers' conversion renames them
    ("image_encoder.trunk.blocks.3.attn.qkv.weight",
     "vision_encoder.backbone.blocks.3.attn.qkv.weight"),
    ("image_encoder.trunk.blocks.1.mlp.layers.1.bias",
     "vision_encoder.backbone.blocks.1.mlp.proj_out.bias"),
    ("image_encoder.neck.convs.2.conv.weight", "vision_encoder.neck.convs.2.weight"),
    ("sam_prompt_encoder.mask_downscaling.4.weight",
     "prompt_encoder.mask_embed.layer_norm2.weight"),
    ("sam_mask_decoder.iou_prediction_head.layers.1.weight",
     "mask_decoder.iou_prediction_head.layers.0.weight"),
    ("sam_mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.bias",
     "mask_decoder.transformer.layers.1.cross_attn_image_to_token.o_proj.bias"),
    ("sam_mask_decoder.transformer.norm_final_attn.weight",
     "mask_decoder.transformer.layer_norm_final_attn.weight"),
    ("memory_attention.layers.2.norm3.bias", "memory_attention.layers.2.layer_norm3.bias"),
    ("memory_encoder.mask_downsampler.encoder.10.weight",
     "memory_encoder.mask_downsampler.layers.3.layer_norm.weight"),
    ("memory_encoder.mask_downsampler.encoder.12.weight",
     "memory_encoder.mask_downsampler.final_conv.weight"),
    ("memory_encoder.fuser.layers.1.gamma", "memory_encoder.memory_fuser.layers.1.scale"),
    ("obj_ptr_tpos_proj.weight", "temporal_positional_encoding_projection_layer.weight"),
    ("obj_ptr_proj.layers.2.weight", "object_pointer_proj.proj_out.weight"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
]


@pytest.mark.parametrize(("official", "ours"), KNOWN_PAIRS)
def test_keymap_renames_official_names_both_ways(official: str, ours: str) -> None:
    assert keymap.transformers_name(official) == ours
    assert keymap.official_name(ours) == official


def _official_checkpoint(folder: Path, path: Path) -> dict[str, torch.Tensor]:
    """Write ``folder``'s weights under the official names as ``{"model": state}``."""
    official = keymap.transformers_to_official(load_state(folder))
    torch.save({"model": official}, path)
    return official


def test_convert_reads_an_official_checkpoint(folder: Path, tmp_path: Path) -> None:
    official = _official_checkpoint(folder, tmp_path / "sam2.1_hiera_test.pt")
    assert "sam_prompt_encoder.point_embeddings.3.weight" in official
    assert "shared_image_embedding.positional_embedding" not in official
    out = convert_checkpoint(tmp_path / "sam2.1_hiera_test.pt", tmp_path / "out", size="test-tiny")
    original, converted = load_state(folder), load_state(out)
    assert set(original) == set(converted)
    assert all(torch.equal(original[k], converted[k]) for k in original)
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (folder / "config.json").read_text())
    assert read_info(out).sha256 == read_info(folder).sha256


def test_convert_refuses_a_size_mismatch(folder: Path, tmp_path: Path) -> None:
    _official_checkpoint(folder, tmp_path / "ckpt.pt")
    with pytest.raises(ModelLoadError, match="size 'test-tiny', not 'tiny'"):
        convert_checkpoint(tmp_path / "ckpt.pt", tmp_path / "out", size="tiny")


class _RunsCode:
    def __reduce__(self):  # unpickling would call print: code, not tensors
        return (print, ("unpickled",))


def test_convert_refuses_a_pickle_that_needs_code(tmp_path: Path, capsys) -> None:
    torch.save({"model": {"x": torch.zeros(1)}, "evil": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError, match="need code to unpickle"):
        convert_checkpoint(tmp_path / "evil.pt", tmp_path / "out")
    assert "unpickled" not in capsys.readouterr().out
    with pytest.raises(ModelLoadError, match="does not exist"):
        convert_checkpoint(tmp_path / "missing.pt", tmp_path / "out")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        convert_checkpoint(tmp_path / "text.pt", tmp_path / "out")
    torch.save({"model": {"x": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="not a SAM 2 checkpoint"):
        convert_checkpoint(tmp_path / "other.pt", tmp_path / "out")


def test_load_refuses_weights_of_another_size(folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / WEIGHTS_FILE).write_bytes((folder / WEIGHTS_FILE).read_bytes())
    (bad / "config.json").write_text(video_config("tiny").to_json_string())
    with pytest.raises(ModelLoadError, match="do not fit size 'tiny'.*'test-tiny'.*another size"):
        load_sam2(bad)


def test_load_explains_bad_folders(folder: Path, tmp_path: Path) -> None:
    cases = {"missing": "does not exist", "empty": "holds no config.json",
             "badjson": "not readable JSON", "othermodel": "'bert' model, not SAM 2",
             "noweights": "holds no model.safetensors"}
    for name in cases:
        if name != "missing":
            (tmp_path / name).mkdir()
    (tmp_path / "badjson" / "config.json").write_text("{not json")
    (tmp_path / "othermodel" / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "noweights" / "config.json").write_text((folder / "config.json").read_text())
    for name, message in cases.items():
        with pytest.raises(ModelLoadError, match=message) as err:
            load_sam2(tmp_path / name)
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------- LoRA


def test_lora_trains_only_adapters_of_the_encoder_qkv(folder: Path) -> None:
    model = apply_lora(load_sam2(folder))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    n_blocks = len(model.vision_encoder.backbone.blocks)
    assert len(names) == 3 * n_blocks  # lora_A, lora_B and the qkv bias of every block
    assert all(".attn.qkv." in n for n in names)
    trainable, total = parameter_counts(model)
    lora_a = model.vision_encoder.backbone.blocks[0].attn.qkv.lora_A["default"].weight
    assert lora_a.shape[0] == 32 and 0 < trainable / total < 0.2
    decoder = apply_lora(load_sam2(folder), LoraSettings(rank=4, mask_decoder=True))
    assert any(n.startswith("mask_decoder.") for n in trainable_state(decoder))
    with pytest.raises(ConfigError, match="match no layer"):
        apply_lora(load_sam2(folder), LoraSettings(targets=("nonexistent",)))
    with pytest.raises(ConfigError, match="rank"):
        LoraSettings(rank=0)


def test_lora_file_holds_only_trainable_tensors_and_checks_its_base(folder: Path,
                                                                   tmp_path: Path) -> None:
    settings = LoraSettings(rank=8)
    model = apply_lora(load_sam2(folder), settings)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    path = save_lora(tmp_path / "lora.safetensors", model, folder, settings, {"epoch": 3})
    header = read_lora_header(path)
    assert header.base_sha256 == weights_sha256(folder) and header.settings == settings
    assert header.info == {"epoch": 3}
    stored = load_state_file(path)
    assert set(stored) == set(trainable_state(model))
    assert sum(v.numel() for v in stored.values()) == parameter_counts(model)[0]
    again = load_lora(path)
    for name, value in trainable_state(model).items():
        assert torch.equal(again.state_dict()[name], value)
    other = init_weights("test-tiny", tmp_path / "other", seed=1)
    with pytest.raises(ModelLoadError, match="SHA-256"):
        load_lora(path, base=other)


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# ---------------------------------------------------------------- frames


def test_geometry_and_coordinates_of_a_non_square_image(image: np.ndarray) -> None:
    geom = FrameGeometry(300, 500)
    assert geom.scale == pytest.approx(1024 / 500) and geom.resized == (614, 1024)
    pixels, geom2 = preprocess_image(image)
    assert geom2 == geom and pixels.shape == (1, 3, 1024, 1024)
    assert torch.all(pixels[..., 614:, :] == 0)  # padding is zero after normalisation
    bright = pixels[0, 0] > 0
    rows, cols = torch.nonzero(bright, as_tuple=True)
    x, y = scale_points([[350, 120]], geom)[0]
    assert abs(cols.float().mean() - x) < 1.5 and abs(rows.float().mean() - y) < 1.5
    np.testing.assert_allclose(scale_box([0, 0, 499, 299], geom), [0, 0, 499 * 2.048, 299 * 2.048],
                               rtol=1e-6)
    assert to_unit_rgb(image).shape == (3, 300, 500)
    assert float(to_unit_rgb(np.full((2, 2, 3), 255, np.uint8)).min()) == 1.0


def test_masks_come_back_to_the_image_exactly(image: np.ndarray) -> None:
    geom = FrameGeometry(300, 500)
    ramp = torch.from_numpy(np.add.outer(np.arange(300) / 300, np.arange(500) / 500)).float()
    canvas = to_canvas(ramp, geom)
    canvas[..., 614:, :] = 1e3  # whatever lies in the padding is cropped away
    back = from_canvas(canvas, geom)
    assert back.shape == (300, 500)
    assert float((back - ramp)[2:-2, 2:-2].abs().max()) < 0.01
    mask = torch.from_numpy(image > 100).float()
    low = to_canvas(mask, geom, mode="nearest")[None, None]
    low = torch.nn.functional.interpolate(low, size=(256, 256), mode="area")[0, 0]
    recovered = from_canvas(low, geom) > 0.5
    assert (recovered != mask.bool()).float().mean() < 0.01  # a 4× coarser mask, same place


# ---------------------------------------------------------------- prompting


def test_prompter_encodes_each_image_once_and_refines(folder: Path, image: np.ndarray) -> None:
    prompter = Sam2Prompter(folder)
    calls = []
    encode = prompter.model.get_image_embeddings
    prompter.model.get_image_embeddings = lambda x: calls.append(1) or encode(x)
    prompter.set_image(image)
    first = prompter.predict([[350, 120]], [1])
    assert first.prob.shape == (300, 500) and first.low_res_logits.shape == (256, 256)
    assert 0 <= first.prob.min() and first.prob.max() <= 1
    prompter.set_image(image.copy())  # same content: cached
    second = prompter.predict([[350, 120], [50, 250]], [1, 0], mask_input=first.low_res_logits)
    boxed = prompter.predict(box=[300, 70, 400, 170])
    assert len(calls) == 1
    assert second.prob.shape == boxed.prob.shape == (300, 500)
    assert not np.allclose(second.prob, first.prob)


def test_prompts_are_checked(folder: Path) -> None:
    with pytest.raises(OptionError, match="outside the 500×300 image"):
        check_prompt([[500, 10]], [1], None, 300, 500)
    with pytest.raises(OptionError, match="at least one point or a box"):
        check_prompt(None, None, None, 300, 500)
    with pytest.raises(OptionError, match="1 \\(object\\) or 0"):
        check_prompt([[5, 5]], [2], None, 300, 500)
    with pytest.raises(OptionError, match="x0 < x1"):
        check_prompt(None, None, [50, 10, 20, 30], 300, 500)
    prompt = check_prompt([[499, 299]], None, [0, 0, 10, 10], 300, 500)
    assert prompt.labels.tolist() == [1]
    prompter = Sam2Prompter(load_sam2(folder))
    with pytest.raises(OptionError, match="set_image"):
        prompter.predict([[1, 1]], [1])
    with pytest.raises(ModelLoadError, match="does not exist"):
        Sam2Prompter(folder.parent / "nowhere")
    with pytest.raises(OptionError, match="single-image"):
        Sam2Prompter(load_sam2(folder, video=True))


# ---------------------------------------------------------------- registry, extras, footprint


def test_registry_builds_sam2_with_lora(folder: Path) -> None:
    model = build_model("sam2", 1, size="test-tiny", weights=str(folder),
                        lora={"rank": 4, "targets": ["qkv", "proj"]})
    names = list(trainable_state(model))
    assert any(".attn.proj." in n for n in names) and any(".attn.qkv." in n for n in names)
    with pytest.raises(ConfigError, match="size 'test-tiny'.*'tiny'"):
        build_model("sam2", 3, size="tiny", weights=str(folder))
    with pytest.raises(ConfigError, match="unknown SAM 2 size"):
        build_model("sam2", 3, size="huge")
    assert SIZES == ("tiny", "small", "base_plus", "large", "test-tiny")


def test_missing_extra_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'retinaseg\[sam\]'"):
        build_model("sam2", 3, size="test-tiny")


def test_gpu_memory_estimate_grows_with_frames_and_size() -> None:
    small = [gpu_memory_estimate("tiny", t).total_gib for t in (1, 4, 8)]
    assert small == sorted(small) and small[0] > 0
    assert gpu_memory_estimate("large", 4).total_gib > gpu_memory_estimate("tiny", 4).total_gib
    infer = gpu_memory_estimate("tiny", 8, training=False)
    assert infer.optimizer_gib == 0 and infer.total_gib < small[-1]
    with pytest.raises(OptionError):
        gpu_memory_estimate("tiny", 0)

"""SAM 2 LoRA training on layer sequences as video (reference §7.2): clips, augmentation,
config checks, and a test-tiny run end to end on a fake SAM-OCTA2 tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from retinaseg.errors import ConfigError  # noqa: E402
from retinaseg.training import train  # noqa: E402
from retinaseg.training.config import validate_config  # noqa: E402
from retinaseg.training.sam2 import SequenceSettings  # noqa: E402
from retinaseg.training.sam2_layers import augment_clip, draw_clip, val_positions  # noqa: E402

SIDE = 48


def test_draw_clip_follows_the_seed_recipe() -> None:
    s = SequenceSettings()
    rng = np.random.default_rng(0)
    lengths, prompt_sets = set(), set()
    for _ in range(400):
        pos, prompted = draw_clip(10, s, rng)
        assert pos == sorted(set(pos)) and 0 <= pos[0] and pos[-1] <= 9
        assert 4 <= len(pos) <= 8
        t = len(pos)
        assert prompted in ([0], [0, t - 1], [0, t // 2, t - 1])
        lengths.add(len(pos))
        prompt_sets.add(len(prompted))
    assert lengths == {4, 5, 6, 7, 8} and prompt_sets == {1, 2, 3}
    # a short sequence caps T at its length; the same seed gives the same clip
    assert len(draw_clip(3, s, np.random.default_rng(1))[0]) == 3
    assert draw_clip(10, s, np.random.default_rng(5)) == draw_clip(10, s, np.random.default_rng(5))
    assert val_positions(10, 4) == [0, 3, 6, 9] and val_positions(2, 4) == [0, 1]


def test_augment_clip_moves_frames_and_masks_together() -> None:
    frames = np.zeros((3, 20, 20), np.float32)
    frames[:, 5, 2] = 1.0
    masks = frames > 0.5
    flip_only = SequenceSettings(rotate=0.0)
    for seed in range(20):
        f, m = augment_clip(frames, masks, flip_only, np.random.default_rng(seed))
        np.testing.assert_array_equal(f > 0.5, m)
        assert (m[:, 5, 2].all() or m[:, 5, 17].all()) and m.sum() == 3
    rot = SequenceSettings(flip=False, rotate=45.0)
    moved = 0
    for seed in range(20):
        f, m = augment_clip(frames, masks, rot, np.random.default_rng(seed))
        assert f.shape == frames.shape and m.dtype == bool
        assert (m[0] == m[1]).all() and (m[1] == m[2]).all()  # one rotation for all frames
        moved += int(not m[:, 5, 2].all())
    assert moved > 0


def _write_subject(root: Path, subject: str, layers: range, shift: int) -> None:
    """RV strips of 4 panels (grey layer rightmost) with one bright vessel object (id 3) that
    moves a pixel per layer, and a second one (id 7) on the first layers only."""
    folder = root / "RV_LayerSequence" / subject
    folder.mkdir(parents=True)
    for k, layer in enumerate(layers):
        grey = np.full((SIDE, SIDE), 30, np.uint8)
        obj3 = np.zeros((SIDE, SIDE), bool)
        obj3[10 + k + shift:16 + k + shift, 4:44] = True
        obj7 = np.zeros((SIDE, SIDE), bool)
        obj7[30:44, 20:26] = k < 2
        grey[obj3 | obj7] = 220
        strip = np.zeros((SIDE, 4 * SIDE, 3), np.uint8)
        strip[:, 3 * SIDE:] = grey[..., None]
        Image.fromarray(strip).save(folder / f"{layer}.png")
        (folder / str(layer)).mkdir()
        objects = {3: obj3, 7: obj7} if k < 2 else {3: obj3}
        for i, mask in objects.items():
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / str(layer) / f"{i:02d}.png")
        np.save(folder / str(layer) / "objects.npy", np.array(sorted(objects), np.int32))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("samocta2")
    _write_subject(root, "10301", range(237, 242), 0)  # 3M train
    _write_subject(root, "10441", range(260, 264), 2)  # 3M val
    return root


def _config(tmp_path: Path, root: Path, **params) -> dict:
    return {
        "name": "sam2_layers", "seed": 0, "runs_dir": str(tmp_path / "runs"),
        "data": {"dataset": "sam_octa2_layers", "root": str(root), "train_split": "train",
                 "val_split": "val"},
        "model": {"name": "sam2", "params": {
            "size": "test-tiny", "mode": "layers",
            "lora": {"rank": 2, "alpha": 2, "dropout": 0.0, "mask_decoder": True},
            "prompt": {"sampler": "prompt_generation", "n_pos": 1, "n_neg": 0},
            "sequence": {"frames": [2, 2], "prompt_frames": [1, 1], "val_frames": 2},
            **params}},
        "loss": {"name": "dice"},
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        "train": {"epochs": 2, "val_every": 1, "device": "cpu", "threads": 2},
    }


def test_layer_run_trains_through_the_video_model(tmp_path: Path, tree: Path) -> None:
    from retinaseg.inference.propagate import propagate
    from retinaseg.models.sam2.lora import load_model, read_lora_header
    from retinaseg.models.sam2.predictor import Prompt, Sam2Prompter

    summary = train(validate_config(_config(tmp_path, tree)))
    run = Path(summary["run_dir"])
    assert summary["mode"] == "layers" and summary["epochs_run"] == 2
    assert "10441" in summary["validation"] or "1 sequences" in summary["validation"]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:6] == ["epoch", "train_loss", "val_loss", "val_dice",
                                      "val_tracked", "lr"]
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]  # before training, then each
    lora = load_file(str(run / "best_lora.safetensors"))
    # the loss reached the adapters through the video model (LoRA B starts at zero)
    assert any(".lora_B." in k and v.abs().sum() > 0 for k, v in lora.items())
    assert read_lora_header(run / "best_lora.safetensors").info["mode"] == "layers"

    # the run folder serves both the image prompter and propagation
    video = load_model(run, video=True)
    for k, v in lora.items():
        assert torch.equal(dict(video.named_parameters())[k].detach(), v)
    frames = np.random.default_rng(0).random((3, SIDE, SIDE)).astype(np.float32)
    out = propagate(frames, video, {0: {1: Prompt(np.array([[20.0, 12.0]]), np.array([1]))}})
    assert out["probs"].shape == (1, 3, SIDE, SIDE) and out["visited"].all()
    prompter = Sam2Prompter(run)
    prompter.set_image(frames[0])
    assert prompter.predict([[20, 12]], [1]).prob.shape == (SIDE, SIDE)


@pytest.mark.parametrize("params, data, match", [
    ({"mode": "nope"}, {}, "model.params.mode"),
    ({"sequence": {"frames": [5, 2]}}, {}, r"sequence.frames"),
    ({"sequence": {"prompt_frames": [1, 4]}}, {}, r"sequence.prompt_frames"),
    ({"sequence": {"typo": 1}}, {}, r"sequence.typo"),
    ({"sequence": {"rotate": -3}}, {}, r"sequence.rotate"),
    ({}, {"dataset": "synthetic", "root": None}, "data.dataset"),
    ({"mode": "enface"}, {}, "applies to mode 'layers' only"),
])
def test_layer_config_errors_come_before_any_run_folder(tmp_path: Path, tree: Path, params,
                                                        data, match) -> None:
    cfg = _config(tmp_path, tree, **params)
    cfg["data"].update(data)
    with pytest.raises(ConfigError, match=match):
        train(validate_config(cfg))
    assert not (tmp_path / "runs").exists()

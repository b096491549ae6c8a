"""SAM 2 propagation through a stack of frames (reference §7.2), on ``test-tiny`` random weights.

The weights are random, so only the mechanics are checked: shapes, which frames are reached,
mask prompts coming back as given on their frame, and one clear error for each bad input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from retinaseg.errors import OptionError, RetinasegError, VolumeError
from retinaseg.inference.propagate import Prompt, frame_dice, propagate, sparse_annotation
from retinaseg.models.sam2.weights import init_weights, load_sam2

T, H, W = 6, 64, 64


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_weights("test-tiny", tmp_path_factory.mktemp("sam2") / "test-tiny")


@pytest.fixture(scope="module")
def model(folder: Path):
    return load_sam2(folder, video=True)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).random((T, H, W)).astype(np.float32)


def square() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[10:30, 12:34] = True
    return mask


def click(x: float = 20.0, y: float = 20.0) -> Prompt:
    return Prompt(np.array([[x, y]], np.float32), np.array([1]))


@pytest.fixture(scope="module")
def both(folder, frames) -> dict:  # a model folder, loaded by propagate
    return propagate(frames, folder, {2: {5: click()}, 4: {3: square()}})


def test_shapes_and_object_order(both) -> None:
    assert both["object_ids"] == [3, 5]  # sorted, whatever the prompt order
    assert both["masks"].shape == both["probs"].shape == (2, T, H, W)
    assert both["masks"].dtype == bool and both["probs"].dtype == np.float32
    assert both["union"].shape == (T, H, W)
    np.testing.assert_array_equal(both["union"], both["masks"].any(axis=0))
    assert both["visited"].all()
    assert ((both["probs"] >= 0) & (both["probs"] <= 1)).all()


def test_mask_prompt_is_kept_on_its_frame(both) -> None:
    assert frame_dice(both["masks"][0, 4:5], square()[None])[0] > 0.95


def test_forward_leaves_earlier_frames_empty(model, frames) -> None:
    box = Prompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int64),
                 np.array([8.0, 8.0, 40.0, 30.0], np.float32))
    out = propagate(frames, model, {2: {1: box}, 4: {2: square()}}, direction="forward")
    assert out["visited"].tolist() == [False, False, True, True, True, True]
    assert not out["masks"][:, :2].any() and (out["probs"][:, :2] == 0).all()


def test_sparse_annotation(model, frames) -> None:
    out = sparse_annotation(frames[:3], model, {1: {0: square()}})
    assert out["masks"].shape == (1, 3, H, W) and out["visited"].all()
    assert frame_dice(out["masks"][0, 1:2], square()[None])[0] > 0.95


def test_frame_dice() -> None:
    a = np.zeros((3, 4, 4), bool)
    b = a.copy()
    a[1, :2] = True
    b[1, :1] = True
    b[2, 0, 0] = True
    assert frame_dice(a, b) == pytest.approx([1.0, 2 * 4 / 12, 0.0])
    with pytest.raises(VolumeError):
        frame_dice(a, b[:2])


@pytest.mark.parametrize(("frames_arg", "prompts", "error", "match"), [
    ("stack", {6: {1: None}}, OptionError, "frame 6, but the stack has frames 0-5"),
    ("stack", {-1: {1: None}}, OptionError, "frame -1"),
    ("mixed", {0: {1: None}}, VolumeError, "same size"),
    ("stack", {}, OptionError, "at least one frame"),
    ("stack", {0: {}}, OptionError, "at least one frame"),
    ("stack", {1: {1: Prompt(np.array([[70.0, 5.0]], np.float32), np.array([1]))}},
     OptionError, r"object 1 on frame 1: point \(70, 5\) lies outside the 64×64 image"),
    ("stack", {1: {1: np.zeros((32, 32), bool)}}, OptionError, "frame's size 64×64"),
    ("flat", {0: {1: None}}, VolumeError, r"\[T, H, W\]"),
])
def test_bad_inputs(model, frames, frames_arg, prompts, error, match) -> None:
    stack = {"stack": frames, "flat": frames[0],
             "mixed": [frames[0], frames[1, :32, :32]]}[frames_arg]
    prompts = {t: {o: (click() if p is None else p) for o, p in objs.items()}
               for t, objs in prompts.items()}
    with pytest.raises(error, match=match) as info:
        propagate(stack, model, prompts)
    assert isinstance(info.value, RetinasegError)
    assert "\n" not in str(info.value)


def test_bad_direction_and_model(model, frames) -> None:
    with pytest.raises(OptionError, match="direction must be one of"):
        propagate(frames, model, {0: {1: click()}}, direction="sideways")
    with pytest.raises(OptionError, match="video model"):
        propagate(frames, model.vision_encoder, {0: {1: click()}})

"""Inference on the fundus field of view only (retinaseg.inference.crop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaseg.data.synthetic import make_fundus_sample
from retinaseg.inference import predict_probability
from retinaseg.inference.crop import fov_box, paste
from retinaseg.inference.segmenter import Segmenter
from retinaseg.models import build_model
from retinaseg.models.persistence import ModelSpec, save_model
from retinaseg.preprocessing.fov import bright_mask


def _rect(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


def test_box_is_the_mask_box_plus_margin_grown_to_the_multiple() -> None:
    mask = _rect((200, 300), (50, 141), (100, 201))  # 91 × 101 px
    box = fov_box(mask, multiple=16, margin=4)
    # rows 46..145 (99 px) grow by 13 to 112: 6 above, 40..152; cols 96..205 (109 px) by 3: 95..207
    assert box == (slice(40, 152), slice(95, 207))
    assert fov_box(mask, multiple=1, margin=0) == (slice(50, 141), slice(100, 201))


def test_box_stays_inside_the_image_and_keeps_its_size_at_the_border() -> None:
    mask = _rect((100, 400), (0, 60), (390, 400))
    rows, cols = fov_box(mask, multiple=16, margin=4)
    assert (rows.start, rows.stop) == (0, 64)  # 0..64 grown to 64, pushed inside
    assert (cols.start, cols.stop) == (384, 400)  # 386..400 (14 px) → 16 ending at the edge


def test_no_box_when_it_saves_too_little_or_the_mask_is_empty() -> None:
    assert fov_box(np.zeros((64, 64), bool), 16) is None
    assert fov_box(_rect((64, 64), (0, 63), (0, 63)), 1, margin=0) is None  # 96.9 % of pixels
    assert fov_box(_rect((64, 64), (1, 63), (1, 63)), 1, margin=0) is not None  # 93.8 %


def test_bright_mask_finds_the_retina_and_ignores_the_surround() -> None:
    s = make_fundus_sample(128, seed=3)
    mask = bright_mask(s["image"])
    assert not mask[~s["fov"]].any()  # the black surround
    assert mask[s["fov"]].mean() > 0.98  # the retina, vessels included
    assert not bright_mask(np.zeros((32, 32, 3), np.float32)).any()


def test_paste_puts_the_crop_back_and_zeros_the_rest() -> None:
    box = (slice(2, 5), slice(1, 3))
    out = paste(np.full((3, 2), 0.7, np.float32), box, (6, 4))
    assert out.shape == (6, 4) and out.dtype == np.float32
    assert out.sum() == pytest.approx(0.7 * 6) and (out[box] == np.float32(0.7)).all()
    p = np.ones((4, 4), np.float32)
    assert paste(p, None, (4, 4)) is p


def test_predict_on_the_box_is_the_network_on_the_crop_and_zero_outside() -> None:
    torch.manual_seed(0)
    net = build_model("unet", 1, depth=2, width=4, norm="none").eval()
    img = np.random.default_rng(0).random((1, 80, 96), dtype=np.float32)
    fov = _rect((80, 96), (20, 50), (30, 70))
    box = fov_box(fov, 4)
    prob = predict_probability(net, img, fov=fov)
    want = predict_probability(net, np.ascontiguousarray(img[:, box[0], box[1]]))
    np.testing.assert_array_equal(prob[box], want)
    outside = np.ones(prob.shape, bool)
    outside[box] = False
    assert (prob[outside] == 0).all() and (prob[box] > 0).all()


def _saved(tmp_path, modality: str) -> str:
    torch.manual_seed(0)
    net = build_model("unet", 1, depth=2, width=4, norm="none")
    spec = ModelSpec("unet", 1, {"depth": 2, "width": 4, "norm": "none"},
                     [{"name": "green"}], 0.5, modality, {})
    return str(save_model(tmp_path / f"{modality}.safetensors", net, spec))


def test_segmenter_crops_fundus_images_only_and_can_be_told_not_to(tmp_path) -> None:
    img = make_fundus_sample(256, seed=1)["image"]
    seen: list[tuple[int, int]] = []
    def run(model: str, **kw) -> np.ndarray:
        seg = Segmenter(model, device="cpu", match_fov=False, precision="fp32", **kw)
        seg.net.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
        return seg(img)

    cropped, whole = run(_saved(tmp_path, "fundus")), run(_saved(tmp_path, "fundus"),
                                                          crop_fov=False)
    # FOV ⌀ 241 px, + 2 × 2 px margin = 245, grown to the multiple of 4: 248
    assert seen[0] == (248, 248) and seen[1] == (256, 256)
    assert cropped.shape == whole.shape == (256, 256)
    box = fov_box(bright_mask(img), 4)
    outside = np.ones(img.shape[:2], bool)
    outside[box] = False
    assert (cropped[outside] == 0).all() and (whole[outside] > 0).all()
    inner = (slice(64, 192), slice(64, 192))  # far from the box edge: nearly the same maps
    np.testing.assert_allclose(cropped[inner], whole[inner], atol=1e-3)
    run(_saved(tmp_path, "octa"))
    assert seen[2] == (256, 256)


def test_cli_crops_by_default_and_no_crop_fov_runs_the_whole_image(tmp_path) -> None:
    from retinaseg.cli import main
    from retinaseg.io import read_image, write_png

    img = make_fundus_sample(256, seed=2)["image"]
    write_png(tmp_path / "in" / "f.png", img)
    model = _saved(tmp_path, "fundus")
    for flag, out in (([], "crop"), (["--no-crop-fov"], "whole")):
        args = ["predict", str(tmp_path / "in"), "--model", model, "--out",
                str(tmp_path / out), "--native-scale", *flag]
        assert main(args) == 0
    outside = np.ones((256, 256), bool)
    outside[fov_box(bright_mask(read_image(tmp_path / "in" / "f.png")), 4)] = False
    assert outside.sum() > 500
    assert (read_image(tmp_path / "crop" / "f_prob.png")[outside] == 0).all()
    assert (read_image(tmp_path / "whole" / "f_prob.png")[outside] > 0).all()

"""Error maps and overlays pixel by pixel; plots write non-empty PNGs atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retinaseg.errors import RetinasegError
from retinaseg.evaluation.figures import (
    PALETTES,
    error_map,
    overlay,
    plot_confusion_matrix,
    plot_roc_pr,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# one pixel of each class, plus a TP outside the FOV
PRED = np.array([[1, 1, 0], [0, 0, 1]], bool)  # TP FP FN / TN TN TP(outside)
GT = np.array([[1, 0, 1], [0, 0, 1]], bool)
FOV = np.array([[1, 1, 1], [1, 1, 0]], bool)


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("palette", ["classic", "colorblind"])
def test_error_map_colours(palette):
    c = PALETTES[palette]
    out = error_map(PRED, GT, FOV, palette=palette)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    want = [[c["tp"], c["fp"], c["fn"]], [c["tn"], c["tn"], c["outside"]]]
    np.testing.assert_array_equal(out, np.array(want, np.uint8))


def test_error_map_classic_values_and_no_fov():
    out = error_map(PRED, GT)
    assert tuple(out[0, 0]) == (0, 255, 0)
    assert tuple(out[0, 1]) == (255, 0, 0)
    assert tuple(out[0, 2]) == (0, 0, 255)
    assert tuple(out[1, 0]) == (0, 0, 0)
    assert tuple(out[1, 2]) == (0, 255, 0)  # no FOV: the TP stays green
    assert tuple(error_map(PRED, GT, FOV)[1, 2]) == (64, 64, 64)


def test_error_map_rejects_bad_input():
    with pytest.raises(ValueError, match="palette"):
        error_map(PRED, GT, palette="rainbow")
    with pytest.raises(ValueError):
        error_map(PRED, GT[:, :2])


def test_overlay_float_grey_and_uint8_rgb():
    img = np.full((2, 2), 0.5)
    mask = np.array([[1, 0], [0, 0]], bool)
    out = overlay(img, mask, color=(255, 0, 0), alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == (191, 64, 64)  # 0.5·0.5 + 0.5·1 = 0.75 -> 191.25
    assert tuple(out[1, 1]) == (128, 128, 128)
    rgb = np.full((2, 2, 3), 100, np.uint8)
    out = overlay(rgb, mask, color=(0, 0, 255), alpha=1.0)
    assert tuple(out[0, 0]) == (0, 0, 255) and tuple(out[0, 1]) == (100, 100, 100)


def test_plot_confusion_matrix(tmp_path):
    path = tmp_path / "cm.png"
    plot_confusion_matrix({"tp": 30, "fp": 5, "fn": 10, "tn": 955}, path, "test set")
    assert_png(path)
    plot_confusion_matrix({"tp": 0, "fp": 0, "fn": 0, "tn": 4}, tmp_path / "empty.png")
    assert_png(tmp_path / "empty.png")


def test_plot_roc_pr(tmp_path):
    rng = np.random.default_rng(0)
    gts = [rng.random((32, 32)) > 0.8 for _ in range(2)]
    probs = [np.clip(g * 0.5 + rng.random(g.shape) * 0.6, 0, 1) for g in gts]
    fovs = [np.ones_like(g) for g in gts]
    path = tmp_path / "sub" / "roc_pr.png"
    plot_roc_pr(probs, gts, fovs, path)
    assert_png(path)
    plot_roc_pr(probs, gts, None, tmp_path / "nofov.png")
    assert_png(tmp_path / "nofov.png")


def test_plot_training_curves(tmp_path):
    csv_path = tmp_path / "log.csv"
    csv_path.write_text(
        "epoch,train_loss,val_loss,val_dice,lr\n"
        "1,0.9,0.8,0.40,0.001\n"
        "2,0.6,0.7,0.55,0.0005\n"
        "3,0.5,,0.60,0.00025\n",
        encoding="utf-8",
    )
    out = tmp_path / "curves.png"
    plot_training_curves(csv_path, out)
    assert_png(out)


def test_plot_training_curves_needs_epoch(tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("step,loss\n1,0.5\n", encoding="utf-8")
    with pytest.raises(RetinasegError, match="epoch"):
        plot_training_curves(csv_path, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()

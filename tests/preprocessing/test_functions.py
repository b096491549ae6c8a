"""Tests for retinaseg.preprocessing.functions with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from retinaseg.preprocessing.functions import (
    clahe,
    crop_to,
    gamma,
    green_channel,
    hist_equalise,
    pad_to_multiple,
    rescale_minmax,
    resize,
    standardise,
    to_chw,
    to_grey,
)


def _ramp(h: int = 32, w: int = 32) -> np.ndarray:
    return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))


def test_to_grey_luma_weights_and_passthrough():
    rgb = np.zeros((1, 3, 3), np.float32)
    rgb[0, 0, 0] = rgb[0, 1, 1] = rgb[0, 2, 2] = 1.0
    np.testing.assert_allclose(to_grey(rgb), [[0.299, 0.587, 0.114]], rtol=1e-6)
    grey = _ramp(4, 5)
    out = to_grey(grey)
    assert out.dtype == np.float32 and out.shape == (4, 5)
    np.testing.assert_array_equal(out, grey)
    np.testing.assert_array_equal(to_grey(grey[..., None]), grey)
    with pytest.raises(ValueError):
        to_grey(np.zeros((2, 2, 4), np.float32))


def test_green_channel():
    rgb = np.stack([np.zeros((2, 2)), np.full((2, 2), 0.5), np.ones((2, 2))], -1)
    out = green_channel(rgb.astype(np.float32))
    assert out.shape == (2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, 0.5)
    np.testing.assert_array_equal(green_channel(_ramp(3, 3)), _ramp(3, 3))


def test_standardise_whole_and_masked():
    img = np.random.default_rng(0).random((16, 16)).astype(np.float32) * 7 + 3
    out = standardise(img)
    assert out.dtype == np.float32
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-5

    img = np.array([[0.0, 2.0, 4.0, 100.0]], np.float32)
    mask = np.array([[True, True, True, False]])
    out = standardise(img, mask)
    std = np.sqrt(8 / 3)
    np.testing.assert_allclose(out, [[-2 / std, 0, 2 / std, 98 / std]], rtol=1e-5)
    np.testing.assert_array_equal(standardise(np.full((3, 3), 5.0, np.float32)), 0)
    with pytest.raises(ValueError):
        standardise(img, np.zeros_like(mask))


def test_rescale_minmax():
    np.testing.assert_array_equal(rescale_minmax(np.array([[2.0, 4.0, 3.0]], np.float32)),
                                  [[0.0, 1.0, 0.5]])
    np.testing.assert_array_equal(rescale_minmax(np.full((2, 2), 3.0, np.float32)), 0)
    img = np.stack([np.array([[0.0, 1.0]]), np.array([[10.0, 30.0]])], -1).astype(np.float32)
    np.testing.assert_allclose(rescale_minmax(img)[..., 1], [[1 / 3, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(rescale_minmax(img, per_channel=True)[..., 1], [[0.0, 1.0]])


def test_gamma_known_values():
    assert float(gamma(np.array([0.25], np.float32), 2.0)[0]) == pytest.approx(0.5)
    x = np.array([0.0, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(gamma(x, 1.2), x ** (1 / 1.2), rtol=1e-6)
    # matches retina-unet's uint8 lookup table 255*(i/255)^(1/1.2) within one grey level
    levels = np.arange(256, dtype=np.float32)
    lut = np.round(255 * (levels / 255) ** (1 / 1.2))
    assert np.abs(gamma(levels / 255, 1.2) * 255 - lut).max() <= 0.5 + 1e-3
    np.testing.assert_array_equal(gamma(np.array([-1.0], np.float32)), [0.0])
    with pytest.raises(ValueError):
        gamma(x, 0.0)


def test_clahe_range_contrast_and_channels():
    low = (0.4 + 0.1 * np.random.default_rng(1).random((64, 64))).astype(np.float32)
    out = clahe(low)
    assert out.dtype == np.float32 and out.shape == (64, 64)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 2 * low.std()
    rgb = np.stack([low, low[::-1], low.T], -1)
    out_rgb = clahe(rgb, clip_limit=0.02)
    assert out_rgb.shape == (64, 64, 3)
    np.testing.assert_array_equal(out_rgb[..., 1], clahe(low[::-1], clip_limit=0.02))
    # a small clip limit approaches a plain min-max stretch; a large one equalises strongly
    rng = np.random.default_rng(2)
    peaked = np.clip(0.5 + 0.02 * rng.standard_normal((128, 128)), 0, 1).astype(np.float32)
    peaked[40:60, 20:100] += 0.3
    stretched = rescale_minmax(peaked)
    gentle, strong = clahe(peaked, clip_limit=0.002), clahe(peaked, clip_limit=0.05)
    assert np.abs(gentle - stretched).mean() < 0.5 * np.abs(strong - stretched).mean()
    np.testing.assert_array_equal(clahe(np.full((16, 16), 0.3, np.float32)), 0)
    with pytest.raises(ValueError):
        clahe(low, clip_limit=0.0)


def test_hist_equalise_flattens_histogram():
    skewed = (_ramp(64, 64) ** 4).astype(np.float32)
    out = hist_equalise(skewed)
    assert out.dtype == np.float32 and out.max() <= 1.0
    assert abs(float(out.mean()) - 0.5) < 0.05 and abs(float(skewed.mean()) - 0.5) > 0.2


def test_resize_image_and_mask():
    img = np.random.default_rng(2).random((10, 12, 3)).astype(np.float32)
    out = resize(img, (20, 24))
    assert out.shape == (20, 24, 3) and out.dtype == np.float32
    mask = np.zeros((10, 10), bool)
    mask[2:6, 3:8] = True
    up = resize(mask, (20, 20), order=0)
    assert up.dtype == bool and up.sum() == 4 * mask.sum()
    down = resize(mask.astype(np.float32), (5, 5), order=0)
    assert set(np.unique(down)) <= {0.0, 1.0}
    with pytest.raises(ValueError):
        resize(img, (0, 4))


def test_pad_to_multiple_and_crop_back():
    arr = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    padded, pads = pad_to_multiple(arr, 4)
    assert padded.shape == (2, 8, 8) and pads == (3, 1)
    np.testing.assert_array_equal(padded[:, 5, :7], arr[:, 3])  # reflect: row 5 mirrors row 3
    np.testing.assert_array_equal(crop_to(padded, (5, 7)), arr)
    zeros, pads = pad_to_multiple(arr, (1, 8), mode="constant")
    assert pads == (0, 1) and zeros.shape == (2, 5, 8) and not zeros[:, :, 7].any()
    same, pads = pad_to_multiple(arr, 1)
    assert same is arr and pads == (0, 0)
    # retina-unet test padding (reference §8): 584x565 -> (size - 48) divisible by stride 5
    _, pads = pad_to_multiple(np.zeros((584 - 48, 565 - 48)), 5)
    assert (584 + pads[0], 565 + pads[1]) == (588, 568)
    with pytest.raises(ValueError):
        crop_to(arr, (6, 7))


def test_to_chw():
    assert to_chw(np.zeros((4, 5))).shape == (1, 4, 5)
    rgb = np.random.default_rng(3).random((4, 5, 3))
    chw = to_chw(rgb)
    assert chw.shape == (3, 4, 5) and chw.dtype == np.float32 and chw.flags.c_contiguous
    np.testing.assert_allclose(chw[2], rgb[..., 2], rtol=1e-6)

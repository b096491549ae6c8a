"""Acquisition changes (retinaseg.preprocessing.acquisition) on images with known answers."""

from __future__ import annotations

import numpy as np
import pytest

import retinaseg.preprocessing.acquisition as acq


def test_gamma_contrast_and_balance_have_their_formulas() -> None:
    img = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    assert np.allclose(acq.gamma(img, 2.0), img ** 2)
    low = acq.contrast(img, 0.5)
    assert low.mean() == pytest.approx(img.mean())
    assert low.std() == pytest.approx(0.5 * img.std())
    rgb = np.full((2, 2, 3), 0.5, np.float32)
    assert np.allclose(acq.colour_balance(rgb, (1.2, 1.0, 0.8))[0, 0], [0.6, 0.5, 0.4])
    assert acq.colour_balance(img, (2.0, 2.0, 2.0)) is img  # grey images pass


def test_blur_keeps_a_flat_image_and_smooths_noise() -> None:
    flat = np.full((32, 32, 3), 0.3, np.float32)
    assert np.allclose(acq.blur(flat, 1.0), 0.3, atol=1e-6)
    rng = np.random.default_rng(0)
    noisy = acq.noise(np.full((128, 128), 0.5, np.float32), 0.05, rng)
    assert noisy.std() == pytest.approx(0.05, rel=0.05)
    assert acq.blur(noisy, 1.0).std() < 0.4 * noisy.std()


def test_jpeg_and_8bit_rounding() -> None:
    assert np.allclose(acq.to_8bit(np.array([-0.2, 0.5, 1.3])), [0.0, 128 / 255, 1.0])
    grey = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    out = acq.jpeg(grey, 40)
    assert out.shape == grey.shape and out.dtype == np.float32
    assert 0 < np.abs(out - grey).mean() < 0.02  # lossy, but close on a smooth ramp
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    assert acq.jpeg(rgb, 90).shape == rgb.shape


def test_random_change_is_seeded_8bit_and_changes_the_image() -> None:
    img = np.random.default_rng(1).random((48, 40, 3)).astype(np.float32)
    img = acq.to_8bit(img)
    a = acq.random_change(img, np.random.default_rng(7))
    b = acq.random_change(img, np.random.default_rng(7))
    assert np.array_equal(a, b) and a.shape == img.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.allclose(a * 255, np.rint(a * 255), atol=1e-3)  # 256 levels, like a file
    outs = [acq.random_change(img, np.random.default_rng(s)) for s in range(8)]
    assert all(not np.array_equal(o, img) for o in outs)  # at least one change each time
    assert acq.random_change(img[..., 0], np.random.default_rng(3)).ndim == 2

"""Adaptive restoration (retinaseg.preprocessing.restore) on images with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from retinaseg.errors import ConfigError
from retinaseg.preprocessing import restore as R
from retinaseg.preprocessing.pipeline import build_preprocess, without_adaptive


def _smooth(shape: tuple[int, int] = (128, 128)) -> np.ndarray:
    """A smooth image in [0.2, 0.8]: a ramp plus a broad bump (no pixel-scale structure)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    bump = np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / (2 * 30.0**2))
    return (0.2 + 0.3 * xx / shape[1] + 0.3 * bump).astype(np.float32)


@pytest.mark.parametrize("std", [0.01, 0.04, 0.1])
def test_noise_std_recovers_the_std_of_added_white_noise(std: float) -> None:
    rng = np.random.default_rng(1)
    noisy = _smooth((256, 256)) + rng.normal(0, std, (256, 256)).astype(np.float32)
    assert R.noise_std(noisy) == pytest.approx(std, rel=0.05)


def test_noise_std_ignores_ramps_and_quadratics() -> None:
    yy, xx = np.mgrid[:64, :64].astype(np.float32)
    assert R.noise_std(0.01 * xx + 0.02 * yy) == pytest.approx(0.0, abs=1e-6)
    assert R.noise_std(1e-4 * (xx**2 + yy**2)) == pytest.approx(0.0, abs=1e-5)
    assert R.noise_std(np.zeros((2, 9), np.float32)) == 0.0
    with pytest.raises(ValueError, match="grey"):
        R.noise_std(np.zeros((8, 8, 3), np.float32))


def test_denoise_leaves_a_clean_image_untouched_and_cleans_a_noisy_one() -> None:
    clean = _smooth()
    assert R.denoise(clean) is clean
    rgb = np.stack([clean] * 3, axis=-1)
    assert R.denoise(rgb) is rgb
    rng = np.random.default_rng(2)
    noisy = clean + rng.normal(0, 0.05, clean.shape).astype(np.float32)
    for method in ("tv", "nlm"):
        out = R.denoise(noisy, method=method)
        assert out.shape == noisy.shape and out.dtype == np.float32
        assert np.abs(out - clean).mean() < 0.5 * np.abs(noisy - clean).mean()
    with pytest.raises(ValueError, match="tv"):
        R.denoise(noisy, method="median")


def test_denoise_cleans_only_the_noisy_channels_of_a_colour_image() -> None:
    clean = _smooth()
    rng = np.random.default_rng(5)
    rgb = np.stack([clean, clean + rng.normal(0, 0.05, clean.shape), clean], axis=-1)
    rgb = rgb.astype(np.float32)
    out = R.denoise(rgb)
    assert out is not rgb and out.shape == rgb.shape
    assert np.array_equal(out[..., 0], rgb[..., 0]) and np.array_equal(out[..., 2], rgb[..., 2])
    assert R.noise_std(out[..., 1]) < 0.5 * R.noise_std(rgb[..., 1])


def test_sharpen_leaves_flat_and_tiny_images_alone() -> None:
    for img in (np.full((16, 16), 0.4, np.float32), np.zeros((2, 5), np.float32),
                np.zeros((0, 0), np.float32)):
        with R.recording() as done:
            assert R.sharpen(img) is img
        assert done == []


def test_denoise_strength_is_zero_at_the_trigger() -> None:
    rng = np.random.default_rng(3)
    noisy = _smooth() + rng.normal(0, 0.02, (128, 128)).astype(np.float32)
    std = R.noise_std(noisy)
    assert R.denoise(noisy, trigger=std * 1.001) is noisy
    just_over = R.denoise(noisy, trigger=std * 0.999)
    assert np.abs(just_over - noisy).max() < 0.01  # weight ≈ 0.045·0.7·std: barely touched


def test_sharpen_restores_a_blurred_edge_and_skips_a_textured_image() -> None:
    rng = np.random.default_rng(4)
    textured = np.clip(_smooth() + rng.normal(0, 0.06, (128, 128)), 0, 1).astype(np.float32)
    assert R.sharpen(textured) is textured
    edge = np.zeros((64, 64), np.float32)
    edge[:, 32:] = 0.8
    edge += 0.1
    blurred = ndimage.gaussian_filter(edge, 1.0)
    assert R.noise_std(blurred) < R.SHARPEN_TRIGGER
    out = R.sharpen(blurred)
    assert out.min() >= 0.0 and out.max() <= 1.0
    step = lambda im: float(im[:, 32].mean() - im[:, 31].mean())  # noqa: E731
    assert step(out) > step(blurred) * 1.2
    rise = lambda im: int(((im[0] > 0.18) & (im[0] < 0.82)).sum())  # noqa: E731  10-90 % width
    assert rise(out) < rise(blurred)


def test_steps_are_configurable_and_strippable() -> None:
    steps = ["green", {"name": "denoise", "strength": 0.5}, "clahe"]
    f = build_preprocess(steps)
    rgb = np.stack([_smooth()] * 3, axis=-1)
    assert np.array_equal(f(rgb), build_preprocess(["green", "clahe"])(rgb))
    noisy = (rgb + np.random.default_rng(6).normal(0, 0.05, rgb.shape)).astype(np.float32)
    with R.recording() as done:
        assert not np.array_equal(f(noisy), build_preprocess(["green", "clahe"])(noisy))
    assert len(done) == 1 and done[0].startswith("denoised (tv")
    assert [n for n, _ in without_adaptive(steps)] == ["green", "clahe"]
    with pytest.raises(ConfigError, match="strength"):
        build_preprocess([{"name": "sharpen", "strength": -1}])
    with pytest.raises(ConfigError, match="method"):
        build_preprocess([{"name": "denoise", "method": "median"}])


def test_tv_chambolle_matches_scikit_image_and_keeps_flat_images() -> None:
    from skimage.restoration import denoise_tv_chambolle

    rng = np.random.default_rng(7)
    for shape, weight in (((64, 80), 0.05), ((33, 17), 0.2), ((1, 9), 0.1), ((9, 1), 0.3)):
        noisy = (_smooth((128, 128))[: shape[0], : shape[1]]
                 + rng.normal(0, 0.05, shape)).astype(np.float32)
        ours = R.tv_chambolle(noisy, weight)
        assert ours.dtype == np.float32 and ours.shape == shape
        np.testing.assert_allclose(ours, denoise_tv_chambolle(noisy, weight=weight), atol=1e-5)
    # transposed (Fortran-ordered) and float64 input give the same answer as a C-ordered copy
    wide = (_smooth((40, 60)) + rng.normal(0, 0.05, (40, 60))).astype(np.float32)
    np.testing.assert_allclose(R.tv_chambolle(wide.T, 0.1),
                               R.tv_chambolle(np.ascontiguousarray(wide.T), 0.1), atol=1e-7)
    np.testing.assert_allclose(R.tv_chambolle(wide.astype(np.float64), 0.1),
                               R.tv_chambolle(wide, 0.1), atol=1e-6)
    flat = np.full((20, 20), 0.3, np.float32)
    np.testing.assert_array_equal(R.tv_chambolle(flat, 0.1), flat)
    for weight in (0.0, -1.0, float("nan")):
        out = R.tv_chambolle(wide, weight)
        np.testing.assert_array_equal(out, wide)
        assert not np.shares_memory(out, wide)
    with pytest.raises(ValueError, match="grey"):
        R.tv_chambolle(np.zeros((4, 4, 3), np.float32), 0.1)
    with pytest.raises(ValueError, match="float"):
        R.tv_chambolle(np.zeros((4, 4), np.uint8), 0.1)


def test_denoise_accepts_transposed_images() -> None:
    rng = np.random.default_rng(9)
    noisy = (_smooth((96, 64)) + rng.normal(0, 0.05, (96, 64))).astype(np.float32)
    np.testing.assert_allclose(R.denoise(noisy.T), R.denoise(noisy).T, atol=1e-5)


def test_tv_chambolle_keeps_a_step_edge_while_removing_noise() -> None:
    step = np.zeros((64, 64), np.float32)
    step[:, 32:] = 1.0
    rng = np.random.default_rng(8)
    noisy = step + rng.normal(0, 0.1, step.shape).astype(np.float32)
    out = R.tv_chambolle(noisy, 0.1)
    assert np.abs(out - step).mean() < 0.4 * np.abs(noisy - step).mean()
    # the edge stays sharp: the jump between columns 31 and 32 keeps most of its height
    assert float((out[:, 32] - out[:, 31]).mean()) > 0.8

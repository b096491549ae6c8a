"""Tests for retinaseg.preprocessing.pipeline: composition, presets, config errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from retinaseg.errors import ConfigError
from retinaseg.preprocessing import functions as F
from retinaseg.preprocessing.pipeline import (
    PRESETS,
    RETINA_UNET_CLAHE_CLIP,
    STEPS,
    build_preprocess,
    preprocess_signature,
)


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).random((40, 48, 3)).astype(np.float32)


def test_retina_unet_preset_matches_manual_chain(rgb):
    out = build_preprocess("retina_unet")(rgb)
    assert out.shape == (1, 40, 48) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    manual = F.gamma(
        F.clahe(F.rescale_minmax(F.standardise(F.to_grey(rgb))), clip_limit=2 / 256), 1.2
    )
    np.testing.assert_array_equal(out[0], manual)
    assert RETINA_UNET_CLAHE_CLIP == pytest.approx(0.0078125)


def test_build_from_list_and_strings(rgb):
    f = build_preprocess(["green", {"name": "gamma", "gamma": 2.0}])
    np.testing.assert_allclose(f(rgb)[0], np.sqrt(rgb[..., 1]), rtol=1e-6)
    g = build_preprocess([{"name": "resize", "shape": [20, 24], "order": 0}])
    assert g(rgb).shape == (3, 20, 24)


def test_presets_output_channels(rgb):
    assert build_preprocess("none")(rgb).shape == (3, 40, 48)
    np.testing.assert_array_equal(build_preprocess("none")(rgb), np.moveaxis(rgb, -1, 0))
    assert build_preprocess(None)(rgb[..., 0]).shape == (1, 40, 48)
    octa = build_preprocess("octa")(rgb * np.array([1, 10, 100], np.float32))
    assert octa.shape == (3, 40, 48)
    np.testing.assert_allclose(octa.max(axis=(1, 2)), 1.0)
    assert build_preprocess("fundus_green")(rgb).shape == (1, 40, 48)
    assert set(PRESETS) >= {"retina_unet", "fundus_green", "octa", "none"}


def test_picklable_and_deterministic(rgb):
    f = build_preprocess("retina_unet")
    g = pickle.loads(pickle.dumps(f))
    np.testing.assert_array_equal(f(rgb), g(rgb))
    np.testing.assert_array_equal(f(rgb), f(rgb))


@pytest.mark.parametrize(
    ("steps", "needle"),
    [
        (["grey", "blur"], "'blur'"),
        ([{"name": "gamma", "gamma": -1}], "'gamma'"),
        ([{"name": "gamma", "gama": 1.2}], "'gamma'"),
        ([{"name": "clahe", "clip_limit": 2.0}], "clip_limit"),
        ([{"name": "resize"}], "'resize'"),
        ([{"name": "resize", "shape": [10]}], "shape"),
        ([{"name": "minmax", "per_channel": "yes"}], "per_channel"),
        ([{"gamma": 1.2}], "step 1"),
        ("imagenet", "'imagenet'"),
        ({"name": "grey"}, "list of steps"),
    ],
)
def test_config_errors_name_the_step(steps, needle):
    with pytest.raises(ConfigError, match=needle):
        build_preprocess(steps)


def test_signature_canonical():
    assert preprocess_signature(["clahe"]) == preprocess_signature(
        [{"name": "clahe", "clip_limit": 0.01}]
    )
    assert preprocess_signature("retina_unet") == preprocess_signature(PRESETS["retina_unet"])
    assert preprocess_signature("none") == "[]"
    assert preprocess_signature(["grey"]) != preprocess_signature(["green"])


def test_registry_names():
    assert set(STEPS) == {
        "grey", "green", "standardise", "minmax", "clahe", "gamma", "hist_equalise", "resize",
        "negate", "denoise", "sharpen",
    }


def test_negate_after_standardise_flips_contrast():
    img = np.array([[0, 0], [0, 255]], np.uint8)
    out = build_preprocess([{"name": "grey"}, {"name": "standardise"}, {"name": "negate"}])(img)
    assert out.shape == (1, 2, 2)
    assert out[0, 1, 1] < 0 < out[0, 0, 0]
    np.testing.assert_allclose(out.mean(), 0.0, atol=1e-6)


def test_bad_image_rank():
    with pytest.raises(ValueError):
        build_preprocess("none")(np.zeros((1, 2, 3, 4), np.float32))

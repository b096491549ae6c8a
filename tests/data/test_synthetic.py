"""Synthetic OCTA / fundus generator and the ``synthetic`` dataset."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from retinaseg.data import build_dataset
from retinaseg.data.synthetic import make_fundus_sample, make_octa_sample, render_discs
from retinaseg.errors import ConfigError
from retinaseg.preprocessing.fov import fov_from_image

GENERATORS = [make_octa_sample, make_fundus_sample]


def best_dice(score: np.ndarray, label: np.ndarray, region: np.ndarray) -> float:
    """Best Dice of ``score > t`` over a grid of quantile thresholds, inside ``region``."""
    best = 0.0
    for t in np.quantile(score[region], np.linspace(0.5, 0.99, 40)):
        pred = (score > t) & region
        best = max(best, 2 * (pred & label).sum() / (pred.sum() + label.sum()))
    return float(best)


@pytest.mark.parametrize("make", GENERATORS)
def test_types_and_determinism(make) -> None:
    a, b, c = make(64, 3), make(64, 3), make(64, 4)
    assert set(a) == {"id", "image", "label", "fov", "path"} and a["path"] == ""
    assert a["image"].dtype == np.float32 and a["label"].dtype == bool
    assert 0.0 <= a["image"].min() and a["image"].max() <= 1.0
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(a["image"], c["image"])
    assert 0.01 < a["label"].mean() < 0.25


def test_octa_shape_and_faz() -> None:
    s = make_octa_sample(128, 0)
    assert s["image"].shape == (128, 128) and s["fov"] is None
    yy, xx = np.mgrid[:128, :128]
    centre = (yy - 64) ** 2 + (xx - 64) ** 2 < 5**2
    assert s["image"][centre].mean() < 0.5 * s["image"].mean()  # dark avascular zone
    assert not s["label"][centre].any()


def test_fundus_fov() -> None:
    s = make_fundus_sample(128, 0)
    assert s["image"].shape == (128, 128, 3) and s["fov"].dtype == bool
    assert not s["image"][~s["fov"]].any() and not s["label"][~s["fov"]].any()
    derived = fov_from_image(s["image"])
    assert (derived & s["fov"]).sum() / (derived | s["fov"]).sum() > 0.97


@pytest.mark.parametrize("make", GENERATORS)
def test_speed(make) -> None:
    make(256, 0)  # warm-up
    best = min(_timed(make, seed) for seed in (1, 2))
    assert best < 0.3


def _timed(make, seed: int) -> float:
    start = time.perf_counter()
    make(256, seed)
    return time.perf_counter() - start


@pytest.mark.parametrize("seed", [0, 1])
def test_learnable_octa(seed: int) -> None:
    s = make_octa_sample(256, seed)
    score = ndimage.gaussian_filter(s["image"], 1.0)
    assert best_dice(score, s["label"], np.ones_like(s["label"])) > 0.6


@pytest.mark.parametrize("seed", [0, 1])
def test_learnable_fundus(seed: int) -> None:
    s = make_fundus_sample(256, seed)
    green = ndimage.gaussian_filter(s["image"][..., 1], 1.0)
    background = ndimage.gaussian_filter(np.where(s["fov"], green, green[s["fov"]].mean()), 8)
    assert best_dice(1 - green / (background + 1e-3), s["label"], s["fov"]) > 0.6


def test_render_discs_is_anti_aliased() -> None:
    cov = render_discs(np.array([[8.0, 8.0, 2.0], [8.3, 20.0, 0.5]]), (16, 24))
    assert cov[8, 8] == 1.0 and 0 < cov[8, 10] < 1 and cov[8, 12] == 0
    assert 0 < cov[8, 20] < 1 and cov.max() <= 1


def test_synthetic_dataset_splits() -> None:
    train = build_dataset("synthetic", None, "train", n=3, size=48)
    val = build_dataset("synthetic", None, "val", n=3, size=48)
    assert len(train) == 3 and train.labelled and train.val_split == "val"
    assert len(build_dataset("synthetic", None, "all", n=3, size=48)) == 9
    assert not set(s.id for s in train.samples) & set(s.id for s in val.samples)
    seeds = {s.meta["seed"] for ds in (train, val) for s in ds.samples}
    assert len(seeds) == 6
    item = train[1]
    assert item["id"] == "octa_train_001" and item["image"].shape == (48, 48)
    again = build_dataset("synthetic", "/ignored", "train", n=3, size=48)[1]
    np.testing.assert_array_equal(item["image"], again["image"])
    assert not np.array_equal(item["image"], val[1]["image"])
    other = build_dataset("synthetic", None, "train", n=3, size=48, seed=1)[1]
    assert not np.array_equal(item["image"], other["image"])


def test_synthetic_dataset_fundus_and_options() -> None:
    ds = build_dataset("synthetic", None, "test", kind="fundus", n=1, size=48)
    assert ds.modality == "fundus" and ds[0]["image"].shape == (48, 48, 3)
    assert ds[0]["fov"] is not None
    with pytest.raises(ConfigError, match="integer >= 1"):
        build_dataset("synthetic", None, "train", n="many")
    with pytest.raises(ConfigError, match="octa, fundus"):
        build_dataset("synthetic", None, "train", kind="oct")

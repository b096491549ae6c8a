"""Training on volumes: IPN learns the projection from synthetic cubes (issue: OCTA volumes)."""

from __future__ import annotations

import numpy as np
import pytest

from retinaseg.errors import ConfigError
from retinaseg.training import train
from retinaseg.training.config import validate_config


def _cfg(tmp_path, **over):
    raw = {"name": "ipn_tiny", "runs_dir": str(tmp_path / "runs"),
           "data": {"dataset": "synthetic_volume", "train_split": "train", "val_split": "val",
                    "options": {"n": 2, "size": 32, "depth": 32}, "preprocess": "none"},
           "sampling": {"patch_size": 24, "patches_per_image": 2, "batch_size": 2},
           "model": {"name": "ipn", "params": {"depth": 32, "n_plm": 3, "convs": 1,
                                               "width": 4}},
           "loss": {"name": "bce_dice"},
           "train": {"epochs": 1, "threads": 1},
           "inference": {"tile": 32}}
    for key, value in over.items():
        section, _, name = key.partition(".")
        raw[section][name] = value
    return validate_config(raw)


def test_ipn_trains_on_volumes_and_records_that_it_takes_volumes(tmp_path) -> None:
    from retinaseg.data.volumes import make_volume_sample
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.models.persistence import read_spec

    s = train(_cfg(tmp_path))
    best = tmp_path / "runs" / "ipn_tiny"
    run = next(best.iterdir())
    spec = read_spec(run / "best.safetensors")
    assert spec.name == "ipn" and spec.info["input"] == "volume" and spec.in_channels == 1
    assert 0 < s["threshold"] < 1
    vol = make_volume_sample(size=40, depth=32, seed=99)["image"]
    prob = Segmenter(run)(vol)
    assert prob.shape == (40, 40) and 0 <= prob.min() and prob.max() <= 1


def test_volume_flips_move_image_and_label_together() -> None:
    from retinaseg.preprocessing.augment import VolumeAugmentation

    aug = VolumeAugmentation(prob=1.0, seed=0)
    img = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    lab = img[0, 0] > 7  # a label that is a function of the image's first plane, [4, 4]
    out = aug({"image": img, "label": lab[None].astype(np.float32)})
    assert out["image"].shape == img.shape and 0 < lab.sum() < lab.size
    np.testing.assert_array_equal(out["label"][0] > 0, out["image"][0, 0] > 7)
    assert not np.array_equal(out["image"], img)  # prob 1: something moved
    np.testing.assert_array_equal(np.sort(out["image"][:, 1].ravel()), np.sort(img[:, 1].ravel()))


def test_volume_datasets_refuse_2d_preprocessing(tmp_path) -> None:
    with pytest.raises(ConfigError, match="data.preprocess must be 'none'"):
        train(_cfg(tmp_path, **{"data.preprocess": [{"name": "minmax"}]}))


def test_project_option_gives_a_2d_dataset_for_the_2d_route(tmp_path) -> None:
    from retinaseg.data import build_dataset

    ds = build_dataset("synthetic_volume", None, "train", n="1", size="32", depth="32",
                       project="auto_mean")
    s = ds[0]
    assert not ds.volumetric and s["image"].shape == (32, 32) == s["label"].shape

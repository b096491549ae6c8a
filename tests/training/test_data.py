"""Training samplers: whole-image batches grouped by shape; weight averaging (``train.ema``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from retinaseg.training.config import SamplingConfig
from retinaseg.training.data import Item, PatchSampler


def _items(shapes: list[int]) -> list[Item]:
    return [Item(f"i{k}", np.full((1, s, s), k, np.float32), np.zeros((s, s), bool),
                 np.ones((s, s), bool)) for k, s in enumerate(shapes)]


def test_whole_mode_batches_group_images_of_one_shape() -> None:
    shapes = [32, 48, 32, 48, 32, 40, 48, 32, 48, 32]  # five 32², four 48², one 40²
    sampler = PatchSampler(_items(shapes), SamplingConfig(mode="whole", batch_size=2), None)
    batches = list(sampler.epoch(seed=1))
    # 32²: 5 → 2+2+1, 48²: 4 → 2+2, 40²: 1 → 6 batches, not one per shape change
    assert len(batches) == len(sampler) == 6
    assert sorted(b[0].shape[0] for b in batches) == [1, 1, 2, 2, 2, 2]
    seen = sorted(int(v) for x, *_ in batches for v in x[:, 0, 0, 0])
    assert seen == list(range(10))  # every image exactly once per epoch
    again = [x[:, 0, 0, 0].tolist() for x, *_ in sampler.epoch(seed=1)]
    assert again == [x[:, 0, 0, 0].tolist() for x, *_ in batches]  # seeded


def test_ema_follows_the_exponential_average_of_the_weights(tmp_path: Path) -> None:
    """decay 0.5: after step 1 the average is w1 (copied), after step 2 it is (w1 + w2) / 2."""
    from retinaseg.training.config import validate_config
    from retinaseg.training.trainer import Trainer

    cfg = validate_config({
        "data": {"dataset": "synthetic", "train_split": "train", "val_split": "val",
                 "options": {"kind": "octa", "n": 2, "size": 32}, "preprocess": "none"},
        "sampling": {"patch_size": 16, "patches_per_image": 2, "batch_size": 2},
        "model": {"name": "unet", "params": {"depth": 1, "width": 2, "norm": "none"}},
        "train": {"ema": 0.5, "threads": 1, "grad_clip": None}})
    tr = Trainer(cfg, tmp_path)
    x, y = torch.rand(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    weights = []
    for _ in range(2):
        tr._step(x, y)
        weights.append([p.detach().clone() for p in tr.net.parameters()])
    assert tr.eval_net is tr.ema.module
    for avg, w1, w2 in zip(tr.ema.module.parameters(), *weights):
        assert not torch.equal(w1, w2)
        torch.testing.assert_close(avg, (w1 + w2) / 2)


def test_ema_must_be_a_decay_in_0_1() -> None:
    from retinaseg.errors import ConfigError
    from retinaseg.training.config import validate_config

    with pytest.raises(ConfigError, match="train.ema"):
        validate_config({"data": {"dataset": "synthetic"}, "train": {"ema": 1.5}})


def _tiny_cfg(**model: object):
    from retinaseg.training.config import validate_config

    return validate_config({
        "data": {"dataset": "synthetic", "train_split": "train", "val_split": "val",
                 "options": {"kind": "octa", "n": 2, "size": 32}, "preprocess": "none"},
        "sampling": {"patch_size": 16, "patches_per_image": 2, "batch_size": 2},
        "model": {"name": "unet", "params": {"depth": 1, "width": 2, "norm": "none"}, **model},
        "train": {"threads": 1}})


def test_model_init_starts_from_the_given_weights(tmp_path: Path) -> None:
    from retinaseg.models import build_model
    from retinaseg.models.persistence import ModelSpec, save_model
    from retinaseg.training.trainer import Trainer

    torch.manual_seed(5)
    params = {"depth": 1, "width": 2, "norm": "none"}
    src = build_model("unet", 1, **params)
    path = save_model(tmp_path / "init.safetensors", src, ModelSpec("unet", 1, params))
    tr = Trainer(_tiny_cfg(init=str(path)), tmp_path / "run")
    for a, b in zip(tr.net.state_dict().values(), src.state_dict().values()):
        torch.testing.assert_close(a, b)
    fresh = Trainer(_tiny_cfg(), tmp_path / "run2")
    assert not all(torch.equal(a, b) for a, b in zip(fresh.net.state_dict().values(),
                                                      src.state_dict().values()))


def test_model_init_with_another_architecture_is_a_clear_error(tmp_path: Path) -> None:
    from retinaseg.errors import ConfigError
    from retinaseg.models import build_model
    from retinaseg.models.persistence import ModelSpec, save_model
    from retinaseg.training.trainer import Trainer

    params = {"depth": 1, "width": 4, "norm": "none"}
    path = save_model(tmp_path / "w4.safetensors", build_model("unet", 1, **params),
                      ModelSpec("unet", 1, params))
    with pytest.raises(ConfigError, match="model.init.*do not fit"):
        Trainer(_tiny_cfg(init=str(path)), tmp_path / "run")


def test_validation_score_averages_sources_equally() -> None:
    from retinaseg.training.trainer import _source_mean

    items = _items([8, 8, 8, 8])
    for it, src in zip(items, ["0:a", "0:a", "0:a", "1:b"]):
        it.source = src
    # source a: mean 0.9 over 3 images, source b: 0.5 → 0.7, not the image mean 0.8
    assert _source_mean([0.9, 0.8, 1.0, 0.5], items) == pytest.approx(0.7)
    for it in items:
        it.source = ""
    assert _source_mean([0.9, 0.8, 1.0, 0.5], items) == pytest.approx(0.8)


def test_model_init_that_does_not_exist_names_the_key(tmp_path: Path) -> None:
    from retinaseg.errors import ConfigError
    from retinaseg.training.runs import check_paths

    with pytest.raises(ConfigError, match="model.init"):
        check_paths(_tiny_cfg(init=str(tmp_path / "missing.safetensors")))


def test_whole_mode_with_rot90_on_non_square_images_is_a_clear_error(tmp_path: Path) -> None:
    from retinaseg.errors import ConfigError
    from retinaseg.training.config import validate_config
    from retinaseg.training.trainer import Trainer

    cfg = validate_config({
        "data": {"dataset": "drive", "root": str(tmp_path)}, "sampling": {"mode": "whole"}})
    tr = Trainer.__new__(Trainer)  # only the shape check, without loading a dataset
    tr.cfg, tr.net = cfg, torch.nn.Identity()
    tr.train_items = _items([8])
    tr.train_items[0].image = np.zeros((1, 8, 12), np.float32)
    with pytest.raises(ConfigError, match="rot90"):
        tr._check_patch_size()


def test_match_fov_stores_the_median_fov_diameter_for_fundus_only() -> None:
    from retinaseg.training.config import validate_config
    from retinaseg.training.trainer import _fov_diameter

    def cfg(kind: str, match: bool):
        return validate_config({"data": {"dataset": "synthetic", "options": {"kind": kind}},
                                "inference": {"match_fov": match}})

    items = _items([64, 64, 64])
    for it, d in zip(items, [50, 60, 70]):
        it.fov = np.zeros((64, 64), bool)
        it.fov[10, 2:2 + d] = True  # a FOV whose horizontal extent is d px
    assert _fov_diameter(cfg("fundus", True), items) == 60
    assert _fov_diameter(cfg("fundus", False), items) is None
    assert _fov_diameter(cfg("octa", True), items) is None


def test_acquisition_copies_add_changed_training_images_only(tmp_path: Path) -> None:
    """Two copies per training image: ids ``<id>~acq<k>``, the same label and FOV, other
    pixels; validation untouched; the same copies on a second load (seeded)."""
    from retinaseg.training.config import validate_config
    from retinaseg.training.data import load_train_val

    def load(copies: int) -> tuple[list[Item], list[Item]]:
        cfg = validate_config({
            "data": {"dataset": "synthetic", "train_split": "train", "val_split": "val",
                     "options": {"kind": "fundus", "n": 3, "size": 48},
                     "preprocess": "none", "acquisition_copies": copies}})
        train, val, _ = load_train_val(cfg.data, seed=0)
        return train, val

    base_train, base_val = load(0)
    train, val = load(2)
    assert len(train) == 3 * len(base_train) and len(val) == len(base_val)
    assert [it.id for it in val] == [it.id for it in base_val]
    originals = {it.id: it for it in base_train}
    copies = [it for it in train if "~acq" in it.id]
    assert sorted(it.id for it in copies) == sorted(f"{i}~acq{k}" for i in originals
                                                     for k in (0, 1))
    for it in copies:
        orig = originals[it.id.split("~")[0]]
        assert np.array_equal(it.label, orig.label) and np.array_equal(it.fov, orig.fov)
        assert it.image.shape == orig.image.shape and not np.array_equal(it.image, orig.image)
    again, _ = load(2)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(train, again))


def test_validation_acquisition_copies() -> None:
    """``val_acquisition_copies`` adds changed copies to validation only, for a carved
    validation set (as DRIVE's k-fold) and for a val split."""
    from retinaseg.training.config import validate_config
    from retinaseg.training.data import load_train_val

    for split in ("val", None):
        data = {"dataset": "synthetic", "train_split": "train",
                "options": {"kind": "fundus", "n": 4, "size": 40}, "preprocess": "none",
                "val_acquisition_copies": 1}
        if split:
            data["val_split"] = split
        train, val, _ = load_train_val(validate_config({"data": data}).data, seed=0)
        copies = [it for it in val if "~acq" in it.id]
        assert len(copies) == len(val) // 2 and not any("~acq" in it.id for it in train)
        originals = {it.id: it.image for it in val if "~acq" not in it.id}
        assert all(not np.array_equal(c.image, originals[c.id.split("~")[0]]) for c in copies)

"""Several training datasets in one run: sampling weights, resolution normalisation to one FOV
diameter (``data.fov_diameter``), per-dataset validation columns, and one-sentence errors for bad
input (issue 26). Synthetic data only; every training run is a few seconds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from retinaseg.cli import main
from retinaseg.data import build_dataset
from retinaseg.errors import ConfigError
from retinaseg.io import write_png
from retinaseg.preprocessing.fov import fov_diameter
from retinaseg.training import train
from retinaseg.training.config import SamplingConfig, validate_config
from retinaseg.training.data import Item, PatchSampler, load_train_val


def _items(sources: dict[str, int], size: int = 16, weights: dict[str, float] | None = None
           ) -> list[Item]:
    """``n`` items per source, with a FOV disc and a few vessel pixels each."""
    out = []
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2.2) ** 2
    for src, n in sources.items():
        for i in range(n):
            label = np.zeros((size, size), bool)
            label[size // 2, 2:size - 2] = True
            out.append(Item(f"{src}{i}", np.zeros((1, size, size), np.float32), label, fov,
                            source=src, weight=(weights or {}).get(src)))
    return out


def _old_draws(sampler: PatchSampler, rng: np.random.Generator) -> list[tuple[int, int]]:
    """The patch draws as they were before sampling weights (a copy of the old logic)."""
    draws = []
    for k in range(len(sampler.items)):
        for _ in range(sampler.cfg.patches_per_image):
            pool = sampler._centres[k]
            if sampler._vessels[k].size and rng.random() < sampler.cfg.vessel_fraction:
                pool = sampler._vessels[k]
            draws.append((k, int(pool[rng.integers(pool.size)])))
    rng.shuffle(draws)
    return draws


def _old_whole_batches(sampler: PatchSampler, rng: np.random.Generator) -> list[list[int]]:
    """Whole-image batches as they were before sampling weights (a copy of the old logic)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, it in enumerate(sampler.items):
        by_shape.setdefault(tuple(it.image.shape), []).append(k)
    b = sampler.cfg.batch_size
    batches = []
    for shape in sorted(by_shape):
        idx = [by_shape[shape][i] for i in rng.permutation(len(by_shape[shape]))]
        batches += [idx[i:i + b] for i in range(0, len(idx), b)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _shares(sampler: PatchSampler, draws: list[tuple[int, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, _ in draws:
        out[sampler.items[k].source] = out.get(sampler.items[k].source, 0) + 1
    return out


# ------------------------------------------------------------------------- sampling weights

def test_weights_1_to_3_give_1_to_3_patch_shares() -> None:
    """Shares follow the weights, not the image counts (6 images against 2); the epoch keeps
    images × patches_per_image patches, spread evenly over each source's images."""
    cfg = SamplingConfig(patch_size=8, patches_per_image=5, vessel_fraction=0.3)
    sampler = PatchSampler(_items({"0:a": 6, "1:b": 2}, weights={"0:a": 1.0, "1:b": 3.0}),
                           cfg, None)
    total = {"0:a": 0, "1:b": 0}
    for epoch in range(8):
        draws = sampler._draws(np.random.default_rng(epoch))
        assert len(draws) == 8 * 5
        shares = _shares(sampler, draws)
        assert shares == {"0:a": 10, "1:b": 30}
        per_item = np.bincount([k for k, _ in draws], minlength=8)
        assert per_item[:6].max() - per_item[:6].min() <= 1  # a: 10 over 6 images
        assert list(per_item[6:]) == [15, 15]
        for k, v in shares.items():
            total[k] += v
    assert total["1:b"] == 3 * total["0:a"]


def test_unset_weight_counts_as_one_and_remainders_are_shared_fairly() -> None:
    cfg = SamplingConfig(patch_size=8, patches_per_image=3)
    sampler = PatchSampler(_items({"0:a": 3, "1:b": 4}, weights={"1:b": 2.0}), cfg, None)
    counts = sampler.item_counts(np.random.default_rng(0), 3)  # 21 draws, 7 : 14
    assert sum(counts[:3]) == 7 and sum(counts[3:]) == 14
    assert sorted(counts[:3]) == [2, 2, 3] and sorted(counts[3:]) == [3, 3, 4, 4]
    # whole mode: 7 images per epoch, shared 2 : 5 (7/3 → 2, 14/3 → 5 by largest remainder)
    whole = PatchSampler(sampler.items, SamplingConfig(mode="whole", batch_size=2), None)
    batches = whole.whole_batches(np.random.default_rng(1))
    idx = [k for b in batches for k in b]
    assert len(idx) == 7
    assert sum(k < 3 for k in idx) == 2 and sum(k >= 3 for k in idx) == 5


def test_whole_mode_weights_repeat_the_images_of_a_small_dataset() -> None:
    cfg = SamplingConfig(mode="whole", batch_size=4)
    sampler = PatchSampler(_items({"0:a": 6, "1:b": 2}, weights={"0:a": 1.0, "1:b": 1.0}),
                           cfg, None)
    for seed in range(3):
        idx = [k for b in sampler.whole_batches(np.random.default_rng(seed)) for k in b]
        assert sorted(idx).count(6) == 2 and sorted(idx).count(7) == 2  # b: 4 of 8, twice each
        assert sum(k < 6 for k in idx) == 4 and len(idx) == 8


@pytest.mark.parametrize("weights", [None, {"0:a": 1.0, "1:b": 1.0}],
                         ids=["unset", "all-one-equal-sizes"])
def test_draws_without_weights_or_with_equal_ones_are_the_old_draws(weights) -> None:
    """Old configs (no weight anywhere, sources of any size) draw exactly as before; so do
    explicit weights of 1 on sources of equal size (the same rng calls)."""
    sizes = {"0:a": 5, "1:b": 2} if weights is None else {"0:a": 3, "1:b": 3}
    items = _items(sizes, weights=weights)
    cfg = SamplingConfig(patch_size=8, patches_per_image=4, vessel_fraction=0.3, batch_size=3)
    sampler = PatchSampler(items, cfg, None)
    for seed in range(3):
        assert sampler._draws(np.random.default_rng(seed)) == \
            _old_draws(sampler, np.random.default_rng(seed))
    whole = PatchSampler(items, SamplingConfig(mode="whole", batch_size=3), None)
    for seed in range(3):
        assert whole.whole_batches(np.random.default_rng(seed)) == \
            _old_whole_batches(whole, np.random.default_rng(seed))
    # and the batches of an epoch are the same tensors as from the old draws
    first = next(iter(sampler.epoch(7)))
    old = _old_draws(sampler, np.random.default_rng(7))[:3]
    expect = np.stack([sampler._crop(k, f)["label"] for k, f in old])
    assert np.array_equal(first[1].numpy(), expect)


def _fundus(n: int, size: int, seed: int = 0, **extra) -> dict:
    return {"dataset": "synthetic", "train_split": "train", "val_split": "val",
            "options": {"kind": "fundus", "n": n, "size": size, "seed": seed}, **extra}


def test_weight_keys_reach_the_items_and_the_sampler() -> None:
    data = {**_fundus(4, 32), "preprocess": "none", "weight": 1,
            "extra": [{**_fundus(8, 32, seed=1), "weight": 3}]}
    cfg = validate_config({"data": data, "sampling": {"patch_size": 16, "patches_per_image": 2}})
    train_items, _, _ = load_train_val(cfg.data, seed=0)
    assert {(it.source, it.weight) for it in train_items} == {("0:synthetic", 1.0),
                                                               ("1:synthetic", 3.0)}
    sampler = PatchSampler(train_items, cfg.sampling, None)
    assert _shares(sampler, sampler._draws(np.random.default_rng(0))) == \
        {"0:synthetic": 6, "1:synthetic": 18}
    with pytest.raises(ConfigError, match="data.extra.0.weight"):
        validate_config({"data": {**data, "extra": [{**_fundus(2, 32), "weight": 0}]}})


# -------------------------------------------------------------------- resolution normalisation

def test_fov_diameter_resizes_fundus_training_and_validation_images() -> None:
    """Synthetic fundus FOVs are 61 px wide at size 64: resized to 40 px (± 2), image, label
    and FOV alike; acquisition copies at the same size; an OCTA dataset is left as read."""
    data = {**_fundus(3, 64), "preprocess": "none", "fov_diameter": 40,
            "acquisition_copies": 1,
            "extra": [{"dataset": "synthetic", "options": {"kind": "octa", "n": 2, "size": 48}}]}
    train_items, val_items, _ = load_train_val(validate_config({"data": data}).data, seed=0)
    fundus = [it for it in train_items + val_items if it.source == "0:synthetic"]
    assert len(fundus) == 9  # 3 train, 3 copies, 3 val
    for it in fundus:
        assert abs(fov_diameter(it.fov) - 40) <= 2, it.id
        assert it.image.shape[-2:] == it.label.shape == it.fov.shape
        assert abs(it.label.shape[0] - round(64 * 40 / 61)) <= 1
    octa = [it for it in train_items + val_items if it.source == "1:synthetic"]
    assert octa and all(it.label.shape == (48, 48) for it in octa)


def test_normalise_resolution_measures_the_fov_and_keeps_near_matches() -> None:
    """Without a FOV mask the diameter comes from the red channel (as at inference); within
    1 % of the target nothing is resampled; an empty FOV is a clear error."""
    from retinaseg.training.data import normalise_resolution

    s = build_dataset("synthetic", None, "train", kind="fundus", n=1, size=64)[0]
    assert normalise_resolution(s, 61.4)["image"] is s["image"]  # 61 px: within 1 %
    out = normalise_resolution({**s, "fov": None}, 30)
    assert abs(out["image"].shape[0] - 32) <= 2 and out["fov"] is None
    assert out["label"].dtype == bool and out["label"].shape == out["image"].shape[:2]
    with pytest.raises(ConfigError, match="FOV mask is empty"):
        normalise_resolution({**s, "fov": np.zeros((64, 64), bool)}, 30)


def _tiny(tmp_path: Path, data: dict, **sections) -> dict:
    raw = {"name": "multi", "seed": 1, "runs_dir": str(tmp_path / "runs"), "data": data,
           "sampling": {"mode": "patch", "patch_size": 32, "patches_per_image": 2,
                        "batch_size": 4},
           "augment": {"prob": 0.0},
           "model": {"name": "unet", "params": {"depth": 2, "width": 4}},
           "train": {"epochs": 2, "val_every": 1, "threads": 1}, **sections}
    return raw


def test_fov_diameter_is_stored_in_the_model_for_inference(tmp_path: Path) -> None:
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.models.persistence import read_spec

    data = {**_fundus(3, 64), "preprocess": [{"name": "green"}, {"name": "standardise"}],
            "fov_diameter": 40}
    out = train(validate_config(_tiny(tmp_path, data, train={"epochs": 1, "threads": 1})))
    spec = read_spec(Path(out["run_dir"]) / "best.safetensors")
    assert spec.info["fov_diameter"] == 40.0 and "data.fov_diameter" in \
        spec.info["fov_diameter_source"]
    image = build_dataset("synthetic", None, "test", kind="fundus", n=1, size=64)[0]["image"]
    seg = Segmenter(Path(out["run_dir"]), device="cpu", precision="fp32")
    assert seg.scale_for(image) == pytest.approx(40 / 61, abs=0.03)
    assert seg(image).shape == (64, 64)


def test_fov_diameter_with_match_fov_false_or_a_non_fundus_dataset_is_an_error() -> None:
    with pytest.raises(ConfigError, match="inference.match_fov.: false contradicts"):
        validate_config({"data": {**_fundus(2, 32), "fov_diameter": 500},
                         "inference": {"match_fov": False}})
    for match in (None, True):  # null (default) and true store it
        cfg = validate_config({"data": {**_fundus(2, 32), "fov_diameter": 500},
                               "inference": {"match_fov": match}})
        assert cfg.data.fov_diameter == 500
    with pytest.raises(ConfigError, match="data.fov_diameter"):
        validate_config({"data": {**_fundus(2, 32), "fov_diameter": 10}})  # below 32 px


# ----------------------------------------------------------------- per-dataset validation

def _folder_dataset(root: Path, n: int = 4, size: int = 48, labels: bool = True,
                    fov_size: int | None = None) -> Path:
    """A ``folder`` dataset of synthetic fundus images (images/, labels/, optional fov/)."""
    ds = build_dataset("synthetic", None, "train", kind="fundus", n=n, size=size, seed=5)
    for i in range(n):
        s = ds[i]
        write_png(root / "images" / f"im{i}.png", (s["image"] * 255).astype(np.uint8))
        if labels:
            write_png(root / "labels" / f"im{i}.png", s["label"])
        if fov_size is not None:
            write_png(root / "fov" / f"im{i}.png", np.ones((fov_size, fov_size), bool))
    return root


def test_per_dataset_validation_columns_and_summary(tmp_path: Path) -> None:
    """Two datasets: metrics.csv has val_dice_<name> and val_auc_<name> of each, val_dice is
    their mean (the checkpoint's score), summary.json has each one's figures at the best
    epoch and its number of validation images."""
    root = _folder_dataset(tmp_path / "data")
    data = {**_fundus(4, 48), "preprocess": [{"name": "green"}, {"name": "standardise"}],
            "weight": 1, "val_fraction": 0.25,
            "extra": [{"dataset": "folder", "root": str(root), "train_split": "all",
                       "weight": 1}]}
    out = train(validate_config(_tiny(tmp_path, data)))
    run = Path(out["run_dir"])
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert {"val_dice_synthetic", "val_auc_synthetic", "val_dice_folder",
            "val_auc_folder"} <= set(rows[0])
    for row in rows:
        mean = (float(row["val_dice_synthetic"]) + float(row["val_dice_folder"])) / 2
        assert float(row["val_dice"]) == pytest.approx(mean)
    summary = json.loads((run / "summary.json").read_text())
    per = summary["per_source"]
    assert per["synthetic"]["val_images"] == 4 and per["folder"]["val_images"] == 1
    best = rows[summary["best_epoch"] - 1]
    assert per["folder"]["val_dice"] == pytest.approx(float(best["val_dice_folder"]))
    assert summary["best_score"] == pytest.approx(float(best["val_dice"]))


def test_one_dataset_keeps_the_old_columns(tmp_path: Path) -> None:
    from retinaseg.training.trainer import CSV_FIELDS, source_names

    cfg = validate_config(_tiny(tmp_path, {**_fundus(2, 32)}))
    assert source_names(cfg) == {"0:synthetic": "synthetic"}
    two = validate_config(_tiny(tmp_path, {**_fundus(2, 32), "extra": [_fundus(2, 32, 1)]}))
    assert source_names(two) == {"0:synthetic": "synthetic_0", "1:synthetic": "synthetic_1"}
    assert CSV_FIELDS == ["epoch", "train_loss", "val_loss", "val_dice", "val_auc", "lr",
                          "seconds"]


# --------------------------------------------------------------------------------- bad input

def _cli_error(capsys, tmp_path: Path, data: dict, **sections) -> str:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(_tiny(tmp_path, data, **sections)))
    code = main(["train", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    return errors[0]


def test_cli_dataset_without_labels(capsys, tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "nolabels", labels=False)
    err = _cli_error(capsys, tmp_path, {**_fundus(2, 32), "extra": [
        {"dataset": "folder", "root": str(root), "train_split": "all"}]})
    assert "data.extra.0 (folder)" in err and "has no labelled images" in err


def test_cli_fov_masks_of_another_size(capsys, tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "badfov", fov_size=40)
    err = _cli_error(capsys, tmp_path, {"dataset": "folder", "root": str(root),
                                        "train_split": "all", "options": {"fov": "fov"}})
    assert "is 40x40 px but the image is 48x48 px" in err


def test_cli_dataset_with_zero_images_after_filtering(capsys, tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "suffix")
    err = _cli_error(capsys, tmp_path, {"dataset": "folder", "root": str(root),
                                        "train_split": "all",
                                        "options": {"label_suffix": "_manual1"}})
    assert "has no usable samples" in err


def test_cli_one_image_left_to_carve_validation_from(capsys, tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "one", n=1)
    err = _cli_error(capsys, tmp_path, {**_fundus(2, 32), "extra": [
        {"dataset": "folder", "root": str(root), "train_split": "all"}]})
    assert "need at least 2 training images of dataset 'folder'" in err


def test_cli_conflicting_resolution_settings(capsys, tmp_path: Path) -> None:
    err = _cli_error(capsys, tmp_path, {**_fundus(2, 32), "fov_diameter": 540},
                     inference={"match_fov": False})
    assert "'inference.match_fov': false contradicts data.fov_diameter" in err
    octa = {"dataset": "synthetic", "options": {"kind": "octa", "n": 2, "size": 32},
            "fov_diameter": 540}
    err = _cli_error(capsys, tmp_path, octa)
    assert "'data.fov_diameter'" in err and "octa" in err
    err = _cli_error(capsys, tmp_path, {**_fundus(2, 32), "weight": -1})
    assert "data.weight" in err

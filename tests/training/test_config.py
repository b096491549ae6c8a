"""Config validation: unknown keys, wrong types and unknown names are errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from retinaseg.errors import ConfigError
from retinaseg.training.config import apply_overrides, dump_config, load_config, validate_config

BASE = {"data": {"dataset": "synthetic"}}


def test_defaults_fill_in() -> None:
    cfg = validate_config({"data": {"dataset": "synthetic"}})
    assert cfg.model.name == "unet" and cfg.train.epochs == 50


def test_unknown_key_names_the_key() -> None:
    with pytest.raises(ConfigError, match="train.epoch"):
        validate_config({**BASE, "train": {"epoch": 3}})


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigError, match="sampling.patch_size"):
        validate_config({**BASE, "sampling": {"patch_size": "big"}})


def test_unknown_model_names_the_key() -> None:
    with pytest.raises(ConfigError, match="model.name"):
        validate_config({**BASE, "model": {"name": "nope"}})


def test_missing_dataset_is_error() -> None:
    with pytest.raises(ConfigError, match="data.dataset"):
        validate_config({"data": {}})


def test_overrides_are_typed() -> None:
    raw = apply_overrides({"data": {"dataset": "synthetic"}},
                          ["train.epochs=7", "optim.lr=1e-2", "augment.flips=false"])
    cfg = validate_config(raw)
    assert cfg.train.epochs == 7 and cfg.optim.lr == 0.01 and cfg.augment.flips is False


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.epochs"])


def test_dump_roundtrip(tmp_path) -> None:
    cfg = validate_config({**BASE, "train": {"epochs": 3}})
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg
    assert yaml.safe_load(p.read_text())["train"]["epochs"] == 3


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/x.yaml")


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", sorted(str(p.relative_to(CONFIGS).with_suffix(""))
                                        for p in CONFIGS.rglob("*.yaml")))
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    if cfg.model.name == "sam2":  # its params are checked by the SAM 2 trainer
        from retinaseg.training.sam2 import sam2_params

        if cfg.model.params.get("size") == "test-tiny":
            sam2_params(cfg)

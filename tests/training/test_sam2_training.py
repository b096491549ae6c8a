"""SAM 2 LoRA training on en-face images (reference §7): a test-tiny run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from retinaseg.errors import ConfigError  # noqa: E402
from retinaseg.training import train  # noqa: E402
from retinaseg.training.config import validate_config  # noqa: E402


def _config(tmp_path: Path, **params) -> dict:
    return {
        "name": "sam2_tiny", "seed": 0, "runs_dir": str(tmp_path / "runs"),
        "data": {"dataset": "synthetic", "options": {"n": 2, "size": 64}},
        "model": {"name": "sam2", "params": {
            "size": "test-tiny",
            "lora": {"rank": 2, "alpha": 2, "dropout": 0.0},
            "prompt": {"sampler": "prompt_generation", "n_pos": 2, "n_neg": 1}, **params}},
        "loss": {"name": "bce_dice"},
        "optim": {"name": "adam", "lr": 1e-4, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        "train": {"epochs": 1, "val_every": 1, "device": "cpu", "threads": 2},
    }


def test_sam2_run_writes_lora_and_loads(tmp_path: Path) -> None:
    from retinaseg.models.sam2.lora import load_lora, read_lora_header
    from retinaseg.models.sam2.predictor import Sam2Prompter
    from retinaseg.models.sam2.weights import load_state

    summary = train(validate_config(_config(tmp_path)))
    run = Path(summary["run_dir"])
    for name in ("config.yaml", "metrics.csv", "summary.json", "best_lora.safetensors"):
        assert (run / name).is_file(), name
    assert summary["best_epoch"] == 1 and summary["epochs_run"] == 1
    assert 0 <= summary["best_score"] <= 1
    assert summary["trainable_parameters"] < summary["total_parameters"]

    lora = run / "best_lora.safetensors"
    tensors = load_file(str(lora))
    assert tensors and all(".lora_" in k or k.endswith("base_layer.bias") for k in tensors)
    base_names = set(load_state(run / "base"))
    assert not set(tensors) & base_names  # no frozen weight was saved
    assert any(".lora_B." in k and v.abs().sum() > 0 for k, v in tensors.items())
    header = read_lora_header(lora)
    assert header.settings.rank == 2 and header.info["epoch"] == 1

    model = load_lora(lora)  # base from the header, its SHA-256 checked
    for k, v in tensors.items():
        assert torch.equal(dict(model.named_parameters())[k].detach(), v)
    prompter = Sam2Prompter(model)
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    prompter.set_image(image)
    res = prompter.predict([[32, 32]], [1])
    assert res.prob.shape == (64, 64) and np.isfinite(res.prob).all()


def test_sam2_needs_weights_unless_test_tiny(tmp_path: Path) -> None:
    cfg = validate_config(_config(tmp_path, size="tiny"))
    with pytest.raises(ConfigError, match="model.params.weights"):
        train(cfg)
    assert not (tmp_path / "runs").exists()  # checked before any run folder is made
    cfg = validate_config(_config(tmp_path, prompt={"sampler": "nope"}))
    with pytest.raises(ConfigError, match="sampler"):
        train(cfg)

"""OCTA-Net trained in two stages by one command (reference §5): coarse (thick + thin branches
on label + centerline), the best-thick/best-thin checkpoints, then the fine stage; resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retinaseg.errors import ConfigError
from retinaseg.inference import predict_probability
from retinaseg.models.persistence import load_model
from retinaseg.training import train
from retinaseg.training.config import validate_config


def _config(tmp_path: Path, **over) -> dict:
    cfg = {
        "name": "octanet", "seed": 0, "runs_dir": str(tmp_path / "runs"),
        "data": {"dataset": "synthetic", "options": {"n": 6, "size": 64}},
        "sampling": {"mode": "patch", "patch_size": 32, "patches_per_image": 2,
                     "batch_size": 4},
        "model": {"name": "octanet", "params": {"preset": "cpu"}},
        "loss": {"name": "octanet"},
        "optim": {"name": "adam", "lr": 1e-3},
        "schedule": {"name": "poly"},
        "train": {"epochs": 2, "val_every": 1, "device": "cpu", "threads": 2},
        "fine": {"epochs": 1, "checkpoints": "two", "poly_offset": 0.5},
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and k in cfg else v
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("octanet")
    summary = train(validate_config(_config(tmp)))
    return Path(summary["run_dir"])


def test_two_stages_write_their_checkpoints(run: Path) -> None:
    for name in ("best", "best_thick", "best_thin"):
        assert (run / f"{name}.safetensors").is_file(), name
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(0 <= float(r["val_auc_thin"]) <= 1 for r in rows)
    assert all(0 <= float(r["val_auc_thick"]) <= 1 for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fine"]["run_dir"] == str(run / "fine")
    assert json.loads((run / "stage.json").read_text())["stage"] == "done"
    fine_cfg = (run / "fine" / "config.yaml").read_text()
    assert "octanet_fine" in fine_cfg and "two_coarse: true" in fine_cfg
    assert "poly_offset: 0.5" in fine_cfg


def test_fine_model_holds_the_frozen_coarse_checkpoints(run: Path) -> None:
    fine, spec = load_model(run / "fine" / "best.safetensors")
    assert spec.name == "octanet_fine"
    thick, _ = load_model(run / "best_thick.safetensors")
    thin, _ = load_model(run / "best_thin.safetensors")
    for name, net in (("coarse_thick", thick), ("coarse_thin", thin)):
        ours = getattr(fine, name).state_dict()
        for k, v in net.state_dict().items():
            assert torch.equal(ours[k], v), (name, k)
    image = np.random.default_rng(0).random((1, 45, 67)).astype(np.float32)  # any size
    prob = predict_probability(fine, image, torch.device("cpu"))
    assert prob.shape == (45, 67) and np.isfinite(prob).all()


def test_resume_in_the_fine_stage_skips_the_coarse_stage(run: Path) -> None:
    (run / "stage.json").write_text(json.dumps({"stage": "fine"}))
    before = (run / "metrics.csv").read_text()
    summary = train(None, resume=run)
    assert (run / "metrics.csv").read_text() == before
    assert summary["fine"]["epochs_run"] == 1
    assert json.loads((run / "stage.json").read_text())["stage"] == "done"


def test_branch_models_need_the_octanet_loss_and_centerlines(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs loss.name 'octanet'"):
        train(validate_config(_config(tmp_path, loss={"name": "dice"}, fine={"epochs": 0})))
    cfg = _config(tmp_path, fine={"epochs": 0})
    cfg["data"]["derive_centerline"] = False
    with pytest.raises(ConfigError, match="derive_centerline is false"):
        train(validate_config(cfg))
    with pytest.raises(ConfigError, match="fine.epochs"):
        validate_config(_config(tmp_path, model={"name": "unet", "params": {}}))


def test_fine_stage_without_its_coarse_checkpoint_is_one_error(run: Path, tmp_path: Path,
                                                               capsys) -> None:
    import shutil

    from retinaseg.cli import main

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "fine")
    (copy / "best_thin.safetensors").unlink()
    (copy / "stage.json").write_text(json.dumps({"stage": "fine"}))
    assert main(["train", "--resume", str(copy)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "best_thin.safetensors" in err[0] and "never written" in err[0]

"""End to end on synthetic data: train → predict → evaluate, and resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from retinaseg.training import load_config, train
from retinaseg.utils.runtime import cpu_has_bf16

REPO = Path(__file__).resolve().parents[2]
TINY = """
name: tiny
seed: 3
runs_dir: {runs}
data:
  dataset: synthetic
  train_split: train
  val_split: val
  options: {{kind: octa, n: 6, size: 64}}
  preprocess: [{{name: grey}}, {{name: standardise}}]
sampling: {{mode: patch, patch_size: 32, patches_per_image: 4, batch_size: 4}}
augment: {{flips: true, rot90: true, intensity: false, prob: 0.5}}
model: {{name: unet, params: {{depth: 2, width: 4}}}}
loss: {{name: bce_dice}}
optim: {{name: adamw, lr: 0.01}}
schedule: {{name: cosine}}
train: {{epochs: {epochs}, val_every: 1, threads: 1{extra}}}
"""


def _config(tmp_path: Path, epochs: int = 3, extra: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.format(runs=tmp_path / "runs", epochs=epochs, extra=extra))
    return p


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("train")
    return train(_config(tmp, epochs=3))


def test_run_folder_contents(trained: dict) -> None:
    run = Path(trained["run_dir"])
    for name in ("config.yaml", "metrics.csv", "last.pt", "best.safetensors", "curves.png",
                 "summary.json"):
        assert (run / name).is_file(), name
    assert len(list((run / "val_predictions").glob("*_prob.png"))) == 6
    assert run.parent.name == "tiny" and not list(run.glob("*.tmp*"))
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3


def test_threshold_chosen_on_validation(trained: dict) -> None:
    from retinaseg.models.persistence import read_spec

    spec = read_spec(Path(trained["run_dir"]) / "best.safetensors")
    assert spec.threshold == pytest.approx(trained["threshold"])
    assert "validation" in spec.info["threshold_source"]


def test_predict_and_evaluate(trained: dict, tmp_path: Path) -> None:
    import retinaseg
    from retinaseg.data.synthetic import make_octa_sample
    from retinaseg.io import read_image, write_png

    s = make_octa_sample(64, seed=99)
    write_png(tmp_path / "in" / "a.png", s["image"])
    rep = retinaseg.predict(tmp_path / "in", model=trained["run_dir"], out=tmp_path / "pred")
    assert len(rep.rows) == 1
    prob = read_image(tmp_path / "pred" / "a_prob.png")
    assert prob.shape == (64, 64) and (tmp_path / "pred" / "a_mask.png").is_file()
    summary = retinaseg.evaluate(trained["run_dir"], "synthetic", None, "test",
                                 tmp_path / "ev", options={"kind": "octa", "n": 6, "size": 64})
    on_disk = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert on_disk["n_images"] == summary["n_images"] > 0
    assert set(on_disk["per_image_mean"]) >= {"dice", "auc", "cldice", "hd95", "betti0_error"}
    assert on_disk["per_image_mean"]["auc"] > 0.6  # learned something in 3 tiny epochs
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()
    assert (tmp_path / "ev" / "per_image.csv").read_text().startswith("id,dice,iou")


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    a = train(_config(tmp_path / "a", epochs=2))
    b = train(_config(tmp_path / "b", epochs=2))
    ha = (Path(a["run_dir"]) / "metrics.csv").read_text().splitlines()
    hb = (Path(b["run_dir"]) / "metrics.csv").read_text().splitlines()
    assert [r.rsplit(",", 1)[0] for r in ha] == [r.rsplit(",", 1)[0] for r in hb]  # no timing


def _wait_for_epochs(csv: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if csv.is_file() and len(csv.read_text().strip().splitlines()) > n:
            return
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    raise AssertionError("training did not reach the epoch in time")


@pytest.mark.parametrize("extra", ["", ", ema: 0.9"], ids=["plain", "ema"])
def test_kill_and_resume_matches_uninterrupted(tmp_path: Path, extra: str) -> None:
    cfg = _config(tmp_path / "k", epochs=4, extra=extra)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "retinaseg.cli", "train", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "k" / "runs" / "tiny"
    t0 = time.time()
    while not runs.is_dir() or not any(runs.iterdir()):
        assert time.time() - t0 < 60
        time.sleep(0.05)
    run = next(runs.iterdir())
    _wait_for_epochs(run / "metrics.csv", 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len((run / "metrics.csv").read_text().strip().splitlines()) - 1
    assert 1 <= done < 4
    resumed = train(None, resume=run)
    assert resumed["epochs_run"] == 4 and resumed["run_dir"] == str(run)
    ref = train(_config(tmp_path / "r", epochs=4, extra=extra))
    a = np.genfromtxt(run / "metrics.csv", delimiter=",", names=True)
    b = np.genfromtxt(Path(ref["run_dir"]) / "metrics.csv", delimiter=",", names=True)
    assert list(a["epoch"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(a["val_dice"], b["val_dice"], atol=1e-5)
    np.testing.assert_allclose(a["val_auc"], b["val_auc"], atol=1e-5)  # continuous: EMA state


def test_resume_of_non_run_folder_is_error(tmp_path: Path) -> None:
    from retinaseg.errors import ConfigError

    with pytest.raises(ConfigError, match="not a run folder"):
        train(None, resume=tmp_path)


def test_new_run_never_overwrites(tmp_path: Path) -> None:
    from retinaseg.training.trainer import new_run_dir

    cfg = load_config(_config(tmp_path))
    a, b = new_run_dir(cfg), new_run_dir(cfg)
    assert a != b and a.is_dir() and b.is_dir()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import torch

    from retinaseg.errors import TrainingError
    from retinaseg.training import trainer as trainer_mod

    real_build = trainer_mod.build_loss
    calls = {"n": 0}

    def poisoned(name: str, **params):
        base = real_build(name, **params)

        def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            value = base(logits, target)
            return value * float("nan") if calls["n"] > 6 else value  # epoch 1 has 6 steps

        return loss

    monkeypatch.setattr(trainer_mod, "build_loss", lambda n, **p: _Wrap(poisoned(n, **p)))
    with pytest.raises(TrainingError, match="loss became nan at epoch 2"):
        train(_config(tmp_path, epochs=3))
    run = next((tmp_path / "runs" / "tiny").iterdir())
    state = torch.load(run / "last.pt", weights_only=True)
    assert json.loads(state["state"])["epoch"] == 1
    assert (run / "best.safetensors").is_file()


class _Wrap:
    """Make a plain function look like a loss module (``.to(device)`` returns itself)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def to(self, _device) -> _Wrap:
        return self

    def __call__(self, *a):
        return self.fn(*a)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_training_learns(tmp_path: Path) -> None:
    """``train.amp: true`` on a bfloat16 CPU: no fallback warning, the loss falls, vessels found."""
    from retinaseg.models.persistence import read_spec

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = train(_config(tmp_path, epochs=6, extra=", amp: true"), overrides=[
            "seed=1", "sampling.patches_per_image=8", "augment.rot90=false",
            "model.params.width=8", "train.val_every=6"])
    rows = (Path(out["run_dir"]) / "metrics.csv").read_text().strip().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]
    assert out["best_score"] > 0.5  # validation Dice
    assert read_spec(Path(out["run_dir"]) / "best.safetensors").info["train_precision"] == "bf16"

"""Mixed-precision training: which mode each device gets, and a bfloat16 run that learns."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from retinaseg.training import train, trainer
from retinaseg.utils.runtime import cpu_has_bf16

TINY = """
name: tiny_amp
seed: 1
runs_dir: {runs}
data:
  dataset: synthetic
  train_split: train
  val_split: val
  options: {{kind: octa, n: 6, size: 64}}
  preprocess: [{{name: grey}}, {{name: standardise}}]
sampling: {{mode: patch, patch_size: 32, patches_per_image: 8, batch_size: 4}}
augment: {{flips: true, rot90: false, intensity: false, prob: 0.5}}
model: {{name: unet, params: {{depth: 2, width: 8}}}}
loss: {{name: bce_dice}}
optim: {{name: adamw, lr: 0.01}}
schedule: {{name: cosine}}
train: {{epochs: 6, val_every: 6, threads: 1, amp: true}}
"""


def test_cpu_default_is_float32() -> None:
    assert trainer._amp_mode(torch.device("cpu"), None) == (False, None)
    assert trainer._amp_mode(torch.device("cpu"), False) == (False, None)


def test_cuda_default_is_float16() -> None:
    assert trainer._amp_mode(torch.device("cuda"), None) == (True, torch.float16)
    assert trainer._amp_mode(torch.device("cuda"), False)[0] is False


def test_cpu_bf16_when_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: True)
    assert trainer._amp_mode(torch.device("cpu"), True) == (True, torch.bfloat16)


def test_cpu_without_bf16_warns_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert trainer._amp_mode(torch.device("cpu"), True) == (False, None)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_training_learns(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.format(runs=tmp_path / "runs"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback warning on this CPU
        out = train(cfg)
    rows = (Path(out["run_dir"]) / "metrics.csv").read_text().strip().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert all(loss == loss for loss in losses)  # finite
    assert losses[-1] < 0.8 * losses[0]
    assert out["best_score"] > 0.5  # validation Dice: the synthetic vessels are found
    from retinaseg.models.persistence import read_spec

    assert read_spec(Path(out["run_dir"]) / "best.safetensors").info["train_precision"] == "bf16"

"""Training runs and configs through ``retinaseg train``: bad configs, bad resume state.

Kill-and-resume, atomic writes, never overwriting a run, the NaN stop and same-seed
reproducibility are covered in ``tests/training/test_trainer.py``; key-level config validation in
``tests/training/test_config.py``. Here: what the user sees from the CLI, and that nothing
(no run folder, no code from a pickle) is left behind by a rejected run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from retinaseg.training.config import dump_config, load_config
from retinaseg.utils.atomic import atomic_path

TINY = """
name: tiny
seed: 3
runs_dir: {runs}
data:
  dataset: synthetic
  train_split: train
  val_split: val
  options: {{kind: octa, n: 4, size: 32}}
  preprocess: [{{name: grey}}]
sampling: {{mode: patch, patch_size: 16, patches_per_image: 2, batch_size: 4}}
model: {{name: unet, params: {{depth: 2, width: 4}}}}
train: {{epochs: 1, threads: 1}}
"""


def write_config(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text if text is not None else TINY.format(runs=tmp_path / "runs"))
    return path


@pytest.mark.parametrize("edit,needle", [
    ({"data.root": "no/such/folder"}, "data.root"),
    ({"data.dataset": "drive", "data.root": "no/such/DRIVE"}, "data.root"),
    ({"data.extra": "[{dataset: drive, root: /no/such/DRIVE}]"}, "data.extra.0.root"),
])
def test_missing_data_root_names_the_key_and_creates_no_run(cli, tmp_path, edit,
                                                            needle) -> None:
    sets = [x for k, v in edit.items() for x in ("--set", f"{k}={v}")]
    res = cli("train", write_config(tmp_path), *sets)
    res.assert_fatal(f"'{needle}'", "does not exist")
    assert not (tmp_path / "runs").exists()


def test_data_root_that_is_a_file_names_the_key(cli, tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    res = cli("train", write_config(tmp_path), "--set", f"data.root={tmp_path / 'afile'}")
    res.assert_fatal("'data.root'", "is not a folder")


@pytest.mark.parametrize("text,needle", [
    ("data: {dataset: synthetic}\ntrain: {epochs: 2, learning_rate: 1}\n", "train.learning_rate"),
    ("data: {dataset: synthetic}\nsampling: {patch_size: big}\n", "sampling.patch_size"),
    ("data: {dataset: synthetic}\noptim: {lr: -1}\n", "optim.lr"),
    ("data: {dataset: synthetic}\nmodell: {name: unet}\n", "modell"),
    ("data: {dataset: synthetic, root: 5, options: [1]}\n", "data.root"),
    ("data: {}\n", "data.dataset"),
    ("- just\n- a list\n", "mapping"),
    ("data: {dataset: synthetic\n", "not valid YAML"),
])
def test_bad_config_file_is_one_error_naming_the_key(cli, tmp_path, text, needle) -> None:
    res = cli("train", write_config(tmp_path, text))
    res.assert_fatal(needle)
    assert len(res.err.strip().splitlines()) == 1, res.err
    assert not (tmp_path / "runs").exists()


def _run_folder(tmp_path: Path) -> Path:
    """A run folder as ``train`` leaves it (config.yaml), without any epoch run yet."""
    run = tmp_path / "runs" / "tiny" / "20260101-000000"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(load_config(write_config(tmp_path))))
    return run


class _Payload:
    """Unpickling this creates the file ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("content", ["garbage", "truncated", "code", "wrong keys"])
def test_damaged_resume_state_is_clear_error(cli, tmp_path, content) -> None:
    run = _run_folder(tmp_path)
    marker = tmp_path / "code_ran"
    last = run / "last.pt"
    if content == "garbage":
        last.write_bytes(b"\x80\x04 not a checkpoint")
    elif content == "code":
        torch.save({"model": _Payload(marker)}, last)
    else:
        torch.save({"model": {"w": torch.zeros(2)}, "optim": {}, "state": "{}"}, last)
        if content == "truncated":
            last.write_bytes(last.read_bytes()[:100])
    res = cli("train", "--resume", run)
    res.assert_fatal("cannot resume from", "last.pt")
    assert not marker.exists()


def test_resume_after_data_moved_names_data_root(cli, tmp_path) -> None:
    run = _run_folder(tmp_path)
    text = (run / "config.yaml").read_text().replace("root: null", "root: /no/such/data")
    (run / "config.yaml").write_text(text)
    cli("train", "--resume", run).assert_fatal("'data.root'", "/no/such/data")


def test_resume_of_missing_folder_is_clear_error(cli, tmp_path) -> None:
    cli("train", "--resume", tmp_path / "nope").assert_fatal("not a run folder")


# --------------------------------------------------------------------------------------------
# atomic writes

WRITER = """
import sys
from retinaseg.utils.atomic import write_text_atomic
path, k = sys.argv[1], 0
while True:
    k += 1
    write_text_atomic(path, str(k % 10) * 2_000_000 + "END")
"""


def test_kill_9_during_writes_never_leaves_half_a_file(tmp_path) -> None:
    """Every toolkit file goes through ``atomic_path``: killed mid-write, old or new, never half."""
    target = tmp_path / "file.txt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    for delay in (0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=env)
        t0 = time.time()
        while not target.exists() and time.time() - t0 < 60:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        text = target.read_text()
        assert len(text) == 2_000_003 and text.endswith("END") and len(set(text[:-3])) == 1


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash in the middle of writing")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]

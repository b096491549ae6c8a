"""Distributed training with torchrun (gloo on CPU, two processes): the same loss curve as one
process with the same global batch, only rank 0 writes files, kill-and-resume with another
world size, a dead rank stops the others, and the sampler's sharding of a global batch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from retinaseg.errors import ConfigError
from retinaseg.training import train
from retinaseg.training.config import SamplingConfig
from retinaseg.training.data import Item, PatchSampler
from retinaseg.training.distributed import check_shards, rank_seed

REPO = Path(__file__).resolve().parents[2]
# No augmentation, no BatchNorm, a per-pixel mean loss: then 2 processes × 2 patches compute
# exactly the gradient of one process × 4 patches, up to floating-point summation order.
TINY = """
name: ddp
seed: 5
runs_dir: {runs}
data:
  dataset: synthetic
  train_split: train
  val_split: val
  options: {{kind: octa, n: 4, size: 64}}
  preprocess: [{{name: grey}}, {{name: standardise}}]
sampling: {{mode: patch, patch_size: 32, patches_per_image: {ppi}, batch_size: 4}}
augment: {{prob: 0}}
model: {{name: unet, params: {{depth: 2, width: 4, norm: none}}}}
loss: {{name: bce}}
optim: {{name: adamw, lr: 0.01}}
schedule: {{name: cosine}}
train: {{epochs: {epochs}, val_every: 1, threads: 1, dist_timeout_s: 60}}
"""
AUDIT = '''
"""Record every file write (open for writing, rename, mkdir, remove) under AUDIT_ROOT."""
import atexit, json, os, sys
_root, _rank, _seen, _on = os.environ.get("AUDIT_ROOT"), os.environ.get("RANK"), [], [True]
def _hook(event, args):
    if not _on[0] or event not in ("open", "os.rename", "os.mkdir", "os.remove"):
        return
    path = args[1] if event == "os.rename" else args[0]  # a rename: its destination
    if not isinstance(path, (str, bytes, os.PathLike)) or not os.fsdecode(path).startswith(_root):
        return
    if event == "open":
        mode, flags = args[1] or "", args[2] or 0
        if not (set(mode) & set("wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
            return
    _seen.append([event, os.fsdecode(path)])
def _dump():
    _on[0] = False
    with open(os.environ["AUDIT_OUT"] + f"/rank{_rank}.json", "w") as f:
        json.dump(_seen, f)
if _root and _rank is not None:
    sys.addaudithook(_hook)
    atexit.register(_dump)
'''


def _config(tmp: Path, epochs: int = 3, ppi: int = 4) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "ddp.yaml"
    path.write_text(TINY.format(runs=tmp / "runs", epochs=epochs, ppi=ppi))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra.get("PYTHONPATH"),
                                                    str(REPO / "src")) if p)
    return env


def _torchrun(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
            "-m", "retinaseg", "train", str(cfg), *args]


def _metrics(run: Path) -> np.ndarray:
    return np.genfromtxt(run / "metrics.csv", delimiter=",", names=True)


def _only_run(runs: Path) -> Path:
    found = [p for p in runs.glob("ddp/*") if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


# ---- the sampler's shards and the checks (in-process) ----------------------------------------
def _items(n: int = 3) -> list[Item]:
    rng = np.random.default_rng(0)
    return [Item(id=str(k), image=rng.random((1, 24, 24), dtype=np.float32),
                 label=rng.random((24, 24)) > 0.7, fov=np.ones((24, 24), bool))
            for k in range(n)]


def test_shards_partition_the_global_batches() -> None:
    """Rank 0's and rank 1's shares of each global batch, stacked, are exactly that batch; the
    last batch of 3 × 5 = 15 patches (3 left over from batches of 4) is split 1 + 2."""
    sampler = PatchSampler(_items(), SamplingConfig(patch_size=8, patches_per_image=5,
                                                    batch_size=4), None)
    glob = list(sampler.epoch(11))
    parts = [list(sampler.shards(11, r, 2)) for r in range(2)]
    assert len(glob) == 4 and sampler.steps(2) == 4 == len(parts[0]) == len(parts[1])
    for k, batch in enumerate(glob):
        (a, fa), (b, fb) = parts[0][k], parts[1][k]
        for t in range(4):
            assert torch.equal(torch.cat([a[t], b[t]]), batch[t])
        assert fa + fb == 1.0
    assert [f for _, f in parts[0]] == [0.5, 0.5, 0.5, 1 / 3]
    assert sampler.steps(4) == 3 and len(list(sampler.shards(11, 3, 4))) == 3  # 3 < 4: skipped


def test_one_process_shards_are_the_epoch() -> None:
    sampler = PatchSampler(_items(), SamplingConfig(patch_size=8, patches_per_image=3,
                                                    batch_size=4), None)
    for (batch, frac), ref in zip(sampler.shards(2), sampler.epoch(2), strict=True):
        assert frac == 1.0 and all(torch.equal(x, y) for x, y in zip(batch, ref))
    assert rank_seed(123, 0) == 123 and rank_seed(123, 1) != rank_seed(123, 2)


def test_world_larger_than_the_batches_is_one_sentence() -> None:
    check_shards(steps=2, world=2, batch_size=4, samples=8, unit="patches")
    with pytest.raises(ConfigError, match=r"^3 processes need at least 3 images in every "
                                          r"global batch, but sampling.batch_size is 2"):
        check_shards(steps=0, world=3, batch_size=2, samples=5, unit="images")


# ---- a dead rank (two processes started by hand, so no torchrun agent kills the survivor) ----
DEAD = textwrap.dedent("""
    import os, sys, time, torch
    from retinaseg.errors import TrainingError
    from retinaseg.training.distributed import process_group
    try:
        with process_group(torch.device("cpu"), "gloo", timeout_s=3) as d:
            if d.rank == 1:
                if sys.argv[1] == "exit":
                    os._exit(0)
                time.sleep(40)
                os._exit(0)
            t0 = time.time()
            d.on_main(lambda: {"val_dice": 0.5}, "validating")
    except TrainingError as err:
        print(f"{time.time() - t0:.1f} {err}")
        sys.exit(3)
""")


@pytest.mark.parametrize("how", ["exit", "hang"])
def test_dead_rank_stops_the_other_with_a_clear_error(how: str) -> None:
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", DEAD, how], env=_env(
        RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
        MASTER_PORT=port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in (0, 1)]
    try:
        out, err = procs[0].communicate(timeout=30)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert procs[0].returncode == 3, err
    seconds, msg = out.strip().split(" ", 1)
    assert msg.startswith("rank 0 of 2: another training process died or did not answer "
                          "within 3 s while validating")
    assert float(seconds) < 10  # the timeout (3 s), not a hang


# ---- torchrun, two processes ------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A 2-process run (every file write recorded per rank) and the same config in 1 process."""
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "hook").mkdir()
    (tmp / "hook" / "sitecustomize.py").write_text(AUDIT)
    cfg2 = _config(tmp / "two")
    env = _env(PYTHONPATH=str(tmp / "hook"), AUDIT_ROOT=str(tmp / "two" / "runs"),
               AUDIT_OUT=str(tmp))
    done = subprocess.run(_torchrun(cfg2), env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best model:") == 1  # rank 0 alone reports
    one = train(_config(tmp / "one"))
    return _only_run(tmp / "two" / "runs"), Path(one["run_dir"]), tmp


def test_two_processes_match_one_with_the_same_global_batch(two_and_one) -> None:
    """Same global batch (4 patches: 2 per process), same seed: the same patches, the same
    averaged gradient, so the same curves. The tolerance, 1e-4 relative, covers float32
    summation order only (the 2-process gradient is the mean of two half-batch means, the
    1-process one the mean of four; about 1e-7 per step, grown by Adam over 18 steps); measured
    differences are ≤ 1e-5. A wrong split (overlapping or missing patches, unscaled shares,
    per-rank draws) changes the losses in the second decimal."""
    two, one, _ = two_and_one
    a, b = _metrics(two), _metrics(one)
    assert list(a["epoch"]) == list(b["epoch"]) == [1, 2, 3]
    for col in ("train_loss", "val_loss", "val_auc", "lr"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-4, err_msg=col)
    s2 = json.loads((two / "summary.json").read_text())
    s1 = json.loads((one / "summary.json").read_text())
    assert s2["best_epoch"] == s1["best_epoch"] and s2["epochs_run"] == 3
    assert s2["threshold"] == pytest.approx(s1["threshold"], abs=0.02)


def test_only_rank_zero_writes_files(two_and_one) -> None:
    two, one, tmp = two_and_one
    rank0 = json.loads((tmp / "rank0.json").read_text())
    rank1 = json.loads((tmp / "rank1.json").read_text())
    assert rank1 == []
    written = {Path(p).name for _, p in rank0}
    assert {"summary.json", "last.pt", "metrics.csv", "best.safetensors"} <= written
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list(two.rglob("*.tmp*"))


@pytest.mark.slow
def test_kill_two_processes_then_resume_in_one(tmp_path: Path) -> None:
    """SIGKILL the whole 2-process run after an epoch, resume the folder in one process: it
    runs exactly the remaining epochs, and since the resume state does not depend on the world
    size it ends where an uninterrupted 1-process run ends (same tolerance as above)."""
    epochs = 10
    cfg = _config(tmp_path / "k", epochs=epochs, ppi=8)
    proc = subprocess.Popen(_torchrun(cfg), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    csv, t0 = None, time.time()
    try:
        while time.time() - t0 < 120:
            runs = list((tmp_path / "k" / "runs").glob("ddp/*/metrics.csv"))
            if runs and len(runs[0].read_text().strip().splitlines()) > 1:
                csv = runs[0]
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert csv is not None, "no epoch finished in time"
    run = csv.parent
    done = len(csv.read_text().strip().splitlines()) - 1
    assert 1 <= done < epochs and not (run / "summary.json").exists()
    resumed = train(None, resume=run)
    assert resumed["epochs_run"] == epochs and resumed["run_dir"] == str(run)
    summary = json.loads((run / "summary.json").read_text())
    assert 1 <= summary["best_epoch"] <= epochs and 0 < summary["threshold"] < 1
    ref = train(_config(tmp_path / "r", epochs=epochs, ppi=8))
    a, b = _metrics(run), _metrics(Path(ref["run_dir"]))
    assert list(a["epoch"]) == list(range(1, epochs + 1))
    for col in ("train_loss", "val_loss", "val_auc"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-4, err_msg=col)

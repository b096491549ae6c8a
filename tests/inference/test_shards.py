"""Sharded, resumable batch prediction: shard specs, the deterministic split, resuming, and two
shards plus a merge giving exactly the single-process outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinaseg.cli import main
from retinaseg.errors import RetinasegError
from retinaseg.inference.batch import predict_files
from retinaseg.inference.shards import DONE_DIR, Shard, merge_predictions, parse_shard


class _FakeSeg:
    """A tiny deterministic segmenter: probability = the image's grey level, counted calls."""

    calls = 0
    threshold, head_name, last_scale, classes, takes_volumes = 0.5, "", 1.0, None, False
    spec = None

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, image: np.ndarray, source: str = "") -> np.ndarray:
        type(self).calls += 1
        img = np.asarray(image, dtype=np.float32)
        grey = img.mean(axis=-1) if img.ndim == 3 else img
        return grey / max(float(grey.max()), 1.0)


def _inputs(root: Path, n: int = 5) -> Path:
    """``n`` grey noise PNGs ``im<i>.png`` in ``root`` (created)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


def _run(inputs: list[Path], out: Path, **kw) -> object:
    return predict_files(inputs, "fake", out, segmenter=_FakeSeg, **kw)


@pytest.mark.parametrize("text, want", [("1/2", Shard(1, 2)), ("2/2", Shard(2, 2)),
                                        (" 3 / 4 ", Shard(3, 4)), (None, None)])
def test_parse_shard(text, want) -> None:
    assert parse_shard(text) == want


@pytest.mark.parametrize("text", ["3/2", "0/0", "0/2", "1/0", "a/b", "1", "-1/2"])
def test_bad_shard_is_one_sentence(text: str) -> None:
    with pytest.raises(RetinasegError, match=r"^--shard must be I/N with whole numbers"):
        parse_shard(text)


def test_auto_shard_from_torchrun_then_slurm() -> None:
    assert parse_shard("auto", {"RANK": "0", "WORLD_SIZE": "3"}) == Shard(1, 3)
    assert parse_shard("auto", {"SLURM_PROCID": "4", "SLURM_NTASKS": "5"}) == Shard(5, 5)
    both = {"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "8"}
    assert parse_shard("auto", both) == Shard(2, 2)  # torchrun wins
    with pytest.raises(RetinasegError, match="needs RANK and WORLD_SIZE"):
        parse_shard("auto", {})
    with pytest.raises(RetinasegError, match="not a rank below the task count"):
        parse_shard("auto", {"RANK": "2", "WORLD_SIZE": "2"})


def test_split_is_round_robin_and_covers_every_input_once() -> None:
    parts = [Shard(i, 3).take(8) for i in (1, 2, 3)]
    assert parts == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert sorted(sum(parts, [])) == list(range(8))


def test_two_shards_give_the_single_process_outputs(tmp_path: Path) -> None:
    src = _inputs(tmp_path / "in")
    dup = tmp_path / "dup"
    dup.mkdir()
    Image.fromarray(np.full((20, 24), 200, np.uint8)).save(dup / "im1.png")  # stem clash
    inputs = [src, dup]
    single = _run(inputs, tmp_path / "single")
    for i in (1, 2):
        _run(inputs, tmp_path / "sharded", shard=f"{i}/2")
    merge_predictions(tmp_path / "sharded")
    want = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert "im1-2_prob.png" in want and len(single.rows) == 6
    for name in want:  # every output and predictions.csv, byte for byte
        assert (tmp_path / "sharded" / name).read_bytes() == \
            (tmp_path / "single" / name).read_bytes(), name
    got = {p.name for p in (tmp_path / "sharded").iterdir()}
    assert got - set(want) == {"predictions-1.csv", "predictions-2.csv", DONE_DIR}


def test_merge_needs_every_shard(tmp_path: Path) -> None:
    src = _inputs(tmp_path / "in")
    _run([src], tmp_path / "out", shard="2/3")
    with pytest.raises(RetinasegError, match=r"shard\(s\) 1, 3 of 3 have not finished"):
        merge_predictions(tmp_path / "out")


def test_resume_keeps_finished_rows_and_redoes_incomplete_ones(tmp_path: Path) -> None:
    src = _inputs(tmp_path / "in")
    first = _run([src], tmp_path / "out", resume=True)
    csv_before = (tmp_path / "out" / "predictions.csv").read_bytes()
    _FakeSeg.calls = 0
    again = _run([src], tmp_path / "out", resume=True)
    assert _FakeSeg.calls == 0 and again.rows == first.rows
    assert (tmp_path / "out" / "predictions.csv").read_bytes() == csv_before
    (tmp_path / "out" / "im3_overlay.png").unlink()  # incomplete: redone
    again = _run([src], tmp_path / "out", resume=True)
    assert _FakeSeg.calls == 1 and (tmp_path / "out" / "im3_overlay.png").is_file()
    assert (tmp_path / "out" / "predictions.csv").read_bytes() == csv_before
    _FakeSeg.calls = 0
    _run([src], tmp_path / "out", resume=True, threshold=0.3)  # other settings: all redone
    assert _FakeSeg.calls == 5


def test_cli_bad_shard_exits_2_before_any_work(tmp_path: Path, capsys) -> None:
    src = _inputs(tmp_path / "in")
    code = main(["predict", str(src), "--out", str(tmp_path / "o"), "--shard", "3/2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--shard must be I/N" in err
    assert not (tmp_path / "o").exists()

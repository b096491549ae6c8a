"""CLI: user errors end in one sentence and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from retinaseg.cli import main

REPO = Path(__file__).resolve().parents[1]


def _err(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    return err


def test_missing_config(capsys) -> None:
    assert "does not exist" in _err(capsys, ["train", "nope.yaml"])


def test_bad_override(capsys, tmp_path) -> None:
    cfg = REPO / "src" / "retinaseg" / "configs" / "synthetic_octa.yaml"
    assert "train.epoch" in _err(capsys, ["train", str(cfg), "--set", "train.epoch=3"])


def test_unknown_model_file(capsys, tmp_path) -> None:
    import numpy as np

    from retinaseg.io import write_png

    write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    assert "neither a file" in _err(capsys, ["predict", str(tmp_path), "--model", "nomodel",
                                             "--out", str(tmp_path / "o")])


def test_pickle_model_refused(capsys, tmp_path) -> None:
    import numpy as np

    from retinaseg.io import write_png

    write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "m.pth").write_bytes(b"x")
    assert "pickle" in _err(capsys, ["predict", str(tmp_path), "--model",
                                     str(tmp_path / "m.pth"), "--out", str(tmp_path / "o")])


def test_unknown_dataset(capsys, tmp_path) -> None:
    err = _err(capsys, ["evaluate", "--model", str(tmp_path), "--dataset", "nope",
                        "--split", "test", "--out", str(tmp_path)])
    assert "unknown dataset 'nope'" in err


def test_missing_input(capsys, tmp_path) -> None:
    assert "does not exist" in _err(capsys, ["centerline", str(tmp_path / "x.png"),
                                             "--out", str(tmp_path)])


def test_lists_run(capsys) -> None:
    assert main(["models"]) == 0
    assert "unet" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("drive", "octa500", "rossa", "synthetic", "folder", "chase_db1"):
        assert name in out


@pytest.mark.parametrize("argv", [["--version"]])
def test_entry_point_runs(argv: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "retinaseg.cli", *argv], capture_output=True,
                       text=True, env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})
    assert r.returncode == 0 and "retinaseg" in r.stdout


def test_centerline_cli_writes_one_png_per_input(tmp_path) -> None:
    import numpy as np

    from retinaseg.io import read_mask, write_png

    mask = np.zeros((20, 30), bool)
    mask[8:13, 3:27] = True  # a 5-px thick bar → its centre row
    write_png(tmp_path / "in" / "bar one.png", mask)
    write_png(tmp_path / "in" / "b.png", mask.T.copy())
    assert main(["centerline", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    a = read_mask(tmp_path / "out" / "bar one.png")
    assert a.shape == (20, 30) and a.sum() > 0 and not (a & ~mask).any()
    assert set(np.flatnonzero(a.any(axis=1))) == {10}  # one row: 1 px wide
    assert read_mask(tmp_path / "out" / "b.png").shape == (30, 20)

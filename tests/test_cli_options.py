"""Every out-of-range or meaningless CLI option ends in one sentence and exit code 2 before any
work starts: no traceback, no output folder (issue: the house, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retinaseg.cli import main
from retinaseg.io import write_png

BAD_INFERENCE = [
    (["--scale", "0"], "--scale must be at least 0.05"),
    (["--scale", "nan"], "--scale must be a finite number"),
    (["--scale", "25"], "at most 20"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--threads", "x"], "argument --threads: invalid int value"),
    (["--tile", "8"], "--tile must be at least 16"),
    (["--tile", "-64"], "--tile must be at least 16"),
    (["--overlap", "1"], "--overlap must be at least 0 and below 1"),
    (["--overlap", "-0.1"], "--overlap must be at least 0"),
    (["--threshold", "1.5"], "--threshold must be above 0 and below 1"),
    (["--threshold", "0"], "--threshold must be above 0"),
    (["--threshold", "abc"], "--threshold must be a number"),
    (["--device", "banana"], "is not a valid torch device"),
    (["--device", "cuda:3"], "CUDA is not available"),
    (["--precision", "fp64"], "argument --precision: invalid choice"),
    (["--tta", "sideways"], "argument --tta: invalid choice"),
    (["--head", ""], "--head must be a head name"),
]


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    write_png(path, np.full((32, 32), 0.5, np.float32))
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, expect: str) -> None:
    err = capsys.readouterr().err
    assert code == 2
    assert expect in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize(("args", "expect"), BAD_INFERENCE)
def test_predict_refuses_bad_options_before_any_work(image: Path, tmp_path: Path, capsys,
                                                     args: list[str], expect: str) -> None:
    import torch

    if "cuda" in args[-1] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    code = main(["predict", str(image), "--out", str(out), *args])
    _one_line_error(capsys, code, expect)
    assert not out.exists()


@pytest.mark.parametrize(("args", "expect"), BAD_INFERENCE[:6])
def test_evaluate_refuses_bad_options_before_any_work(tmp_path: Path, capsys, args: list[str],
                                                      expect: str) -> None:
    out = tmp_path / "out"
    code = main(["evaluate", "--model", "octa-vessels", "--dataset", "synthetic_octa",
                 "--split", "test", "--out", str(out), *args])
    _one_line_error(capsys, code, expect)
    assert not out.exists()


@pytest.mark.parametrize(("argv", "expect"), [
    (["centerline", "IN", "--prune", "-3"], "--prune must be at least 0"),
    (["centerline", "IN", "--prune", "inf"], "--prune must be a finite number"),
    (["measure", "IN", "--mm-per-px", "0"], "--mm-per-px must be above 0"),
    (["measure", "IN", "--mm-per-px", "inf"], "--mm-per-px must be a finite number"),
    (["measure", "IN", "--fov", "9M"], "argument --fov: invalid choice"),
    (["demo", "--n", "0"], "--n must be at least 1"),
    (["demo", "--epochs", "0"], "--epochs must be at least 1"),
    (["train", "--set", "train.epochs=0"], "error:"),
    (["frobnicate"], "invalid choice"),
])
def test_other_commands_refuse_bad_values(image: Path, tmp_path: Path, capsys,
                                          argv: list[str], expect: str) -> None:
    out = tmp_path / "out"
    argv = [str(image) if a == "IN" else a for a in argv]
    code = main([*argv, "--out", str(out)] if argv[0] in ("centerline", "measure", "demo")
                else argv)
    _one_line_error(capsys, code, expect)
    assert not out.exists()


def test_models_lists_bundled_models_and_architectures(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    bundled, arch = out.split("architectures")
    assert "fundus-vessels" in bundled and "octa-vessels" in bundled
    assert "Colour fundus" in bundled  # the card's one-line summary
    assert "unet" in arch and "s3octa" in arch


def test_evaluate_fast_without_maps(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["evaluate", "--model", "octa-vessels", "--dataset", "synthetic",
                 "--split", "test", "--out", str(out), "--metrics", "fast", "--no-maps",
                 "--threads", "1"])
    assert code in (0, None)
    printed = capsys.readouterr().out
    assert "--metrics fast" in printed and "dice=" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"] == "fast" and summary["pooled"]["cldice"] is None
    assert 0 < summary["pooled"]["dice"] <= 1 and not (out / "maps").exists()

"""SAM 2 from the command line: ``sam2 init``/``sam2 convert`` and ``prompt`` (issue: SAM 2 for
OCTA, items 1 and 4).

One ``test-tiny`` folder (random weights, about 1 M parameters) is written per module through
``retinaseg sam2 init``; the image is a generated 96×80 (non-square) grey disc.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import retinaseg  # noqa: E402
from retinaseg.cli import main  # noqa: E402
from retinaseg.io import read_image, write_png  # noqa: E402

WIDTH, HEIGHT = 96, 80
POINTS = "60,30,1;10,70,0"
FILES = ("prob.png", "mask.png", "prompt_overlay.png", "logits.npy", "prompt.json")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sam2") / "test-tiny"
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        code = main(["sam2", "init", "--size", "test-tiny", "--out", str(folder), "--seed", "3"])
    assert code == 0
    lines = said.getvalue().strip().splitlines()
    assert len(lines) == 1 and "SAM 2.1 test-tiny (random weights, seed 3)" in lines[0], lines
    assert str(folder) in lines[0]
    for name in ("config.json", "model.safetensors", "retinaseg.json"):
        assert (folder / name).is_file()
    return folder


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96×80 grey image (80 rows, 96 columns) with a bright disc around (x=60, y=30)."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    path = tmp_path_factory.mktemp("img") / "disc.png"
    write_png(path, np.where((xx - 60) ** 2 + (yy - 30) ** 2 < 15**2, 0.85, 0.15))
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, expect: str) -> None:
    said = capsys.readouterr()
    assert code == 2
    assert expect in said.err, said.err
    assert len(said.err.strip().splitlines()) == 1 and "Traceback" not in said.err, said.err
    assert said.out == ""


def test_prompt_writes_every_file_at_the_image_size(model: Path, image: Path, tmp_path: Path,
                                                    capsys) -> None:
    out = tmp_path / "out"
    code = main(["prompt", str(image), "--model", str(model), "--points", POINTS,
                 "--box", "40,10,80,50", "--out", str(out), "--device", "cpu"])
    said = capsys.readouterr()
    assert code == 0, said.err
    assert len(said.out.strip().splitlines()) == 1
    assert "1 positive and 1 negative point(s), a box" in said.out
    for suffix in FILES:
        assert (out / f"disc_{suffix}").is_file(), suffix
    prob, mask = read_image(out / "disc_prob.png"), read_image(out / "disc_mask.png")
    overlay = read_image(out / "disc_prompt_overlay.png")
    assert prob.shape == mask.shape == (HEIGHT, WIDTH)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert overlay.shape == (HEIGHT, WIDTH, 3)
    rgb = (overlay * 255).round().astype(np.uint8)
    assert tuple(rgb[30, 60]) == (0, 255, 0)  # the positive point, green
    assert tuple(rgb[70, 10]) == (255, 0, 0)  # the negative point, red
    assert tuple(rgb[10, 60]) == (255, 255, 0)  # the top edge of the box, yellow
    logits = np.load(out / "disc_logits.npy")
    assert logits.shape == (256, 256) and logits.dtype == np.float32
    record = json.loads((out / "disc_prompt.json").read_text())
    assert record["points"] == [[60.0, 30.0], [10.0, 70.0]] and record["labels"] == [1, 0]
    assert record["box"] == [40.0, 10.0, 80.0, 50.0] and record["size"] == [WIDTH, HEIGHT]
    assert record["refined"] is False


def test_refine_passes_the_previous_logits_back(model: Path, image: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys) -> None:
    from retinaseg.models.sam2.predictor import Sam2Prompter

    out = tmp_path / "out"
    assert main(["prompt", str(image), "--model", str(model), "--points", POINTS,
                 "--out", str(out)]) == 0
    first = np.load(out / "disc_logits.npy")
    seen: list[np.ndarray | None] = []
    predict = Sam2Prompter.predict

    def spy(self, *args, mask_input=None, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(None if mask_input is None else np.array(mask_input))
        return predict(self, *args, mask_input=mask_input, **kwargs)

    monkeypatch.setattr(Sam2Prompter, "predict", spy)
    more = POINTS + ";20,20,0"
    assert main(["prompt", str(image), "--model", str(model), "--points", more,
                 "--out", str(out), "--refine"]) == 0
    assert "refined mask" in capsys.readouterr().out
    assert len(seen) == 1 and seen[0] is not None
    np.testing.assert_array_equal(seen[0], first)
    record = json.loads((out / "disc_prompt.json").read_text())
    assert record["refined"] is True and record["labels"] == [1, 0, 0]
    # the same points without the previous answer give another map
    plain = retinaseg.prompt_image(image, model, points=more, device="cpu")
    assert plain["refined"] is False and plain["files"] == []
    refined = np.load(out / "disc_logits.npy")
    assert not np.allclose(refined, plain["low_res_logits"])


def test_refine_without_a_previous_answer_is_one_line(model: Path, image: Path,
                                                      tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["prompt", str(image), "--model", str(model), "--points", POINTS,
                 "--out", str(out), "--refine"])
    _one_line_error(capsys, code, "refine needs the previous answer")
    assert not out.exists()


BAD_PROMPTS = [
    (["--points", "200,30,1"], "lies outside the 96×80 image"),
    (["--points", "60,30,1", "--box", "0,0,120,50"], "inside the 96×80 image"),
    ([], "at least one point or a box"),
    (["--points", "60;30"], "is not 'x,y,label'"),
    (["--points", "60,30,2"], "is not 'x,y,label'"),
    (["--box", "1,2,3"], "is not four numbers"),
]


@pytest.mark.parametrize(("args", "expect"), BAD_PROMPTS)
def test_bad_prompts_are_one_line_and_write_nothing(model: Path, image: Path, tmp_path: Path,
                                                    capsys, args: list[str],
                                                    expect: str) -> None:
    out = tmp_path / "out"
    code = main(["prompt", str(image), "--model", str(model), "--out", str(out), *args])
    _one_line_error(capsys, code, expect)
    assert not out.exists()


def test_missing_model_folder_and_image_are_one_line(model: Path, image: Path, tmp_path: Path,
                                                     capsys) -> None:
    out = tmp_path / "out"
    code = main(["prompt", str(image), "--model", str(tmp_path / "nowhere"), "--points", POINTS,
                 "--out", str(out)])
    _one_line_error(capsys, code, "SAM 2 model folder")
    code = main(["prompt", str(image), "--model", str(image.parent), "--points", POINTS,
                 "--out", str(out)])
    _one_line_error(capsys, code, "holds no config.json")
    code = main(["prompt", str(tmp_path / "missing.png"), "--model", str(model), "--points",
                 POINTS, "--out", str(out)])
    _one_line_error(capsys, code, "missing.png")
    assert not out.exists()


def test_convert_of_a_non_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    fake = tmp_path / "sam2.1_hiera_tiny.pt"
    fake.write_text("not a checkpoint\n")
    out = tmp_path / "folder"
    code = main(["sam2", "convert", str(fake), "--out", str(out)])
    _one_line_error(capsys, code, "cannot read checkpoint")
    assert not out.exists()
    code = main(["sam2", "convert", str(tmp_path / "none.pt"), "--out", str(out)])
    _one_line_error(capsys, code, "does not exist")
    code = main(["sam2", "init", "--size", "huge", "--out", str(out)])
    _one_line_error(capsys, code, "invalid choice")
    assert not out.exists()


def test_prompt_image_is_part_of_the_api() -> None:
    assert "prompt_image" in retinaseg.api.__all__
    assert retinaseg.prompt_image is retinaseg.api.prompt_image

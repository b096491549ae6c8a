"""``retinaseg propagate``: prompt an object on a layer frame and carry it through the stack with
SAM 2's memory (issue: SAM 2 for OCTA, item 5).

One ``test-tiny`` folder (random weights) is written per module through ``retinaseg sam2 init``;
the weights are random, so only the mechanics are checked: a file per frame at the frames' size,
which frames a direction reaches, and one clear line (exit 2, nothing written) per bad input.
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

T, H, W = 5, 64, 64


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sam2") / "test-tiny"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["sam2", "init", "--size", "test-tiny", "--out", str(folder), "--seed", "3"])
    assert code == 0
    return folder


def _disc(radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - 30) ** 2 + (yy - 30) ** 2 < radius**2


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five 64×64 frames of a growing bright disc, named so that natural order matters."""
    folder = tmp_path_factory.mktemp("frames")
    for i in range(T):
        write_png(folder / f"layer_{i * 5}.png", np.where(_disc(8 + i), 0.9, 0.1))
    return folder


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["propagate", *args, "--device", "cpu"])
    said = capsys.readouterr()
    return code, said.out, said.err


def _masks(out: Path, count: int) -> list[np.ndarray]:
    record = json.loads((out / "propagation.json").read_text(encoding="utf-8"))
    assert record["frames"] == count and record["object_ids"] == [1]
    assert len(record["per_frame"]) == count
    return [read_image(out / entry["mask"]) for entry in record["per_frame"]]


def test_points_on_a_frame_folder_write_every_frame(model: Path, frames: Path, tmp_path: Path,
                                                    capsys) -> None:
    out = tmp_path / "out"
    code, said, err = _run([str(frames), "--model", str(model), "--prompt-frame", "2",
                            "--points", "30,30,1;2,2,0", "--box", "15,15,45,45",
                            "--out", str(out)], capsys)
    assert code == 0, err
    assert len(said.strip().splitlines()) == 1 and "from frame(s) 2 (both)" in said
    masks = _masks(out, T)
    for t, mask in enumerate(masks):
        assert mask.shape == (H, W)
        assert (out / "objects" / "1" / f"frame_{t:03d}.png").is_file()
        assert read_image(out / "objects" / "1" / f"frame_{t:03d}.png").shape == (H, W)
    assert read_image(out / "prompts" / "frame_002.png").shape == (H, W, 3)
    record = json.loads((out / "propagation.json").read_text(encoding="utf-8"))
    assert record["prompted_frames"] == [2] and record["direction"] == "both"
    assert [e["file"] for e in record["per_frame"]] == [f"layer_{i * 5}.png" for i in range(T)]
    assert all(e["visited"] for e in record["per_frame"])


def test_forward_leaves_frames_before_the_prompt_empty(model: Path, frames: Path,
                                                       tmp_path: Path, capsys) -> None:
    mask = tmp_path / "disc.png"
    write_png(mask, _disc(10))
    out = tmp_path / "fwd"
    code, _, err = _run([str(frames), "--model", str(model), "--prompt-mask", f"2:{mask}",
                         "--out", str(out), "--direction", "forward"], capsys)
    assert code == 0, err
    masks = _masks(out, T)
    assert not masks[0].any() and not masks[1].any()
    assert masks[2].any()  # a mask prompt comes back as given on its frame
    record = json.loads((out / "propagation.json").read_text(encoding="utf-8"))
    assert [e["visited"] for e in record["per_frame"]] == [False, False, True, True, True]


def test_a_volume_is_cut_into_frames_by_the_python_api(model: Path, tmp_path: Path) -> None:
    volume = tmp_path / "vol.npy"
    np.save(volume, np.random.default_rng(0).random((6, 40, 48)).astype(np.float32))
    out = tmp_path / "vol_out"
    r = retinaseg.propagate_layers(volume, model, out, prompt_frame=1, points="20,10,1",
                                   direction="backward", device="cpu", step=2, thickness=2)
    assert r["kind"] == "volume" and r["union"].shape == (3, 40, 48)
    assert list(r["visited"]) == [True, True, False]
    masks = _masks(out, 3)
    assert all(m.shape == (40, 48) for m in masks) and not masks[2].any()
    record = json.loads((out / "propagation.json").read_text(encoding="utf-8"))
    assert [(e["depth_start"], e["depth_stop"]) for e in record["per_frame"]] == [
        (0, 2), (2, 4), (4, 6)]


@pytest.mark.parametrize(("args", "expect"), [
    (["--prompt-frame", "5", "--points", "30,30,1"], "numbered 0 to 4"),
    (["--prompt-frame", "1", "--points", "64,30,1"], "lies outside"),
    ([], "needs a prompt"),
    (["--prompt-mask", "7:mask.png"], "numbered 0 to 4"),
    (["--points", "30,30,1"], "need --prompt-frame"),
    (["--prompt-frame", "1", "--points", "30,30,1", "--step", "2"], "folder of frames"),
])
def test_bad_inputs_are_one_line_and_write_nothing(model: Path, frames: Path, tmp_path: Path,
                                                   capsys, args: list[str], expect: str) -> None:
    out = tmp_path / "out"
    code, said, err = _run([str(frames), "--model", str(model), "--out", str(out), *args],
                           capsys)
    assert code == 2
    assert expect in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert said == "" and not out.exists()


def test_frames_of_different_sizes_are_one_line(model: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "mixed"
    write_png(folder / "a_1.png", np.zeros((H, W)))
    write_png(folder / "a_2.png", np.zeros((H, W + 8)))
    out = tmp_path / "out"
    code, said, err = _run([str(folder), "--model", str(model), "--out", str(out),
                            "--prompt-frame", "0", "--points", "3,3,1"], capsys)
    assert code == 2 and "same size" in err and "64×64" in err and "72×64" in err, err
    assert len(err.strip().splitlines()) == 1 and said == "" and not out.exists()

"""Volumes from the command line: project, layers, and predict on volumes (issue: OCTA volumes).

Generated volumes stand in for real ones (OCTA-500 B-scan layout written here); the real
subject 10225 is used where ../shared is present, for orientation and inference checks only.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from retinaseg.cli import main
from retinaseg.data.volumes import make_volume_sample
from retinaseg.io import read_image, read_mask, read_volume, write_png
from retinaseg.io.volumes import bscan_folder_reason
from retinaseg.preprocessing.projection import auto_slab, project


def _bscan_folder(folder: Path, vol: np.ndarray) -> Path:
    """Write ``vol [D, H, W]`` in the OCTA-500 layout: file k (1..H) is en-face row H - k."""
    folder.mkdir(parents=True)
    n = vol.shape[1]
    for k in range(1, n + 1):
        write_png(folder / f"{k}.png", (vol[:, n - k, :] * 255).round().astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def cube() -> np.ndarray:
    return make_volume_sample(size=32, depth=48, seed=3)["image"]


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_bscan_folder_round_trips_in_the_documented_orientation(tmp_path, cube) -> None:
    folder = _bscan_folder(tmp_path / "vol", cube)
    np.testing.assert_allclose(read_volume(folder), cube, atol=0.5 / 255 + 1e-6)


def test_predict_recognises_a_bscan_folder_and_writes_the_projection(tmp_path, cube,
                                                                     capsys) -> None:
    folder = _bscan_folder(tmp_path / "vol", cube)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--out", str(out), "--no-jit"]) == 0
    said = capsys.readouterr()
    assert "32 numbered images of one size (48×32, not square): read as one volume" in \
        said.out + said.err
    row = _rows(out)[0]
    assert row["input"] == "volume" and row["model"] == "octa-vessels"
    assert row["projection"].startswith("max, auto slab")
    for suffix in ("projection", "prob", "mask", "overlay"):
        assert (out / f"vol_{suffix}.png").is_file()
    vol = read_volume(folder)
    expected = project(vol, "max", depth=auto_slab(vol))
    np.testing.assert_allclose(read_image(out / "vol_projection.png"), expected, atol=1e-4)


def test_a_folder_of_square_numbered_images_stays_images(tmp_path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(1, 11):
        write_png(folder / f"{k}.png", rng.random((32, 32)).astype(np.float32))
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--out", str(out), "--no-jit"]) == 0
    rows = _rows(out)
    assert len(rows) == 10 and {r["input"] for r in rows} == {"image"}
    out2 = tmp_path / "out2"  # --volume overrides the decision
    assert main(["predict", str(folder), "--out", str(out2), "--volume", "--no-jit"]) == 0
    assert [r["input"] for r in _rows(out2)] == ["volume"]


def test_a_folder_of_numbered_colour_photographs_stays_images(tmp_path) -> None:
    """Fundus photographs named 01.png .. 10.png, all one landscape size, are not B-scans:
    a B-scan is grey (this folder used to be read as one volume and then refused)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for k in range(1, 11):
        write_png(folder / f"{k:02d}.png", (rng.random((40, 56, 3)) * 255).astype(np.uint8))
    assert bscan_folder_reason(folder) is None
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--out", str(out), "--no-jit"]) == 0
    rows = _rows(out)
    assert len(rows) == 10 and {r["input"] for r in rows} == {"image"}
    for k in range(1, 11):  # the same files in grey are a volume again
        write_png(folder / f"{k:02d}.png", rng.random((40, 56)).astype(np.float32))
    assert "10 numbered images of one size (40×56" in bscan_folder_reason(folder)


def test_npy_volume_is_predicted_and_no_volume_refuses_it(tmp_path, cube, capsys) -> None:
    np.save(tmp_path / "v.npy", cube)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "v.npy"), "--out", str(out), "--no-jit"]) == 0
    assert _rows(out)[0]["input"] == "volume"
    capsys.readouterr()
    code = main(["predict", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o2"),
                 "--no-volume"])
    assert code == 2 and "no input could be segmented" in capsys.readouterr().err


def test_project_writes_a_lossless_map_and_a_preview(tmp_path, cube, capsys) -> None:
    np.save(tmp_path / "v.npy", cube)
    out = tmp_path / "m.png"
    assert main(["project", str(tmp_path / "v.npy"), "--out", str(out), "--method", "mean",
                 "--depth", "10:30"]) == 0
    got = read_image(out)
    np.testing.assert_allclose(got, cube[10:30].mean(axis=0), atol=2e-5)
    assert (tmp_path / "m_preview.png").is_file()
    assert "mean projection (10:30 planes) 32×32 px" in capsys.readouterr().out


def test_layers_writes_frames_and_their_depths(tmp_path, cube) -> None:
    np.save(tmp_path / "v.npy", cube)
    out = tmp_path / "frames"
    assert main(["layers", str(tmp_path / "v.npy"), "--out", str(out), "--depth", "8:40",
                 "--step", "8", "--thickness", "4"]) == 0
    doc = json.loads((out / "frames.json").read_text())
    assert [(f["depth_start"], f["depth_stop"]) for f in doc["frames"]] == \
        [(8, 12), (16, 20), (24, 28), (32, 36)]
    assert all((out / f["file"]).is_file() for f in doc["frames"])


BAD_VOLUMES = {
    "missing B-scan": "is missing",
    "unequal B-scans": "but '1.png' is",
    "4-D array": "",
    "object array": "",
    "NaN": "",
    "2-D image": "2D image file",
    "empty folder": "no image files",
}


def _bad_volume(tmp_path: Path, kind: str, cube: np.ndarray) -> Path:
    if kind in ("missing B-scan", "unequal B-scans"):
        folder = _bscan_folder(tmp_path / "vol", cube)
        if kind == "missing B-scan":
            (folder / "5.png").unlink()
        else:
            write_png(folder / "5.png", np.zeros((10, 10), np.uint8))
        return folder
    if kind == "2-D image":
        write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
        return tmp_path / "a.png"
    if kind == "empty folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    path = tmp_path / "v.npy"
    if kind == "4-D array":
        np.save(path, np.zeros((2, 3, 4, 5), np.float32))
    elif kind == "object array":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    else:
        bad = cube.copy()
        bad[3, 4, 5] = np.nan
        np.save(path, bad)
    return path


@pytest.mark.parametrize("kind", list(BAD_VOLUMES))
def test_bad_volumes_end_in_one_sentence_and_write_nothing(tmp_path, cube, capsys,
                                                           kind: str) -> None:
    src = _bad_volume(tmp_path, kind, cube)
    out = tmp_path / "out" / "m.png"
    assert main(["project", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert BAD_VOLUMES[kind] in err and "Traceback" not in err
    assert not out.exists() and not out.parent.exists()


def test_a_volume_model_gets_the_volume_itself(tmp_path, cube) -> None:
    from retinaseg.models import build_model
    from retinaseg.models.persistence import ModelSpec, save_model

    net = build_model("ipn", 1, preset="small", depth=48).eval()
    spec = ModelSpec("ipn", 1, {"preset": "small", "depth": 48}, modality="octa",
                     info={"input": "volume"})
    model = save_model(tmp_path / "ipn.safetensors", net, spec)
    np.save(tmp_path / "v.npy", cube)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "v.npy"), "--model", str(model), "--out",
                 str(out), "--tile", "32"]) == 0
    row = _rows(out)[0]
    assert row["projection"] == "learned (volume model)" and row["model"] == str(model)
    assert read_mask(out / "v_mask.png").shape == (32, 32)


def test_real_volume_predicts_over_its_official_label(shared_data, tmp_path) -> None:
    """A check on the one real (test-split) volume: orientation and inference, no tuning."""
    vol = shared_data / "OCTA-500" / "OCTA_6M" / "OCTA" / "10225"
    if not vol.is_dir():
        pytest.skip(f"the real OCTA-500 volume is not at {vol}")
    out = tmp_path / "out"
    assert main(["predict", str(vol), "--out", str(out), "--no-jit"]) == 0
    mask = read_mask(out / "10225_mask.png")
    gt = read_mask(shared_data / "OCTA-500" / "OCTA_6M" / "GT_LargeVessel" / "10225.bmp")
    dice = 2 * (mask & gt).sum() / (mask.sum() + gt.sum())
    assert dice > 0.8  # 0.89 measured; a flipped or transposed map would score about 0.1


def test_cli_projection_methods_are_the_library_s() -> None:
    from retinaseg.cli import METHODS
    from retinaseg.preprocessing.projection import METHODS as LIBRARY

    assert METHODS == LIBRARY


@pytest.mark.parametrize("method", ["mean", "max", "std", "median", "sum", "min"])
def test_a_bscan_folder_is_projected_bscan_by_bscan_to_the_same_values(tmp_path, cube,
                                                                       method) -> None:
    import tifffile

    from retinaseg.preprocessing.projection import project_volume

    folder = _bscan_folder(tmp_path / "vol", cube)
    r = project_volume(folder, tmp_path / "m.tif", method=method, depth=(5, 40), preview=False)
    assert r["streamed"] and r["depth"] == "5:40"
    expected = project(read_volume(folder), method, depth=(5, 40))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), expected)


@pytest.mark.parametrize("method", ["mean", "max", "median"])
def test_the_auto_slab_of_a_bscan_folder_is_streamed_to_the_same_values(tmp_path, cube,
                                                                       method) -> None:
    import tifffile

    from retinaseg.preprocessing.projection import project_volume

    folder = _bscan_folder(tmp_path / "vol", cube)
    r = project_volume(folder, tmp_path / "m.tif", method=method, slab="auto", preview=False)
    assert r["streamed"] and r["depth"] == "auto slab"
    vol = read_volume(folder)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"),
                                  project(vol, method, slab="auto"))

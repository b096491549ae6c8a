"""Volume datasets: the synthetic cube generator, ``synthetic_volume`` and ``volume_folder``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinaseg.data import build_dataset
from retinaseg.data.volumes import make_volume_sample, vessel_cube, volume_stem
from retinaseg.errors import ConfigError, DatasetLayoutError
from retinaseg.preprocessing.projection import project


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# --------------------------------------------------------------------------------------------
# synthetic cubes


def test_vessel_cube_projects_to_its_coverage():
    cov = np.random.default_rng(0).random((6, 5)).astype(np.float32)
    centre = np.random.default_rng(1).uniform(2, 9, (6, 5))
    cube = vessel_cube(cov, centre, 1.5, 12)
    assert cube.shape == (12, 6, 5)
    np.testing.assert_array_equal(cube.max(axis=0), cov)
    np.testing.assert_array_equal(cube.argmax(axis=0), np.rint(centre))


def test_label_is_the_projection_of_the_vessels():
    item = make_volume_sample(64, 64, seed=5, return_vessels=True)
    image, label, vessels = item["image"], item["label"], item["vessels"]
    assert image.shape == vessels.shape == (64, 64, 64) and label.shape == (64, 64)
    assert image.dtype == np.float32 and label.dtype == bool and item["fov"] is None
    assert 0.0 <= image.min() and image.max() <= 1.0
    np.testing.assert_array_equal(vessels.max(axis=0) >= 0.5, label)
    assert 0.01 < label.mean() < 0.25
    depth_of_vessels = vessels.argmax(axis=0)[label]
    assert depth_of_vessels.min() >= 0.18 * 64 and depth_of_vessels.max() <= 0.55 * 64


def test_cube_is_deterministic_and_vessels_show_in_the_inner_slab():
    a, b = make_volume_sample(48, 40, seed=2), make_volume_sample(48, 40, seed=2)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], make_volume_sample(48, 40, seed=3)["image"])
    assert a["image"].shape == (40, 48, 48)
    slab = project(a["image"], "max", slab="auto")
    assert corr(slab, a["label"].astype(np.float32)) > 0.3


def test_synthetic_volume_dataset():
    ds = build_dataset("synthetic_volume", None, "train", n=2, size=32, depth=24, seed=1)
    assert len(ds) == 2 and ds.volumetric and ds.modality == "octa"
    item = ds[1]
    assert item["id"] == "volume_train_001" and item["image"].shape == (24, 32, 32)
    assert item["label"].shape == (32, 32)
    np.testing.assert_array_equal(ds[1]["image"], item["image"])
    val = build_dataset("synthetic_volume", None, "val", n=2, size=32, depth=24, seed=1)
    assert not np.array_equal(val[1]["image"], item["image"])
    assert len(build_dataset("synthetic_volume", None, "all", n=2, size=32, depth=24)) == 6
    with pytest.raises(ConfigError, match="depth"):
        build_dataset("synthetic_volume", None, "train", depth=4)
    with pytest.raises(ConfigError, match="unknown option 'kind'"):
        build_dataset("synthetic_volume", None, "train", kind="fundus")


# --------------------------------------------------------------------------------------------
# volume_folder


def _write_bscans(folder: Path, vol_dhw: np.ndarray) -> None:
    """Write ``[D, H, W]`` uint8 as OCTA-500 B-scans (file k = en-face row H - k)."""
    folder.mkdir(parents=True)
    n = vol_dhw.shape[1]
    for k in range(1, n + 1):
        Image.fromarray(vol_dhw[:, n - k, :]).save(folder / f"{k}.bmp")


def _label(path: Path, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[1, :] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return mask


def test_volume_folder_reads_folders_npy_and_nifti(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 255, (6, 4, 5)).astype(np.uint8)  # [D, H, W]
    _write_bscans(tmp_path / "volumes" / "a", vol)
    np.save(tmp_path / "volumes" / "b.npy", vol)
    _label(tmp_path / "labels" / "a.png", (4, 5))
    _label(tmp_path / "labels" / "b.png", (4, 5))
    _label(tmp_path / "labels" / "c.png", (4, 5))
    try:
        import nibabel as nib

        nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "volumes" / "c.nii.gz")
    except ImportError:
        np.save(tmp_path / "volumes" / "c.npy", vol)
    ds = build_dataset("volume_folder", tmp_path, "all")
    assert [s.id for s in ds.samples] == ["a", "b", "c"] and ds.volumetric
    for i in range(3):
        item = ds[i]
        np.testing.assert_array_equal(item["image"], vol / np.float32(255))
        assert item["label"].shape == (4, 5) and item["label"][1].all()


def test_volume_folder_two_channels_skips_and_errors(tmp_path):
    vol = np.zeros((6, 4, 5), np.uint8)
    for name in ("OCT", "OCTA"):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "x.npy", vol)
    np.save(tmp_path / "OCTA" / "only_octa.npy", vol)
    _label(tmp_path / "gt" / "x.bmp", (4, 5))
    _label(tmp_path / "gt" / "only_octa.bmp", (4, 5))
    with pytest.warns(UserWarning, match="only_octa: no volume in OCT"):
        ds = build_dataset("volume_folder", tmp_path, "all", volumes="OCT,OCTA", labels="gt")
    assert len(ds) == 1 and ds[0]["image"].shape == (2, 6, 4, 5)
    _label(tmp_path / "gt" / "x.bmp", (3, 5))  # wrong en-face size
    with pytest.raises(DatasetLayoutError, match="label .* is 3x5 px but the volume is 4x5"):
        ds[0]
    with pytest.raises(DatasetLayoutError, match="'scans'"):
        build_dataset("volume_folder", tmp_path, "all", volumes="scans")


def test_volume_folder_without_labels_is_unlabelled(tmp_path):
    (tmp_path / "volumes").mkdir()
    np.save(tmp_path / "volumes" / "v.npy", np.zeros((3, 4, 5), np.float32))
    (tmp_path / "volumes" / "notes.txt").write_text("not a volume")
    ds = build_dataset("volume_folder", tmp_path, "all")
    assert len(ds) == 1 and ds[0]["label"] is None and not ds.labelled


def test_volume_stem(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "b.TIF").write_bytes(b"x")
    (tmp_path / "c.png").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    (tmp_path / ".e").mkdir()
    stems = {p.name: volume_stem(p) for p in tmp_path.iterdir()}
    assert stems == {"a.nii.gz": "a", "b.TIF": "b", "c.png": None, "d": "d", ".e": None}


def test_volume_folder_finds_the_official_octa500_layout(shared_data: Path):
    root = shared_data / "OCTA-500" / "OCTA_6M"
    if not (root / "OCTA" / "10225").is_dir():
        pytest.skip(f"OCTA-500 volume 10225 not found under {root}")
    ds = build_dataset("volume_folder", root, "all", volumes="OCTA", labels="GT_LargeVessel")
    assert [s.id for s in ds.samples] == ["10225"]
    assert ds.samples[0].label == root / "GT_LargeVessel" / "10225.bmp"

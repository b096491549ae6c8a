"""Tests for retinaseg.io.volumes: formats, orientation, bad input, and the real OCTA-500 cube."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from retinaseg.errors import ImageReadError, RetinasegError
from retinaseg.io import read_image, read_volume

VOLUME_10225 = Path("OCTA-500/OCTA_6M/OCTA/10225")
ILM_OPL_10225 = Path("OCTA-500/OCTA_6M/Projection Maps/OCTA(ILM_OPL)/10225.bmp")


def _bscans(folder: Path, n: int, rows: int = 5, cols: int = 3, fmt: str = "bmp") -> Path:
    """B-scan ``k`` (1-based) has value ``10 k`` everywhere except ``[row k % rows, 0]`` = 255."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(1, n + 1):
        scan = np.full((rows, cols), 10 * k, np.uint8)
        scan[k % rows, 0] = 255
        Image.fromarray(scan).save(folder / f"{k}.{fmt}")
    return folder


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# --------------------------------------------------------------------------------------------
# orientation and formats


def test_bscan_folder_orientation_is_depth_slow_fast_with_slow_axis_reversed(tmp_path):
    vol = read_volume(_bscans(tmp_path / "v", 4))
    assert vol.shape == (5, 4, 3) and vol.dtype == np.float32  # [D rows, H B-scans, W cols]
    np.testing.assert_array_equal(vol[0, :, 2] * 255, [40, 30, 20, 10])  # file k → row N - k
    for k in range(1, 5):  # a B-scan's depth row stays a depth row, its column a column
        assert vol[k % 5, 4 - k, 0] * 255 == 255


def test_multipage_tiff_reads_every_page_and_axes_reorders(tmp_path):
    data = np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1000
    tifffile.imwrite(tmp_path / "v.tif", data, photometric="minisblack")
    vol = read_volume(tmp_path / "v.tif")
    np.testing.assert_array_equal(vol, data / np.float32(65535))
    hdw = read_volume(tmp_path / "v.tif", axes="HDW")  # pages are B-scans
    assert hdw.shape == (5, 4, 3)
    np.testing.assert_array_equal(hdw, np.transpose(vol, (1, 0, 2)))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, ">f4", np.int16, bool])
def test_npy_types_round_trip(tmp_path, dtype):
    data = np.random.default_rng(0).integers(0, 200, (3, 4, 5)).astype(dtype)
    np.save(tmp_path / "v.npy", data)
    vol = read_volume(tmp_path / "v.npy")
    assert vol.shape == (3, 4, 5) and vol.dtype == np.float32
    assert 0.0 <= vol.min() and vol.max() <= 1.0
    ref = data.astype(np.float64)
    if np.dtype(dtype) == np.uint8:
        ref = ref / 255
    elif ref.max() > 1:
        ref = (ref - ref.min()) / (ref.max() - ref.min())
    np.testing.assert_allclose(vol, ref, atol=1e-6)


def test_npy_axes_and_float_unit_range_kept(tmp_path):
    data = np.random.default_rng(1).random((6, 2, 3)).astype(np.float32)  # stored [H, D, W]
    np.save(tmp_path / "v.npy", data)
    np.testing.assert_array_equal(read_volume(tmp_path / "v.npy", axes="hdw"),
                                  data.transpose(1, 0, 2))


def test_nifti_round_trip_and_trailing_singleton(tmp_path):
    nib = pytest.importorskip("nibabel", reason="nibabel is not installed")
    data = np.random.default_rng(2).integers(0, 255, (7, 4, 5)).astype(np.uint8)
    for name, arr in (("v.nii", data), ("v4.nii.gz", data[..., None])):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / name)
        np.testing.assert_array_equal(read_volume(tmp_path / name), data / np.float32(255))
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.uint8), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(ImageReadError, match="4D"):
        read_volume(tmp_path / "t.nii")


def test_large_volume_is_refused_before_allocation(tmp_path):
    # a sparse 1.15 GB .npy whose float32 copy (4.6 GB) exceeds the default 4 GiB limit
    path = tmp_path / "huge.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(1024, 1024, 1100)).flush()
    with pytest.raises(ImageReadError, match=r"1024×1024×1100 voxels need 4\.30 GiB .* 4\.00 GiB"):
        read_volume(path)
    np.save(tmp_path / "small.npy", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ImageReadError, match="limit"):
        read_volume(tmp_path / "small.npy", max_bytes=100)


# --------------------------------------------------------------------------------------------
# bad input: one RetinasegError sentence naming the path


def test_missing_duplicate_and_unequal_bscans(tmp_path):
    gap = _bscans(tmp_path / "gap", 5)
    (gap / "3.bmp").unlink()
    with pytest.raises(ImageReadError, match=r"B-scan '3\.\*' is missing"):
        read_volume(gap)
    dup = _bscans(tmp_path / "dup", 3)
    Image.fromarray(np.zeros((5, 3), np.uint8)).save(dup / "02.bmp")
    with pytest.raises(ImageReadError, match="same number"):
        read_volume(dup)
    odd = _bscans(tmp_path / "odd", 3)
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(odd / "2.bmp")
    with pytest.raises(ImageReadError, match=r"'2\.bmp' is 5×4 uint8 but '1\.bmp' is 5×3"):
        read_volume(odd)


@pytest.mark.parametrize("case,pattern", [
    ("empty_folder", "no image files"),
    ("image_2d", "2D image file"),
    ("npy_2d", "single 2D image"),
    ("npy_4d", "4D shape"),
    ("npy_object", "allow_pickle"),
    ("npy_nan", "NaN or infinite"),
    ("npy_inf", "NaN or infinite"),
    ("npy_complex", "unsupported element type"),
    ("npy_empty_file", "file is empty"),
    ("tiff_single_page", "single 2D image"),
    ("zarr", "Zarr stores are not supported"),
    ("missing", "does not exist"),
    ("bad_axes", "ordering of the letters"),
])
def test_bad_volumes_raise_one_sentence(tmp_path, case, pattern):
    path = tmp_path / "in.npy"
    kwargs = {}
    if case == "empty_folder":
        path = tmp_path / "empty"
        path.mkdir()
    elif case == "image_2d":
        path = tmp_path / "x.png"
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    elif case == "npy_2d":
        np.save(path, np.zeros((3, 4)))
    elif case == "npy_4d":
        np.save(path, np.zeros((2, 3, 4, 5)))
    elif case == "npy_object":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif case in ("npy_nan", "npy_inf"):
        data = np.zeros((2, 3, 4), np.float32)
        data[1, 2, 3] = np.nan if case == "npy_nan" else np.inf
        np.save(path, data)
    elif case == "npy_complex":
        np.save(path, np.zeros((2, 3, 4), np.complex64))
    elif case == "npy_empty_file":
        path.write_bytes(b"")
    elif case == "tiff_single_page":
        path = tmp_path / "one.tif"
        tifffile.imwrite(path, np.zeros((3, 4), np.uint8))
    elif case == "zarr":
        path = tmp_path / "v.zarr"
        path.mkdir()
        (path / ".zarray").write_text("{}")
    elif case == "missing":
        path = tmp_path / "ghost.npy"
    elif case == "bad_axes":
        np.save(path, np.zeros((2, 3, 4)))
        kwargs = {"axes": "DHX"}
    with pytest.raises(RetinasegError, match=pattern) as info:
        read_volume(path, **kwargs)
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message
    assert not re.search(r"\.\s+[A-Z]", message)  # one sentence
    if case != "bad_axes":
        assert path.name in message


class _Payload:
    """Unpickling this object would create ``marker``: proof that nothing is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_object_npy_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    np.save(tmp_path / "evil.npy", np.array([_Payload(marker)] * 8, dtype=object).reshape(2, 2, 2),
            allow_pickle=True)
    with pytest.raises(ImageReadError, match="never unpickled"):
        read_volume(tmp_path / "evil.npy")
    assert not marker.exists()


def test_axes_refused_for_bscan_folders(tmp_path):
    with pytest.raises(ImageReadError, match="orientation is fixed"):
        read_volume(_bscans(tmp_path / "v", 2), axes="HDW")


# --------------------------------------------------------------------------------------------
# the real OCTA-500 volume (test-split subject 10225: checks only)


@pytest.fixture(scope="module")
def real_volume(shared_data: Path) -> np.ndarray:
    folder = shared_data / VOLUME_10225
    if not folder.is_dir():
        pytest.skip(f"OCTA-500 volume 10225 not found at {folder}")
    return read_volume(folder)


def test_real_volume_overlays_the_official_map_without_flips(real_volume, shared_data):
    assert real_volume.shape == (640, 400, 400) and real_volume.dtype == np.float32
    official = read_image(shared_data / ILM_OPL_10225)
    mean = real_volume.mean(axis=0)
    chosen = corr(mean, official)
    others = [corr(f(mean), official) for f in (
        np.flipud, np.fliplr, lambda m: m[::-1, ::-1], np.transpose,
        lambda m: m.T[::-1], lambda m: m.T[:, ::-1], lambda m: m.T[::-1, ::-1])]
    assert chosen > 0.69  # measured 0.711
    assert max(others) < 0.1  # measured at most 0.063

"""Tests for retinaseg.preprocessing.projection: known answers, memory, writers, bad input."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retinaseg
from retinaseg.errors import OptionError, RetinasegError, VolumeError
from retinaseg.io import read_image, read_volume
from retinaseg.preprocessing import projection
from retinaseg.preprocessing.projection import (
    METHODS,
    auto_slab,
    layer_frames,
    project,
    resample_depth,
    save_layer_frames,
    save_projection,
)

D, H, W = 12, 5, 7


@pytest.fixture()
def ramp() -> np.ndarray:
    """``vol[d, h, w] = d / (D - 1) + 0.001 h`` (float32 ``[12, 5, 7]``)."""
    d = np.arange(D, dtype=np.float32)[:, None, None] / (D - 1)
    h = np.arange(H, dtype=np.float32)[None, :, None] * 0.001
    return np.broadcast_to(d + h, (D, H, W)).astype(np.float32)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# --------------------------------------------------------------------------------------------
# known answers


@pytest.mark.parametrize("method", METHODS)
def test_full_depth_and_fixed_range_match_numpy(ramp, method):
    ref = {"mean": np.mean, "max": np.max, "min": np.min, "std": np.std, "sum": np.sum,
           "median": np.median}[method]
    out = project(ramp, method)
    assert out.shape == (H, W) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref(ramp.astype(np.float64), axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(project(ramp, method, depth=(3, 8)),
                               ref(ramp[3:8].astype(np.float64), axis=0), rtol=1e-6, atol=1e-6)


def test_ramp_known_values(ramp):
    base = np.arange(H, dtype=np.float32)[:, None] * 0.001
    np.testing.assert_allclose(project(ramp, "mean") - base, 0.5, atol=1e-6)
    np.testing.assert_allclose(project(ramp, "max", depth=(0, 4)) - base, 3 / 11, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_per_ascan_surfaces_match_a_loop(ramp, method):
    rng = np.random.default_rng(0)
    top = rng.integers(0, 6, (H, W))
    bottom = top + rng.integers(0, 6, (H, W))  # some empty ranges
    out = project(ramp, method, depth=(top, bottom))
    ref = {"mean": np.mean, "max": np.max, "min": np.min, "std": np.std, "sum": np.sum,
           "median": np.median}[method]
    for y in range(H):
        for x in range(W):
            col = ramp[top[y, x]:bottom[y, x], y, x].astype(np.float64)
            expected = ref(col) if col.size else 0.0
            assert out[y, x] == pytest.approx(expected, abs=1e-6)


def test_chunked_equals_unchunked_and_bounds_memory(monkeypatch):
    vol = np.random.default_rng(1).random((64, 96, 128), dtype=np.float32)  # 3 MiB
    whole = {m: project(vol, m) for m in ("mean", "max", "std")}
    slab = auto_slab(vol, block=16)
    monkeypatch.setattr(projection, "CHUNK_BYTES", 256 * 1024)  # ~8 rows per chunk
    for method, ref in whole.items():
        np.testing.assert_allclose(project(vol, method), ref, rtol=1e-6)
    tracemalloc.start()
    try:
        project(vol, "mean")
        project(vol, "std", depth=slab)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * vol.nbytes  # never a second volume-sized float copy


def test_equalise_is_monotone_and_in_unit_range(ramp):
    out = project(ramp, "mean", equalise=True)
    assert out.dtype == np.float32 and 0 < out.min() and out.max() <= 1
    assert (np.diff(out[:, 0]) > 0).all()


def test_project_accepts_a_path_and_is_top_level(tmp_path, ramp):
    np.save(tmp_path / "v.npy", ramp / 2)  # in [0, 1]: read back unchanged
    np.testing.assert_array_equal(retinaseg.project(tmp_path / "v.npy", "max"),
                                  project(ramp / 2, "max"))
    assert retinaseg.project is project


# --------------------------------------------------------------------------------------------
# automatic slab


def _layered_cube(tilt: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Vitreous 0, inner band 0.5 (10 planes), gap 0.05, deep band peaking at top + 40."""
    depth, size = 100, 48
    yy, xx = np.mgrid[:size, :size]
    top = (20 + (yy + xx) // 6) if tilt else np.full((size, size), 30)
    d = np.arange(depth)[:, None, None]
    rel = d - top[None]
    vol = np.where((rel >= 0) & (rel < 10), 0.5, 0.0)
    vol = np.where((rel >= 10) & (rel < 30), 0.05, vol)
    vol = vol + np.exp(-0.5 * ((rel - 40) / 3.0) ** 2)
    return vol.astype(np.float32), top


def test_auto_slab_follows_a_tilted_retina():
    vol, top = _layered_cube()
    a, b = auto_slab(vol, block=8)
    assert a.shape == b.shape == top.shape and a.dtype == np.int64
    assert np.abs(a - top).max() <= 3  # the ILM: first rise of the profile
    assert np.abs(b - (top + 21)).max() <= 4  # top + 0.5 · (peak − top) + 1
    inner = project(vol, "max", slab="auto")
    np.testing.assert_allclose(inner, 0.5, atol=0.01)  # the inner band, not the deep peak


def test_auto_slab_global_returns_ints():
    vol, _ = _layered_cube(tilt=False)
    a, b = auto_slab(vol, block=None)
    assert isinstance(a, int) and isinstance(b, int)
    assert abs(a - 30) <= 2 and abs(b - 51) <= 3


def test_auto_slab_on_an_empty_volume_gives_zeros():
    out = project(np.zeros((10, 8, 8), np.float32), "max", slab="auto")
    np.testing.assert_array_equal(out, 0)


# --------------------------------------------------------------------------------------------
# depth resampling and layer frames


def test_resample_depth_area_and_nearest(ramp):
    area = resample_depth(ramp, 4)
    np.testing.assert_allclose(area, ramp.reshape(4, 3, H, W).mean(axis=1), atol=1e-6)
    near = resample_depth(ramp, 4, mode="nearest")
    np.testing.assert_array_equal(near, ramp[[1, 4, 7, 10]])
    assert resample_depth(ramp, 24, mode="nearest").shape == (24, H, W)
    with pytest.raises(OptionError, match="cannot add planes"):
        resample_depth(ramp, 24)


def test_layer_frames_depths_and_values(ramp):
    frames, depths = layer_frames(ramp, depth=(2, 11), step=3, thickness=2)
    assert depths == [(2, 4), (5, 7), (8, 10)]
    assert frames.shape == (3, H, W) and frames.dtype == np.float32
    for frame, (s, e) in zip(frames, depths):
        np.testing.assert_allclose(frame, ramp[s:e].mean(axis=0), atol=1e-7)
    assert len(layer_frames(ramp)[1]) == D


@pytest.mark.parametrize("kwargs,pattern", [
    ({"thickness": 13}, "exceeds"),
    ({"step": 0}, "positive"),
    ({"depth": (5, 5)}, "0 <= a < b"),
    ({"depth": (0, 20)}, "0 <= a < b"),
    ({"max_bytes": 100}, "GiB"),
])
def test_layer_frames_bad_options(ramp, kwargs, pattern):
    with pytest.raises(RetinasegError, match=pattern):
        layer_frames(ramp, **kwargs)


# --------------------------------------------------------------------------------------------
# writers


def test_save_projection_tiff_is_exact_png_is_16_bit(tmp_path, ramp):
    img = project(ramp, "mean")
    written = save_projection(tmp_path / "p.tif", img)
    assert [p.name for p in written] == ["p.tif", "p_preview.png"]
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), img)
    save_projection(tmp_path / "p.png", img, preview=False)
    png = np.asarray(Image.open(tmp_path / "p.png"))
    assert png.dtype == np.uint16
    np.testing.assert_allclose(png / 65535, img, atol=1 / 65535)
    preview = np.asarray(Image.open(tmp_path / "p_preview.png"))
    assert preview.dtype == np.uint8 and preview.min() == 0 and preview.max() == 255
    total = project(ramp, "sum")  # > 1: min-max scaled to 16 bits
    save_projection(tmp_path / "s.png", total, preview=False)
    s = np.asarray(Image.open(tmp_path / "s.png"))
    assert s.min() == 0 and s.max() == 65535


def test_writers_refuse_bad_maps_and_write_nothing(tmp_path, ramp):
    bad = project(ramp, "mean")
    bad[0, 0] = np.nan
    with pytest.raises(VolumeError, match="NaN"):
        save_projection(tmp_path / "p.png", bad)
    with pytest.raises(OptionError, match=r"\.png, \.tif"):
        save_projection(tmp_path / "p.jpg", project(ramp))
    frames, depths = layer_frames(ramp, step=4, thickness=2)
    frames[1, 0, 0] = np.inf
    with pytest.raises(VolumeError, match="finite"):
        save_layer_frames(tmp_path / "frames", frames, depths)
    assert list(tmp_path.iterdir()) == []


def test_save_layer_frames_png_and_json(tmp_path, ramp):
    frames, depths = layer_frames(ramp, step=4, thickness=2)
    doc_path = save_layer_frames(tmp_path / "f", frames, depths, bits=16, info={"id": "x"})
    doc = json.loads(doc_path.read_text())
    assert [f["file"] for f in doc["frames"]] == ["frame_000.png", "frame_001.png",
                                                  "frame_002.png"]
    assert [(f["depth_start"], f["depth_stop"]) for f in doc["frames"]] == depths
    assert doc["frames"][1]["depth_centre"] == 4.5 and doc["info"] == {"id": "x"}
    back = np.asarray(Image.open(tmp_path / "f" / "frame_002.png")) / 65535 * doc["scale"]
    np.testing.assert_allclose(back, frames[2], atol=2e-5)


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("case,pattern", [
    ("2d", "2D image"),
    ("4d", r"3D array \[D, H, W\]"),
    ("empty", "zero size"),
    ("nan", "NaN or infinite"),
    ("inf", "NaN or infinite"),
    ("object", "element type"),
    ("method", "unknown"),
    ("range", "0 <= a <= b"),
    ("empty_range", "is empty"),
    ("slab", "slab 'inner'"),
    ("both", "either"),
    ("surface_shape", "shape"),
])
def test_bad_input_is_one_retinaseg_error(ramp, case, pattern):
    vol, kwargs = ramp.copy(), {}
    if case == "2d":
        vol = ramp[0]
    elif case == "4d":
        vol = ramp[None]
    elif case == "empty":
        vol = np.zeros((0, 4, 4), np.float32)
    elif case in ("nan", "inf"):
        vol[3, 2, 1] = np.nan if case == "nan" else -np.inf
    elif case == "object":
        vol = np.empty((2, 2, 2), dtype=object)
    elif case == "method":
        kwargs = {"method": "mode"}
    elif case == "range":
        kwargs = {"depth": (0, D + 1)}
    elif case == "empty_range":
        kwargs = {"depth": (4, 4)}
    elif case == "slab":
        kwargs = {"slab": "inner"}
    elif case == "both":
        kwargs = {"slab": "auto", "depth": (0, 3)}
    elif case == "surface_shape":
        kwargs = {"depth": (np.zeros((2, 2), int), D)}
    with pytest.raises(RetinasegError, match=pattern):
        project(vol, **kwargs)


# --------------------------------------------------------------------------------------------
# the real OCTA-500 volume (test-split subject 10225: checks only)


def test_auto_slab_beats_full_depth_on_the_real_volume(shared_data: Path):
    folder = shared_data / "OCTA-500/OCTA_6M/OCTA/10225"
    if not folder.is_dir():
        pytest.skip(f"OCTA-500 volume 10225 not found at {folder}")
    official = read_image(shared_data / "OCTA-500/OCTA_6M/Projection Maps/OCTA(ILM_OPL)/10225.bmp")
    vol = read_volume(folder)
    full, inner = project(vol, "mean"), project(vol, "mean", slab="auto")
    assert corr(inner, official) > corr(full, official) + 0.05  # measured 0.816 vs 0.711
    assert corr(project(vol, "max", slab="auto"), official) > 0.85  # measured 0.922

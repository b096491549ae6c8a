"""Tests for retinaseg.io.images: every supported format, error messages, volumes, writers."""

from __future__ import annotations

import io
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from retinaseg.errors import ImageReadError, RetinasegError
from retinaseg.io import (
    IMAGE_EXTENSIONS,
    list_images,
    natural_key,
    read_image,
    read_mask,
    read_volume,
    write_png,
    write_tiff,
)
from retinaseg.io import images as images_module

GREY8 = np.array([[0, 1, 2, 127], [128, 200, 254, 255]], dtype=np.uint8)
RGB8 = np.stack([GREY8, 255 - GREY8, np.full_like(GREY8, 7)], axis=-1)


def _save(path: Path, arr: np.ndarray, **kwargs) -> Path:
    Image.fromarray(arr).save(path, **kwargs)
    return path


# --------------------------------------------------------------------------------------------
# names and folders


def test_natural_key_orders_numbers_by_value():
    names = ["10.bmp", "2.bmp", "1.bmp", "B.png", "a10b2.png", "a2b10.png"]
    assert sorted(names, key=natural_key) == [
        "1.bmp", "2.bmp", "10.bmp", "a2b10.png", "a10b2.png", "B.png"
    ]


def test_natural_key_mixed_layouts_do_not_crash_and_ties_are_stable():
    names = ["x1", "x01", "x1y", "1x", "x"]
    assert sorted(names, key=natural_key) == ["1x", "x", "x01", "x1", "x1y"]


def test_image_extensions_are_lower_case_and_exclude_npy():
    assert {".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".ppm", ".pgm"} <= set(
        IMAGE_EXTENSIONS
    )
    assert ".npy" not in IMAGE_EXTENSIONS
    assert all(e == e.lower() for e in IMAGE_EXTENSIONS)


def test_list_images_natural_sort_skips_hidden_and_non_images(tmp_path):
    for name in ["10.bmp", "2.BMP", "1.bmp", ".hidden.png", "notes.txt", "vol.npy"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["1.bmp", "2.BMP", "10.bmp"]


def test_list_images_missing_folder_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ImageReadError, match="nope"):
        list_images(missing)
    assert issubclass(ImageReadError, RetinasegError)


# --------------------------------------------------------------------------------------------
# formats, exact values


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".gif", ".tif", ".pgm"])
def test_grey_8bit_formats_exact(tmp_path, suffix):
    img = read_image(_save(tmp_path / f"g{suffix}", GREY8))
    assert img.dtype == np.float32 and img.shape == (2, 4)
    np.testing.assert_array_equal(img, GREY8.astype(np.float32) / 255)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".ppm"])
def test_rgb_8bit_formats_exact(tmp_path, suffix):
    img = read_image(_save(tmp_path / f"c{suffix}", RGB8))
    assert img.dtype == np.float32 and img.shape == (2, 4, 3)
    np.testing.assert_array_equal(img, RGB8.astype(np.float32) / 255)


def test_16bit_png_and_pgm(tmp_path):
    arr = np.array([[0, 1, 32768, 65535]], dtype=np.uint16)
    for suffix in (".png", ".pgm"):
        img = read_image(_save(tmp_path / f"a16{suffix}", arr))
        assert img.dtype == np.float32
        assert img[0, 3] == 1.0 and img[0, 0] == 0.0
        np.testing.assert_allclose(img, arr / 65535, rtol=0, atol=1e-7)


def test_jpeg_is_close(tmp_path):
    smooth = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    img = read_image(_save(tmp_path / "s.jpg", smooth, quality=95))
    assert img.shape == (32, 32)
    np.testing.assert_allclose(img, smooth / 255, atol=4 / 255)


def test_palette_grey_becomes_2d_and_colour_stays_rgb(tmp_path):
    grey = Image.fromarray(GREY8).convert("P")
    grey.save(tmp_path / "pg.png")
    img = read_image(tmp_path / "pg.png")
    assert img.shape == (2, 4)
    np.testing.assert_array_equal(img, GREY8 / np.float32(255))

    colour = Image.new("P", (3, 1))
    colour.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    colour.putdata([0, 1, 2])
    colour.save(tmp_path / "pc.png")
    img = read_image(tmp_path / "pc.png")
    assert img.shape == (1, 3, 3)
    np.testing.assert_array_equal(img[0], np.eye(3, dtype=np.float32))


def test_near_grey_palette_gif_becomes_grey(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([4, 2, 4, 252, 254, 252] + [0] * (256 * 3 - 6))
    im.putdata([0, 1])
    im.save(tmp_path / "m.gif")
    img = read_image(tmp_path / "m.gif")
    assert img.shape == (1, 2)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.gif"), [[False, True]])


def test_alpha_dropped(tmp_path):
    rgba = np.concatenate([RGB8, np.zeros_like(GREY8)[..., None]], axis=-1)
    img = read_image(_save(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(img, RGB8 / np.float32(255))
    la = Image.fromarray(GREY8).convert("LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), GREY8 / np.float32(255))


def test_one_bit_image(tmp_path):
    bits = np.array([[True, False], [False, True]])
    img = read_image(_save(tmp_path / "b.png", bits))
    np.testing.assert_array_equal(img, bits.astype(np.float32))


def test_identical_rgb_channels_stay_rgb(tmp_path):
    rgb = np.repeat(GREY8[..., None], 3, axis=-1)
    assert read_image(_save(tmp_path / "same.png", rgb)).shape == (2, 4, 3)


def test_tiff_dtypes(tmp_path):
    tifffile.imwrite(tmp_path / "u16.tif", np.array([[0, 65535]], np.uint16))
    np.testing.assert_array_equal(read_image(tmp_path / "u16.tif"), [[0.0, 1.0]])

    unit = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    tifffile.imwrite(tmp_path / "f32.tif", unit)
    np.testing.assert_array_equal(read_image(tmp_path / "f32.tif"), unit)
    tifffile.imwrite(tmp_path / "f64.tif", unit.astype(np.float64))
    out = read_image(tmp_path / "f64.tif")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, unit)

    tifffile.imwrite(tmp_path / "wide.tif", np.array([[-2.0, 0.0, 2.0]], np.float32))
    np.testing.assert_array_equal(read_image(tmp_path / "wide.tif"), [[0.0, 0.5, 1.0]])
    tifffile.imwrite(tmp_path / "i16.tif", np.array([[-100, 0, 100]], np.int16))
    np.testing.assert_array_equal(read_image(tmp_path / "i16.tif"), [[0.0, 0.5, 1.0]])


def test_tiff_nan_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "nan.tif", np.array([[0.0, np.nan]], np.float32))
    with pytest.raises(ImageReadError, match="nan.tif"):
        read_image(tmp_path / "nan.tif")


def test_multipage_tiff_first_page_and_planar_rgb(tmp_path):
    pages = np.stack([np.full((3, 4), v, np.uint8) for v in (10, 20, 30)])
    tifffile.imwrite(tmp_path / "multi.tif", pages, photometric="minisblack")
    np.testing.assert_array_equal(read_image(tmp_path / "multi.tif"), np.full((3, 4), 10 / 255,
                                                                              np.float32))
    planar = np.moveaxis(RGB8, -1, 0).copy()
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), RGB8 / np.float32(255))


def test_palette_tiff_falls_back_to_pillow(tmp_path):
    Image.fromarray(RGB8).convert("P").save(tmp_path / "p.tif")
    img = read_image(tmp_path / "p.tif")
    assert img.shape == (2, 4, 3)


def test_wrong_extension_still_reads(tmp_path):
    png_bytes = io.BytesIO()
    Image.fromarray(GREY8).save(png_bytes, format="PNG")
    (tmp_path / "png_named.tif").write_bytes(png_bytes.getvalue())
    np.testing.assert_array_equal(read_image(tmp_path / "png_named.tif"), GREY8 / np.float32(255))
    tifffile.imwrite(tmp_path / "t.tif", GREY8)
    (tmp_path / "tiff_named.png").write_bytes((tmp_path / "t.tif").read_bytes())
    np.testing.assert_array_equal(read_image(tmp_path / "tiff_named.png"), GREY8 / np.float32(255))


# --------------------------------------------------------------------------------------------
# errors


def _assert_one_sentence(exc: pytest.ExceptionInfo, name: str) -> None:
    msg = str(exc.value)
    assert name in msg and "\n" not in msg and msg.endswith(".")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "ghost.png")
    _assert_one_sentence(exc, "ghost.png")
    assert "does not exist" in str(exc.value)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "empty.png")
    _assert_one_sentence(exc, "empty.png")
    assert "file is empty" in str(exc.value)


def test_directory_given(tmp_path):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "folder.png")
    _assert_one_sentence(exc, "folder.png")


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "cut.png")
    _assert_one_sentence(exc, "cut.png")


def test_garbage_bytes(tmp_path):
    (tmp_path / "junk.tif").write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "junk.tif")
    _assert_one_sentence(exc, "junk.tif")


@pytest.mark.filterwarnings("ignore::UserWarning")  # tifffile warns about zero-size TIFFs
def test_zero_size_tiff_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "zero.tif", np.zeros((0, 5), np.uint8))
    with pytest.raises(ImageReadError, match="zero.tif"):
        read_image(tmp_path / "zero.tif")


def test_oversized_header_is_refused_before_decoding(tmp_path):
    _save(tmp_path / "big.png", np.zeros((20, 20), np.uint8))
    with mock.patch.object(images_module, "MAX_PIXELS", 100):
        with pytest.raises(ImageReadError, match="big.png"):
            read_image(tmp_path / "big.png")


# --------------------------------------------------------------------------------------------
# masks


@pytest.mark.parametrize("high", [1, 128, 255])
def test_read_mask_thresholds_at_half_max(tmp_path, high):
    arr = np.array([[0, high], [high, 0]], np.uint8)
    mask = read_mask(_save(tmp_path / f"m{high}.png", arr))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, arr > 0)


def test_read_mask_all_zero_and_rgb(tmp_path):
    assert not read_mask(_save(tmp_path / "z.png", np.zeros((3, 3), np.uint8))).any()
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1, 2] = 255
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "c.png", rgb)),
                                  [[False, True], [False, False]])


def test_read_mask_16bit_small_values(tmp_path):
    arr = np.array([[0, 1]], np.uint16)
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "m16.png", arr)), [[False, True]])


# --------------------------------------------------------------------------------------------
# volumes


def test_volume_from_folder_natural_order(tmp_path):
    for k in range(1, 11):  # 10.bmp sorts after 9.bmp, not after 1.bmp
        _save(tmp_path / f"{k}.bmp", np.full((5, 3), k * 10, np.uint8))  # 5 rows x 3 columns
    vol = read_volume(tmp_path)  # [D rows, H B-scans (last file first), W columns]
    assert vol.dtype == np.float32 and vol.shape == (5, 10, 3)
    np.testing.assert_array_equal(vol[0, :, 0] * 255, np.arange(100, 0, -10))


def test_volume_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageReadError, match="no image files"):
        read_volume(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _save(mixed / "1.bmp", np.zeros((4, 4), np.uint8))
    _save(mixed / "2.bmp", np.zeros((4, 5), np.uint8))
    with pytest.raises(ImageReadError, match="2.bmp"):
        read_volume(mixed)
    colour = tmp_path / "colour"
    colour.mkdir()
    _save(colour / "1.png", RGB8)
    with pytest.raises(ImageReadError, match="colour"):
        read_volume(colour)


def test_volume_multipage_tiff_and_npy(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    tifffile.imwrite(tmp_path / "v.tif", data, photometric="minisblack")
    np.testing.assert_array_equal(read_volume(tmp_path / "v.tif"), data / np.float32(255))
    np.save(tmp_path / "v.npy", data.astype(np.float32) / 23)
    np.testing.assert_allclose(read_volume(tmp_path / "v.npy"), data / 23, atol=1e-7)
    np.save(tmp_path / "wide.npy", data.astype(np.int16) - 5)
    vol = read_volume(tmp_path / "wide.npy")
    assert vol.min() == 0.0 and vol.max() == 1.0


def test_lzw_tiff_image_and_volume_read_via_pillow_fallback(tmp_path):
    # tifffile needs the optional imagecodecs package for LZW (as in DRIVE); Pillow decodes it
    frames = [Image.fromarray(np.full((3, 4), v, np.uint8)) for v in (5, 6, 7)]
    frames[0].save(tmp_path / "lzw.tif", save_all=True, append_images=frames[1:],
                   compression="tiff_lzw")
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif"), np.full((3, 4), 5 / 255,
                                                                            np.float32))
    vol = read_volume(tmp_path / "lzw.tif")
    assert vol.shape == (3, 3, 4)
    np.testing.assert_array_equal(vol[:, 0, 0] * 255, [5, 6, 7])


def test_volume_rejects_wrong_ndim_object_and_missing(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(ImageReadError, match="3D"):
        read_volume(tmp_path / "flat.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match="obj.npy"):
        read_volume(tmp_path / "obj.npy")
    tifffile.imwrite(tmp_path / "single.tif", np.zeros((3, 4), np.uint8))
    with pytest.raises(ImageReadError, match="3D"):
        read_volume(tmp_path / "single.tif")
    with pytest.raises(ImageReadError, match="ghost"):
        read_volume(tmp_path / "ghost.npy")
    _save(tmp_path / "x.png", GREY8)
    with pytest.raises(ImageReadError, match="x.png"):
        read_volume(tmp_path / "x.png")


# --------------------------------------------------------------------------------------------
# writers


def test_write_png_dtypes_round_trip(tmp_path):
    mask = np.array([[True, False]])
    write_png(tmp_path / "deep" / "er" / "m.png", mask)
    assert np.asarray(Image.open(tmp_path / "deep" / "er" / "m.png")).tolist() == [[255, 0]]
    write_png(tmp_path / "f.png", np.array([[0.0, 0.5, 1.0]], np.float32))
    assert np.asarray(Image.open(tmp_path / "f.png")).tolist() == [[0, 128, 255]]
    write_png(tmp_path / "u16.png", np.array([[0, 65535]], np.uint16))
    np.testing.assert_array_equal(read_image(tmp_path / "u16.png"), [[0.0, 1.0]])
    write_png(tmp_path / "rgb.png", RGB8)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), RGB8 / np.float32(255))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "f.png", "rgb.png", "u16.png"]


def test_write_png_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", np.array([[1.5]], np.float32))
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", np.zeros((2, 2, 2), np.uint8))
    assert not list(tmp_path.iterdir())


def test_write_tiff_round_trip(tmp_path):
    prob = np.random.default_rng(1).random((5, 6)).astype(np.float32)
    write_tiff(tmp_path / "p.tif", prob)
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), prob)
    write_tiff(tmp_path / "m.tif", np.array([[True, False]]))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), [[255, 0]])
    write_tiff(tmp_path / "rgb.tif", RGB8)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif"), RGB8 / np.float32(255))


# --------------------------------------------------------------------------------------------
# fuzz: corrupt bytes give a valid image or ImageReadError, never another exception


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(7)
    arr = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    if fmt == "TIFF":
        tifffile.imwrite(buf, arr)
    else:
        Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


VALID = {fmt: _encoded(fmt) for fmt in ("PNG", "TIFF", "BMP")}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about corrupt TIFF tags
@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(sorted(VALID)),
    suffix=st.sampled_from([".png", ".tif", ".bmp"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_fuzz_corrupt_bytes(tmp_path_factory, fmt, suffix, edits, cut):
    data = bytearray(VALID[fmt])
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = tmp_path_factory.getbasetemp() / f"fuzz{suffix}"
    path.write_bytes(bytes(data))
    with mock.patch.object(images_module, "MAX_PIXELS", 1 << 20):
        try:
            img = read_image(path)
        except ImageReadError as exc:
            assert "fuzz" in str(exc)
            return
    assert img.dtype == np.float32 and img.ndim in (2, 3)
    assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1


# --------------------------------------------------------------------------------------------
# real data (../shared/data)


@pytest.mark.shared_data
def test_drive_and_octa500_files(shared_data):
    drive = shared_data / "DRIVE"
    img = read_image(drive / "training/images/21_training.tif")  # LZW TIFF: read via Pillow
    assert img.shape == (584, 565, 3) and img.dtype == np.float32
    with Image.open(drive / "training/images/21_training.tif") as im:
        np.testing.assert_array_equal(img, np.asarray(im) / np.float32(255))

    gt = read_mask(drive / "training/1st_manual/21_manual1.gif")
    assert gt.shape == (584, 565) and gt.dtype == bool
    assert 0.05 < gt.mean() < 0.2

    second = drive / "test/2nd_manual/01_manual2.gif"  # palette GIF, near-grey colours
    assert read_image(second).shape == (584, 565)
    with Image.open(second) as im:
        np.testing.assert_array_equal(read_mask(second), np.asarray(im) == 1)

    bmp = shared_data / "OCTA-500/OCTA_6M/Projection Maps/OCTA(ILM_OPL)/10001.bmp"
    octa = read_image(bmp)
    assert octa.shape == (400, 400)
    with Image.open(bmp) as im:
        np.testing.assert_array_equal(octa, np.asarray(im) / np.float32(255))


def test_write_png_compress_level_keeps_pixels(tmp_path):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (64, 48), dtype=np.uint8)
    arr[:32] = 7  # a flat half that level 9 squeezes more than level 0
    write_png(tmp_path / "fast.png", arr, compress_level=0)
    write_png(tmp_path / "small.png", arr, compress_level=9)
    for name in ("fast.png", "small.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / name)), arr)
    assert (tmp_path / "small.png").stat().st_size < (tmp_path / "fast.png").stat().st_size

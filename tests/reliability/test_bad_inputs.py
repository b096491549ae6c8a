"""Bad image inputs through the real CLI: ``retinaseg predict`` and ``retinaseg centerline``.

A fatal problem ends in exactly one ``error: ...`` line and exit code 2, never a traceback. A
batch skips bad files, names them on stderr and still writes every good result; it exits 0 when
at least one input succeeded and 2 when none did.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from retinaseg.io import list_images, read_image

RNG = np.random.default_rng(0)


def png(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def tif(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr)
    return path


def noise(h: int, w: int, c: int | None = None) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# inputs that must be read and segmented (name -> writer returning (path, (H, W)))


def _palette_colour(p: Path) -> Path:
    im = Image.new("P", (5, 3))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.putdata([i % 3 for i in range(15)])
    im.save(p)
    return p


def _palette_grey_gif(p: Path) -> Path:
    Image.fromarray(noise(6, 4)).convert("P").save(p)
    return p


def _jpeg_named_png(p: Path) -> Path:
    Image.fromarray(noise(10, 12, 3)).save(p, format="JPEG")
    return p


GOOD: dict[str, tuple[str, Callable[[Path], Path], tuple[int, int]]] = {
    "16-bit PNG": ("u16.png", lambda p: png(p, (noise(9, 11).astype(np.uint16) * 257)), (9, 11)),
    "16-bit TIFF": ("u16_tiff.tif", lambda p: tif(p, noise(9, 11).astype(np.uint16) * 257),
                    (9, 11)),
    "float32 TIFF in [0,1]": ("f32.tif", lambda p: tif(p, RNG.random((7, 5), np.float32)),
                              (7, 5)),
    "float64 TIFF outside [0,1]": ("f64.tiff", lambda p: tif(p, RNG.normal(50, 80, (6, 8))),
                                   (6, 8)),
    "int32 TIFF": ("i32.tif", lambda p: tif(p, RNG.integers(-9, 9, (5, 6)).astype(np.int32)),
                   (5, 6)),
    "RGB TIFF": ("rgb.tif", lambda p: tif(p, noise(8, 9, 3)), (8, 9)),
    "RGBA PNG": ("rgba.png", lambda p: png(p, noise(12, 10, 4)), (12, 10)),
    "grey+alpha PNG": ("la.png", lambda p: png(p, noise(6, 6, 2)), (6, 6)),
    "palette PNG (colour)": ("pal.png", _palette_colour, (3, 5)),
    "palette GIF (grey)": ("pal_grey.gif", _palette_grey_gif, (6, 4)),
    "1-bit PNG": ("bits.png", lambda p: png(p, noise(5, 7) > 127), (5, 7)),
    "1x1 PNG": ("one.png", lambda p: png(p, noise(1, 1)), (1, 1)),
    "1x9 PNG (one row)": ("row.png", lambda p: png(p, noise(1, 9)), (1, 9)),
    "9x1 PNG (one column)": ("col.png", lambda p: png(p, noise(9, 1, 3)), (9, 1)),
    "non-square 13x37 RGB": ("wide.png", lambda p: png(p, noise(13, 37, 3)), (13, 37)),
    "PNG named .tif": ("png_as.tif", lambda p: (p.write_bytes(png_bytes(noise(4, 6))), p)[1],
                       (4, 6)),
    "JPEG named .png": ("jpeg_as.png", _jpeg_named_png, (10, 12)),
    "BMP": ("grey.bmp", lambda p: png(p, noise(6, 7)), (6, 7)),
    "16-bit PGM": ("u16_pgm.pgm", lambda p: png(p, noise(4, 5).astype(np.uint16) * 200), (4, 5)),
}


def _write_good(folder: Path) -> dict[str, tuple[int, int]]:
    """Write every GOOD case into ``folder``; return stem -> expected (H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, make, _ in GOOD.values():
        make(folder / name)
    expected = {Path(name).stem: hw for name, _, hw in GOOD.values()}
    assert len(expected) == len(GOOD), "stems must be unique"
    return expected


@pytest.mark.parametrize("model_name,tile", [("tiny_model", None), ("fundus_model", None),
                                             ("tiny_model", 16)])
def test_every_supported_kind_is_segmented(cli, tmp_path, request, model_name, tile) -> None:
    """16-bit and float TIFFs, RGBA, palette, 1x1, 1xN, non-square, wrong extension: all work."""
    expected = _write_good(tmp_path / "in")
    model = request.getfixturevalue(model_name)
    args = ["predict", tmp_path / "in", "--model", model, "--out", tmp_path / "out"]
    res = cli(*args, *(["--tile", str(tile)] if tile else []))
    res.assert_ok()
    assert f"wrote {len(expected)} result(s)" in res.out and "skipped" not in res.err
    for stem, hw in expected.items():
        prob = read_image(tmp_path / "out" / f"{stem}_prob.png")
        assert prob.shape == hw, stem
        assert read_image(tmp_path / "out" / f"{stem}_overlay.png").shape == (*hw, 3)
        assert (tmp_path / "out" / f"{stem}_mask.png").is_file()


# --------------------------------------------------------------------------------------------
# inputs that cannot be read: skipped in a batch, fatal when alone

BAD: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "zero bytes": ("empty.png", lambda p: p.write_bytes(b""), "file is empty"),
    "truncated PNG": ("cut.png", lambda p: p.write_bytes(png_bytes(noise(64, 64))[:300]),
                      "cannot read image"),
    "garbage named .png": ("junk.png", lambda p: p.write_bytes(b"not an image" * 9),
                           "not a recognised image format"),
    "text named .tif": ("notes.tif", lambda p: p.write_text("hello"), "cannot read image"),
    "corrupt PNG header": ("hdr.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40),
                           "cannot read image"),
    "float TIFF with NaN": ("nan.tif", lambda p: tifffile.imwrite(p, np.full((4, 4), np.nan,
                                                                             np.float32)),
                            "NaN or infinite"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_single_bad_file_is_one_clear_error(cli, tmp_path, tiny_model, case) -> None:
    name, make, why = BAD[case]
    make(tmp_path / name)
    res = cli("predict", tmp_path / name, "--model", tiny_model, "--out", tmp_path / "out")
    res.assert_fatal("no input could be segmented")
    assert f"{tmp_path / name}" in res.err and why in res.err
    assert not list((tmp_path / "out").glob("*.png"))


def test_batch_skips_bad_files_and_writes_every_good_one(cli, tmp_path, tiny_model) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, make, _ in BAD.values():
        make(folder / name)
    png(folder / "good 1.png", noise(20, 30))
    png(folder / "good 2.png", noise(17, 9, 3))
    extra = png(tmp_path / "alone.png", noise(8, 8))
    res = cli("predict", folder, extra, "--model", tiny_model, "--out", tmp_path / "out")
    res.assert_ok()
    assert "wrote 3 result(s)" in res.out
    assert f"skipped {len(BAD)} file(s):" in res.err
    for name, _, why in BAD.values():
        assert str(folder / name) in res.err and why in res.err
    for stem in ("good 1", "good 2", "alone"):
        assert (tmp_path / "out" / f"{stem}_prob.png").is_file()
    rows = (tmp_path / "out" / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3


def test_unreadable_file_is_skipped(cli, tmp_path, tiny_model, monkeypatch) -> None:
    """A file the user may not read (simulated: tests often run as root) is skipped."""
    locked = png(tmp_path / "in" / "locked.png", noise(8, 8))
    png(tmp_path / "in" / "ok.png", noise(8, 8))
    real_open = Image.open

    def deny(fp, *a, **k):
        if Path(fp).name == "locked.png":
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(Image, "open", deny)
    res = cli("predict", tmp_path / "in", "--model", tiny_model, "--out", tmp_path / "out")
    res.assert_ok()
    assert f"{locked}" in res.err and "Permission denied" in res.err
    assert (tmp_path / "out" / "ok_prob.png").is_file()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can read files without read permission")
def test_unreadable_file_for_real(cli, tmp_path, tiny_model) -> None:
    locked = png(tmp_path / "locked.png", noise(8, 8))
    locked.chmod(0)
    try:
        res = cli("predict", locked, "--model", tiny_model, "--out", tmp_path / "out")
    finally:
        locked.chmod(0o644)
    res.assert_fatal("no input could be segmented")
    assert "ermission denied" in res.err


def test_unicode_and_spaces_in_paths(cli, tmp_path, tiny_model) -> None:
    src = png(tmp_path / "données rétine" / "ïmage 1.png", noise(16, 24, 3))
    out = tmp_path / "sorties é à" / "résultat 1"
    res = cli("predict", src.parent, "--model", tiny_model, "--out", out)
    res.assert_ok()
    assert read_image(out / "ïmage 1_prob.png").shape == (16, 24)
    assert "ïmage 1.png" in (out / "predictions.csv").read_text(encoding="utf-8")
    res = cli("centerline", out / "ïmage 1_mask.png", "--out", out / "cl")
    res.assert_ok()
    assert (out / "cl" / "ïmage 1_mask.png").is_file()


def _loops(folder: Path) -> None:
    """Self loop, two-file loop, a folder link to its parent, a dangling link."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "self.png").symlink_to("self.png")
    (folder / "a.png").symlink_to("b.png")
    (folder / "b.png").symlink_to("a.png")
    (folder / "up").symlink_to(".", target_is_directory=True)
    (folder / "dangling.tif").symlink_to(folder / "missing.tif")


def test_symlink_loops_in_a_folder_are_ignored(cli, tmp_path, tiny_model) -> None:
    folder = tmp_path / "in"
    _loops(folder)
    png(folder / "good.png", noise(8, 8))
    assert [p.name for p in list_images(folder)] == ["good.png"]
    res = cli("predict", folder, "--model", tiny_model, "--out", tmp_path / "out")
    res.assert_ok()
    assert "wrote 1 result(s)" in res.out


def test_symlink_loop_given_directly_is_clear_error(cli, tmp_path, tiny_model) -> None:
    _loops(tmp_path / "in")
    res = cli("predict", tmp_path / "in" / "self.png", "--model", tiny_model,
              "--out", tmp_path / "out")
    res.assert_fatal("self.png", "symlink loop")


@pytest.mark.parametrize("content", ["nothing", "non-images"])
def test_empty_folder_is_clear_error(cli, tmp_path, tiny_model, content) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    if content == "non-images":
        (folder / "notes.txt").write_text("x")
        (folder / "volume.npy").write_bytes(b"x")
        (folder / ".hidden.png").write_bytes(png_bytes(noise(4, 4)))
    res = cli("predict", folder, "--model", tiny_model, "--out", tmp_path / "out")
    res.assert_fatal("no image files or volumes found")


def test_missing_input_is_clear_error(cli, tmp_path, tiny_model) -> None:
    res = cli("predict", tmp_path / "nope.png", "--model", tiny_model, "--out", tmp_path / "o")
    res.assert_fatal("nope.png", "does not exist")
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_clear_error(cli, tmp_path, tiny_model) -> None:
    png(tmp_path / "a.png", noise(8, 8))
    (tmp_path / "taken").write_text("x")
    res = cli("predict", tmp_path / "a.png", "--model", tiny_model, "--out", tmp_path / "taken")
    res.assert_fatal("taken", "existing file")
    res = cli("predict", tmp_path / "a.png", "--model", tiny_model,
              "--out", tmp_path / "taken" / "sub")
    res.assert_fatal("cannot create output folder")


def test_same_stem_in_two_folders_never_overwrites(cli, tmp_path, tiny_model) -> None:
    png(tmp_path / "a" / "x.png", noise(8, 8))
    png(tmp_path / "b" / "x.png", noise(12, 12))
    res = cli("predict", tmp_path / "a", tmp_path / "b", "--model", tiny_model,
              "--out", tmp_path / "out")
    res.assert_ok()
    assert read_image(tmp_path / "out" / "x_prob.png").shape == (8, 8)
    assert read_image(tmp_path / "out" / "x-2_prob.png").shape == (12, 12)


# --------------------------------------------------------------------------------------------
# centerline


def test_centerline_batch_skips_bad_masks(cli, tmp_path) -> None:
    folder = tmp_path / "masks"
    mask = np.zeros((20, 20), np.uint8)
    mask[8:12, 2:18] = 1  # a {0,1} mask
    png(folder / "zero_one.png", mask)
    png(folder / "rgb.png", np.repeat(mask[..., None] * 255, 3, axis=-1))
    (folder / "empty.png").write_bytes(b"")
    (folder / "junk.png").write_bytes(b"junk")
    res = cli("centerline", folder, "--out", tmp_path / "cl")
    res.assert_ok()
    assert "wrote 2 centerline(s)" in res.out and "skipped 2 file(s):" in res.err
    assert str(folder / "empty.png") in res.err and str(folder / "junk.png") in res.err
    skeleton = read_image(tmp_path / "cl" / "zero_one.png") > 0
    assert 0 < skeleton.sum() <= 16 and skeleton[8:12].any()


def test_centerline_all_bad_is_error(cli, tmp_path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"junk")
    res = cli("centerline", tmp_path / "empty.png", tmp_path / "junk.png",
              "--out", tmp_path / "cl")
    res.assert_fatal("no input mask could be read")
    assert str(tmp_path / "junk.png") in res.err


def test_centerline_empty_folder_and_bad_out(cli, tmp_path) -> None:
    (tmp_path / "none").mkdir()
    cli("centerline", tmp_path / "none", "--out", tmp_path / "cl").assert_fatal(
        "no image files found")
    png(tmp_path / "m.png", np.eye(6, dtype=bool))
    (tmp_path / "file").write_text("x")
    cli("centerline", tmp_path / "m.png", "--out", tmp_path / "file").assert_fatal(
        "existing file")

"""Bounded fuzz of the image reader on the formats ``tests/io`` does not fuzz.

``tests/io/test_images.py::test_fuzz_corrupt_bytes`` fuzzes 8-bit RGB PNG, TIFF and BMP with
``read_image``. This adds JPEG, GIF, 16-bit PNG, 16-bit PGM, palette PNG, float and LZW TIFF,
multi-page TIFF, byte insertions as well as overwrites and cuts, and goes through ``read_mask``
too: every corrupt file gives a valid array or :class:`ImageReadError`, never another exception.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from retinaseg.errors import ImageReadError
from retinaseg.io import images as images_module
from retinaseg.io import read_image, read_mask

RNG = np.random.default_rng(11)
GREY = RNG.integers(0, 256, (10, 14), dtype=np.uint8)


def _pillow(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _palette_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=16).save(buf, format="PNG")
    return buf.getvalue()


def _tiff(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


VALID: dict[str, tuple[bytes, str]] = {
    "jpeg": (_pillow(np.stack([GREY] * 3, -1), "JPEG", quality=80), ".jpg"),
    "gif": (_pillow(GREY, "GIF"), ".gif"),
    "png16": (_pillow(GREY.astype(np.uint16) * 257, "PNG"), ".png"),
    "pgm16": (_pillow(GREY.astype(np.uint16) * 3, "PPM"), ".pgm"),
    "palette": (_palette_png(), ".png"),
    "float_tiff": (_tiff(RNG.random((8, 6), np.float32)), ".tif"),
    "lzw_tiff": (_pillow(GREY, "TIFF", compression="tiff_lzw"), ".tif"),
    "multipage": (_tiff(np.stack([GREY, GREY[::-1]])), ".tiff"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow/tifffile warn about corrupt tags
@settings(max_examples=50, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(VALID)),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    inserts=st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
                     max_size=2),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    as_mask=st.booleans(),
)
def test_fuzz_more_formats(kind, edits, inserts, cut, as_mask) -> None:
    raw, suffix = VALID[kind]
    data = bytearray(raw)
    for pos, value in edits:
        data[pos % len(data)] = value
    for pos, blob in inserts:
        at = pos % (len(data) + 1)
        data[at:at] = blob
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(bytes(data))
        with mock.patch.object(images_module, "MAX_PIXELS", 1 << 20):
            try:
                out = read_mask(path) if as_mask else read_image(path)
            except ImageReadError as exc:
                assert "fuzz" in str(exc) and "\n" not in str(exc)
                return
    assert out.ndim in (2, 3) and out.size > 0
    if as_mask:
        assert out.dtype == bool
    else:
        assert out.dtype == np.float32 and np.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("kind", sorted(VALID))
def test_fuzz_seeds_are_valid(tmp_path, kind) -> None:
    raw, suffix = VALID[kind]
    (tmp_path / f"ok{suffix}").write_bytes(raw)
    assert read_image(tmp_path / f"ok{suffix}").shape[:2] in ((10, 14), (9, 7), (8, 6))


@pytest.mark.parametrize("dtype,extreme", [(np.float32, 3.0e38), (np.float64, 1.0e308)])
def test_float_tiff_with_a_huge_range_is_rescaled_not_nan(tmp_path, dtype, extreme) -> None:
    """Found by this fuzz: max - min overflowed float32 and the image became all NaN."""
    arr = np.array([[-extreme, 0.0], [extreme / 2, extreme]], dtype=dtype)
    tifffile.imwrite(tmp_path / "wide.tif", arr)
    img = read_image(tmp_path / "wide.tif")
    assert img.dtype == np.float32 and np.isfinite(img).all()
    np.testing.assert_allclose(img, [[0.0, 0.5], [0.75, 1.0]], atol=1e-6)

"""Read and write 2D images and binary masks (3D volumes: :mod:`retinaseg.io.volumes`).

Everything read comes back as NumPy ``float32`` in [0, 1] (images, volumes) or ``bool`` (masks);
see ``docs/architecture.md``. Value mapping on read:

- ``bool`` / 1-bit → {0, 1}; ``uint8`` → /255; ``uint16`` (16-bit PNG, TIFF, PGM) → /65535;
- Pillow's 32-bit ``I`` mode (how it opens 16-bit PGM) → /65535 when the values fit in 16 bits;
- other integer types (``int16``, ``int32``, ...) → min-max rescaled to [0, 1];
- floats → kept when every value is already in [0, 1], otherwise min-max rescaled
  (a constant image outside [0, 1] becomes all zeros); NaN or infinity is refused.

Every file written goes through :func:`retinaseg.utils.atomic.atomic_path`.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from retinaseg.errors import ImageReadError
from retinaseg.utils.atomic import atomic_path

PathLike = str | os.PathLike

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".pnm"}
)
"""Lower-case suffixes that :func:`list_images` treats as 2D images (``.npy`` is volume-only)."""

TIFF_EXTENSIONS: frozenset[str] = frozenset({".tif", ".tiff"})

MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
"""Largest accepted 2D image (pixels, ~89 M); bigger headers are refused as probable corruption."""

PALETTE_GREY_TOLERANCE: int = 4
"""Palette colours whose channels differ by at most this many 8-bit levels count as grey."""

_DIGITS = re.compile(r"(\d+)", re.ASCII)


class _Unsupported(Exception):
    """Internal: this reader cannot handle the file; try the next one."""


# --------------------------------------------------------------------------------------------
# names and folders


def natural_key(name: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key that orders embedded numbers by value: ``1.bmp < 2.bmp < 10.bmp``.

    Text parts compare case-insensitively; the full name breaks ties (``01`` vs ``1``).

    >>> sorted(["10.bmp", "2.bmp", "1.bmp"], key=natural_key)
    ['1.bmp', '2.bmp', '10.bmp']
    """
    parts = _DIGITS.split(name)
    key = tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))
    return key, name


def list_images(folder: PathLike) -> list[Path]:
    """Image files (by :data:`IMAGE_EXTENSIONS`) directly in ``folder``, naturally sorted.

    Hidden files (names starting with ``.``) and sub-folders are skipped.
    Raises :class:`ImageReadError` when ``folder`` is missing or not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ImageReadError(f"cannot list images in '{folder}': the path {what}.")
    files = [
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


# --------------------------------------------------------------------------------------------
# value mapping


def _minmax(arr: np.ndarray) -> np.ndarray:
    """Min-max rescale to [0, 1] as float32 (in place on one float32 copy, for big volumes).

    A constant array becomes zeros. Ranges too wide for float32 arithmetic (e.g. values near
    ±3e38, as in a corrupt float TIFF) go through :func:`_minmax_wide` instead of overflowing.
    """
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    if not hi - lo < _FLOAT32_MAX:
        return _minmax_wide(arr, lo, hi)
    out = arr.astype(np.float32)
    out -= np.float32(lo)
    out /= np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _minmax_wide(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Min-max rescale in float64 with every term halved, so no step can overflow."""
    out = arr.astype(np.float64) * 0.5
    out -= lo * 0.5
    out /= hi * 0.5 - lo * 0.5
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32)


def _to_unit_float(arr: np.ndarray, path: Path) -> np.ndarray:
    """Map a decoded array of any supported dtype to float32 in [0, 1] (module docstring)."""
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)  # e.g. big-endian 16-bit PGM
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535)
    if np.issubdtype(arr.dtype, np.integer):
        return _minmax(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageReadError(f"cannot read image '{path}': it contains NaN or infinite values.")
        if arr.min() >= 0 and arr.max() <= 1:
            return arr.astype(np.float32)
        return _minmax(arr)
    raise ImageReadError(f"cannot read image '{path}': unsupported pixel type {arr.dtype}.")


def _as_grey_or_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    """Return ``[H,W]`` or ``[H,W,3]``: drop alpha / extra sample, squeeze single channels."""
    if arr.ndim == 3 and arr.shape[-1] in (1, 2):
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3):
        if arr.size == 0:
            raise ImageReadError(f"cannot read image '{path}': the image has zero size.")
        return arr
    raise ImageReadError(
        f"cannot read image '{path}': expected a grey or RGB image, got array shape {arr.shape}."
    )


# --------------------------------------------------------------------------------------------
# decoders (each returns the raw decoded array or raises)


def _check_pixels(n_pixels: int) -> None:
    if n_pixels > MAX_PIXELS:
        raise _Unsupported(f"image of {n_pixels} pixels exceeds the {MAX_PIXELS}-pixel limit")


def _pillow_to_array(im: Image.Image) -> np.ndarray:
    """Decode one loaded Pillow frame to ``[H,W]`` / ``[H,W,3]`` in its native dtype."""
    mode = im.mode
    if mode == "1":
        return np.array(im, dtype=bool)
    if mode in ("L", "LA", "La"):
        return np.asarray(im.getchannel(0))
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return arr.astype(np.uint16)
        return arr
    if mode.startswith("I;16") or mode == "F":
        return np.asarray(im)
    if mode == "RGB":
        return np.asarray(im)
    rgb = np.asarray(im.convert("RGB"))  # P, PA, RGBA, CMYK, YCbCr, ...
    if mode in ("P", "PA"):
        return _palette_grey_or_rgb(rgb)
    return rgb


def _palette_grey_or_rgb(rgb: np.ndarray) -> np.ndarray:
    """Palette image → grey when every colour used is (nearly) grey, else keep RGB.

    GIF masks often carry near-grey palettes (DRIVE ``01_manual2.gif``: (4,2,4) and
    (252,254,252)); a channel spread up to :data:`PALETTE_GREY_TOLERANCE` levels counts as grey
    and is converted with the luma weights 0.299 R + 0.587 G + 0.114 B.
    """
    spread = int((rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1)).max()) if rgb.size else 0
    if spread == 0:
        return rgb[..., 0]
    if spread <= PALETTE_GREY_TOLERANCE:
        return np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"))
    return rgb


def _read_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        _check_pixels(im.size[0] * im.size[1])
        im.load()
        return _pillow_to_array(im)


def _tiff_page_array(page: tifffile.TiffPage) -> np.ndarray:
    """Decode one TIFF page; palette / min-is-white / YCbCr etc. are left to Pillow."""
    photometric = int(page.photometric)
    if photometric not in (int(tifffile.PHOTOMETRIC.MINISBLACK), int(tifffile.PHOTOMETRIC.RGB)):
        raise _Unsupported(f"TIFF photometric {page.photometric!r} handled by Pillow")
    _check_pixels(int(np.prod(page.shape, dtype=np.int64)))
    arr = page.asarray()
    if page.axes.startswith("S") and arr.ndim == 3:  # planar RGB: [S,H,W] -> [H,W,S]
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _read_tifffile(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise _Unsupported("TIFF has no pages")
        return _tiff_page_array(tif.pages.first)


def _reason(exc: BaseException) -> str:
    """One-line, short description of a decoder failure."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "cannot identify image file" in text:
        text = "not a recognised image format"
    return text[:200]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(f"cannot read image '{path}': file does not exist.")
    if path.is_dir():
        raise ImageReadError(f"cannot read image '{path}': it is a folder, not a file.")
    if path.stat().st_size == 0:
        raise ImageReadError(f"cannot read image '{path}': file is empty.")


def _decode(path: Path) -> np.ndarray:
    """Raw decoded ``[H,W]`` / ``[H,W,3]`` array, trying tifffile and Pillow in a sensible order."""
    _check_file(path)
    readers: tuple[Callable[[Path], np.ndarray], ...] = (_read_pillow, _read_tifffile)
    if path.suffix.lower() in TIFF_EXTENSIONS:
        readers = readers[::-1]
    failures: list[BaseException] = []
    for reader in readers:
        try:
            return _as_grey_or_rgb(reader(path), path)
        except ImageReadError:
            raise
        except Exception as exc:  # decoders raise many types on corrupt data
            failures.append(exc)
    primary = next((f for f in failures if not isinstance(f, _Unsupported)), failures[0])
    raise ImageReadError(f"cannot read image '{path}': {_reason(primary)}.")


# --------------------------------------------------------------------------------------------
# public readers


def read_image(path: PathLike) -> np.ndarray:
    """Read a 2D image as float32 in [0, 1], ``[H, W]`` grey or ``[H, W, 3]`` RGB.

    Supports PNG (8/16-bit), BMP, TIFF (8/16-bit, float; first page of a multi-page file),
    GIF (first frame), JPEG and PPM/PGM. Palette images become grey when every colour used is
    (nearly) grey, else RGB; alpha is dropped. RGB images are never collapsed to grey.
    ``.tif``/``.tiff`` are decoded with tifffile first, everything else with Pillow first; the
    other library is the fall-back (so a PNG named ``.tif`` still reads). Value mapping: see the
    module docstring.

    Raises :class:`ImageReadError` (one sentence naming the file) for a missing file, a folder,
    an empty or corrupt file, or content that neither library can decode.

    >>> img = read_image("DRIVE/training/images/21_training.tif")  # doctest: +SKIP
    >>> img.shape, img.dtype
    ((584, 565, 3), dtype('float32'))
    """
    path = Path(path)
    return _to_unit_float(_decode(path), path)


def read_mask(path: PathLike) -> np.ndarray:
    """Read a binary mask as bool ``[H, W]``.

    Colour is collapsed by the maximum over channels; foreground is ``value > 0.5 * max`` (so
    {0, 1}, {0, 255}, {0, 128} and 16-bit masks all work). An all-zero image gives all False.
    """
    img = read_image(path)
    if img.ndim == 3:
        img = img.max(axis=-1)
    peak = float(img.max())
    if peak <= 0:
        return np.zeros(img.shape, dtype=bool)
    return img > 0.5 * peak


def read_class_map(path: PathLike) -> np.ndarray:
    """Read an integer class map (e.g. OCTA-500 ``GT_AV``) as int64 ``[H, W]``, values as stored.

    Unlike :func:`read_mask` nothing is rescaled: a grey PNG/BMP/TIFF holding 0, 1, 2, ...
    gives those values. Colour, negative and non-integer pixels are refused with
    :class:`ImageReadError`, since they cannot be class indices.
    """
    path = Path(path)
    raw = _decode(path)
    if raw.ndim == 3:
        raise ImageReadError(f"class map '{path}' is a colour image; expected one grey channel "
                             "of class values 0, 1, 2, ...")
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all() or (raw != np.round(raw)).any():
            raise ImageReadError(f"class map '{path}' holds non-integer values; expected class "
                                 "values 0, 1, 2, ...")
    out = raw.astype(np.int64)
    if out.size and out.min() < 0:
        raise ImageReadError(f"class map '{path}' holds negative values; expected class values "
                             "0, 1, 2, ...")
    return out


Palette = tuple[tuple[str, tuple[int, int, int]], ...]
"""Class names in value order with their RGB colour, class 0 (background) first."""

RITE_PALETTE: Palette = (("background", (0, 0, 0)), ("artery", (255, 0, 0)),
                         ("vein", (0, 0, 255)), ("overlap", (0, 255, 0)),
                         ("uncertain", (255, 255, 255)))
"""Colour code of the AV-DRIVE / RITE artery-vein labels (Hu et al. 2013): red artery, blue
vein, green crossing (our ``overlap``, as in OCTA-500 ``GT_AV``), white uncertain."""


def read_colour_class_map(path: PathLike, palette: Palette,
                          tolerance: int | None = 60) -> np.ndarray:
    """Read a colour-coded class map (e.g. RITE A/V labels) as int64 ``[H, W]`` class values.

    Each pixel takes the class of the nearest palette colour (max-channel distance on the 8-bit
    scale); a pixel farther than ``tolerance`` from every colour is refused with
    :class:`ImageReadError` naming that colour. JPEG files (lossy, their edges smeared) are
    never refused: every pixel takes its nearest colour. A grey image is read as grey RGB.
    """
    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        tolerance = None
    rgb = read_image(path)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    px = np.round(rgb[..., :3] * 255).astype(np.int16)                    # [H, W, 3]
    out = np.zeros(px.shape[:2], np.int64)
    best = np.full(px.shape[:2], np.iinfo(np.int16).max, np.int16)      # nearest so far
    for k, (_, colour) in enumerate(palette):  # [H, W] at a time, not [H, W, K, 3]
        dist = np.abs(px - np.array(colour, np.int16)).max(axis=-1)
        closer = dist < best
        out[closer], best[closer] = k, dist[closer]
    far = best > (255 if tolerance is None else tolerance)
    if far.any():
        bad = tuple(int(v) for v in px[far][0])
        names = ", ".join(f"{n} {c}" for n, c in palette)
        raise ImageReadError(f"colour class map '{path}' has {int(far.sum())} pixels of a colour "
                             f"like RGB {bad} that is none of the palette's ({names})")
    return out


# --------------------------------------------------------------------------------------------
# writers


def _check_write_shape(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3):
        if arr.size == 0:
            raise ValueError(f"cannot write an empty image of shape {arr.shape}")
        return arr
    raise ValueError(f"expected an [H,W] or [H,W,3] array to write, got shape {arr.shape}")


def _float_to_uint8(arr: np.ndarray) -> np.ndarray:
    if not np.isfinite(arr).all() or arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
        raise ValueError("float images must be finite and within [0, 1] to be written as PNG")
    return np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)


def _int_to_uint(arr: np.ndarray) -> np.ndarray:
    lo, hi = int(arr.min()), int(arr.max())
    if lo >= 0 and hi <= 255:
        return arr.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return arr.astype(np.uint16)
    raise ValueError(f"integer image values {lo}..{hi} do not fit in uint8 or uint16")


def _storable(arr: np.ndarray, float_ok: bool) -> np.ndarray:
    """bool → uint8 0/255; ints → uint8/uint16; floats → float32 (TIFF) or uint8 (PNG)."""
    arr = _check_write_shape(np.asarray(arr))
    if arr.dtype == bool:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        return _int_to_uint(arr)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32) if float_ok else _float_to_uint8(arr)
    raise ValueError(f"cannot write an image of dtype {arr.dtype}")


def png_bytes(arr: np.ndarray, compress_level: int = 6) -> bytes:
    """``[H,W]`` or ``[H,W,3]`` (bool, ``uint8`` or float in [0, 1], as :func:`write_png`)
    encoded as 8-bit PNG bytes in memory."""
    buf = io.BytesIO()
    Image.fromarray(_storable(arr, float_ok=False)).save(buf, format="PNG",
                                                        compress_level=compress_level)
    return buf.getvalue()


def write_png(path: PathLike, arr: np.ndarray, compress_level: int = 6) -> None:
    """Write ``[H,W]`` or ``[H,W,3]`` as PNG, atomically (parent folders are created).

    ``compress_level`` is zlib's, 0-9: 1 writes 3-4x faster than the default 6, the files
    10-100 % larger (``evaluate`` uses it for its per-image maps).

    bool → 0/255 ``uint8``; ``uint8`` as is; ``uint16`` grey as 16-bit PNG; floats must be in
    [0, 1] and become ``round(255 * x)`` ``uint8``. Pillow cannot write 16-bit RGB PNG, so
    ``uint16`` RGB is reduced to 8 bits (``round(x / 257)``).
    """
    data = _storable(arr, float_ok=False)
    if data.dtype == np.uint16 and data.ndim == 3:
        data = np.round(data / 257.0).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(data).save(tmp, format="PNG", compress_level=compress_level)


def write_tiff(path: PathLike, arr: np.ndarray) -> None:
    """Write ``[H,W]`` or ``[H,W,3]`` as a deflate-compressed TIFF, atomically.

    bool → 0/255 ``uint8``; ``uint8``/``uint16`` as is; floats are stored as ``float32``
    unchanged (use [0, 1] so :func:`read_image` returns the same values).
    """
    data = _storable(arr, float_ok=True)
    photometric = "rgb" if data.ndim == 3 else "minisblack"
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, photometric=photometric, compression="zlib")

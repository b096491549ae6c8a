"""Read 3D OCT / OCTA volumes as float32 ``[D, H, W]`` in [0, 1] (reference §1.1 and §6).

Axis convention (every volume in retinaseg):

- ``D`` = depth, the A-scan axis; ``D = 0`` is the top of a B-scan image (vitreous side);
- ``H`` = en-face row = slow scan axis (one B-scan per row);
- ``W`` = en-face column = fast scan axis (A-scan position within a B-scan).

So ``volume.mean(axis=0)`` is an en-face map ``[H, W]`` in the orientation of OCTA-500's official
``Projection Maps`` and labels, with no flip by the user.

OCTA-500 B-scan folders (``OCTA/<id>/1.bmp .. N.bmp``, each 640 depth rows × W columns): file
``k`` (natural order, 1-based) becomes en-face row ``H = N - k`` and its pixel ``[d, w]`` becomes
``volume[d, N - k, w]``, i.e. the slow axis is reversed. Evidence, subject 10225 (6M): the
Pearson correlation of the full-depth mean projection with the official
``Projection Maps/OCTA(ILM_OPL)/10225.bmp`` is 0.711 with this orientation and at most 0.063 for
the seven other flips/transposes (0.062 without the reversal; 0.039 transposed, IPN's
``vol[d, a, b]`` reading of reference §1.1). ``benchmarks/speed/volume_projection.py`` re-measures
it.

Array files are taken in the order they were saved, ``axes`` (default ``"DHW"``) naming it:

- ``.npy`` (``allow_pickle=False``, memory-mapped, so an object array is never unpickled);
- multi-page TIFF (one page per index of the first axis; all pages decoded);
- NIfTI ``.nii`` / ``.nii.gz`` through nibabel (array index order ``(i, j, k)``; the affine is
  ignored; a trailing 4th axis of length 1 is dropped; scaling slope/intercept are applied).

A multi-page TIFF of B-scans (pages = B-scans, rows = depth) is ``axes="HDW"``.
Zarr / OME-Zarr stores are not read: the ``zarr`` package and its compiled codecs (numcodecs)
would be a heavy dependency for a format that OCT devices do not export; such a store is refused
with a hint to convert it to ``.npy``.

Memory: the size of the float32 result is checked against ``max_bytes`` before anything is
allocated; the result is filled one 2D slice at a time, so the peak is one float32 copy plus one
slice (an OCTA-500 6M cube: 400 MB). Values map to [0, 1] over the whole volume with the rules of
:mod:`retinaseg.io.images` (``uint8`` / 255, ``uint16`` / 65535, other types min-max, NaN/inf
refused); types that need the volume's min and max are read twice rather than held raw.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageSequence

from retinaseg.errors import ImageReadError
from retinaseg.io.images import (
    IMAGE_EXTENSIONS,
    TIFF_EXTENSIONS,
    PathLike,
    _check_file,
    _decode,
    _pillow_to_array,
    _reason,
    _tiff_page_array,
    list_images,
)

AXES = "DHW"
DEFAULT_MAX_BYTES: int = 4 * 2**30
"""Largest float32 volume :func:`read_volume` allocates by default (4 GiB, ~1.07 G voxels)."""

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
VOLUME_FILE_SUFFIXES: tuple[str, ...] = (".npy", ".tif", ".tiff", *NIFTI_SUFFIXES)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$", re.ASCII)
_UNIT_DIVISOR = {np.dtype(bool): 1, np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}


@dataclass
class _Source:
    """A volume file opened lazily: ``shape`` in stored order, 2D slices along ``slice_axis``.

    ``read(i)`` returns stored slice ``i`` (the two other axes, in stored order) in ``dtype``.
    ``reverse`` lists stored axes whose index runs backwards in ``[D, H, W]``.
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[int], np.ndarray]
    slice_axis: int = 0
    axes: str = AXES
    reverse: tuple[int, ...] = ()
    close: Callable[[], None] = lambda: None


def _error(path: Path, reason: str) -> ImageReadError:
    return ImageReadError(f"cannot read volume '{path}': {reason.rstrip('.')}.")


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(s) for s in shape)


# --------------------------------------------------------------------------------------------
# folders of B-scans


def _grey_bscan(arr: np.ndarray, path: Path) -> np.ndarray:
    """A B-scan must be grey; RGB with three identical channels is accepted."""
    if arr.ndim == 2:
        return arr
    if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
        return arr[..., 0]
    raise ImageReadError(f"cannot read B-scan '{path}': it is a colour image; expected grey.")


def _check_numbering(folder: Path, files: list[Path]) -> None:
    """Files numbered ``<prefix><n>`` (same prefix) must run without gaps or repeats."""
    matches = [_TRAILING_NUMBER.match(f.stem) for f in files]
    if len(files) < 2 or not all(matches) or len({m.group(1) for m in matches if m}) != 1:
        return
    numbers = [int(m.group(2)) for m in matches if m]
    seen: dict[int, Path] = {}
    for n, f in zip(numbers, files):
        if n in seen:
            raise _error(folder, f"B-scans '{seen[n].name}' and '{f.name}' have the same number")
        seen[n] = f
    missing = sorted(set(range(min(numbers), max(numbers) + 1)) - set(numbers))
    if missing:
        prefix = matches[0].group(1) if matches[0] else ""
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _error(folder, f"B-scan '{prefix}{missing[0]}.*' is missing{more}: the files run "
                     f"from {min(numbers)} to {max(numbers)} with {len(files)} present")


def _is_zarr(path: Path) -> bool:
    markers = (".zarray", ".zgroup", "zarr.json")
    return path.suffix.lower() == ".zarr" or any((path / m).exists() for m in markers)


def _bscan_folder(folder: Path) -> _Source:
    """OCTA-500 layout: stored ``[B-scan, depth row, column]`` = ``HDW`` with H reversed."""
    if _is_zarr(folder):
        raise _error(folder, "Zarr stores are not supported; save the array with numpy.save "
                     "as .npy (e.g. np.save('v.npy', zarr.open(path)[:]))")
    files = list_images(folder)
    if not files:
        raise _error(folder, "the folder contains no image files (expected one B-scan per "
                     "file, e.g. 1.bmp .. 400.bmp)")
    _check_numbering(folder, files)
    first = _grey_bscan(_decode(files[0]), files[0])

    def read(i: int) -> np.ndarray:
        scan = first if i == 0 else _grey_bscan(_decode(files[i]), files[i])
        if scan.shape != first.shape or scan.dtype != first.dtype:
            raise _error(folder, f"B-scan '{files[i].name}' is {_shape_text(scan.shape)} "
                         f"{scan.dtype} but '{files[0].name}' is {_shape_text(first.shape)} "
                         f"{first.dtype}")
        return scan

    return _Source(folder, (len(files), *first.shape), first.dtype, read, 0, "HDW", (0,))


# --------------------------------------------------------------------------------------------
# array files


def _npy_dtype(path: Path) -> np.dtype:
    """Element type from the ``.npy`` header alone (nothing is loaded or unpickled)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        return read_header(fh)[2]


def _npy(path: Path) -> _Source:
    try:
        object_dtype = _npy_dtype(path).hasobject
    except Exception as exc:  # not an .npy, truncated header
        raise _error(path, _reason(exc)) from exc
    if object_dtype:
        raise _error(path, "it holds Python objects (an object array), which are never "
                     "unpickled (allow_pickle=False); save a numeric array")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # object arrays, truncated headers, not an .npy at all
        raise _error(path, _reason(exc)) from exc
    if not isinstance(arr, np.ndarray):
        raise _error(path, "it holds no array")
    return _Source(path, arr.shape, arr.dtype, lambda i: np.asarray(arr[i]))


def _tiff_pages(path: Path) -> _Source:
    """Pages on the first axis, decoded one at a time.

    Files tifffile cannot decode (LZW without imagecodecs, palette pages, ...) go to Pillow,
    which loads every page at once.
    """
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        return _tiff_pillow(path, exc)
    try:
        pages = list(tif.pages)
        first = _tiff_page_array(pages[0])
        if first.ndim != 2:
            raise ValueError("colour pages")
    except Exception as exc:
        tif.close()
        return _tiff_pillow(path, exc)

    def read(i: int) -> np.ndarray:
        if i == 0:
            return first
        try:
            page = _tiff_page_array(pages[i])
        except Exception as exc:
            raise _error(path, f"page {i + 1}: {_reason(exc)}") from exc
        if page.shape != first.shape or page.dtype != first.dtype:
            raise _error(path, f"page {i + 1} is {_shape_text(page.shape)} {page.dtype} but "
                         f"page 1 is {_shape_text(first.shape)} {first.dtype}")
        return page

    return _Source(path, (len(pages), *first.shape), first.dtype, read, close=tif.close)


def _tiff_pillow(path: Path, first_exc: BaseException) -> _Source:
    try:
        with Image.open(path) as im:
            raw = np.stack([_pillow_to_array(f) for f in ImageSequence.Iterator(im)])
    except Exception:
        raise _error(path, _reason(first_exc)) from first_exc
    if raw.ndim == 4:
        raise _error(path, "its pages are colour images; expected grey pages")
    return _Source(path, raw.shape, raw.dtype, lambda i: raw[i])


def _nifti(path: Path) -> _Source:
    """NIfTI via nibabel's lazy array proxy, sliced along the last (contiguous) axis."""
    try:
        import nibabel as nib  # optional at import time: only needed for NIfTI
    except ImportError as exc:
        raise _error(path, "reading NIfTI needs the nibabel package (pip install nibabel)") \
            from exc
    try:
        proxy = nib.load(str(path)).dataobj
        shape = tuple(int(s) for s in proxy.shape)
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        probe = np.asanyarray(proxy[(0,) * len(proxy.shape)])
    except Exception as exc:
        raise _error(path, _reason(exc)) from exc
    extra = (0,) if len(proxy.shape) == 4 else ()

    def read(k: int) -> np.ndarray:
        return np.asanyarray(proxy[(slice(None), slice(None), k, *extra)])

    return _Source(path, shape, probe.dtype, read, slice_axis=2)


def _open(path: Path) -> _Source:
    name = path.name.lower()
    if path.is_dir():
        return _bscan_folder(path)
    if not path.exists():
        raise _error(path, "the path does not exist")
    if name.endswith(NIFTI_SUFFIXES):
        _check_file(path)
        return _nifti(path)
    suffix = path.suffix.lower()
    if suffix in (".npy", *TIFF_EXTENSIONS):
        _check_file(path)
        return _npy(path) if suffix == ".npy" else _tiff_pages(path)
    if suffix in IMAGE_EXTENSIONS:
        raise _error(path, "it is a 2D image file; expected a volume: a folder of B-scans, a "
                     "multi-page .tif/.tiff, a .npy or a .nii/.nii.gz file")
    raise _error(path, "expected a folder of B-scans, a multi-page .tif/.tiff, a .npy or a "
                 ".nii/.nii.gz file")


# --------------------------------------------------------------------------------------------
# checks and value mapping


def _check_axes(axes: str) -> str:
    key = str(axes).upper()
    if sorted(key) != sorted(AXES):
        raise ImageReadError(f"volume axes '{axes}' must be an ordering of the letters D, H "
                             "and W (e.g. 'DHW', or 'HDW' for a stack of B-scans).")
    return key


def _check_source(src: _Source, max_bytes: int) -> None:
    """Shape, element type and the float32 size, all before any allocation."""
    if len(src.shape) == 2 or (len(src.shape) == 3 and src.shape[0] == 1):
        raise _error(src.path, f"expected a 3D volume [D,H,W], got a single 2D image of "
                     f"{_shape_text(src.shape[-2:])} px")
    if len(src.shape) != 3:
        raise _error(src.path, f"expected a 3D array [D,H,W], got {len(src.shape)}D shape "
                     f"{src.shape}")
    if 0 in src.shape:
        raise _error(src.path, f"the volume has zero size {src.shape}")
    kind = src.dtype.kind
    if kind not in "biuf":
        raise _error(src.path, f"unsupported element type {src.dtype}; expected numbers")
    need = 4 * int(np.prod(src.shape, dtype=np.int64))
    if need > max_bytes:
        raise _error(src.path, f"its {_shape_text(src.shape)} voxels need {need / 2**30:.2f} GiB "
                     f"as float32, over the {max_bytes / 2**30:.2f} GiB limit (max_bytes)")


def _slices(src: _Source) -> Iterator[tuple[int, np.ndarray]]:
    for i in range(src.shape[src.slice_axis]):
        sl = src.read(i)
        yield i, sl.astype(sl.dtype.newbyteorder("="), copy=False)


def _value_map(src: _Source) -> tuple[float, float]:
    """``(offset, scale)`` with ``unit = (raw - offset) / scale`` (module docstring rules).

    ``scale == 0`` means a constant volume outside [0, 1] (all zeros).
    """
    if src.dtype in _UNIT_DIVISOR:
        return 0.0, float(_UNIT_DIVISOR[src.dtype])
    lo, hi = np.inf, -np.inf
    for i, sl in _slices(src):
        if sl.dtype.kind == "f" and not np.isfinite(sl).all():
            raise _error(src.path, f"it contains NaN or infinite values (stored slice {i})")
        lo, hi = min(lo, float(sl.min())), max(hi, float(sl.max()))
    if src.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return 0.0, 1.0
    return lo, hi - lo


def _to_unit(sl: np.ndarray, offset: float, scale: float, out: np.ndarray) -> None:
    """Write one raw slice into ``out`` as float32 in [0, 1].

    float32 arithmetic (``uint8 / 255`` exactly as :func:`retinaseg.io.read_image` does), or
    float64 with halved terms where the range would overflow float32.
    """
    if scale <= 0:
        out[...] = 0.0
    elif offset == 0.0 and scale == 1.0:
        out[...] = sl
    elif not (scale < _FLOAT32_MAX and abs(offset) < _FLOAT32_MAX):
        out[...] = np.clip((sl.astype(np.float64) * 0.5 - offset * 0.5) / (scale * 0.5), 0, 1)
    elif offset == 0.0:
        np.divide(sl, np.float32(scale), out=out, dtype=np.float32)
    else:
        np.subtract(sl, np.float32(offset), out=out, dtype=np.float32)
        out /= np.float32(scale)
        np.clip(out, 0.0, 1.0, out=out)


def _target_view(out: np.ndarray, src: _Source) -> np.ndarray:
    """View of ``out [D,H,W]`` in the stored axis order, stored slices on axis 0."""
    view = out.transpose([AXES.index(a) for a in src.axes])
    for axis in src.reverse:
        view = np.flip(view, axis)
    return np.moveaxis(view, src.slice_axis, 0)


# --------------------------------------------------------------------------------------------
# public


def read_volume(path: PathLike, axes: str | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read a 3D volume as float32 ``[D, H, W]`` in [0, 1] (axis convention: module docstring).

    Args:
        path: a folder of B-scan images (OCTA-500 layout, natural sort, numbered without gaps),
            a multi-page ``.tif``/``.tiff``, a ``.npy`` or a ``.nii``/``.nii.gz`` file.
        axes: the stored axis order of an array file, an ordering of ``"DHW"`` (default
            ``"DHW"``); not allowed for B-scan folders, whose orientation is fixed.
        max_bytes: refuse volumes whose float32 copy would exceed this many bytes
            (default 4 GiB), checked before allocating.

    Raises :class:`ImageReadError` (one sentence naming the path) for a missing path, an empty
    folder, a missing or odd-sized B-scan, a 2D image or a non-3D array, object or complex
    elements, NaN/inf, or a volume over ``max_bytes``.

    >>> vol = read_volume("OCTA-500/OCTA_6M/OCTA/10225")  # doctest: +SKIP
    >>> vol.shape, vol.dtype
    ((640, 400, 400), dtype('float32'))
    """
    src = _open(Path(path))
    try:
        if axes is not None:
            if src.reverse:
                raise _error(src.path, "axes= applies to array files only; a B-scan folder's "
                             "orientation is fixed (OCTA-500)")
            src.axes = _check_axes(axes)
        _check_source(src, max_bytes)
        offset, scale = _value_map(src)
        out = np.empty(tuple(src.shape[src.axes.index(a)] for a in AXES), np.float32)
        target = _target_view(out, src)
        for i, sl in _slices(src):
            _to_unit(sl, offset, scale, target[i])
        return out
    finally:
        src.close()


def volume_planes(path: PathLike, max_bytes: int = DEFAULT_MAX_BYTES
                  ) -> tuple[tuple[int, int, int], Iterator[tuple[int, np.ndarray]]] | None:
    """Stream a volume stored as slices along ``H`` (a folder of B-scans), without holding it.

    Returns the ``[D, H, W]`` shape and an iterator of ``(h, plane)``, ``plane`` float32
    ``[D, W]`` in [0, 1] exactly as row ``h`` of :func:`read_volume`'s result; None for a
    volume stored otherwise (read it whole). The checks of :func:`read_volume` apply.
    """
    src = _open(Path(path))
    try:
        _check_source(src, max_bytes)
        stored = src.axes
        if stored[src.slice_axis] != "H":
            src.close()
            return None
        offset, scale = _value_map(src)
    except BaseException:
        src.close()
        raise
    shape = tuple(src.shape[stored.index(a)] for a in AXES)
    rest = [a for k, a in enumerate(stored) if k != src.slice_axis]
    flips = [rest.index(a) for a in "DW" if stored.index(a) in src.reverse]
    h_reversed = stored.index("H") in src.reverse

    def planes() -> Iterator[tuple[int, np.ndarray]]:
        try:
            for i, sl in _slices(src):
                buf = np.empty(sl.shape, np.float32)
                _to_unit(sl, offset, scale, buf)
                buf = np.flip(buf, flips) if flips else buf
                yield (shape[1] - 1 - i if h_reversed else i,
                       buf if rest == ["D", "W"] else buf.T)
        finally:
            src.close()

    return shape, planes()  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# telling volumes from images


MIN_BSCANS = 8
"""A folder needs at least this many numbered images to be taken for a B-scan folder."""


COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "RGBa"})
"""Pillow modes of colour images: a B-scan is grey, so a colour file is never one."""


def _image_size(path: Path) -> tuple[int, int, bool] | None:
    """(width, height, is colour) from the file header, or None when Pillow cannot read it."""
    try:
        with Image.open(path) as im:
            return (*im.size, im.mode in COLOUR_MODES)
    except (OSError, ValueError):
        return None


def bscan_folder_reason(folder: PathLike) -> str | None:
    """Why ``folder`` looks like one volume of B-scans, or None when it looks like images.

    The content decides: at least :data:`MIN_BSCANS` image files, all named by a number (the
    same prefix, e.g. ``1.bmp .. 400.bmp``), all of one size, grey (a folder of colour
    photographs named ``01.png .. 20.png`` stays images), and that size not square (a B-scan is
    depth × A-scans, e.g. 640 × 400; en-face maps are square). Only headers are read.
    """
    files = list_images(Path(folder))
    if len(files) < MIN_BSCANS:
        return None
    matches = [_TRAILING_NUMBER.match(f.stem) for f in files]
    if not all(matches) or len({m.group(1) for m in matches if m}) != 1:
        return None
    sizes = {_image_size(f) for f in files[:: max(1, len(files) // 16)] + [files[-1]]}
    if len(sizes) != 1 or None in sizes:
        return None
    w, h, colour = sizes.pop()  # type: ignore[misc]
    if w == h or colour:
        return None
    return (f"{len(files)} numbered images of one size ({h}×{w}, not square): read as one "
            "volume of B-scans")


def volume_file_reason(path: PathLike) -> str | None:
    """Why the file ``path`` is a volume (``.npy``, NIfTI, a multi-page TIFF), or None."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".npy"):
        try:
            with open(path, "rb") as f:
                np.lib.format.read_magic(f)
        except (OSError, ValueError):
            return None
        return "a NumPy file: read as a volume"
    if name.endswith(NIFTI_SUFFIXES):
        return "a NIfTI file: read as a volume" if path.stat().st_size >= 348 else None
    if path.suffix.lower() in TIFF_EXTENSIONS:
        try:
            with tifffile.TiffFile(path) as tif:
                pages = len(tif.pages)
        except (OSError, ValueError, tifffile.TiffFileError):
            return None
        if pages > 1:
            return f"a TIFF of {pages} pages: read as a volume"
    return None


__all__ = ["DEFAULT_MAX_BYTES", "MIN_BSCANS", "NIFTI_SUFFIXES", "VOLUME_FILE_SUFFIXES",
           "bscan_folder_reason", "read_volume", "volume_file_reason", "volume_planes"]

"""En-face projections and layer frames of OCT / OCTA volumes (reference §1.1, §1.6 and §6).

Volumes are ``[D, H, W]`` (depth, slow axis, fast axis; :mod:`retinaseg.io.volumes`), so every
projection is an ``[H, W]`` map in the orientation of OCTA-500's official projection maps.

- :func:`project` reduces depth with mean | max | min | std | sum | median, over the full depth,
  a fixed range ``(a, b)`` of planes, per-A-scan ranges (two ``[H, W]`` surfaces), or the
  automatic inner-retina slab of :func:`auto_slab`.
- :func:`auto_slab` approximates ILM→OPL without layer labels (heuristic below).
- :func:`layer_frames` cuts the volume into thin en-face slabs at successive depths (the "layers"
  of SAM-OCTA2, reference §1.6); :func:`resample_depth` brings a volume to a fixed number of
  planes (IPN uses 160, reference §6).
- :func:`save_projection` / :func:`save_layer_frames` write the results atomically.

Memory: reductions run over chunks of rows (``H``) of at most :data:`CHUNK_BYTES`, so a float32
volume plus one chunk-sized float temporary is the peak (two float copies at most).

Auto-slab heuristic (:func:`auto_slab`), from anatomy rather than fitted to any image. OCTA flow
is near zero in the vitreous, rises sharply at the ILM (superficial plexus just below it), dips
in the avascular outer nuclear layer and peaks at the RPE / choriocapillaris, whose decorrelation
signal (with the projection artefacts of the retinal vessels) is the strongest of the A-scan.
Per lateral block of ``block`` × ``block`` A-scans, the mean depth profile, smoothed along depth
(Gaussian, σ = 0.5 % of D), gives

- top (ILM) = the first plane where the profile reaches ``rise`` (0.2) × its maximum;
- bottom (≈ RPE) = the plane of the profile's maximum;
- slab = ``[top, top + fraction · (bottom − top))`` with ``fraction`` = 0.5: ILM→OPL is about
  half of ILM→RPE outside the fovea (nerve fibre + ganglion cell + inner plexiform + inner
  nuclear + outer plexiform layers against the whole neural retina).

The block surfaces are median-filtered (3 × 3 blocks, against a fovea or a dropout block) and
interpolated bilinearly to every A-scan, so the slab follows the curvature of a 6 mm scan (on
OCTA-500 10225 the top moves by ~150 planes across the field). It is an approximation: a real
ILM/OPL segmentation follows layers at pixel scale. Measured once on OCTA-500 6M subject 10225
(the only real volume we have, a test-split subject: a check, nothing was tuned on it;
``benchmarks/speed/volume_projection.py``), Pearson correlation with the official
``OCTA(ILM_OPL)`` map: full-depth mean 0.711; auto-slab mean 0.816, max 0.922, std 0.911; one
global slab from the whole-volume profile (``block=None``) only 0.445 (mean), as the retina's
depth varies across the field.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import transform

from retinaseg.errors import OptionError, VolumeError
from retinaseg.io import read_volume, write_png, write_tiff
from retinaseg.io.volumes import volume_planes
from retinaseg.preprocessing.functions import hist_equalise
from retinaseg.utils.atomic import make_out_dir, write_text_atomic

METHODS: tuple[str, ...] = ("mean", "max", "min", "std", "sum", "median")
CHUNK_BYTES: int = 64 * 2**20
"""Largest float32 temporary of a chunked reduction (64 MiB)."""

DEFAULT_MAX_FRAME_BYTES: int = 4 * 2**30
"""Largest float32 stack :func:`layer_frames` allocates by default (4 GiB)."""

Bound = int | np.ndarray
"""A depth bound: one plane index for every A-scan, or an int ``[H, W]`` surface."""


# --------------------------------------------------------------------------------------------
# checks


def check_volume(volume: Any, what: str = "volume") -> np.ndarray:
    """Return ``volume`` as an ndarray if it is a non-empty, real ``[D, H, W]`` array.

    Raises :class:`VolumeError` for a 2D image, a 4D array, zero size or non-numeric
    elements. Finiteness is checked chunk by chunk where the volume is reduced.
    """
    arr = np.asarray(volume)
    if arr.ndim != 3:
        hint = " (a 2D image; a volume is needed)" if arr.ndim == 2 else ""
        raise VolumeError(f"{what} must be a 3D array [D, H, W], got shape {arr.shape}{hint}")
    if arr.size == 0:
        raise VolumeError(f"{what} has zero size {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise VolumeError(f"{what} has element type {arr.dtype}; expected real numbers")
    return arr


def _check_finite(chunk: np.ndarray, rows: slice) -> None:
    if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
        raise VolumeError(f"volume contains NaN or infinite values (rows {rows.start}.."
                          f"{rows.stop - 1})")


def _check_method(method: str) -> str:
    key = str(method).lower()
    if key not in METHODS:
        raise OptionError(f"projection method '{method}' is unknown; choose one of: "
                          f"{', '.join(METHODS)}")
    return key


def _check_bounds(depth: tuple[Bound, Bound] | None, shape: tuple[int, ...],
                  ) -> tuple[Bound, Bound]:
    """``(a, b)`` with ints or int ``[H, W]`` arrays, ``0 <= a <= b <= D``; ints need a < b."""
    n_depth, lateral = shape[0], shape[1:]
    if depth is None:
        return 0, n_depth
    if len(depth) != 2:
        raise OptionError(f"depth range must be two bounds (a, b), got {depth!r}")
    out = []
    for bound in depth:
        arr = np.asarray(bound)
        if arr.ndim == 0:
            if not float(arr).is_integer():
                raise OptionError(f"depth bound {bound!r} must be an integer plane index")
            out.append(int(arr))
        elif arr.shape == lateral and arr.dtype.kind in "iu":
            out.append(arr.astype(np.int64))
        else:
            raise OptionError(f"a depth surface must be an integer array of shape {lateral}, "
                              f"got {arr.dtype} {arr.shape}")
    a, b = out
    lo, hi = int(np.min(a)), int(np.max(b))
    if lo < 0 or hi > n_depth or np.any(np.asarray(a) > np.asarray(b)):
        raise OptionError(f"depth range must satisfy 0 <= a <= b <= {n_depth} (the volume's "
                          f"depth), got a in [{lo}, {int(np.max(a))}], b in "
                          f"[{int(np.min(b))}, {hi}]")
    if isinstance(a, int) and isinstance(b, int) and a == b:
        raise OptionError(f"depth range ({a}, {b}) is empty; b must exceed a")
    return a, b


def _row_chunks(shape: tuple[int, ...]) -> list[slice]:
    """Row slices whose ``[D, rows, W]`` float32 chunk stays under :data:`CHUNK_BYTES`."""
    n_depth, height, width = shape
    step = max(1, CHUNK_BYTES // (4 * n_depth * width))
    return [slice(r, min(r + step, height)) for r in range(0, height, step)]


# --------------------------------------------------------------------------------------------
# reductions


def _reduce(chunk: np.ndarray, method: str) -> np.ndarray:
    """Reduce ``[d, h, w]`` over depth to float32 ``[h, w]`` (sums in float64)."""
    if method == "mean":
        return chunk.mean(axis=0, dtype=np.float64).astype(np.float32)
    if method == "sum":
        return chunk.sum(axis=0, dtype=np.float64).astype(np.float32)
    if method == "std":
        return chunk.std(axis=0, dtype=np.float64).astype(np.float32)
    if method == "max":
        return chunk.max(axis=0).astype(np.float32)
    if method == "min":
        return chunk.min(axis=0).astype(np.float32)
    return np.median(chunk, axis=0).astype(np.float32)


def _reduce_masked(chunk: np.ndarray, inside: np.ndarray, method: str) -> np.ndarray:
    """Reduce ``[d, h, w]`` over the planes where ``inside`` is True; no plane gives 0."""
    count = inside.sum(axis=0)
    empty = count == 0
    values = chunk.astype(np.float32, copy=False)
    if method in ("mean", "sum", "std"):
        total = np.where(inside, values, 0).sum(axis=0, dtype=np.float64)
        if method == "sum":
            return total.astype(np.float32)
        mean = total / np.maximum(count, 1)
        if method == "mean":
            return mean.astype(np.float32)
        dev = np.where(inside, values - mean.astype(np.float32), 0)
        return np.sqrt((dev.astype(np.float64) ** 2).sum(axis=0) / np.maximum(count, 1)
                       ).astype(np.float32)
    if method in ("max", "min"):
        fill = -np.inf if method == "max" else np.inf
        red = np.where(inside, values, np.float32(fill))
        out = red.max(axis=0) if method == "max" else red.min(axis=0)
    else:
        red = np.where(inside, values, np.float32(np.nan))
        out = np.zeros(count.shape, np.float32)
        out[~empty] = np.nanmedian(red[:, ~empty], axis=0)
    out[empty] = 0
    return out.astype(np.float32)


def _project_array(vol: np.ndarray, method: str, a: Bound, b: Bound) -> np.ndarray:
    """Chunked reduction over planes ``a <= d < b`` (ints: one slice; surfaces: a mask)."""
    out = np.empty(vol.shape[1:], np.float32)
    fixed = isinstance(a, int) and isinstance(b, int)
    if not fixed:
        a, b = (np.broadcast_to(np.asarray(x), vol.shape[1:]) for x in (a, b))
    for rows in _row_chunks(vol.shape):
        if fixed:
            chunk = vol[a:b, rows]
            _check_finite(chunk, rows)
            out[rows] = _reduce(chunk, method)
            continue
        lo, hi = int(a[rows].min()), int(b[rows].max())
        if hi <= lo:
            out[rows] = 0
            continue
        chunk = vol[lo:hi, rows]
        _check_finite(chunk, rows)
        planes = np.arange(lo, hi)[:, None, None]
        out[rows] = _reduce_masked(chunk, (planes >= a[rows]) & (planes < b[rows]), method)
    return out


def project(volume: np.ndarray | str | os.PathLike, method: str = "mean",
            depth: tuple[Bound, Bound] | None = None, slab: str | None = None,
            equalise: bool = False) -> np.ndarray:
    """En-face projection of a ``[D, H, W]`` volume: float32 ``[H, W]``.

    Args:
        volume: a ``[D, H, W]`` array (any real type, e.g. from
            :func:`retinaseg.io.read_volume`) or a path that ``read_volume`` accepts.
        method: ``"mean"``, ``"max"``, ``"min"``, ``"std"``, ``"sum"`` or ``"median"`` over
            depth, in the volume's units (``sum`` can exceed 1).
        depth: planes ``a <= d < b``; each bound an int or an int ``[H, W]`` surface (per-A-scan
            range). None: the full depth. An A-scan whose range is empty gives 0.
        slab: ``"auto"``: the inner-retina slab of :func:`auto_slab` (instead of ``depth``).
        equalise: apply global histogram equalisation to the result (values in (0, 1]).

    Raises :class:`VolumeError` for a non-3D, empty or non-finite volume and
    :class:`OptionError` for an unknown method or slab, or a depth range outside the volume.

    >>> vol = np.zeros((4, 2, 3), np.float32); vol[1:3] = 1.0
    >>> project(vol, "mean").tolist()[0], project(vol, "max", depth=(1, 3)).tolist()[0]
    ([0.5, 0.5, 0.5], [1.0, 1.0, 1.0])
    """
    if isinstance(volume, (str, os.PathLike)):
        volume = read_volume(volume)
    vol = check_volume(volume)
    method = _check_method(method)
    if slab is not None:
        if str(slab).lower() != "auto":
            raise OptionError(f"slab '{slab}' is unknown; use 'auto' or give depth=(a, b)")
        if depth is not None:
            raise OptionError("give either depth=(a, b) or slab='auto', not both")
        depth = auto_slab(vol)
    a, b = _check_bounds(depth, vol.shape)
    out = _project_array(vol, method, a, b)
    return hist_equalise(out).astype(np.float32) if equalise else out


# --------------------------------------------------------------------------------------------
# automatic inner-retina slab


def _block_profiles(vol: np.ndarray, block: int | None) -> np.ndarray:
    """Mean depth profile of every ``block``² group of A-scans: float64 ``[D, nH, nW]``."""
    n_depth, height, width = vol.shape
    bh = height if block is None else min(block, height)
    bw = width if block is None else min(block, width)
    starts_w = np.arange(0, width, bw)
    counts_w = np.diff(np.append(starts_w, width))
    rows = []
    for r in range(0, height, bh):
        chunk = vol[:, r:r + bh]
        _check_finite(chunk, slice(r, min(r + bh, height)))
        col_sum = chunk.sum(axis=1, dtype=np.float64)  # [D, W]
        rows.append(np.add.reduceat(col_sum, starts_w, axis=1) / (counts_w * chunk.shape[1]))
    return np.stack(rows, axis=1)


def _surfaces(profiles: np.ndarray, rise: float, fraction: float,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Top and slab-bottom planes (float ``[nH, nW]``) of smoothed depth profiles."""
    n_depth = profiles.shape[0]
    smooth = ndimage.gaussian_filter1d(profiles, max(0.005 * n_depth, 0.5), axis=0)
    peak = smooth.max(axis=0)
    above = smooth >= rise * peak
    top = np.argmax(above, axis=0).astype(np.float64)
    bottom = np.argmax(smooth, axis=0).astype(np.float64)
    flat = peak <= 0
    top[flat], bottom[flat] = 0, 0
    slab_end = top + fraction * np.maximum(bottom - top, 0) + 1
    return top, slab_end


def auto_slab(volume: np.ndarray, block: int | None = 16, rise: float = 0.2,
              fraction: float = 0.5) -> tuple[Bound, Bound]:
    """Inner-retina slab (≈ ILM→OPL) from the depth profile of the signal.

    Heuristic and its constants: module docstring. ``block``: lateral size (px) of the groups
    of A-scans whose mean profile is analysed; None analyses one profile of the whole volume and
    returns two ints ``(a, b)``. Otherwise returns int64 ``[H, W]`` surfaces ``(top, bottom)``
    with ``top < bottom`` wherever the A-scan has signal, for ``project(..., depth=...)``.
    """
    vol = check_volume(volume)
    if not (0 < rise < 1 and 0 < fraction <= 1):
        raise OptionError(f"auto_slab needs 0 < rise < 1 and 0 < fraction <= 1, got rise={rise}, "
                          f"fraction={fraction}")
    if block is not None and int(block) < 1:
        raise OptionError(f"auto_slab block must be a positive number of pixels, got {block}")
    return _slab_bounds(_block_profiles(vol, block), vol.shape, block, rise, fraction)


def _slab_bounds(profiles: np.ndarray, shape: tuple[int, ...], block: int | None, rise: float,
                 fraction: float) -> tuple[Bound, Bound]:
    """:func:`auto_slab`'s result from the block profiles ``[D, nH, nW]`` of a volume."""
    top, end = _surfaces(profiles, rise, fraction)
    n_depth, height, width = shape
    if block is None:
        return int(top[0, 0]), int(min(np.ceil(end[0, 0]), n_depth))
    if top.shape[0] > 2 and top.shape[1] > 2:
        top, end = ndimage.median_filter(top, 3), ndimage.median_filter(end, 3)
    up_top = transform.resize(top, (height, width), order=1, mode="edge", anti_aliasing=False)
    up_end = transform.resize(end, (height, width), order=1, mode="edge", anti_aliasing=False)
    a = np.clip(np.rint(up_top), 0, n_depth).astype(np.int64)
    b = np.clip(np.ceil(up_end), 0, n_depth).astype(np.int64)
    return a, np.maximum(a, b)


def _streamed_profiles(shape: tuple[int, int, int], planes: Any, block: int = 16) -> np.ndarray:
    """:func:`_block_profiles` of a streamed volume: each block row's B-scans are summed in
    ascending row order once all have arrived, as the in-memory version sums them."""
    n_depth, height, width = shape
    bh, bw = min(block, height), min(block, width)
    starts_w = np.arange(0, width, bw)
    counts_w = np.diff(np.append(starts_w, width))
    pending: dict[int, dict[int, np.ndarray]] = {}
    rows: dict[int, np.ndarray] = {}
    for h, plane in planes:
        _check_finite(plane[None], slice(h, h + 1))
        k = h // bh
        pending.setdefault(k, {})[h] = plane
        size = min(bh, height - k * bh)
        if len(pending[k]) == size:
            group = pending.pop(k)
            stack = np.stack([group[r] for r in range(k * bh, k * bh + size)], axis=1)
            col_sum = stack.sum(axis=1, dtype=np.float64)  # [D, W]
            rows[k] = np.add.reduceat(col_sum, starts_w, axis=1) / (counts_w * size)
    return np.stack([rows[k] for k in sorted(rows)], axis=1)


# --------------------------------------------------------------------------------------------
# depth resampling and layer frames


def resample_depth(volume: np.ndarray, planes: int, mode: str = "area") -> np.ndarray:
    """Resample ``[D, H, W]`` to float32 ``[planes, H, W]`` along depth only.

    ``mode="area"`` averages the planes of each of ``planes`` equal bins (needs
    ``planes <= D``; less speckle than IPN's nearest-neighbour resize of reference §6);
    ``"nearest"`` takes plane ``floor((i + 0.5) · D / planes)`` (IPN's choice; up or down).
    """
    vol = check_volume(volume)
    n_depth = vol.shape[0]
    if int(planes) < 1:
        raise OptionError(f"planes must be a positive integer, got {planes}")
    planes = int(planes)
    if mode == "nearest":
        idx = np.minimum(((np.arange(planes) + 0.5) * n_depth / planes).astype(int), n_depth - 1)
        return vol[idx].astype(np.float32, copy=False)
    if mode != "area":
        raise OptionError(f"depth resampling mode '{mode}' is unknown; use 'area' or 'nearest'")
    if planes > n_depth:
        raise OptionError(f"area resampling cannot add planes ({n_depth} → {planes}); use "
                          "mode='nearest'")
    edges = np.rint(np.linspace(0, n_depth, planes + 1)).astype(int)
    out = np.empty((planes, *vol.shape[1:]), np.float32)
    for rows in _row_chunks(vol.shape):
        chunk = vol[:, rows]
        _check_finite(chunk, rows)
        sums = np.add.reduceat(chunk, edges[:-1], axis=0, dtype=np.float64)
        out[:, rows] = sums / np.diff(edges)[:, None, None]
    return out


def frame_ranges(n_depth: int, depth: tuple[int, int] | None, step: int,
                 thickness: int) -> list[tuple[int, int]]:
    """Plane ranges ``[start, start + thickness)`` every ``step`` planes inside ``depth``."""
    a, b = (0, n_depth) if depth is None else (int(depth[0]), int(depth[1]))
    if not 0 <= a < b <= n_depth:
        raise OptionError(f"frame depth range must satisfy 0 <= a < b <= {n_depth}, got "
                          f"({a}, {b})")
    if int(step) < 1 or int(thickness) < 1:
        raise OptionError(f"frame step and thickness must be positive integers, got "
                          f"step={step}, thickness={thickness}")
    if thickness > b - a:
        raise OptionError(f"frame thickness {thickness} exceeds the depth range ({a}, {b})")
    return [(s, s + thickness) for s in range(a, b - thickness + 1, step)]


def layer_frames(volume: np.ndarray, depth: tuple[int, int] | None = None, step: int = 1,
                 thickness: int = 1, method: str = "mean",
                 max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The volume as en-face frames: float32 ``[N, H, W]`` and each frame's planes.

    Frame ``i`` reduces (``method``) planes ``[a + i·step, a + i·step + thickness)`` of the range
    ``depth = (a, b)`` (default: all); only whole frames are kept. The frame stack's size is
    checked against ``max_bytes`` before it is allocated.
    """
    vol = check_volume(volume)
    method = _check_method(method)
    ranges = frame_ranges(vol.shape[0], depth, step, thickness)
    need = 4 * len(ranges) * vol.shape[1] * vol.shape[2]
    if need > max_bytes:
        raise VolumeError(f"{len(ranges)} frames of {vol.shape[1]}×{vol.shape[2]} px need "
                          f"{need / 2**30:.2f} GiB, over the {max_bytes / 2**30:.2f} GiB limit; "
                          "use a larger step or a smaller depth range")
    frames = np.empty((len(ranges), *vol.shape[1:]), np.float32)
    for i, (s, e) in enumerate(ranges):
        chunk = vol[s:e]
        _check_finite(chunk, slice(0, vol.shape[1]))
        frames[i] = _reduce(chunk, method)
    return frames, ranges


# --------------------------------------------------------------------------------------------
# writers


def _check_map(image: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.size == 0 or arr.dtype.kind not in "biuf":
        raise VolumeError(f"{what} must be a non-empty numeric [H, W] array, got {arr.dtype} "
                          f"{arr.shape}")
    if not np.isfinite(arr).all():
        raise VolumeError(f"{what} contains NaN or infinite values")
    return arr.astype(np.float32, copy=False)


def _unit_range(arr: np.ndarray) -> tuple[float, float]:
    """``(lo, hi)`` mapped to 0 and full scale: ``(0, 1)`` for maps already in [0, 1]."""
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 1:
        return 0.0, 1.0
    return lo, hi if hi > lo else lo + 1.0


def _quantise(arr: np.ndarray, lo: float, hi: float, levels: int) -> np.ndarray:
    dtype = np.uint16 if levels > 255 else np.uint8
    return np.rint(np.clip((arr - lo) / (hi - lo), 0, 1) * levels).astype(dtype)


def preview_8bit(image: np.ndarray) -> np.ndarray:
    """``uint8`` view of a map, min-max stretched (a constant map gives zeros)."""
    arr = _check_map(image, "map")
    lo, hi = float(arr.min()), float(arr.max())
    return _quantise(arr, lo, hi if hi > lo else lo + 1.0, 255)


def save_projection(path: str | os.PathLike, image: np.ndarray,
                    preview: bool = True) -> list[Path]:
    """Write a float ``[H, W]`` map losslessly plus an 8-bit preview; returns the paths written.

    ``.tif``/``.tiff``: float32 TIFF, the exact values. ``.png``: 16-bit PNG of
    ``round(65535 · x)`` for maps in [0, 1] (error <= 7.7e-6), otherwise min-max scaled to the
    16-bit range. The preview ``<stem>_preview.png`` is min-max stretched to 8 bits. Every file
    is written atomically, after every check has passed.
    """
    path = Path(path)
    arr = _check_map(image, "projection")
    suffix = path.suffix.lower()
    if suffix not in (".png", ".tif", ".tiff"):
        raise OptionError(f"projection file '{path}' must end in .png, .tif or .tiff")
    written = [path]
    if suffix == ".png":
        write_png(path, _quantise(arr, *_unit_range(arr), 65535))
    else:
        write_tiff(path, arr)
    if preview:
        written.append(path.with_name(f"{path.stem}_preview.png"))
        write_png(written[-1], preview_8bit(arr))
    return written


def save_layer_frames(out_dir: str | os.PathLike, frames: np.ndarray,
                      depths: Sequence[tuple[int, int]], bits: int = 8,
                      info: dict[str, Any] | None = None) -> Path:
    """Write ``frames [N, H, W]`` as ``frame_<i>.png`` and ``frames.json``; returns the JSON path.

    All frames share one scale (``x / scale`` with ``scale`` = the stack's maximum, or 1 for
    stacks in [0, 1]) so intensities compare across depth; ``bits`` is 8 or 16. ``frames.json``
    (written last, so its presence marks a complete set) lists per frame its file, depth range
    ``[start, stop)`` and centre, plus ``scale``, ``bits`` and ``info``.
    """
    stack = np.asarray(frames)
    if stack.ndim != 3 or len(stack) != len(depths) or len(stack) == 0:
        raise VolumeError(f"frames must be [N, H, W] with one depth range per frame, got shape "
                          f"{stack.shape} and {len(depths)} ranges")
    if bits not in (8, 16):
        raise OptionError(f"frame bits must be 8 or 16, got {bits}")
    if not np.isfinite(stack).all() or stack.min() < 0:
        raise VolumeError("frames must be finite and non-negative to be written as PNG")
    peak = float(stack.max())
    scale = 1.0 if peak <= 1 else peak
    out = Path(out_dir)
    width = max(3, len(str(len(stack) - 1)))
    entries = []
    for i, (frame, (s, e)) in enumerate(zip(stack, depths)):
        name = f"frame_{i:0{width}d}.png"
        write_png(out / name, _quantise(frame, 0.0, scale, 255 if bits == 8 else 65535))
        entries.append({"file": name, "index": i, "depth_start": int(s), "depth_stop": int(e),
                        "depth_centre": (int(s) + int(e) - 1) / 2})
    doc = {"shape": list(stack.shape[1:]), "bits": bits, "scale": scale,
           "value": f"pixel / {2**bits - 1} * scale", "info": info or {}, "frames": entries}
    write_text_atomic(out / "frames.json", json.dumps(doc, indent=1))
    return out / "frames.json"


# --------------------------------------------------------------------------------------------
# from files to files (the project and layers commands)


def _project_streamed(shape: tuple[int, int, int], planes: Any, method: str,
                      depth: tuple[int, int] | None) -> np.ndarray:
    """:func:`project` of a streamed volume (:func:`retinaseg.io.volumes.volume_planes`) over
    the fixed planes ``depth``: the same values, one B-scan in memory at a time."""
    a, b = _check_bounds(depth, shape)
    out = np.empty(shape[1:], np.float32)
    for h, plane in planes:
        _check_finite(plane[None], slice(0, 1))
        out[h] = _reduce(plane[a:b, None, :], method)[0]
    return out


def project_slab_streamed(path: str | Path, method: str
                          ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], int] | None:
    """:func:`project` with ``slab="auto"`` of a B-scan folder in two streamed passes (the block
    profiles, then the projection): the same values, one block of B-scans in memory.

    Returns the map ``[H, W]``, the slab surfaces ``(top, bottom)`` and the volume's depth;
    None for a volume that is not stored as B-scans (read it whole instead).
    """
    first = volume_planes(path)
    if first is None:
        return None
    shape, planes = first
    a, b = _slab_bounds(_streamed_profiles(shape, planes), shape, 16, 0.2, 0.5)
    out = np.empty(shape[1:], np.float32)
    again = volume_planes(path)
    assert again is not None
    for h, plane in again[1]:
        lo, hi = int(a[h].min()), int(b[h].max())
        if hi <= lo:
            out[h] = 0
            continue
        depth = np.arange(lo, hi)[:, None, None]
        inside = (depth >= a[h][None, None]) & (depth < b[h][None, None])
        out[h] = _reduce_masked(plane[lo:hi, None, :], inside, method)[0]
    return out, (a, b), shape[0]


def project_volume(volume: str | Path, out: str | Path, method: str = "mean",
                   depth: tuple[int, int] | None = None, slab: str | None = None,
                   equalise: bool = False, preview: bool = True) -> dict[str, Any]:
    """Read a volume, project it en face (:func:`retinaseg.preprocessing.projection.project`)
    and write the map losslessly (16-bit ``.png`` or float32 ``.tif``) plus an 8-bit preview.

    A folder of B-scans with a fixed depth range is projected B-scan by B-scan as it is read
    (one B-scan in memory; ``streamed``), anything else is read whole first.

    Returns ``{"files", "shape", "depth", "method", "streamed", "seconds_read",
    "seconds_project"}`` (streamed: reading and projecting together in ``seconds_read``); the
    output is written only after the volume was read and projected.
    """
    t0 = time.perf_counter()
    method = _check_method(method)
    if slab is not None and str(slab).lower() != "auto":
        raise OptionError(f"slab '{slab}' is unknown; use 'auto' or give depth=(a, b)")
    if slab is not None and depth is not None:
        raise OptionError("give either depth=(a, b) or slab='auto', not both")
    if slab is not None:
        done = project_slab_streamed(volume, method)
        image = None if done is None else done[0]
    else:
        planes = volume_planes(volume)
        image = None if planes is None else _project_streamed(*planes, method, depth)
    streamed = image is not None  # a B-scan folder: projected B-scan by B-scan
    if streamed:
        t1 = t2 = time.perf_counter()
        image = hist_equalise(image).astype(np.float32) if equalise else image
    else:
        vol = read_volume(volume)
        t1 = time.perf_counter()
        bounds = auto_slab(vol) if slab == "auto" else depth
        image = project(vol, method, depth=bounds, equalise=equalise)
        t2 = time.perf_counter()
        del vol
    files = save_projection(out, image, preview=preview)
    where = "auto slab" if slab == "auto" else "all" if depth is None else \
        f"{depth[0]}:{depth[1]}"
    return {"files": [str(f) for f in files], "shape": list(image.shape), "depth": where,
            "method": method, "streamed": streamed, "seconds_read": t1 - t0,
            "seconds_project": t2 - t1}


def layer_frames_of(volume: str | Path, out: str | Path, depth: tuple[int, int] | None = None,
                    step: int = 1, thickness: int = 1, method: str = "mean",
                    bits: int = 8) -> Path:
    """Read a volume and write it as en-face frames (thin slabs at successive depths):
    ``frame_<i>.png`` and ``frames.json`` with each frame's depth range (returned)."""
    vol = read_volume(volume)
    frames, ranges = layer_frames(vol, depth, step, thickness, method)
    del vol
    info = {"volume": str(volume), "method": method, "step": step, "thickness": thickness}
    return save_layer_frames(make_out_dir(out), frames, ranges, bits=bits, info=info)


__all__ = ["CHUNK_BYTES", "METHODS", "auto_slab", "check_volume", "frame_ranges",
           "layer_frames", "preview_8bit", "project", "resample_depth", "save_layer_frames",
           "save_projection", "project_volume", "layer_frames_of",
           "project_slab_streamed"]

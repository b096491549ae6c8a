"""What the web page computes, without the web framework: checked uploads, cached models, one
image segmented and measured, and the results as PNG and CSV bytes.

Nothing here imports fastapi, so it can be tested and reused without the ``web`` extra.
Uploads are checked before they are decoded (:func:`check_upload`: byte size, archive, the pixel
count read from the header), then decoded by :func:`retinaseg.io.read_image` from a private
temporary folder that is removed when :func:`decode_upload` returns, whatever happens.
"""

from __future__ import annotations

import base64
import io
import math
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from retinaseg.errors import ImageReadError, RetinasegError
from retinaseg.io.images import IMAGE_EXTENSIONS

MAX_UPLOAD_MB = 20
"""Default largest upload, MB per file."""
MAX_UPLOAD_PIXELS = 25_000_000
"""Default largest image, pixels (5000 × 5000); larger headers are refused before decoding."""
MIN_SIDE = 16
"""Smallest image side the page segments, px."""
AUTO = "auto"
"""The model choice that picks the bundled model by the image's modality."""
ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"7z\xbc\xaf")
"""Leading bytes of zip (also empty zip), gzip and 7z archives."""


class UploadError(RetinasegError):
    """A request the page refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Upload limits: ``max_bytes`` per file and ``max_pixels`` per image."""

    max_bytes: int = MAX_UPLOAD_MB * 2**20
    max_pixels: int = MAX_UPLOAD_PIXELS

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < MIN_SIDE * MIN_SIDE:
            raise RetinasegError(f"upload limits must be positive (got {self.max_bytes} bytes, "
                                 f"{self.max_pixels} pixels)")


# ----------------------------------------------------------------------------------------------
# uploads


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, without decoding the pixels; None: no image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return int(im.size[0]), int(im.size[1])
        except Image.DecompressionBombError:
            return 1 << 31, 1  # larger than any limit: refused as too large
        except Exception:  # noqa: BLE001 - Pillow raises many types on non-images
            pass
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            shape = tif.pages.first.shape
            return int(shape[1]), int(shape[0])
    except Exception:  # noqa: BLE001 - neither library knows the format
        return None


def check_upload(data: bytes, name: str, limits: Limits) -> tuple[int, int]:
    """Check an upload before it is decoded; returns its (width, height).

    Raises:
        UploadError: 413 when the file or its pixel count is over ``limits``; 415 for an
            archive (volumes are not served yet); 400 when it is empty, not an image, or
            smaller than 16 px on a side.
    """
    if len(data) > limits.max_bytes:
        raise UploadError(f"'{name}' is {len(data) / 2**20:.1f} MB, over the "
                          f"{limits.max_bytes / 2**20:g} MB limit per file.", 413)
    if not data:
        raise UploadError(f"'{name}' is empty.")
    if data.startswith(ARCHIVE_MAGIC) or name.lower().endswith((".zip", ".gz", ".7z")):
        raise UploadError(f"'{name}' is an archive; the web page takes single images for now "
                          "(segment volumes with 'retinaseg predict').", 415)
    size = _header_size(data)
    if size is None:
        raise UploadError(f"'{name}' is not an image that retinaseg can read (PNG, TIFF, "
                          "JPEG, BMP, GIF or PPM/PGM).")
    w, h = size
    if w * h > limits.max_pixels:
        raise UploadError(f"'{name}' has {w * h} pixels, over the limit of "
                          f"{limits.max_pixels} pixels per image.", 413)
    if min(w, h) < MIN_SIDE:
        raise UploadError(f"'{name}' is {w}×{h} px; the page needs at least {MIN_SIDE} px on "
                          "each side.")
    return w, h


def _suffix(name: str) -> str:
    """The upload's suffix when it is a known image suffix (it orders the decoders), else ''."""
    suffix = Path(name).suffix.lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ""


def decode_upload(data: bytes, name: str, limits: Limits,
                  tmp_root: str | Path | None = None) -> np.ndarray:
    """Check and decode an upload as :func:`retinaseg.io.read_image` reads a file (float32 in
    [0, 1], ``[H, W]`` or ``[H, W, 3]``); the bytes pass through a private temporary folder
    under ``tmp_root`` (default: the system's), removed before this returns.

    Raises:
        UploadError: as :func:`check_upload`, or 400 when the file cannot be decoded.
    """
    from retinaseg.io import read_image

    check_upload(data, name, limits)
    with tempfile.TemporaryDirectory(prefix="retinaseg-serve-", dir=tmp_root) as folder:
        path = Path(folder) / f"upload{_suffix(name)}"  # never the client's name: no traversal
        path.write_bytes(data)
        try:
            return read_image(path)
        except ImageReadError as err:
            why = str(err).replace(f"cannot read image '{path}': ", "").rstrip(".")
            raise UploadError(f"'{name}' could not be decoded: {why}.") from None


def warm_up() -> None:
    """Import what a request needs (torch and the inference, measurement and figure modules:
    several seconds on a busy machine), so that the first upload does not wait for it."""
    import retinaseg.evaluation.figures  # noqa: F401
    import retinaseg.inference.segmenter  # noqa: F401
    import retinaseg.measure.api  # noqa: F401
    import retinaseg.models.cards  # noqa: F401


# ----------------------------------------------------------------------------------------------
# models


class ModelCache:
    """The bundled models, each loaded once (a :class:`~retinaseg.inference.segmenter.Segmenter`)
    on first use and kept; one image is segmented at a time (``lock``)."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.cache: dict[str, Any] = {}
        self.lock = threading.Lock()

    @staticmethod
    def available() -> list[tuple[str, str]]:
        """(name, one-line summary) of every bundled model."""
        from retinaseg.models.cards import bundled_models

        return bundled_models()

    def resolve(self, choice: str, image: np.ndarray) -> str:
        """The bundled model for ``choice``: ``auto`` (or '') picks by the image's modality, as
        ``retinaseg predict`` does; anything else must be a bundled model's name (the page never
        loads files named by the client)."""
        from retinaseg.inference.modality import DEFAULT_MODELS, detect_modality

        choice = (choice or AUTO).strip()
        if choice == AUTO:
            return DEFAULT_MODELS[detect_modality(image)]
        names = [n for n, _ in self.available()]
        if choice not in names:
            raise UploadError(f"unknown model '{choice[:80]}'; choose auto or one of "
                              f"{', '.join(names)}.")
        return choice

    def get(self, ref: str) -> Any:
        """The Segmenter of bundled model ``ref``, loaded on first use."""
        from retinaseg.inference.segmenter import Segmenter

        with self.lock:
            if ref not in self.cache:
                seg = Segmenter(ref, **self.options)
                if seg.takes_volumes or seg.classes:
                    raise UploadError(f"model '{ref}' does not give a 2-D vessel probability "
                                      "map; the page serves vessel models only.")
                self.cache[ref] = seg
            return self.cache[ref]


# ----------------------------------------------------------------------------------------------
# results


@dataclass
class Result:
    """One image segmented and measured (:func:`segment_and_measure`)."""

    name: str
    model: str
    modality: str
    threshold: float
    image: np.ndarray
    prob: np.ndarray
    mask: np.ndarray
    measurements: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The CSV row: file, model and threshold, then the measurement columns."""
        return {"file": self.name, "model": self.model, "threshold": self.threshold,
                **self.measurements}


def _modality(seg: Any, image: np.ndarray) -> str:
    """The modality measured: the model's own, else the image's colour."""
    from retinaseg.inference.modality import detect_modality

    return seg.spec.modality if seg.spec.modality in ("octa", "fundus") \
        else detect_modality(image)


def segment_and_measure(image: np.ndarray, name: str, models: ModelCache,
                        model: str = AUTO, mm_per_px: float | None = None) -> Result:
    """Segment ``image`` with the chosen bundled model and measure its mask.

    Measured like ``retinaseg measure`` measures an image: in pixels with the quadrant grid, or
    in mm with the ETDRS grid when ``mm_per_px`` is given.
    """
    from retinaseg.measure.api import measure_mask, resolve_scale

    k = resolve_scale(mm_per_px)
    ref = models.resolve(model, image)
    t0 = time.perf_counter()
    seg = models.get(ref)
    t1 = time.perf_counter()
    with models.lock:
        prob = seg(image, source=name)
    mask = prob > seg.threshold
    t2 = time.perf_counter()
    modality = _modality(seg, image)
    cols = measure_mask(mask, k, modality, "etdrs" if k else "quadrants", image)
    t3 = time.perf_counter()
    return Result(name, ref, modality, float(seg.threshold), image, prob, mask, cols,
                  {"load": t1 - t0, "segment": t2 - t1, "measure": t3 - t2})


def png_bytes(arr: np.ndarray) -> bytes:
    """``[H, W]`` or ``[H, W, 3]`` (bool, uint8 or float in [0, 1]) as PNG bytes, fast."""
    from retinaseg.io.images import png_bytes as encode

    return encode(arr, compress_level=1)


def data_url(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URL of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def json_value(value: Any) -> Any:
    """A JSON-safe value: NumPy scalars as Python numbers, NaN and infinity as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text, the columns in first-seen order (a missing value is empty), floats
    in full, NaN as ``nan``."""
    from retinaseg.measure.report import csv_text as text

    return text(rows, digits=None, lineterminator="\n")


def result_json(r: Result) -> dict[str, Any]:
    """What ``POST /api/segment`` answers: the figures as PNG data URLs, the measurements,
    their CSV, and the time taken per step."""
    from retinaseg.evaluation.figures import overlay

    h, w = r.mask.shape
    return {
        "name": r.name, "model": r.model, "modality": r.modality, "threshold": r.threshold,
        "width": w, "height": h, "vessel_fraction": float(r.mask.mean()),
        "images": {"input": data_url(png_bytes(r.image)),
                   "probability": data_url(png_bytes(r.prob)),
                   "mask": data_url(png_bytes(r.mask)),
                   "overlay": data_url(png_bytes(overlay(r.image, r.mask)))},
        "measurements": {k: json_value(v) for k, v in r.measurements.items()},
        "csv": csv_text([r.row()]),
        "seconds": {k: round(v, 4) for k, v in r.seconds.items()},
    }

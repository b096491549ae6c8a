"""Clinical measurements of a vessel mask, and of files (masks, or images segmented first).

:func:`measure_mask` gives one row of numbers per mask (the columns of ``measurements.csv``,
documented in ``docs/reference/measurements.md``): vessel densities, calibre, graph counts,
tortuosity and fractal dimension (:mod:`retinaseg.measure.vessels`), the FAZ of an OCTA map
(:mod:`retinaseg.measure.faz`) and the same densities per zone of a grid
(:mod:`retinaseg.measure.grid`). :func:`measure_files` runs it over files and folders and writes
``measurements.csv``, and per image a PNG figure and a self-contained HTML page
(:mod:`retinaseg.measure.report`).

>>> from retinaseg.measure import measure_mask
>>> row = measure_mask(mask, mm_per_px=6 / 400, modality="octa")     # doctest: +SKIP
>>> row["vessel_area_density"], row["faz_area_mm2"]                   # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retinaseg.errors import OptionError, RetinasegError
from retinaseg.measure.faz import FazResult, faz_from_vessels, faz_metrics, largest_region
from retinaseg.measure.grid import EYES, GRIDS, Zone, zones_for
from retinaseg.measure.vessels import VesselAnalysis, units, vessel_measures
from retinaseg.utils.checks import check_number

__all__ = ["FOV_MM_PER_PX", "KINDS", "MODALITIES", "Analysis", "MaskValueError", "MeasureReport",
           "analyse_mask", "as_binary_mask", "measure_files", "measure_mask", "predict_columns",
           "resolve_scale"]

FOV_MM_PER_PX = {"3M": 3.0 / 304, "6M": 6.0 / 400}
"""Pixel size of the OCTA-500 scans, mm: 3 × 3 mm over 304 px and 6 × 6 mm over 400 px."""
MODALITIES = ("octa", "fundus")
KINDS = ("auto", "mask", "image")
"""What ``measure_files`` reads an input as: ``auto`` (a file with at most two grey values is a
mask, anything else an image to segment), or every input a ``mask`` / an ``image``."""


class MaskValueError(RetinasegError, ValueError):
    """A mask given to the measurements is not binary, or does not match its image."""


@dataclass(frozen=True)
class Analysis:
    """Everything measured on one mask: the row of ``columns`` and what the report draws.

    Attributes:
        columns: the measurement columns, in the order of ``measurements.csv``.
        mask: ``[H, W]`` bool vessel mask (inside ``region``).
        image: the image the mask belongs to (``[H, W]`` or ``[H, W, 3]`` in [0, 1]) or None.
        vessels: centerline, calibre, graph and tortuosity (:class:`VesselAnalysis`).
        faz: the FAZ (:class:`~retinaseg.measure.faz.FazResult`).
        zones: the grid's zones (empty for ``grid="none"``).
        centre: (row, col) of the grid centre, px.
        mm_per_px: the pixel size, or None.
    """

    columns: dict[str, Any]
    mask: np.ndarray
    image: np.ndarray | None
    vessels: VesselAnalysis
    faz: FazResult
    zones: list[Zone]
    centre: tuple[float, float]
    mm_per_px: float | None


def as_binary_mask(mask: Any, what: str = "mask") -> np.ndarray:
    """``mask`` as bool ``[H, W]``: nonzero is foreground; at most one nonzero value allowed.

    Raises:
        MaskValueError: not 2D, or more than two values (e.g. a probability map).
    """
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.size == 0:
        raise MaskValueError(f"the {what} must be a non-empty 2D [H, W] array, got shape "
                             f"{arr.shape}")
    if arr.dtype == bool:
        return arr
    values = np.unique(arr)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        lo, hi = float(values[0]), float(values[-1])
        raise MaskValueError(f"the {what} is not binary: it has {values.size} distinct values "
                             f"from {lo:g} to {hi:g} (a mask has 0 and one other value, e.g. "
                             "0 and 255); threshold it first")
    return arr != 0


def resolve_scale(mm_per_px: float | None = None, fov: str | None = None) -> float | None:
    """The pixel size in mm from ``mm_per_px`` (> 0) or an OCTA-500 ``fov`` (``3M``/``6M``)."""
    if mm_per_px is not None and fov is not None:
        raise OptionError("give either mm_per_px or fov, not both")
    if fov is not None:
        if fov not in FOV_MM_PER_PX:
            raise OptionError(f"fov must be one of {', '.join(FOV_MM_PER_PX)}, not '{fov}'")
        return FOV_MM_PER_PX[fov]
    if mm_per_px is not None:
        check_number("mm_per_px", mm_per_px, 0, 10, lo_open=True)
        return float(mm_per_px)
    return None


def _check_options(modality: str, grid: str, eye: str) -> None:
    for name, value, allowed in (("modality", modality, MODALITIES), ("grid", grid, GRIDS),
                                 ("eye", eye, EYES)):
        if value not in allowed:
            raise OptionError(f"{name} must be one of {', '.join(allowed)}, not '{value}'")


def _same_shape(arr: np.ndarray | None, shape: tuple[int, ...], what: str) -> None:
    if arr is not None and np.shape(arr)[:2] != shape:
        raise MaskValueError(f"the {what} is {np.shape(arr)[0]}×{np.shape(arr)[1]} px but the "
                             f"mask is {shape[0]}×{shape[1]} px")


def _faz(mask: np.ndarray, modality: str, image: np.ndarray | None,
         faz: np.ndarray | None, faz_source: str = "mask") -> FazResult:
    if modality != "octa":
        return FazResult(None, "not measured: fundus image", "none")
    if faz is not None:
        given = as_binary_mask(faz, "FAZ mask")
        if not given.any():
            what = "the FAZ mask is empty" if faz_source == "mask" else \
                f"{faz_source.removeprefix('model:')} found no FAZ"
            return FazResult(None, f"not found: {what}", faz_source)
        return FazResult(largest_region(given), "ok", faz_source)
    return faz_from_vessels(mask, image=image)


def _region(mask: np.ndarray, modality: str, image: np.ndarray | None
            ) -> tuple[np.ndarray | None, str]:
    """The analysed region: the field of view of a fundus image, else the whole image."""
    if modality == "fundus" and image is not None:
        from retinaseg.preprocessing.fov import fov_from_image

        fov = fov_from_image(image)
        if fov.any():
            return fov, "field of view (from the image)"
    return None, "whole image"


def _zone_columns(zones: list[Zone], mask: np.ndarray, share: np.ndarray,
                  region: np.ndarray | None, k: float, per: str) -> dict[str, float]:
    cols: dict[str, float] = {}
    for z in zones:
        inside = z.mask if region is None else z.mask & region
        n = int(inside.sum())
        ok = z.measured and n > 0
        cols[f"{z.name}_vessel_area_density"] = float(mask[inside].sum()) / n if ok else math.nan
        cols[f"{z.name}_skeleton_length_density_{per}"] = (
            float(share[inside].sum()) / (n * k) if ok else math.nan)
    return cols


def analyse_mask(mask: Any, mm_per_px: float | None = None, modality: str = "octa",
                 grid: str = "etdrs", image: np.ndarray | None = None, *,
                 eye: str = "unknown", faz: Any = None, faz_source: str = "mask") -> Analysis:
    """Measure one vessel mask; :func:`measure_mask` returns the ``columns`` of the result.

    Args:
        mask: ``[H, W]`` binary vessel mask (bool, or 0 and one other value).
        mm_per_px: pixel size in mm (> 0), or None for pixels (the unit is in the column names).
        modality: ``octa`` (the FAZ is measured and centres the grid) or ``fundus`` (the grid is
            centred on the image; with an ``image``, densities are inside its field of view).
        grid: ``etdrs`` (needs ``mm_per_px``), ``quadrants`` or ``none``.
        image: the image the mask was made from (``[H, W]`` or ``[H, W, 3]`` in [0, 1]); OCTA:
            its capillaries help find the FAZ; fundus: gives the field of view; drawn in reports.
        eye: ``OD``, ``OS`` or ``unknown`` (sectors ``right``/``left`` instead of nasal and
            temporal).
        faz: a binary FAZ mask to measure instead of the classical FAZ (OCTA only); its
            largest connected region is the FAZ.
        faz_source: where ``faz`` came from, the ``faz_source`` column (``mask``: a file;
            ``model:<name>``: a FAZ model).

    Raises:
        MaskValueError: a non-binary mask, or an image or FAZ mask of another size.
        OptionError: a bad scale, modality, grid or eye.
    """
    m = as_binary_mask(mask)
    k_mm = resolve_scale(mm_per_px)
    _check_options(modality, grid, eye)
    _same_shape(image, m.shape, "image")
    _same_shape(faz, m.shape, "FAZ mask")
    region, region_name = _region(m, modality, image)
    vessels = vessel_measures(m, region=region, mm_per_px=k_mm)
    if region is not None:
        m = m & region
    found = _faz(m, modality, image, faz, faz_source)
    metrics = faz_metrics(found.mask, k_mm)
    h, w = m.shape
    if found.found:
        centre, centre_name = (metrics["faz_centroid_row_px"], metrics["faz_centroid_col_px"]), \
            "faz"
    else:
        centre = ((h - 1) / 2, (w - 1) / 2)
        centre_name = "image (FAZ not found)" if modality == "octa" else "image"
    zones, reason = zones_for(grid, m.shape, centre, k_mm, eye)
    k = 1.0 if k_mm is None else k_mm
    u = units(k_mm)
    region_px = m.size if region is None else int(region.sum())
    cols: dict[str, Any] = {
        "modality": modality, "mm_per_px": math.nan if k_mm is None else k_mm,
        "region": region_name, f"region_area_{u['area']}": region_px * k * k,
        **vessels.columns,
        "faz_source": found.source, "faz_status": found.status, **metrics,
        "grid": grid, "grid_centre": centre_name if grid != "none" else "none",
        "grid_centre_row_px": centre[0], "grid_centre_col_px": centre[1],
        "grid_status": reason or "ok",
        **_zone_columns(zones, m, vessels.lengths, region, k, u["per"]),
    }
    return Analysis(cols, m, image, vessels, found, zones, centre, k_mm)


def measure_mask(mask: Any, mm_per_px: float | None = None, modality: str = "octa",
                 grid: str = "etdrs", image: np.ndarray | None = None, *,
                 eye: str = "unknown", faz: Any = None) -> dict[str, Any]:
    """The measurement columns of one vessel mask (``docs/reference/measurements.md``).

    Arguments as :func:`analyse_mask`. Bad input never raises anything but a one-sentence
    :class:`~retinaseg.errors.RetinasegError`; what cannot be measured (an empty mask, a FAZ not
    found, a zone outside the image) is NaN with a reason in ``faz_status`` / ``grid_status``.

    >>> row = measure_mask(np.zeros((64, 64), bool), grid="quadrants")
    >>> row["vessel_area_density"], row["faz_status"]
    (0.0, 'not found: the vessel mask is empty')
    """
    return analyse_mask(mask, mm_per_px, modality, grid, image, eye=eye, faz=faz).columns


def predict_columns(mask: np.ndarray, image: np.ndarray) -> dict[str, Any]:
    """The columns ``retinaseg predict --measure`` adds to ``predictions.csv``: measured in
    pixels (predict knows no scale), quadrant grid, modality from the image's colour."""
    from retinaseg.inference.modality import detect_modality

    cols = measure_mask(mask, None, detect_modality(image), "quadrants", image)
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in cols.items()}


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


@dataclass
class MeasureReport:
    """What :func:`measure_files` wrote: one row per measured input, the inputs skipped (path,
    reason) and the output folder."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    out: Path | None = None


@dataclass
class _Settings:
    mm_per_px: float | None
    grid: str
    modality: str | None
    eye: str
    kind: str
    model: str | None
    html: bool
    faz_model: str | None = None


class _Segmenters:
    """One :class:`~retinaseg.inference.segmenter.Segmenter` per model, loaded when first used."""

    def __init__(self, model: str | None) -> None:
        self.model, self.cache = model, {}

    def load(self, ref: str):  # -> Segmenter (torch imported only when an image is segmented)
        from retinaseg.inference.segmenter import Segmenter

        if ref not in self.cache:
            self.cache[ref] = Segmenter(ref)
        return self.cache[ref]

    def faz(self, image: np.ndarray, ref: str, source: str) -> np.ndarray:
        """The FAZ model ``ref``'s binary mask of an OCTA ``image``."""
        seg = self.load(ref)
        return seg(image, source=source) > seg.threshold

    def __call__(self, image: np.ndarray, modality: str, source: str) -> tuple[np.ndarray, str]:
        from retinaseg.inference.modality import DEFAULT_MODELS

        ref = self.model or DEFAULT_MODELS[modality]
        seg = self.load(ref)
        return seg(image, source=source) > seg.threshold, ref


FAZ_MODEL = "octa-faz"
"""The bundled FAZ model that ``faz_model="auto"`` uses where it is installed."""


def resolve_faz_model(faz_model: str | None) -> str | None:
    """``auto`` → :data:`FAZ_MODEL` when bundled, else None; ``classical``/None → None."""
    if faz_model in (None, "classical"):
        return None
    if faz_model == "auto":
        from retinaseg.models.cards import WEIGHTS_DIR

        return FAZ_MODEL if (WEIGHTS_DIR / f"{FAZ_MODEL}.safetensors").is_file() else None
    return faz_model


def _faz_files(faz: str | Path | None, n_inputs: int) -> dict[str, Path] | Path | None:
    """``--faz``: one file (one input only) or a folder of masks matched by file stem."""
    if faz is None:
        return None
    p = Path(faz)
    if p.is_dir():
        from retinaseg.io import list_images

        return {f.stem.lower(): f for f in list_images(p)}
    if not p.is_file():
        raise RetinasegError(f"FAZ mask '{p}' does not exist")
    if n_inputs != 1:
        raise RetinasegError("a single FAZ mask file goes with a single input; give a folder of "
                             "FAZ masks named like the inputs to measure several")
    return p


def _read(path: Path, kind: str) -> tuple[np.ndarray, bool]:
    """(the pixels, whether it is a mask); a non-binary ``--kind mask`` file is an error."""
    from retinaseg.io import read_image

    img = read_image(path)
    if img.ndim == 3 and np.array_equal(img.min(axis=-1), img.max(axis=-1)):
        img = img[..., 0]  # a grey image stored as RGB (a mask saved in colour)
    binary = img.ndim == 2 and np.unique(img).size <= 2
    if kind == "mask" and not binary:
        levels = np.unique(img).size if img.ndim == 2 else "colour"
        raise MaskValueError(f"'{path}' is not a binary mask ({levels} grey levels; a mask has "
                             "two, e.g. 0 and 255): threshold it, or measure the image instead")
    is_mask = kind == "mask" or (kind == "auto" and binary)
    return (img > 0.5 * float(img.max()) if img.max() > 0 else img > 0) if is_mask else img, \
        is_mask


def _one(path: Path, s: _Settings, segment: _Segmenters, faz_for: Any
         ) -> tuple[Analysis, dict[str, Any]]:
    from retinaseg.inference.modality import detect_modality
    from retinaseg.io import read_mask

    pixels, is_mask = _read(path, s.kind)
    if is_mask:
        mask, image, model = pixels, None, ""
        modality = s.modality or "octa"
    else:
        image = pixels
        modality = s.modality or detect_modality(image)
        mask, model = segment(image, modality, f"'{path}'")
    faz_path = faz_for if isinstance(faz_for, Path) else \
        faz_for.get(path.stem.lower()) if faz_for else None
    faz = read_mask(faz_path) if faz_path is not None else None
    faz_source = "mask"
    if faz is None and image is not None and modality == "octa" and s.faz_model:
        faz, faz_source = segment.faz(image, s.faz_model, f"'{path}'"), f"model:{s.faz_model}"
    a = analyse_mask(mask, s.mm_per_px, modality, s.grid, image, eye=s.eye, faz=faz,
                     faz_source=faz_source)
    head = {"image": str(path), "input": "mask" if is_mask else "image", "model": model,
            "faz_file": str(faz_path or "")}
    return a, {**head, **a.columns}


def measure_files(inputs: Iterable[str | Path] | str | Path, out: str | Path, *,
                  mm_per_px: float | None = None, fov: str | None = None, grid: str = "etdrs",
                  modality: str | None = None, eye: str = "unknown", kind: str = "auto",
                  faz: str | Path | None = None, model: str | None = None,
                  html: bool = True, faz_model: str | None = "auto") -> MeasureReport:
    """Measure masks or images (segmented first) and write the reports into ``out``.

    Writes ``measurements.csv`` (one row per input), and per input ``<stem>_measure.png`` (the
    figure), ``<stem>.html`` (a self-contained page; not with ``html=False``) and, for an image,
    ``<stem>_mask.png`` (the mask measured); ``index.html`` links the pages.

    Args:
        inputs: files and folders (a folder: the images directly in it, natural order).
        out: output folder.
        mm_per_px: pixel size in mm; or ``fov``: ``3M`` (3/304 mm) or ``6M`` (6/400 mm, the
            OCTA-500 scans). Neither: pixels.
        grid: ``etdrs``, ``quadrants`` or ``none``.
        modality: ``octa`` or ``fundus`` for every input; None: images by their colour
            (:func:`~retinaseg.inference.modality.detect_modality`), masks ``octa``.
        eye: ``OD``, ``OS`` or ``unknown``.
        kind: ``auto``, ``mask`` or ``image`` (:data:`KINDS`).
        faz: a FAZ mask file (one input) or a folder of FAZ masks named like the inputs; inputs
            without one get the classical FAZ.
        model: the model that segments images (default: the bundled one for the modality).
        html: write the HTML pages and index.
        faz_model: the FAZ of OCTA images (not masks) without a ``faz`` mask: a FAZ model's
            name or file; ``auto`` (default): the bundled ``octa-faz`` where installed, else
            the classical FAZ; ``classical`` (or None): always the classical FAZ.

    Every option is checked before the first input; an input that cannot be read or is not a
    binary ``--kind mask`` file is skipped and listed in the report's ``skipped``.
    """
    from retinaseg.inference.batch import collect_inputs, unique_stem
    from retinaseg.measure.report import write_csv, write_image_report, write_index
    from retinaseg.utils.atomic import make_out_dir

    s = _Settings(resolve_scale(mm_per_px, fov), grid, modality, eye, kind, model, html,
                  resolve_faz_model(faz_model))
    _check_options(modality or "octa", grid, eye)
    if kind not in KINDS:
        raise OptionError(f"kind must be one of {', '.join(KINDS)}, not '{kind}'")
    files = collect_inputs([inputs] if isinstance(inputs, (str, Path)) else inputs)
    faz_for = _faz_files(faz, len(files))
    segment = _Segmenters(model)
    for ref in (model, None if faz_model == "auto" else s.faz_model):
        if ref is not None:
            segment.load(ref)  # a bad model is one error now, not one skip per image
    report = MeasureReport(out=make_out_dir(out))
    pages: list[tuple[str, dict[str, Any]]] = []
    used: set[str] = set()
    for path in files:
        try:
            analysis, row = _one(path, s, segment, faz_for)
        except RetinasegError as err:
            report.skipped.append((str(path), str(err)))
            continue
        stem = unique_stem(path, used)
        write_image_report(report.out, stem, analysis, row, html=html,
                           write_mask=row["input"] == "image")
        report.rows.append(row)
        pages.append((stem, row))
    write_csv(report.out / "measurements.csv", report.rows)
    if html and pages:
        write_index(report.out / "index.html", pages)
    return report

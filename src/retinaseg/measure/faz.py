"""The foveal avascular zone (FAZ) of an OCTA vessel mask, and its shape measurements.

Classical route (no model): the FAZ is the largest vessel-free region around the image centre.

1. ``dt`` = Euclidean distance of every pixel to the nearest vessel pixel. With an ``image``
   (the OCTA map the mask was made from), its capillaries are added to the vessels first: the
   pixels brighter than their surround (:func:`capillaries`), which a large-vessel mask lacks.
2. Seed: the pixel of largest ``dt`` within ``SEARCH_FRACTION`` · min(H, W) of the centre;
   its ``dt`` = R is the radius of the largest vessel-free disc there.
3. Region: the union of all discs of radius r = ``OPENING_FRACTION`` · R that fit between the
   vessels and whose centres connect to the seed through such centres (a morphological opening
   by a disc of radius r, reconstructed from the seed). Gaps between vessels narrower than 2r
   do not let it leak into the vessel-free areas beyond.
4. Holes are filled (a speck of noise inside the FAZ is not a vessel around it).
5. Check the rim: the vessel density in the band around the region (half its equivalent radius
   wide) must reach ``MIN_RIM_DENSITY``, else the vessels do not outline it (a mask of large
   vessels only, without capillaries) and the FAZ is "not found".

It fails ("not found") when no vessel-free disc of radius ``MIN_RADIUS_FRACTION`` · min(H, W)
lies near the centre (an empty mask, vessels through the centre), or when the region reaches
the image border (the vessels do not close around the centre: a mask of large vessels only).

Shape measurements (:func:`faz_metrics`): area = pixel count; perimeter = length of the
boundary traced at the pixel edges (marching squares at level 0.5) smoothed along the contour
by a Gaussian of 1 vertex, which removes the 6-14 % stair-step excess of the raw trace (a disc
of radius ≥ 10 px reads circularity 0.98, squares at any angle π/4 ± 3 %); circularity
4πA/P²; acircularity index P / (2√(πA)) (the perimeter over that of the circle of equal area).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from retinaseg.measure.centerline import MaskShapeError

__all__ = ["FazResult", "capillaries", "faz_from_vessels", "faz_metrics", "largest_region"]

SEARCH_FRACTION = 0.2
"""The seed is looked for within this fraction of min(H, W) from the image centre."""
OPENING_FRACTION = 0.5
"""Opening radius as a fraction of the seed's distance to the nearest vessel."""
MIN_RADIUS_FRACTION = 0.015
"""Smallest vessel-free disc (radius, as a fraction of min(H, W)) that counts as a FAZ seed: 6 px
on a 400-px scan (the smallest on the 11 labelled OCTA-500 subjects was 8 px); the cells of a
capillary mesh without a FAZ are smaller."""
MIN_RIM_DENSITY = 0.12
"""Least vessel density in the rim around the region (a band half its equivalent radius wide)
for it to count as the FAZ. Capillary-level masks of the 11 OCTA-500 FAZ subjects have 0.14-0.63
there, their large-vessel labels (GT_LargeVessel) 0.05-0.09: a mask of large vessels does not
outline the FAZ and its vessel-free region around the centre is several times too large."""


@dataclass(frozen=True)
class FazResult:
    """A FAZ: ``mask`` (bool ``[H, W]``, None when not found), ``status`` (``ok`` or ``not found:
    <reason>``) and ``source`` (``classical``, ``classical+image``, ``mask``, ``model:<name>``
    or ``none``)."""

    mask: np.ndarray | None
    status: str
    source: str

    @property
    def found(self) -> bool:
        return self.mask is not None


def capillaries(image: np.ndarray, sigma: float = 1.0, window: int | None = None) -> np.ndarray:
    """Pixels of an OCTA map brighter than their surround: a capillary mask, bool ``[H, W]``.

    The map (grey ``[H, W]`` in [0, 1]; colour is averaged) is smoothed by a Gaussian of
    ``sigma`` px and compared with its mean over a ``window`` px box (default min(H, W)/20,
    odd); pixels above the local mean and above the darkest 5 % of the map are flow. The FAZ is
    the darkest part of an OCTA map, darker than the space between capillaries (on the 11
    labelled OCTA-500 maps about 0.03-0.09 against a 5th percentile of 0.10-0.22), so the
    second condition keeps its noise out.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    if window is None:
        window = max(3, min(img.shape) // 20) | 1
    smooth = ndimage.gaussian_filter(img, sigma)
    local = ndimage.uniform_filter(smooth, window)
    floor = float(np.percentile(smooth, 5))
    return (smooth > local) & (smooth > floor)


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` with its holes filled (bool)."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(lab.ravel())[1:]
    return ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))


def faz_from_vessels(vessels: np.ndarray, image: np.ndarray | None = None,
                     centre: tuple[float, float] | None = None,
                     min_rim_density: float = MIN_RIM_DENSITY) -> FazResult:
    """The classical FAZ of a vessel mask (module docstring).

    Args:
        vessels: ``[H, W]`` bool vessel mask.
        image: the OCTA map ``[H, W]`` in [0, 1] the mask belongs to; adds its capillaries.
        centre: (row, col) to search around; default the image centre.
        min_rim_density: see :data:`MIN_RIM_DENSITY`; 0 accepts any region.

    Returns:
        :class:`FazResult`.
    """
    v = np.asarray(vessels)
    if v.ndim != 2:
        raise MaskShapeError(f"the vessel mask must be a 2D [H, W] array, got shape {v.shape}")
    v = v.astype(bool)
    source = "classical"
    if image is not None:
        v = v | capillaries(image)
        source = "classical+image"
    h, w = v.shape
    if not v.any():
        return FazResult(None, "not found: the vessel mask is empty", source)
    dt = ndimage.distance_transform_edt(~v)
    cy, cx = ((h - 1) / 2, (w - 1) / 2) if centre is None else centre
    yy, xx = np.ogrid[:h, :w]
    near = (yy - cy) ** 2 + (xx - cx) ** 2 <= (SEARCH_FRACTION * min(h, w)) ** 2
    seed = np.unravel_index(np.argmax(np.where(near, dt, -1)), dt.shape)
    radius = float(dt[seed])
    if radius < max(1.5, MIN_RADIUS_FRACTION * min(h, w)):
        return FazResult(None, "not found: no vessel-free area near the image centre", source)
    r = max(1.0, OPENING_FRACTION * radius)
    centres, _ = ndimage.label(dt >= r, structure=np.ones((3, 3)))
    core = centres == centres[seed]
    region = (ndimage.distance_transform_edt(~core) <= r) & ~v  # dilation by the disc
    region = ndimage.binary_fill_holes(region)
    if region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any():
        return FazResult(None, "not found: the vessel-free region around the centre reaches the "
                               "image border (the vessels do not close around it)", source)
    rim = _rim_density(v, region)
    if rim < min_rim_density:
        return FazResult(None, f"not found: only {rim:.0%} vessel pixels around the vessel-free "
                               "region at the centre, so the vessels do not outline it (a mask "
                               "of large vessels only?); measure the OCTA image instead", source)
    return FazResult(region, "ok", source)


def _rim_density(vessels: np.ndarray, region: np.ndarray) -> float:
    """Vessel share of the band around ``region``, half its equivalent radius wide (≥ 3 px)."""
    width = max(3.0, 0.5 * math.sqrt(region.sum() / math.pi))
    dist = ndimage.distance_transform_edt(~region)
    band = (dist > 0) & (dist <= width)
    return float(vessels[band].mean()) if band.any() else 0.0


def _perimeter_px(region: np.ndarray) -> float:
    """Length of the outer boundary of ``region`` (one component, no holes), px."""
    from skimage.measure import find_contours

    contours = find_contours(np.pad(region, 1).astype(np.float32), 0.5)
    if not contours:
        return math.nan
    c = max(contours, key=len)[:-1]
    if len(c) >= 3:
        c = ndimage.gaussian_filter1d(c, 1.0, axis=0, mode="wrap")
    closed = np.vstack([c, c[:1]])
    return float(np.hypot(*np.diff(closed, axis=0).T).sum())


def faz_metrics(faz: np.ndarray | None, mm_per_px: float | None = None) -> dict[str, float]:
    """Area, perimeter, circularity, acircularity index and centroid of a FAZ mask.

    Args:
        faz: ``[H, W]`` bool (its largest component, holes filled, is measured) or None.
        mm_per_px: pixel size in mm; None keeps pixels.

    Returns:
        ``faz_area_<mm2|px2>``, ``faz_perimeter_<mm|px>``, ``faz_circularity``,
        ``faz_acircularity``, ``faz_centroid_row_px``, ``faz_centroid_col_px``; NaN when
        ``faz`` is None or empty.
    """
    a_unit, p_unit = ("mm2", "mm") if mm_per_px is not None else ("px2", "px")
    k = 1.0 if mm_per_px is None else float(mm_per_px)
    keys = (f"faz_area_{a_unit}", f"faz_perimeter_{p_unit}", "faz_circularity",
            "faz_acircularity", "faz_centroid_row_px", "faz_centroid_col_px")
    if faz is None or not np.any(faz):
        return dict.fromkeys(keys, math.nan)
    region = largest_region(np.asarray(faz, dtype=bool))
    area_px = float(region.sum())
    perim_px = _perimeter_px(region)
    row, col = ndimage.center_of_mass(region)
    return dict(zip(keys, (area_px * k * k, perim_px * k,
                           4 * math.pi * area_px / perim_px ** 2,
                           perim_px / (2 * math.sqrt(math.pi * area_px)),
                           float(row), float(col)), strict=True))

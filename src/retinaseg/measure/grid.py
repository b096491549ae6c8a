"""Sector grids for per-region measurements: the ETDRS grid and plain quadrants.

ETDRS grid (Early Treatment Diabetic Retinopathy Study Research Group, Ophthalmology
1991;98:786-806): three rings of diameter 1, 3 and 6 mm around the centre (the fovea); the
central 1-mm disc is one zone, the inner (1-3 mm) and outer (3-6 mm) rings are each split into
four sectors, superior, nasal, inferior and temporal, by the two diagonals: 9 zones.
Quadrants: the four diagonal sectors over the whole image, no rings (needs no scale).

Orientation: images are viewed as the fundus is (superior up). In a right eye (OD) the nasal
side is on the right of the image, in a left eye (OS) on the left; when the eye is not known the
sectors are called ``right`` and ``left`` instead. Pixels on a diagonal belong to the sector
counter-clockwise of it (right [-45°, 45°), superior [45°, 135°), left [135°, 225°), inferior
[225°, 315°)), so the zones never overlap and cover the disc exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from retinaseg.errors import OptionError

__all__ = ["ETDRS_DIAMETERS_MM", "EYES", "GRIDS", "MIN_INSIDE", "Zone", "etdrs_zones",
           "quadrant_zones", "sector_names", "zones_for"]

ETDRS_DIAMETERS_MM = (1.0, 3.0, 6.0)
"""Diameters of the central disc, inner ring and outer ring, mm."""
GRIDS = ("etdrs", "quadrants", "none")
EYES = ("OD", "OS", "unknown")
MIN_INSIDE = 0.75
"""A zone is measured when at least this share of its area lies inside the image (an ETDRS
grid on a 6 × 6 mm scan centred 10 px off the image centre still loses a little of its outer
ring; on a 3 × 3 mm scan the outer ring is almost all outside and reads NaN)."""

_DIRECTIONS = ("right", "superior", "left", "inferior")  # counter-clockwise from 0°


@dataclass(frozen=True)
class Zone:
    """One zone of a grid.

    Attributes:
        name: e.g. ``etdrs_inner_nasal``, ``quadrant_superior``.
        mask: ``[H, W]`` bool, the zone's pixels inside the image.
        inside: share of the zone's full area (as if the image were unbounded) inside the image,
            in [0, 1]; 1 for quadrants.
    """

    name: str
    mask: np.ndarray
    inside: float

    @property
    def measured(self) -> bool:
        """Enough of the zone lies in the image to measure it (:data:`MIN_INSIDE`)."""
        return self.inside >= MIN_INSIDE


def sector_names(eye: str = "unknown") -> dict[str, str]:
    """Map image directions (``right``, ``superior``, ``left``, ``inferior``) to sector names.

    >>> sector_names("OD")["right"], sector_names("OS")["right"], sector_names()["right"]
    ('nasal', 'temporal', 'right')
    """
    if eye not in EYES:
        raise OptionError(f"eye must be one of {', '.join(EYES)}, not '{eye}'")
    side = {"OD": ("nasal", "temporal"), "OS": ("temporal", "nasal")}.get(eye, ("right", "left"))
    return {"right": side[0], "superior": "superior", "left": side[1], "inferior": "inferior"}


def _polar(shape: tuple[int, int], centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Distance (px) and direction index (0 right, 1 superior, 2 left, 3 inferior) per pixel."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    dy, dx = centre[0] - yy, xx - centre[1]  # up is positive
    angle = np.degrees(np.arctan2(dy, dx))
    direction = np.floor(((angle + 45.0) % 360.0) / 90.0).astype(np.int8)
    return np.hypot(dy, dx), direction


def etdrs_zones(shape: tuple[int, int], centre: tuple[float, float], mm_per_px: float,
                eye: str = "unknown") -> list[Zone]:
    """The 9 ETDRS zones around ``centre`` (row, col) for pixels of ``mm_per_px`` mm.

    Names: ``etdrs_central``, ``etdrs_inner_<sector>``, ``etdrs_outer_<sector>`` with the
    sectors of :func:`sector_names` (superior, nasal, inferior, temporal for OD/OS).
    """
    names = sector_names(eye)
    dist, direction = _polar(shape, centre)
    radii = [d / 2 / mm_per_px for d in ETDRS_DIAMETERS_MM]
    central = dist <= radii[0]
    zones = [Zone("etdrs_central", central, float(central.sum()) / (math.pi * radii[0] ** 2))]
    for ring, (r0, r1) in (("inner", radii[:2]), ("outer", radii[1:])):
        band = (dist > r0) & (dist <= r1)
        full = math.pi * (r1 ** 2 - r0 ** 2) / 4
        for k in (1, 0, 3, 2):  # superior, right, inferior, left
            m = band & (direction == k)
            zones.append(Zone(f"etdrs_{ring}_{names[_DIRECTIONS[k]]}", m, float(m.sum()) / full))
    return zones


def quadrant_zones(shape: tuple[int, int], centre: tuple[float, float],
                   eye: str = "unknown") -> list[Zone]:
    """The four diagonal sectors of the whole image around ``centre``: ``quadrant_<sector>``."""
    names = sector_names(eye)
    _, direction = _polar(shape, centre)
    return [Zone(f"quadrant_{names[_DIRECTIONS[k]]}", direction == k, 1.0) for k in (1, 0, 3, 2)]


def zones_for(grid: str, shape: tuple[int, int], centre: tuple[float, float],
              mm_per_px: float | None, eye: str = "unknown") -> tuple[list[Zone], str]:
    """The zones of ``grid`` (``etdrs``, ``quadrants`` or ``none``) and a reason ('' when every
    zone can be measured): ETDRS zones need the scale, and zones mostly outside the image are
    not measured. Without the scale the ETDRS zones are still named (for stable columns) but
    empty."""
    if grid not in GRIDS:
        raise OptionError(f"grid must be one of {', '.join(GRIDS)}, not '{grid}'")
    if grid == "none":
        return [], ""
    if grid == "quadrants":
        return quadrant_zones(shape, centre, eye), ""
    if mm_per_px is None:
        empty = np.zeros(shape, dtype=bool)
        zones = [Zone(z.name, empty, 0.0) for z in etdrs_zones((1, 1), (0, 0), 1.0, eye)]
        return zones, "the ETDRS grid needs the scale (--mm-per-px or --fov)"
    zones = etdrs_zones(shape, centre, mm_per_px, eye)
    out = [z.name for z in zones if not z.measured]
    if not out:
        return zones, ""
    if len(out) == len(zones):
        h, w = (n * mm_per_px for n in shape)
        return zones, (f"the image ({h:.2f} × {w:.2f} mm) is too small for the ETDRS grid "
                       f"(6 mm across): every zone has less than {MIN_INSIDE:.0%} of its area "
                       "inside it")
    return zones, (f"{len(out)} of {len(zones)} zones have less than {MIN_INSIDE:.0%} of their "
                   f"area inside the image ({', '.join(n.removeprefix('etdrs_') for n in out)})")

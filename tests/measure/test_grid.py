"""The ETDRS grid and quadrants (:mod:`retinaseg.measure.grid`): areas, partition, naming by
eye, zones outside the image."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retinaseg.errors import OptionError
from retinaseg.measure.grid import etdrs_zones, quadrant_zones, sector_names, zones_for

MM = 0.01  # 10 µm pixels: the 6-mm grid is 600 px across


def test_etdrs_zone_areas_sum_to_the_grid_area() -> None:
    zones = etdrs_zones((700, 700), (349.5, 349.5), MM)
    assert len(zones) == 9 and all(z.measured for z in zones)
    stack = np.stack([z.mask for z in zones])
    assert stack.sum(axis=0).max() == 1  # disjoint
    total_mm2 = stack.sum() * MM * MM
    assert total_mm2 == pytest.approx(math.pi * 3.0 ** 2, rel=0.002)  # the 6-mm disc
    yy, xx = np.mgrid[:700, :700]
    assert np.array_equal(stack.any(axis=0), np.hypot(yy - 349.5, xx - 349.5) <= 300)


def test_etdrs_ring_and_sector_areas() -> None:
    zones = {z.name: z.mask.sum() * MM * MM for z in etdrs_zones((700, 700), (350, 350), MM)}
    assert zones["etdrs_central"] == pytest.approx(math.pi * 0.5 ** 2, rel=0.01)
    inner = [v for k, v in zones.items() if "inner" in k]
    outer = [v for k, v in zones.items() if "outer" in k]
    assert sum(inner) == pytest.approx(math.pi * (1.5 ** 2 - 0.5 ** 2), rel=0.005)
    assert sum(outer) == pytest.approx(math.pi * (3.0 ** 2 - 1.5 ** 2), rel=0.005)
    for ring in (inner, outer):  # four equal sectors, up to the pixels on the diagonals
        assert max(ring) / min(ring) < 1.01


@pytest.mark.parametrize(("eye", "right", "left"), [("OD", "nasal", "temporal"),
                                                    ("OS", "temporal", "nasal"),
                                                    ("unknown", "right", "left")])
def test_sectors_are_named_by_eye(eye: str, right: str, left: str) -> None:
    zones = {z.name: z for z in etdrs_zones((700, 700), (350, 350), MM, eye)}
    assert zones[f"etdrs_inner_{right}"].mask[350, 500]  # 1.5 mm right of the centre
    assert zones[f"etdrs_outer_{left}"].mask[350, 100]
    assert zones["etdrs_inner_superior"].mask[200, 350]  # up is superior
    assert zones["etdrs_outer_inferior"].mask[600, 350]
    assert sector_names(eye)["right"] == right


def test_quadrants_partition_the_image() -> None:
    zones = quadrant_zones((50, 80), (20.0, 30.0), "OD")
    assert [z.name for z in zones] == ["quadrant_superior", "quadrant_nasal",
                                       "quadrant_inferior", "quadrant_temporal"]
    stack = np.stack([z.mask for z in zones])
    assert (stack.sum(axis=0) == 1).all()
    assert zones[1].mask[20, 79] and zones[3].mask[20, 0] and zones[0].mask[0, 30]


def test_small_image_gives_unmeasured_zones_and_a_reason() -> None:
    zones, reason = zones_for("etdrs", (304, 304), (151.5, 151.5), 3 / 304)  # a 3 × 3 mm scan
    measured = {z.name for z in zones if z.measured}
    assert measured == {"etdrs_central", "etdrs_inner_superior", "etdrs_inner_right",
                        "etdrs_inner_inferior", "etdrs_inner_left"}
    assert reason.startswith("4 of 9 zones have less than 75% of their area inside the image")
    _, reason = zones_for("etdrs", (40, 40), (20, 20), 0.01)
    assert "too small for the ETDRS grid" in reason


def test_grid_of_a_6mm_scan_centred_off_centre_is_measured() -> None:
    zones, reason = zones_for("etdrs", (400, 400), (195.0, 203.0), 6 / 400)
    assert reason == "" and all(z.measured for z in zones)
    assert min(z.inside for z in zones) < 1  # the outer ring loses a little at the edges


def test_without_scale_etdrs_zones_are_named_but_empty() -> None:
    zones, reason = zones_for("etdrs", (100, 100), (50, 50), None)
    assert len(zones) == 9 and not any(z.mask.any() for z in zones)
    assert "needs the scale" in reason
    assert zones_for("none", (10, 10), (5, 5), None) == ([], "")
    quads, reason = zones_for("quadrants", (10, 10), (5, 5), None)
    assert len(quads) == 4 and reason == ""


def test_bad_grid_or_eye() -> None:
    with pytest.raises(OptionError, match="grid must be one of etdrs, quadrants, none"):
        zones_for("rings", (10, 10), (5, 5), 0.01)
    with pytest.raises(OptionError, match="eye must be one of OD, OS, unknown"):
        sector_names("left")

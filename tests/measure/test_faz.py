"""Known answers of the FAZ (:mod:`retinaseg.measure.faz`): shape measurements of discs and
squares, the classical FAZ of synthetic vessel meshes with a known empty disc, and the cases
where no FAZ can be found."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retinaseg.measure.faz import capillaries, faz_from_vessels, faz_metrics, largest_region


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def mesh(shape: tuple[int, int], spacing: int = 8, width: int = 2, seed: int = 0) -> np.ndarray:
    """A capillary-like mesh: horizontal and vertical lines every ``spacing`` px, jittered."""
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, dtype=bool)
    for axis in (0, 1):
        for pos in range(2, shape[axis], spacing):
            p = min(shape[axis] - width, pos + int(rng.integers(-2, 3)))
            if axis == 0:
                m[p:p + width, :] = True
            else:
                m[:, p:p + width] = True
    return m


# ---- shape measurements ----------------------------------------------------------------------
@pytest.mark.parametrize("radius", [10, 20, 30, 60])
def test_disc_area_and_circularity(radius: int) -> None:
    m = disc((2 * radius + 21, 2 * radius + 21), (radius + 10, radius + 10), radius)
    f = faz_metrics(m)
    assert f["faz_area_px2"] == pytest.approx(math.pi * radius ** 2, rel=0.02)
    assert f["faz_perimeter_px"] == pytest.approx(2 * math.pi * radius, rel=0.02)
    assert f["faz_circularity"] == pytest.approx(1.0, abs=0.03)
    assert f["faz_acircularity"] == pytest.approx(1 / math.sqrt(f["faz_circularity"]))
    assert (f["faz_centroid_row_px"], f["faz_centroid_col_px"]) == pytest.approx(
        (radius + 10, radius + 10), abs=1e-6)


@pytest.mark.parametrize("angle", [0, 10, 30, 45])
def test_square_circularity_is_pi_over_4(angle: float) -> None:
    yy, xx = np.mgrid[:160, :160] - 80.0
    t = math.radians(angle)
    u, v = xx * math.cos(t) + yy * math.sin(t), -xx * math.sin(t) + yy * math.cos(t)
    m = (np.abs(u) <= 30) & (np.abs(v) <= 30)
    f = faz_metrics(m)
    assert f["faz_circularity"] == pytest.approx(math.pi / 4, rel=0.04)
    assert f["faz_acircularity"] == pytest.approx(2 / math.sqrt(math.pi), rel=0.02)


def test_units_in_mm() -> None:
    m = disc((101, 101), (50, 50), 40)
    px, mm = faz_metrics(m), faz_metrics(m, mm_per_px=0.01)
    assert mm["faz_area_mm2"] == pytest.approx(px["faz_area_px2"] * 1e-4)
    assert mm["faz_perimeter_mm"] == pytest.approx(px["faz_perimeter_px"] * 0.01)
    assert mm["faz_circularity"] == px["faz_circularity"]


def test_metrics_of_nothing_are_nan_and_specks_are_ignored() -> None:
    assert all(math.isnan(v) for v in faz_metrics(None).values())
    assert all(math.isnan(v) for v in faz_metrics(np.zeros((9, 9), bool)).values())
    m = disc((80, 80), (40, 40), 20)
    m[2, 2] = True  # a speck: the largest region is measured
    m[40, 40] = False  # a hole: filled
    assert faz_metrics(m)["faz_area_px2"] == disc((80, 80), (40, 40), 20).sum()
    assert largest_region(m).sum() == disc((80, 80), (40, 40), 20).sum()


# ---- the classical FAZ -----------------------------------------------------------------------
@pytest.mark.parametrize(("radius", "offset"), [(25, (0, 0)), (35, (12, -15)), (18, (-5, 8))])
def test_empty_disc_in_a_vessel_mesh_is_found_within_5_percent(radius: int,
                                                              offset: tuple[int, int]) -> None:
    shape = (300, 300)
    centre = (150 + offset[0], 150 + offset[1])
    hole = disc(shape, centre, radius)
    vessels = mesh(shape) & ~hole
    r = faz_from_vessels(vessels)
    assert r.found and r.status == "ok" and r.source == "classical"
    f = faz_metrics(r.mask)
    assert f["faz_area_px2"] == pytest.approx(hole.sum(), rel=0.05)
    assert (f["faz_centroid_row_px"], f["faz_centroid_col_px"]) == pytest.approx(centre, abs=1.5)
    dice = 2 * (r.mask & hole).sum() / (r.mask.sum() + hole.sum())
    assert dice > 0.97


def test_noise_specks_inside_the_faz_do_not_split_it() -> None:
    shape = (240, 240)
    hole = disc(shape, (120, 120), 30)
    vessels = mesh(shape) & ~hole
    vessels[[110, 125, 131], [115, 128, 104]] = True  # isolated false-positive pixels
    r = faz_from_vessels(vessels)
    assert r.found
    assert faz_metrics(r.mask)["faz_area_px2"] == pytest.approx(hole.sum(), rel=0.05)


def test_image_capillaries_find_the_faz_of_a_large_vessel_mask() -> None:
    shape = (256, 256)
    rng = np.random.default_rng(1)
    hole = disc(shape, (128, 128), 30)
    capillary = mesh(shape, spacing=6, width=1, seed=2) & ~hole
    # as in OCTA maps: the FAZ darker than the space between capillaries (OCTA-500: about 0.05
    # against 0.25 on a [0, 1] scale, noise SD 0.03)
    image = np.where(hole, 0.05, 0.25 + 0.6 * capillary) + 0.03 * rng.standard_normal(shape)
    image = np.clip(image, 0, 1)
    large = np.zeros(shape, bool)
    large[50:54, 50:206] = large[202:206, 50:206] = True  # large vessels around, far away
    large[50:206, 50:54] = large[50:206, 202:206] = True
    without = faz_from_vessels(large)
    assert not without.found and "large vessels only" in without.status
    r = faz_from_vessels(large, image=image.astype(np.float32))
    assert r.found and r.source == "classical+image"
    assert faz_metrics(r.mask)["faz_area_px2"] == pytest.approx(hole.sum(), rel=0.05)
    assert capillaries(image)[capillary].mean() > 0.9


@pytest.mark.parametrize(("vessels", "reason"), [
    (np.zeros((100, 100), bool), "the vessel mask is empty"),
    (np.ones((100, 100), bool), "no vessel-free area near the image centre"),
])
def test_not_found_cases(vessels: np.ndarray, reason: str) -> None:
    r = faz_from_vessels(vessels)
    assert not r.found and r.mask is None
    assert r.status == f"not found: {reason}"


def test_region_open_to_the_border_is_not_a_faz() -> None:
    m = mesh((200, 200))
    m[80:120, :] = False  # a vessel-free corridor through the centre to both borders
    m[70:130, 70:130] = False
    r = faz_from_vessels(m)
    assert not r.found and "reaches the image border" in r.status


def test_mesh_with_a_hole_off_centre_beyond_the_search_radius() -> None:
    shape = (300, 300)
    vessels = mesh(shape) & ~disc(shape, (40, 40), 25)  # a corner hole: not the FAZ
    r = faz_from_vessels(vessels)
    assert not r.found  # the mesh cells near the centre are too small to be a FAZ

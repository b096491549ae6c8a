"""Known answers of the vessel measurements (:mod:`retinaseg.measure.vessels`).

Tolerances are stated in each test: exact where the pixel grid allows it (graph counts, calibre
of axis-aligned odd tubes, a straight line's tortuosity), else the error of the estimator on the
shape (arc/chord of a sine within 2 %, box-counting dimension within 0.1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import line

from retinaseg.evaluation.metrics import centerline_length
from retinaseg.measure import MaskShapeError, centerline
from retinaseg.measure.vessels import (
    arc_chord,
    box_counting_dimension,
    calibre_map,
    mean_curvature,
    pixel_lengths,
    skeleton_graph,
    vessel_measures,
)


def polyline(shape: tuple[int, int], points: list[tuple[int, int]], width: int = 1) -> np.ndarray:
    """A mask of the polyline through ``points`` (row, col), thickened to ``width`` (odd) by a
    square, so that straight axis-aligned parts are exactly ``width`` px wide."""
    m = np.zeros(shape, dtype=bool)
    for (r0, c0), (r1, c1) in zip(points, points[1:]):
        rr, cc = line(r0, c0, r1, c1)
        m[rr, cc] = True
    if width > 1:
        m = ndimage.binary_dilation(m, structure=np.ones((width, width), bool))
    return m


def sine_path(amplitude: float, period: int, offset: int = 20) -> np.ndarray:
    """One period of y = A·sin(2πx/P) sampled at every column and joined 8-connectedly,
    ``[N, 2]`` (row, col) in order."""
    xs = np.arange(period + 1)
    ys = np.round(amplitude * np.sin(2 * np.pi * xs / period)).astype(int) + int(amplitude) \
        + offset
    pts = []
    for i in range(period):
        rr, cc = line(ys[i], xs[i] + offset, ys[i + 1], xs[i + 1] + offset)
        pts += list(zip(rr, cc))[: -1]
    pts.append((ys[-1], xs[-1] + offset))
    return np.array(pts)


def sine_arc_chord(amplitude: float, period: float) -> float:
    """Arc/chord of one period of the continuous sine, by the trapezoid rule on 200 001 points."""
    x = np.linspace(0, period, 200_001)
    slope = 2 * np.pi * amplitude / period * np.cos(2 * np.pi * x / period)
    return float(np.trapezoid(np.sqrt(1 + slope ** 2), x) / period)


# ---- the centerline graph ------------------------------------------------------------------
@pytest.mark.parametrize("width", [1, 5, 7])
def test_t_tree_has_one_branch_point_three_ends_three_segments(width: int) -> None:
    m = polyline((80, 80), [(15, 8), (15, 72)], width) | polyline((80, 80), [(15, 40), (72, 40)],
                                                                  width)
    g = skeleton_graph(centerline(m))
    assert (len(g.branch_points), len(g.end_points), len(g.segments)) == (1, 3, 3)
    assert not g.loops.any()


@pytest.mark.parametrize("width", [1, 5])
def test_y_tree_has_one_branch_point_three_ends_three_segments(width: int) -> None:
    m = polyline((100, 100), [(90, 50), (50, 50), (10, 15)], width) \
        | polyline((100, 100), [(50, 50), (10, 85)], width)
    g = skeleton_graph(centerline(m))
    assert (len(g.branch_points), len(g.end_points), len(g.segments)) == (1, 3, 3)
    assert g.branch_points[0] == pytest.approx([50, 50], abs=3)


def test_h_shape_has_two_branch_points_four_ends_five_segments() -> None:
    m = polyline((60, 60), [(5, 10), (55, 10)]) | polyline((60, 60), [(5, 50), (55, 50)]) \
        | polyline((60, 60), [(30, 10), (30, 50)])
    g = skeleton_graph(m)
    assert (len(g.branch_points), len(g.end_points), len(g.segments)) == (2, 4, 5)


def test_ring_is_one_loop_segment_and_plus_has_four_arms() -> None:
    yy, xx = np.mgrid[:60, :60]
    ring = np.abs(np.hypot(yy - 30, xx - 30) - 20) < 2
    g = skeleton_graph(centerline(ring))
    assert (len(g.branch_points), len(g.end_points), len(g.segments)) == (0, 0, 1)
    assert g.loops.tolist() == [True]
    assert g.lengths[0] == pytest.approx(2 * np.pi * 20, rel=0.08)  # 1/√2 steps: ≤ 8 % long
    plus = polyline((41, 41), [(20, 2), (20, 38)]) | polyline((41, 41), [(2, 20), (38, 20)])
    g = skeleton_graph(plus)
    assert (len(g.branch_points), len(g.end_points), len(g.segments)) == (1, 4, 4)
    assert sorted(g.lengths) == pytest.approx([17, 17, 17, 17])  # to the 5-px junction cross


def test_segments_are_ordered_paths_between_their_nodes() -> None:
    m = polyline((40, 60), [(20, 5), (20, 55)])
    g = skeleton_graph(m)
    (seg,) = g.segments
    assert len(seg) == 51 and g.lengths[0] == 50
    steps = np.abs(np.diff(seg, axis=0)).max(axis=1)
    assert (steps == 1).all()
    assert {tuple(seg[0]), tuple(seg[-1])} == {(20, 5), (20, 55)}


def test_isolated_pixels_and_two_pixel_lines() -> None:
    m = np.zeros((10, 10), bool)
    m[2, 2] = True  # isolated: no segment, no end point
    m[6, 6] = m[7, 7] = True  # two end points joined by one diagonal step
    g = skeleton_graph(m)
    assert (len(g.branch_points), len(g.end_points), len(g.segments)) == (0, 2, 1)
    assert g.lengths[0] == pytest.approx(math.sqrt(2))


def test_empty_skeleton_and_bad_shape() -> None:
    g = skeleton_graph(np.zeros((8, 8), bool))
    assert (len(g.branch_points), len(g.end_points), len(g.segments)) == (0, 0, 0)
    with pytest.raises(MaskShapeError):
        skeleton_graph(np.zeros((2, 3, 4), bool))


# ---- length and calibre --------------------------------------------------------------------
def test_pixel_lengths_sum_to_the_centerline_length() -> None:
    m = polyline((90, 90), [(80, 10), (40, 45), (10, 20)], 5) | polyline((90, 90),
                                                                        [(40, 45), (85, 85)], 3)
    share = pixel_lengths(centerline(m))
    assert share.sum() == pytest.approx(centerline_length(m), abs=1e-9)
    assert pixel_lengths(polyline((5, 20), [(2, 3), (2, 12)])).sum() == 9.0


@pytest.mark.parametrize("width", [3, 5, 7, 9, 11])
@pytest.mark.parametrize("vertical", [False, True])
def test_straight_tube_of_odd_width_has_that_calibre(width: int, vertical: bool) -> None:
    m = polyline((60, 120), [(30, 10), (30, 110)], width)
    m = m.T if vertical else m
    a = vessel_measures(m)
    assert a.columns["calibre_median_px"] == width  # exact on the axis
    assert abs(a.columns["calibre_mean_px"] - width) <= 1
    # area / length: the square caps add w/2 at each end of the 100-px axis
    assert a.columns["vessel_diameter_index_px"] == pytest.approx(width * (100 + width) / 100)


@pytest.mark.parametrize("width", [3, 5, 7])
def test_oblique_tube_calibre_within_one_pixel(width: int) -> None:
    m = polyline((120, 120), [(100, 10), (40, 110)], 1)
    m = ndimage.distance_transform_edt(~m) <= width / 2  # the pixels within w/2 of the axis
    a = vessel_measures(m)
    assert abs(a.columns["calibre_median_px"] - width) <= 1
    assert a.columns["vessel_diameter_index_px"] == pytest.approx(width, abs=1)


def test_calibre_map_is_nan_off_the_centerline() -> None:
    m = polyline((20, 40), [(10, 5), (10, 35)], 5)
    cal = calibre_map(m, centerline(m))
    assert np.isnan(cal[~centerline(m)]).all()
    assert np.nanmax(cal) == 5


# ---- tortuosity ------------------------------------------------------------------------------
@pytest.mark.parametrize("angle", [0, 10, 22.5, 30, 45, 60, 90])
def test_straight_line_has_tortuosity_one_and_no_curvature(angle: float) -> None:
    t = math.radians(angle)
    rr, cc = line(100, 100, round(100 - 80 * math.sin(t)), round(100 + 80 * math.cos(t)))
    pts = np.stack([rr, cc], axis=1)
    assert arc_chord(pts) == pytest.approx(1.0, abs=0.005)
    assert mean_curvature(pts) < 0.006  # per px (a circle of radius 170 px)
    if angle in (0, 45, 90):
        assert arc_chord(pts) == pytest.approx(1.0, abs=1e-9)
        assert mean_curvature(pts) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("amplitude", "period"), [(5, 100), (10, 100), (20, 120)])
def test_sine_arc_chord_matches_the_integral_within_2_percent(amplitude: float,
                                                             period: int) -> None:
    expect = sine_arc_chord(amplitude, period)
    pts = sine_path(amplitude, period)
    assert arc_chord(pts) == pytest.approx(expect, rel=0.02)
    m = np.zeros((2 * amplitude + 45, period + 45), bool)
    m[pts[:, 0], pts[:, 1]] = True
    for mask in (m, ndimage.binary_dilation(m, np.ones((3, 3), bool))):  # 1 px and 3 px wide
        a = vessel_measures(mask)
        assert a.columns["segments"] == 1
        assert a.arc_chord[0] == pytest.approx(expect, rel=0.02)


@pytest.mark.parametrize("radius", [30, 40, 60])
def test_circular_arc_curvature_is_one_over_radius_within_10_percent(radius: int) -> None:
    theta = np.linspace(0, np.pi, 20_000)
    rc = np.round(np.stack([300 + radius * np.sin(theta), 300 + radius * np.cos(theta)],
                           axis=1)).astype(int)
    _, first = np.unique(rc, axis=0, return_index=True)
    pts = rc[np.sort(first)]
    assert mean_curvature(pts) * radius == pytest.approx(1.0, rel=0.10)
    assert arc_chord(pts) == pytest.approx(np.pi / 2, rel=0.02)  # half circle: πR / 2R


def test_short_segments_and_loops_get_no_tortuosity() -> None:
    m = polyline((60, 60), [(30, 5), (30, 55)]) | polyline((60, 60), [(30, 30), (24, 30)])
    a = vessel_measures(m)
    short = a.graph.lengths < 10
    assert short.any() and np.isnan(a.arc_chord[short]).all()
    assert np.isfinite(a.arc_chord[~short]).all()
    assert a.columns["tortuosity_segments"] == int((~short).sum())


# ---- fractal dimension -----------------------------------------------------------------------
def test_filled_square_has_box_dimension_two() -> None:
    m = np.zeros((256, 256), bool)
    m[8:248, 8:248] = True
    fit = box_counting_dimension(m)
    assert fit.dimension == pytest.approx(2.0, abs=0.1)
    assert fit.r2 > 0.99
    assert fit.sizes.tolist() == [2, 4, 8, 16, 32, 64]


@pytest.mark.parametrize("angle", [0, 30, 45])
def test_line_has_box_dimension_one(angle: float) -> None:
    t = math.radians(angle)
    m = np.zeros((256, 256), bool)
    rr, cc = line(250, 5, round(250 - 240 * math.sin(t)), round(5 + 240 * math.cos(t)))
    m[rr, cc] = True
    fit = box_counting_dimension(m)
    assert fit.dimension == pytest.approx(1.0, abs=0.1)
    assert fit.r2 > 0.99


def test_box_dimension_of_empty_or_tiny_masks_is_nan() -> None:
    assert math.isnan(box_counting_dimension(np.zeros((64, 64), bool)).dimension)
    assert math.isnan(box_counting_dimension(np.ones((7, 7), bool)).dimension)  # one size only


# ---- all measurements ------------------------------------------------------------------------
def test_units_are_in_the_column_names() -> None:
    m = polyline((100, 100), [(50, 10), (50, 90)], 5)
    px, mm = vessel_measures(m).columns, vessel_measures(m, mm_per_px=0.01).columns
    assert px["skeleton_length_px"] == pytest.approx(80, abs=1)  # the axis, caps excluded
    assert mm["skeleton_length_mm"] == pytest.approx(px["skeleton_length_px"] * 0.01)
    assert mm["calibre_median_um"] == pytest.approx(50.0)  # 5 px of 10 µm
    assert mm["vessel_diameter_index_um"] == pytest.approx(px["vessel_diameter_index_px"] * 10)
    assert mm["skeleton_length_density_per_mm"] == pytest.approx(
        px["skeleton_length_density_per_px"] / 0.01)
    assert mm["vessel_area_density"] == px["vessel_area_density"] == m.mean()
    assert mm["tortuosity_curvature_mean_per_mm"] == pytest.approx(
        px["tortuosity_curvature_mean_per_px"] / 0.01)


def test_region_restricts_the_densities() -> None:
    m = np.zeros((40, 40), bool)
    m[:, 10:14] = True
    region = np.zeros_like(m)
    region[:, :20] = True
    a = vessel_measures(m, region=region)
    assert a.columns["vessel_area_density"] == pytest.approx(4 / 20)


def test_empty_mask_gives_zero_densities_and_nan_shapes() -> None:
    c = vessel_measures(np.zeros((50, 50), bool)).columns
    assert c["vessel_area_density"] == 0 and c["skeleton_length_px"] == 0
    assert c["skeleton_length_density_per_px"] == 0
    assert (c["branch_points"], c["end_points"], c["segments"]) == (0, 0, 0)
    for key in ("vessel_diameter_index_px", "calibre_mean_px", "tortuosity_arc_chord_mean",
                "fractal_dimension_skeleton", "fractal_dimension_mask"):
        assert math.isnan(c[key]), key

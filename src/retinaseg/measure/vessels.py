"""Vessel measurements on a binary mask: densities, calibre, the centerline graph (branch
points, end points, segments), tortuosity per segment and box-counting fractal dimension.

Every function takes plain arrays (masks are bool ``[H, W]``) and works in pixels; physical
units are applied once, by :func:`vessel_measures`. The centerline is the exact
Euler-characteristic peeling of :func:`retinaseg.measure.centerline` (reference §3). The
definitions, with their citations, are in ``docs/reference/measurements.md``:

- length along the centerline counts 1 for an orthogonal step and √2 for a diagonal one, over
  every pair of 8-neighbouring centerline pixels (the ``centerline_length_px`` of ``predict``);
- calibre = 2·dt − 1 px at centerline pixels, dt the Euclidean distance to the nearest
  background pixel (a tube of odd width w gives exactly w on its axis); its statistics are taken
  over the centerline pixels with two neighbours (branch and end points excluded);
- the graph: end points have one centerline neighbour, branch-point pixels three or more
  (8-adjacent branch-point pixels form one branch point); a segment runs between two of these
  nodes, or is a closed ring;
- tortuosity, per segment of at least ``MIN_SEGMENT_PX``, on the segment resampled every px and
  smoothed by a Gaussian of ``CURVATURE_SIGMA_PX``: the distance metric arc / chord (Hart et
  al. 1999) and the mean absolute curvature ∫|κ|ds / L (Hart et al.'s total curvature
  normalised by arc length);
- fractal dimension: the slope of log N(s) against log(1/s) over box sizes 2, 4, 8, … up to
  min(H, W)/4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from retinaseg.measure.centerline import MaskShapeError, centerline

__all__ = ["BoxCount", "SkeletonGraph", "arc_chord", "box_counting_dimension", "calibre_map",
           "mean_curvature", "pixel_lengths", "skeleton_graph", "smooth_path", "tortuosity",
           "vessel_measures",
           "MIN_SEGMENT_PX", "CURVATURE_SIGMA_PX"]

MIN_SEGMENT_PX = 10.0
"""Segments shorter than this (px, along the centerline) get no tortuosity: on a few pixels the
arc/chord ratio and the curvature measure the pixel grid, not the vessel."""
CURVATURE_SIGMA_PX = 4.0
"""Gaussian smoothing (px of arc length) of a segment before its arc length and curvature are
taken: removes the stair-steps of the pixel grid (a straight digital line at any angle then reads
below 0.006 /px; σ = 2 leaves 0.02 /px, the curvature of a circle of radius 50 px)."""

_OFFSETS = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])
_STEP = np.hypot(_OFFSETS[:, 0], _OFFSETS[:, 1])


def _binary_2d(mask: np.ndarray, what: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise MaskShapeError(f"the {what} must be a 2D [H, W] array, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


# ----------------------------------------------------------------------------------------------
# Length and calibre along the centerline
# ----------------------------------------------------------------------------------------------


def pixel_lengths(skeleton: np.ndarray) -> np.ndarray:
    """Each centerline pixel's share of the centerline length, px (float ``[H, W]``).

    Half the step length (1 orthogonal, √2 diagonal) to each of its 8-neighbours on the
    centerline, so that the sum over any set of pixels is the length inside it and the sum over
    the image is the total length (a straight 10-px line: 9.0).
    """
    skel = _binary_2d(skeleton, "centerline")
    padded = np.pad(skel, 1).astype(np.float64)
    h, w = skel.shape
    share = np.zeros((h, w))
    for (dy, dx), step in zip(_OFFSETS, _STEP):
        share += padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] * (step / 2)
    return np.where(skel, share, 0.0)


def calibre_map(mask: np.ndarray, skeleton: np.ndarray) -> np.ndarray:
    """Vessel diameter at every centerline pixel, px: 2·dt − 1 (NaN off the centerline).

    ``dt`` is the Euclidean distance from the pixel to the nearest background pixel, so the
    axis pixel of a tube of odd width w = 2k + 1 has dt = k + 1 and diameter w exactly.
    """
    dt = ndimage.distance_transform_edt(_binary_2d(mask))
    return np.where(_binary_2d(skeleton, "centerline"), 2 * dt - 1, np.nan)


# ----------------------------------------------------------------------------------------------
# The centerline graph
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkeletonGraph:
    """Nodes and segments of a 1-px centerline.

    Attributes:
        segments: one ``[N, 2]`` int array of (row, col) per segment, ordered from one node to
            the other (both nodes included); a ring repeats its first pixel at the end.
        lengths: ``[S]`` segment lengths along the centerline, px.
        loops: ``[S]`` bool; a closed ring, or a segment that starts and ends at the same
            branch point (its chord is not a chord, so it gets no tortuosity).
        branch_points: ``[B, 2]`` float (row, col) centroids of the branch points.
        end_points: ``[E, 2]`` int (row, col) of the end points.
        degree: ``[H, W]`` int8 number of centerline neighbours of every centerline pixel
            (0 off the centerline).
    """

    segments: list[np.ndarray]
    lengths: np.ndarray
    loops: np.ndarray
    branch_points: np.ndarray
    end_points: np.ndarray
    degree: np.ndarray


def _walk(fg: np.ndarray, deg: np.ndarray, ring: np.ndarray, prev: np.ndarray,
          cur: np.ndarray) -> np.ndarray:
    """Follow chains of degree-2 pixels from ``prev → cur`` until a node (or back to the start).

    All walkers advance together, one step per iteration. Returns ``[K, L]`` flat indices of
    the padded grid, each row the visited pixels in order, padded with −1.
    """
    start = prev.copy()
    path = [prev.copy(), cur.copy()]
    alive = (deg[cur] == 2) & (cur != start)
    prev, cur = prev.copy(), cur.copy()
    while alive.any():
        rows = np.flatnonzero(alive)
        nbr = cur[rows, None] + ring
        nxt = nbr[np.arange(rows.size), (fg[nbr] & (nbr != prev[rows, None])).argmax(axis=1)]
        prev[rows], cur[rows] = cur[rows], nxt
        step = np.full(cur.size, -1, dtype=np.int64)
        step[rows] = nxt
        path.append(step)
        alive[rows] = (deg[nxt] == 2) & (nxt != start[rows])
    return np.stack(path, axis=1)


def skeleton_graph(skeleton: np.ndarray) -> SkeletonGraph:
    """The graph of a 1-px, 8-connected centerline (e.g. :func:`retinaseg.measure.centerline`).

    End points have exactly one 8-neighbour on the centerline; branch-point pixels have three or
    more, and 8-adjacent branch-point pixels are one branch point. A segment is a chain of
    pixels with two neighbours between two nodes (or two adjacent nodes of different branch
    points), or a closed ring of such pixels. Isolated pixels belong to no segment.

    Args:
        skeleton: ``[H, W]`` bool, one pixel wide.

    Returns:
        :class:`SkeletonGraph`.
    """
    skel = _binary_2d(skeleton, "centerline")
    h, w = skel.shape
    fg = np.pad(skel, 1).ravel()
    ring = _OFFSETS @ np.array([w + 2, 1])
    idx = np.flatnonzero(fg)
    deg = np.zeros(fg.size, dtype=np.int8)
    deg[idx] = fg[idx[:, None] + ring].sum(axis=1)

    junction = np.zeros(fg.size, dtype=bool)
    junction[idx[deg[idx] >= 3]] = True
    jlab, n_branch = ndimage.label(junction.reshape(h + 2, w + 2), structure=np.ones((3, 3)))
    group = jlab.ravel().astype(np.int64)  # branch point id (1…B) of a junction pixel, else 0
    ends = idx[deg[idx] == 1]
    group[ends] = n_branch + 1 + np.arange(ends.size)

    chain_lab, _ = ndimage.label((deg == 2).reshape(h + 2, w + 2), structure=np.ones((3, 3)))
    chain = chain_lab.ravel()
    nodes = idx[(deg[idx] == 1) | (deg[idx] >= 3)]
    nbr = nodes[:, None] + ring
    u, k = np.nonzero(fg[nbr])
    u, v = nodes[u], nbr[u, k]
    into_chain = deg[v] == 2
    _, first = np.unique(chain[v[into_chain]], return_index=True)
    walks = [_walk(fg, deg, ring, u[into_chain][first], v[into_chain][first])]
    direct = ~into_chain & (group[u] != group[v]) & (u < v)
    if direct.any():
        walks.append(np.stack([u[direct], v[direct]], axis=1))
    rings = np.setdiff1d(np.unique(chain[deg == 2]), chain[v[into_chain]])
    if rings.size:  # closed rings without nodes: start at their first pixel
        starts = np.array([np.flatnonzero(chain == r)[0] for r in rings])
        nxt = starts[:, None] + ring
        walks.append(_walk(fg, deg, ring, starts, nxt[np.arange(starts.size),
                                                      fg[nxt].argmax(axis=1)]))
    return _graph_from_walks(walks, group, deg, (h, w), jlab, ends)


def _graph_from_walks(walks: list[np.ndarray], group: np.ndarray, deg: np.ndarray,
                      shape: tuple[int, int], jlab: np.ndarray,
                      ends: np.ndarray) -> SkeletonGraph:
    """Turn the padded flat walks into coordinates, lengths and loop flags."""
    h, w = shape
    segments, lengths, loops = [], [], []
    for table in walks:
        for row in table:
            flat = row[row >= 0]
            rc = np.stack(np.divmod(flat, w + 2), axis=1) - 1
            steps = np.abs(np.diff(rc, axis=0)).sum(axis=1)
            segments.append(rc)
            lengths.append(float(np.where(steps == 2, math.sqrt(2), 1.0).sum()))
            a, b = flat[0], flat[-1]
            loops.append(a == b or (group[a] == group[b] and deg[a] >= 3))
    if jlab.max():
        cents = ndimage.center_of_mass(np.ones_like(jlab), jlab, range(1, jlab.max() + 1))
        branch = np.asarray(cents, dtype=np.float64).reshape(-1, 2) - 1
    else:
        branch = np.zeros((0, 2))
    end_rc = np.stack(np.divmod(ends, w + 2), axis=1) - 1
    return SkeletonGraph(segments=segments, lengths=np.asarray(lengths, dtype=np.float64),
                         loops=np.asarray(loops, dtype=bool), branch_points=branch,
                         end_points=end_rc.reshape(-1, 2),
                         degree=deg.reshape(h + 2, w + 2)[1:-1, 1:-1].copy())


# ----------------------------------------------------------------------------------------------
# Tortuosity
# ----------------------------------------------------------------------------------------------


def smooth_path(points: np.ndarray, sigma: float = CURVATURE_SIGMA_PX) -> np.ndarray:
    """An ordered pixel path ``[N, 2]`` resampled every 1 px of arc length and smoothed by a
    Gaussian of ``sigma`` px, ``[M, 2]`` float.

    The ends are extended by point reflection (2·p₀ − p_k) before smoothing, so the two end
    points stay where they are and a straight line stays straight; the smoothing removes the
    stair-steps of the pixel grid, which add up to 8 % to a length counted in 1 and √2 steps.
    """
    pts = _resample(np.asarray(points, dtype=np.float64))
    pad = min(len(pts) - 1, int(math.ceil(4 * sigma)))
    if pad < 1 or sigma <= 0:
        return pts
    head = 2 * pts[0] - pts[1:pad + 1][::-1]
    tail = 2 * pts[-1] - pts[-pad - 1:-1][::-1]
    ext = ndimage.gaussian_filter1d(np.concatenate([head, pts, tail]), sigma, axis=0)
    return ext[pad:len(ext) - pad]


def arc_chord(points: np.ndarray, sigma: float = CURVATURE_SIGMA_PX) -> float:
    """Distance-metric tortuosity of an ordered pixel path ``[N, 2]``: arc length / chord.

    The arc is the length of :func:`smooth_path` (``sigma`` = 0: of the raw polyline), the chord
    the distance between the two end points. 1 for a straight line at any angle; NaN when the
    ends coincide.
    """
    return _arc_chord(smooth_path(points, sigma))


def _arc_chord(pts: np.ndarray) -> float:
    chord = float(np.hypot(*(pts[-1] - pts[0])))
    arc = float(np.hypot(*np.diff(pts, axis=0).T).sum())
    return arc / chord if chord > 0 else math.nan


def _resample(pts: np.ndarray, spacing: float = 1.0) -> np.ndarray:
    """Points at equal arc-length ``spacing`` along the polyline ``pts`` (its end kept)."""
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    t = np.arange(0.0, s[-1], spacing)
    t = np.append(t, s[-1]) if s[-1] - t[-1] > 1e-9 else t
    return np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], axis=1)


def mean_curvature(points: np.ndarray, sigma: float = CURVATURE_SIGMA_PX) -> float:
    """Mean absolute curvature ∫|κ| ds / ∫ds of an ordered path ``[N, 2]``, per px.

    Taken on :func:`smooth_path` by finite differences. A circle of radius R reads about 1/R
    (R = 40 px: 0.96/R with the default ``sigma``), a straight line 0 (a digital one at any angle
    below 0.006 /px). NaN for a path of fewer than 3 samples.
    """
    return _curvature(smooth_path(points, sigma))


def _curvature(pts: np.ndarray) -> float:
    if len(pts) < 3:
        return math.nan
    d1 = np.gradient(pts, axis=0)
    d2 = np.gradient(d1, axis=0)
    speed = np.hypot(d1[:, 0], d1[:, 1])
    kappa = np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / np.maximum(speed, 1e-12) ** 3
    return float((kappa * speed).sum() / speed.sum())


def tortuosity(graph: SkeletonGraph, min_length_px: float = MIN_SEGMENT_PX,
               sigma: float = CURVATURE_SIGMA_PX) -> tuple[np.ndarray, np.ndarray]:
    """Per segment: (arc/chord, mean absolute curvature per px), NaN for loops and for segments
    shorter than ``min_length_px`` (along the centerline). Both ``[S]`` float."""
    n = len(graph.segments)
    ac, curv = np.full(n, np.nan), np.full(n, np.nan)
    for i in np.flatnonzero(~graph.loops & (graph.lengths >= min_length_px)):
        pts = smooth_path(graph.segments[i], sigma)
        ac[i], curv[i] = _arc_chord(pts), _curvature(pts)
    return ac, curv


# ----------------------------------------------------------------------------------------------
# Fractal dimension
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxCount:
    """A box-counting fit: ``dimension`` is the slope of log N(s) against log(1/s), ``r2`` the
    fit's coefficient of determination; ``sizes`` px and ``counts`` the boxes that hit the mask."""

    dimension: float
    r2: float
    sizes: np.ndarray
    counts: np.ndarray


def box_counting_dimension(mask: np.ndarray, sizes: np.ndarray | None = None) -> BoxCount:
    """Box-counting (Minkowski–Bouligand) dimension of a binary mask.

    Boxes of side s tile the image from its top-left corner (the last row and column of boxes
    may hang over the edge); N(s) counts the boxes holding a foreground pixel. The dimension is
    the least-squares slope of log N(s) against log(1/s). The default sizes are the powers of
    two from 2 to min(H, W)/4: nested grids, so N(s) never grows with s (sizes that do not
    divide each other alias a diagonal line into a count that goes up and down).

    Args:
        mask: ``[H, W]`` bool.
        sizes: box sides in px; default 2, 4, 8, … ≤ min(H, W)/4.

    Returns:
        :class:`BoxCount`; NaN dimension and R² for an empty mask or fewer than 2 sizes.
    """
    m = _binary_2d(mask)
    if sizes is None:
        top = max(2, min(m.shape) // 4)
        sizes = 2 ** np.arange(1, int(math.log2(top)) + 1)
    sizes = np.asarray(sizes, dtype=int)
    counts = np.array([_boxes(m, int(s)) for s in sizes])
    if not m.any() or len(sizes) < 2:
        return BoxCount(math.nan, math.nan, sizes, counts)
    x, y = np.log(1.0 / sizes), np.log(counts)
    slope, icpt = np.polyfit(x, y, 1)
    ss_res = float(((y - (slope * x + icpt)) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return BoxCount(float(slope), r2, sizes, counts)


def _boxes(mask: np.ndarray, s: int) -> int:
    """Number of s×s boxes of the grid from the top-left corner that hold a foreground pixel."""
    h, w = mask.shape
    padded = np.pad(mask, ((0, -h % s), (0, -w % s)))
    hb, wb = padded.shape[0] // s, padded.shape[1] // s
    return int(padded.reshape(hb, s, wb, s).any(axis=(1, 3)).sum())


# ----------------------------------------------------------------------------------------------
# All vessel measurements of one mask
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VesselAnalysis:
    """The vessel measurements of one mask, with the maps they come from (for reports).

    Attributes:
        columns: the measurement columns (``docs/reference/measurements.md``).
        skeleton: ``[H, W]`` bool centerline.
        lengths: ``[H, W]`` float each centerline pixel's share of the length, px.
        calibre: ``[H, W]`` float diameter in px at centerline pixels, NaN elsewhere.
        graph: the centerline graph.
        arc_chord: ``[S]`` per-segment arc/chord (NaN where not measured).
        curvature: ``[S]`` per-segment mean absolute curvature, per px.
    """

    columns: dict[str, float | int | str]
    skeleton: np.ndarray
    lengths: np.ndarray
    calibre: np.ndarray
    graph: SkeletonGraph
    arc_chord: np.ndarray
    curvature: np.ndarray


def units(mm_per_px: float | None) -> dict[str, str]:
    """Column-name suffixes: lengths ``mm``/``px``, widths ``um``/``px``, areas ``mm2``/``px2``,
    per-length ``per_mm``/``per_px``."""
    if mm_per_px is None:
        return {"len": "px", "width": "px", "area": "px2", "per": "per_px"}
    return {"len": "mm", "width": "um", "area": "mm2", "per": "per_mm"}


def _stats(values: np.ndarray) -> tuple[float, float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    return float(v.mean()), float(np.median(v)), float(np.percentile(v, 90))


def vessel_measures(mask: np.ndarray, region: np.ndarray | None = None,
                    mm_per_px: float | None = None, skeleton: np.ndarray | None = None,
                    min_segment_px: float = MIN_SEGMENT_PX) -> VesselAnalysis:
    """Density, calibre, graph, tortuosity and fractal measurements of a vessel mask.

    Args:
        mask: ``[H, W]`` bool vessel mask.
        region: ``[H, W]`` bool analysed region (e.g. a fundus field of view); None = the whole
            image. The mask is cut to it first.
        mm_per_px: pixel size in mm; None keeps pixels (the unit is in every column name).
        skeleton: the centerline if already computed (else :func:`centerline` of the mask).
        min_segment_px: segments shorter than this get no tortuosity.

    Returns:
        :class:`VesselAnalysis`.
    """
    m = _binary_2d(mask)
    if region is not None:
        m = m & _binary_2d(region, "region")
    skel = centerline(m) if skeleton is None else _binary_2d(skeleton, "centerline") & m
    share = pixel_lengths(skel)
    calib = calibre_map(m, skel)
    graph = skeleton_graph(skel)
    ac, curv = tortuosity(graph, min_segment_px)
    k = 1.0 if mm_per_px is None else float(mm_per_px)
    width_k = 1.0 if mm_per_px is None else 1000.0 * k
    u = units(mm_per_px)
    region_px = float(m.size if region is None else np.count_nonzero(region))
    area, length = float(m.sum()) * k * k, float(share.sum()) * k
    region_area = region_px * k * k
    path = graph.degree == 2
    c_mean, c_med, c_p90 = _stats(calib[path] if path.any() else calib[skel])
    t_mean, t_med, _ = _stats(ac)
    k_mean, k_med, _ = _stats(curv / k)
    fd_skel, fd_mask = box_counting_dimension(skel), box_counting_dimension(m)
    cols: dict[str, float | int | str] = {
        "vessel_area_density": area / region_area if region_area > 0 else math.nan,
        f"skeleton_length_{u['len']}": length,
        f"skeleton_length_density_{u['per']}": length / region_area if region_area else math.nan,
        f"vessel_diameter_index_{u['width']}": area / length * (width_k / k) if length > 0
        else math.nan,
        f"calibre_mean_{u['width']}": c_mean * width_k,
        f"calibre_median_{u['width']}": c_med * width_k,
        f"calibre_p90_{u['width']}": c_p90 * width_k,
        "branch_points": int(len(graph.branch_points)),
        "end_points": int(len(graph.end_points)),
        "segments": int(len(graph.segments)),
        "tortuosity_segments": int(np.isfinite(ac).sum()),
        "tortuosity_arc_chord_mean": t_mean,
        "tortuosity_arc_chord_median": t_med,
        f"tortuosity_curvature_mean_{u['per']}": k_mean,
        f"tortuosity_curvature_median_{u['per']}": k_med,
        "fractal_dimension_skeleton": fd_skel.dimension,
        "fractal_r2_skeleton": fd_skel.r2,
        "fractal_dimension_mask": fd_mask.dimension,
        "fractal_r2_mask": fd_mask.r2,
    }
    return VesselAnalysis(cols, skel, share, calib, graph, ac, curv)

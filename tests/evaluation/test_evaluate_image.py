"""``evaluate_image`` (one pass per image, shared skeletons, masks and dilations) against the
previous definitions, written out here as they were: whole-image skeletons, ``vessel_width``
from two image-sized distance transforms, the thick / thin zone by fancy indexing, erosions
and dilations by ``scipy.ndimage``, patch Betti numbers window by window, centerlines of the
whole image and the error map by masked assignments. Every value must be identical (``==``),
on synthetic masks and on the DRIVE test labels (skipped without ``../shared/data``)."""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from retinaseg.evaluation import metrics as m
from retinaseg.evaluation.figures import PALETTES, error_map
from retinaseg.measure.centerline import centerline

# ------------------------------------------------------------------- the previous definitions


def _old_skeleton(mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return mask
    skel = skeletonize(mask).astype(bool)
    return skel if skel.any() else mask


def _old_vessel_width(g: np.ndarray) -> np.ndarray:
    if not g.any():
        return np.zeros(g.shape)
    dt = ndimage.distance_transform_edt(g)
    skel = _old_skeleton(g)
    width_at_skel = np.where(skel, 2.0 * dt - 1.0, 0.0)
    nearest = ndimage.distance_transform_edt(~skel, return_distances=False, return_indices=True)
    return np.where(g, width_at_skel[tuple(nearest)], 0.0)


def _old_split(g, f, width_px, thick_gt=None, thin_gt=None):
    if thick_gt is None:
        g = g if f is None else g & f
        thick = g & (_old_vessel_width(g) >= width_px)
        thin = g & ~thick
    else:
        thick, thin = thick_gt, thin_gt
        if f is not None:
            thick, thin = thick & f, thin & f
        thin = thin & ~thick
    vessels = thick | thin
    if not vessels.any():
        return thick, thin, np.zeros(g.shape, bool)
    nearest = ndimage.distance_transform_edt(~vessels, return_distances=False,
                                             return_indices=True)
    return thick, thin, thick[tuple(nearest)]


def _old_counts(p, g, f):
    if f is not None:
        p, g = p[f], g[f]
    tp, fp, fn = (int(np.count_nonzero(a)) for a in (p & g, p & ~g, ~p & g))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(p.size) - tp - fp - fn}


def _old_thick_thin_counts(p, gt, fov, width_px, thick_gt=None, thin_gt=None):
    f = np.ones(p.shape, bool) if fov is None else fov
    thick, thin, zone = _old_split(gt, fov, width_px, thick_gt, thin_gt)
    return {"thick": _old_counts(p, thick, zone & f), "thin": _old_counts(p, thin, ~zone & f)}


def _old_within(mask, radius):
    if radius < 1:
        return mask.copy()
    r = int(np.floor(radius))
    grid = np.indices((2 * r + 1,) * mask.ndim) - r
    return ndimage.binary_dilation(mask, structure=(grid ** 2).sum(axis=0) <= radius ** 2)


def _old_surface_points(mask):
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return np.argwhere(mask & ~ndimage.binary_erosion(mask, cross)).astype(np.float64)


def _old_hd95(p, g):
    if not p.any() or not g.any():
        return math.nan
    sp, sg = _old_surface_points(p), _old_surface_points(g)
    d = np.r_[cKDTree(sg).query(sp)[0], cKDTree(sp).query(sg)[0]]
    return float(np.percentile(d, 95))


def _old_betti(mask):
    fg = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))[1]
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return fg, ndimage.label(np.pad(~mask, 1, constant_values=True), structure=cross)[1] - 1


def _old_patches(p, g, patch=64, n=100, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [min(patch, s) for s in p.shape]
    totals = [0.0, 0.0]
    for _ in range(n):
        corner = [int(rng.integers(0, s - w + 1)) for s, w in zip(p.shape, sizes, strict=True)]
        window = tuple(slice(c, c + w) for c, w in zip(corner, sizes, strict=True))
        for i, (a, b) in enumerate(zip(_old_betti(p[window]), _old_betti(g[window]),
                                       strict=True)):
            totals[i] += float(abs(a - b))
    return {"betti0_error": totals[0] / n, "betti1_error": totals[1] / n}


def _old_centerline_length(mask, outside=None):
    """Length of centerline(mask); with ``outside``, each step weighted by the share of its
    two pixels not in ``outside`` (the missed centerline)."""
    skel = centerline(mask)
    w = np.ones(skel.shape) if outside is None else (~outside).astype(float)
    total = 0.0
    for offset in product((-1, 0, 1), repeat=skel.ndim):
        if offset <= (0,) * skel.ndim:
            continue
        a = tuple(slice(max(0, -o), s - max(0, o)) for o, s in zip(offset, skel.shape, strict=True))
        b = tuple(slice(max(0, o), s - max(0, -o)) for o, s in zip(offset, skel.shape, strict=True))
        both = skel[a] & skel[b]
        total += ((w[a][both] + w[b][both]).sum() / 2) * float(np.sqrt(np.sum(np.square(offset))))
    return total


def _old_row(prob, gt, thr, fov, width_px=3.0, thick_gt=None, thin_gt=None):
    """The per-image figures as the previous code computed them."""
    pred = prob > thr
    f = fov
    pm, gm = (pred, gt) if f is None else (pred & f, gt & f)
    out = dict(m.threshold_metrics(_old_counts(pred, gm, f)))
    out.update(m.ranking_metrics(prob, gm, f))
    sg, sp = _old_skeleton(gm), _old_skeleton(pm)
    parts = np.array([np.count_nonzero(pm & sg), np.count_nonzero(sg),
                      np.count_nonzero(gm & sp), np.count_nonzero(sp),
                      np.count_nonzero(pm), np.count_nonzero(gm)], dtype=np.int64)
    out["cldice"] = m._cldice_from_parts(parts)
    bp, bg = _old_betti(pm), _old_betti(gm)
    out.update(betti0_error=float(abs(bp[0] - bg[0])), betti1_error=float(abs(bp[1] - bg[1])))
    out["hd95"] = _old_hd95(pm, gm)
    split = _old_thick_thin_counts(pred, gt, fov, width_px, thick_gt, thin_gt)
    fp, fn = pm & ~gm, gm & ~pm
    near = [int(np.count_nonzero(fp & _old_within(gm, b))
                + np.count_nonzero(fn & _old_within(~gm, b))) for b in (1.0, 2.0)]
    n_err = int(np.count_nonzero(fp) + np.count_nonzero(fn))
    if pm.any() and gm.any():
        prec = np.count_nonzero(_old_within(gm, 1.0) & pm) / np.count_nonzero(pm)
        rec = np.count_nonzero(_old_within(pm, 1.0) & gm) / np.count_nonzero(gm)
        rf1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    else:
        rf1 = 1.0 if pm.any() == gm.any() else 0.0
    patches = _old_patches(pm, gm)
    topo = {"relaxed_f1_1px": rf1, "edge_error_share": near[0] / n_err if n_err else math.nan,
            "betti0_error_patch": patches["betti0_error"],
            "betti1_error_patch": patches["betti1_error"],
            "components_pred": float(bp[0]), "components_gt": float(bg[0]),
            "centerline_length_pred": _old_centerline_length(pm),
            "centerline_length_gt": _old_centerline_length(gm),
            "centerline_missed_px": _old_centerline_length(gm, outside=pm)}
    return out, parts, split, topo


def _assert_same(prob, gt, thr, fov, width_px=3.0, thick_gt=None, thin_gt=None) -> None:
    ev = m.evaluate_image(prob, gt, thr, fov, width_px, thick_gt, thin_gt)
    metrics, parts, split, topo = _old_row(prob, gt, thr, fov, width_px, thick_gt, thin_gt)
    for k in m.METRIC_KEYS:
        assert ev.metrics[k] == metrics[k] or (math.isnan(ev.metrics[k])
                                               and math.isnan(metrics[k])), k
    assert ev.cldice_parts.tolist() == parts.tolist()
    assert ev.thick_thin == split
    for k in m.TOPOLOGY_KEYS:
        assert ev.topology[k] == topo[k] or (math.isnan(ev.topology[k])
                                             and math.isnan(topo[k])), k
    assert list(ev.topology) == list(m.topology_metrics(prob > thr, gt, fov))


# ------------------------------------------------------------------------------ synthetic


def _blobs(rng, shape, p=0.45, iterations=1) -> np.ndarray:
    return ndimage.binary_opening(rng.random(shape) < p, iterations=iterations)


def _vessels(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Random lines of widths 1 to 9 px (thick and thin vessels, crossings, border contact)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    out = np.zeros(shape, bool)
    for _ in range(8):
        y0, x0, y1, x1 = rng.uniform(0, 1, 4) * [shape[0], shape[1], shape[0], shape[1]]
        d = np.abs((x1 - x0) * (y0 - yy) - (x0 - xx) * (y1 - y0)) / np.hypot(x1 - x0, y1 - y0)
        out |= d <= rng.integers(0, 5) + 0.5
    return out


@pytest.mark.parametrize("seed", range(6))
def test_evaluate_image_equals_previous_definitions_synthetic(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (97, 130) if seed % 2 else (64, 64)
    gt = _vessels(shape, seed)
    noisy = gt ^ (rng.random(shape) < 0.08)
    prob = np.clip(0.6 * ndimage.binary_dilation(noisy, iterations=seed % 3) + 0.5
                   * rng.random(shape), 0, 1).astype(np.float32)
    yy, xx = np.indices(shape)
    fov = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 <= (0.55 * max(shape)) ** 2
    _assert_same(prob, gt, 0.5, fov if seed % 3 else None, width_px=(3.0, 2.5, 5.0)[seed % 3])


def test_evaluate_image_equals_previous_definitions_edge_cases() -> None:
    rng = np.random.default_rng(11)
    shape = (40, 50)
    prob = rng.random(shape).astype(np.float32)
    full, empty = np.ones(shape, bool), np.zeros(shape, bool)
    for gt in (full, empty, _blobs(rng, shape), _vessels(shape, 3)):
        for thr in (0.5, 1.0, -1.0):  # some, no and every pixel predicted
            _assert_same(prob, gt, thr, None)
            _assert_same(prob, gt, thr, _blobs(rng, shape, 0.7))
    # only thick or only thin vessels; the dataset's own thick / thin labels
    bar = np.zeros(shape, bool)
    bar[10:18, 5:45] = True
    _assert_same(prob, bar, 0.5, None)
    _assert_same(prob, bar, 0.5, None, width_px=20.0)
    thick, thin = _blobs(rng, shape, 0.3), _vessels(shape, 5)
    _assert_same(prob, thick | thin, 0.5, _blobs(rng, shape, 0.8), 3.0, thick, thin)


def test_vessel_width_and_split_equal_previous_definitions() -> None:
    for seed in range(5):
        gt = _vessels((80, 120), seed)
        assert np.array_equal(m.vessel_width(gt), _old_vessel_width(gt))
        for a, b in zip(m.split_thick_thin(gt, width_px=4.0), _old_split(gt, None, 4.0),
                        strict=True):
            assert np.array_equal(a, b)
    full = np.ones((6, 7), bool)  # no background: the transform's own (odd) values are kept
    assert np.array_equal(m.vessel_width(full), _old_vessel_width(full))
    bar = np.zeros((20, 30), bool)
    bar[5:12, 2:28] = True
    assert m.vessel_width(bar)[8, 15] == 7.0  # known answer: a 7-px bar is 7 wide


def test_skeleton_surface_dilation_and_patches_equal_previous_definitions() -> None:
    rng = np.random.default_rng(5)
    for shape in ((50, 60), (33, 70)):
        for _ in range(3):
            a = _blobs(rng, shape, 0.5)
            assert np.array_equal(m._skeleton(a), _old_skeleton(a))
            assert np.array_equal(m.surface_points(a), _old_surface_points(a))
            for r in (0.5, 1.0, 1.5, 2.0, 3.0, 5.0):
                assert np.array_equal(m._within(a, r), _old_within(a, r))
            b = _blobs(rng, shape, 0.5)
            assert m.betti_errors_patches(a, b, patch=16, n=37, seed=3) == \
                _old_patches(a, b, 16, 37, 3)
            assert m.centerline_length(a) == _old_centerline_length(a)
    a = _blobs(rng, (6, 5, 7), 0.6)  # 3D keeps the window-by-window path
    assert set(m.betti_errors_patches(a, a, patch=4, n=5)) == {"betti0_error", "betti1_error",
                                                                "betti2_error"}
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7], ring[4, 4] = True, False
    assert m.betti_errors_patches(ring, np.zeros_like(ring), patch=9, n=3) == {
        "betti0_error": 1.0, "betti1_error": 1.0}  # known answer: one component, one hole


def test_error_map_equals_masked_assignments() -> None:
    rng = np.random.default_rng(2)
    p, g, f = (rng.random((30, 40)) < 0.4 for _ in range(3))
    for palette, colours in PALETTES.items():
        want = np.empty((30, 40, 3), np.uint8)
        want[...] = colours["tn"]
        want[p & g], want[p & ~g], want[~p & g] = colours["tp"], colours["fp"], colours["fn"]
        assert np.array_equal(error_map(p, g, None, palette), want)
        want[~f] = colours["outside"]
        assert np.array_equal(error_map(p, g, f, palette), want)
    assert error_map(p, g)[0, 0].tolist() in ([0, 255, 0], [255, 0, 0], [0, 0, 255], [0, 0, 0])


# ------------------------------------------------------------------------------ real labels


def test_evaluate_image_equals_previous_definitions_on_drive(shared_data: Path) -> None:
    """DRIVE test labels and FOV masks, with a prediction made from the label of another
    image and noise (thick and thin vessels, false positives beside both, misses)."""
    drive = shared_data / "DRIVE" / "test"
    if not (drive / "1st_manual").is_dir():
        pytest.skip(f"DRIVE test labels not found under {drive}")
    rng = np.random.default_rng(0)
    for i in (1, 2, 3):
        gt = np.asarray(Image.open(drive / "1st_manual" / f"{i:02d}_manual1.gif")) > 0
        fov = np.asarray(Image.open(drive / "mask" / f"{i:02d}_test_mask.gif")) > 0
        other = np.asarray(Image.open(drive / "1st_manual" / f"{i + 3:02d}_manual1.gif")) > 0
        prob = np.clip(0.35 * ndimage.binary_dilation(gt, iterations=i % 2) + 0.2 * other
                       + 0.55 * rng.random(gt.shape), 0, 1).astype(np.float32)
        _assert_same(prob, gt, 0.5, fov)
        _assert_same(prob, gt, 0.5, fov, width_px=5.0)

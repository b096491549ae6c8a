"""Metrics against hand-computed values on tiny arrays (reference §9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from retinaseg.evaluation.metrics import (
    METRIC_KEYS,
    _grid_counts,
    average_precision,
    betti_errors,
    betti_errors_patches,
    betti_numbers,
    centerline_length,
    choose_threshold,
    cldice,
    component_count,
    confusion_counts,
    hd95,
    image_metrics,
    pooled_metrics,
    pr_curve,
    roc_auc,
    roc_curve,
    summarise,
    threshold_metrics,
)

nan = math.nan

GT = np.array([[1, 1, 0, 0],
               [1, 1, 0, 0],
               [0, 0, 0, 0],
               [0, 0, 0, 0]], bool)
PRED = np.array([[1, 0, 0, 0],
                 [1, 1, 1, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 1]], bool)


def assert_metrics(got: dict, want: dict) -> None:
    for k, v in want.items():
        if math.isnan(v):
            assert math.isnan(got[k]), (k, got[k])
        else:
            assert got[k] == pytest.approx(v), (k, got[k], v)


# ----------------------------------------------------------------------------- confusion


def test_confusion_counts_4x4():
    assert confusion_counts(PRED, GT) == {"tp": 3, "fp": 2, "fn": 1, "tn": 10}


def test_threshold_metrics_4x4():
    m = threshold_metrics(confusion_counts(PRED, GT))
    assert_metrics(m, {"dice": 6 / 9, "iou": 3 / 6, "acc": 13 / 16, "sen": 3 / 4,
                       "spe": 10 / 12, "bacc": (3 / 4 + 10 / 12) / 2, "precision": 3 / 5})


def test_fov_excludes_errors():
    fov = np.ones((4, 4), bool)
    fov[3, 3] = False  # an FP
    fov[0, 1] = False  # the FN
    c = confusion_counts(PRED, GT, fov)
    assert c == {"tp": 3, "fp": 1, "fn": 0, "tn": 10}
    m = threshold_metrics(c)
    assert_metrics(m, {"dice": 6 / 7, "iou": 3 / 4, "acc": 13 / 14, "sen": 1.0,
                       "spe": 10 / 11, "precision": 3 / 4})


def test_empty_prediction():
    m = threshold_metrics(confusion_counts(np.zeros_like(GT), GT))
    assert_metrics(m, {"dice": 0.0, "iou": 0.0, "acc": 12 / 16, "sen": 0.0, "spe": 1.0,
                       "bacc": 0.5, "precision": nan})


def test_empty_gt():
    m = threshold_metrics(confusion_counts(PRED, np.zeros_like(GT)))
    assert_metrics(m, {"dice": 0.0, "iou": 0.0, "acc": 11 / 16, "sen": nan, "spe": 11 / 16,
                       "bacc": nan, "precision": 0.0})


def test_both_empty():
    z = np.zeros_like(GT)
    m = threshold_metrics(confusion_counts(z, z))
    assert_metrics(m, {"dice": 1.0, "iou": 1.0, "acc": 1.0, "sen": nan, "spe": 1.0,
                       "bacc": nan, "precision": nan})


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        confusion_counts(PRED, GT[:3])


masks = arrays(bool, st.tuples(st.integers(1, 6), st.integers(1, 6)))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_dice_iou_properties(data):
    p = data.draw(masks)
    g = data.draw(arrays(bool, p.shape))
    d = threshold_metrics(confusion_counts(p, g))
    d_rev = threshold_metrics(confusion_counts(g, p))
    assert d["dice"] == pytest.approx(d_rev["dice"])
    assert 0.0 <= d["dice"] <= 1.0
    assert d["iou"] <= d["dice"] + 1e-12
    assert d["iou"] == pytest.approx(d["dice"] / (2.0 - d["dice"]))


# ----------------------------------------------------------------------------- AUC / AP


def test_auc_known():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == 0.75


def test_auc_ties_count_half():
    # pairs: (0.5 vs 0.5) tie = 1/2, (0.5 vs 0.2) = 1, 0.9 beats both = 2 -> 3.5 / 4
    prob, gt = np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1], bool)
    assert roc_auc(prob, gt) == pytest.approx(0.875)
    assert roc_auc(np.full(4, 0.5), gt) == pytest.approx(0.5)


def test_auc_fov_and_one_class():
    prob, gt = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)
    assert roc_auc(prob, gt, fov=np.array([1, 0, 1, 1], bool)) == 1.0
    assert math.isnan(roc_auc(prob, np.zeros(4, bool)))
    assert math.isnan(roc_auc(prob, np.ones(4, bool)))


def test_ap_known():
    # desc: 0.8(+) P=1 R=.5 ; 0.4(-) ; 0.35(+) P=2/3 R=1  -> .5*1 + .5*2/3
    prob, gt = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)
    assert average_precision(prob, gt) == pytest.approx(5 / 6)


def test_ap_ties_grouped():
    # 0.9: P=1 R=.5 ; 0.5 (one +, one -, tied): P=2/3 R=1
    prob, gt = np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1], bool)
    assert average_precision(prob, gt) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(np.full(4, 0.5), gt) == pytest.approx(0.5)
    assert math.isnan(average_precision(prob, np.zeros(4, bool)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=2, max_size=12))
def test_auc_ap_match_brute_force(rows):
    prob = np.array([r[0] / 4 for r in rows])
    gt = np.array([r[1] for r in rows], bool)
    pos, neg = prob[gt], prob[~gt]
    if pos.size and neg.size:
        pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        assert roc_auc(prob, gt) == pytest.approx(pairs.mean())
    if pos.size:
        ap, r_prev = 0.0, 0.0
        for t in sorted(set(prob), reverse=True):
            sel = prob >= t
            r = (sel & gt).sum() / gt.sum()
            ap += (r - r_prev) * (sel & gt).sum() / sel.sum()
            r_prev = r
        assert average_precision(prob, gt) == pytest.approx(ap)


def test_roc_and_pr_curves():
    prob, gt = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)
    fpr, tpr, thr = roc_curve(prob, gt)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)
    prec, rec, _ = pr_curve(prob, gt)
    np.testing.assert_allclose(prec, [1, 1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(rec, [0, 0.5, 0.5, 1, 1])
    fpr3, tpr3, _ = roc_curve(prob, gt, max_points=3)
    assert fpr3.size == 3 and (fpr3[0], tpr3[0], fpr3[-1], tpr3[-1]) == (0, 0, 1, 1)


# ----------------------------------------------------------------------------- topology


def ring(size: int = 7) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[1:-1, 1:-1] = True
    m[2:-2, 2:-2] = False
    return m


def two_blobs() -> np.ndarray:
    m = np.zeros((7, 7), bool)
    m[1:3, 1:3] = True
    m[4:6, 4:6] = True
    return m


def test_betti_2d():
    assert betti_numbers(ring()) == (1, 1)
    assert betti_numbers(two_blobs()) == (2, 0)
    assert betti_numbers(np.zeros((5, 5), bool)) == (0, 0)
    # diamond of 4 diagonal pixels: one 8-connected component enclosing a 4-connected hole
    diamond = np.zeros((3, 3), bool)
    diamond[[0, 1, 1, 2], [1, 0, 2, 1]] = True
    assert betti_numbers(diamond) == (1, 1)
    # a ring touching the image border still has its hole
    assert betti_numbers(np.pad(np.ones((1, 1), bool), 1, constant_values=True)
                         & ~np.pad(np.ones((1, 1), bool), 1)) == (1, 1)


def test_betti_3d():
    cube = np.zeros((7, 7, 7), bool)
    cube[1:6, 1:6, 1:6] = True
    cube[2:5, 2:5, 2:5] = False
    assert betti_numbers(cube) == (1, 0, 1)
    torus = np.zeros((9, 9, 5), bool)
    torus[1:8, 1:8, 1:4] = True
    torus[3:6, 3:6, :] = False
    assert betti_numbers(torus, ndim=3) == (1, 1, 0)
    with pytest.raises(ValueError, match="ndim"):
        betti_numbers(cube, ndim=2)


def test_betti_errors():
    assert betti_errors(two_blobs(), ring()) == {"betti0_error": 1.0, "betti1_error": 1.0}
    assert betti_errors(ring(), ring()) == {"betti0_error": 0.0, "betti1_error": 0.0}


def test_betti_errors_patches():
    assert betti_errors_patches(ring(), ring(), patch=4, n=5) == {
        "betti0_error": 0.0, "betti1_error": 0.0}
    # patch larger than the image: every window is the whole image
    assert betti_errors_patches(two_blobs(), ring(), patch=64, n=3) == {
        "betti0_error": 1.0, "betti1_error": 1.0}
    rng = np.random.default_rng(1)
    a, b = rng.random((40, 40)) > 0.5, rng.random((40, 40)) > 0.5
    assert betti_errors_patches(a, b, 16, 10, seed=3) == betti_errors_patches(a, b, 16, 10, 3)


def test_component_count():
    assert component_count(two_blobs()) == 2
    assert component_count(np.eye(4, dtype=bool)) == 1  # diagonal steps connect (8-conn)


def test_cldice():
    line = np.zeros((5, 10), bool)
    line[2, 1:9] = True  # 8 px, its own skeleton
    half = np.zeros_like(line)
    half[2, 1:5] = True  # 4 px
    # a = |P ∩ skel(G)| / |skel(G)| = 4/8, b = |G ∩ skel(P)| / |skel(P)| = 4/4
    assert cldice(half, line) == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert cldice(line, line) == 1.0
    assert cldice(ring(), ring()) == 1.0
    z = np.zeros_like(line)
    assert cldice(z, z) == 1.0
    assert cldice(z, line) == 0.0
    assert cldice(line, z) == 0.0


def test_centerline_length():
    line = np.zeros((5, 14), bool)
    line[2, 2:12] = True
    assert centerline_length(line) == pytest.approx(9.0)
    assert centerline_length(line.T, spacing=0.5) == pytest.approx(4.5)
    assert centerline_length(line, spacing=(3.0, 2.0)) == pytest.approx(18.0)
    assert centerline_length(np.eye(5, dtype=bool)) == pytest.approx(4 * math.sqrt(2))
    vol = np.zeros((6, 3, 3), bool)
    vol[1:5, 1, 1] = True
    assert centerline_length(vol) == pytest.approx(3.0)
    assert centerline_length(np.zeros((4, 4), bool)) == 0.0


# ----------------------------------------------------------------------------- HD95


def test_hd95_single_pixels():
    a, b = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    a[1, 1], b[1, 4] = True, True
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(1.0, 2.0)) == pytest.approx(6.0)
    assert hd95(a, a) == 0.0
    assert math.isnan(hd95(a, np.zeros_like(a)))
    assert math.isnan(hd95(np.zeros_like(a), b))


def test_hd95_pools_both_directions_like_medpy():
    g, p = np.zeros((3, 8), bool), np.zeros((3, 8), bool)
    g[0, 0] = True
    p[0, 0] = p[0, 5] = True
    # d(P→G) = [0, 5], d(G→P) = [0]; percentile 95 of [0, 0, 5] = 0.9·5 (linear)
    assert hd95(p, g) == pytest.approx(4.5)
    assert hd95(g, p) == pytest.approx(4.5)


# ----------------------------------------------------------------------------- image / pooled


def _line_case() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((8, 8), bool)
    gt[2, 1:6] = True  # 5-px line
    prob = np.full((8, 8), 0.1)
    prob[gt] = 0.9
    prob[6, 6] = 0.9  # one isolated false positive
    return prob, gt


def test_image_metrics_known():
    prob, gt = _line_case()
    m = image_metrics(prob, gt, 0.5)
    assert tuple(m) == METRIC_KEYS
    assert_metrics(m, {
        "dice": 10 / 11, "iou": 5 / 6, "acc": 63 / 64, "sen": 1.0, "spe": 58 / 59,
        "bacc": (1 + 58 / 59) / 2, "precision": 5 / 6,
        "auc": (5 * 58 + 5 * 1 * 0.5) / (5 * 59), "ap": 5 / 6,
        # a = 5/5, b = 5/6 -> 2ab/(a+b) = 10/11
        "cldice": 10 / 11, "betti0_error": 1.0, "betti1_error": 0.0,
        # pooled distances: ten zeros and sqrt(17); percentile 95 at position 9.5
        "hd95": 0.5 * math.sqrt(17),
    })


def test_image_metrics_fov_removes_error():
    prob, gt = _line_case()
    fov = np.ones_like(gt)
    fov[6, 6] = False
    m = image_metrics(prob, gt, 0.5, fov=fov)
    assert_metrics(m, {k: 1.0 for k in METRIC_KEYS[:11]} | {
        "betti0_error": 0.0, "betti1_error": 0.0, "hd95": 0.0})


def test_image_metrics_empty_prediction():
    prob, gt = _line_case()
    m = image_metrics(np.zeros_like(prob), gt, 0.5)
    assert m["dice"] == 0.0 and m["cldice"] == 0.0 and m["sen"] == 0.0
    assert math.isnan(m["precision"]) and math.isnan(m["hd95"])
    assert m["betti0_error"] == 1.0


def _pool_case() -> tuple[list, list]:
    gt_a, gt_b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    gt_a[0, 0] = True
    gt_b[0, 0:3] = True
    prob_a, prob_b = np.full((4, 4), 0.1), np.full((4, 4), 0.1)
    prob_a[0, 0] = 0.9
    prob_b[0, 0] = 0.9  # finds 1 of 3 vessel pixels
    return [prob_a, prob_b], [gt_a, gt_b]


def test_pooled_differs_from_mean_of_images():
    probs, gts = _pool_case()
    per = [image_metrics(p, g, 0.5) for p, g in zip(probs, gts, strict=True)]
    assert [r["dice"] for r in per] == pytest.approx([1.0, 0.5])
    mean, _ = summarise(per)
    assert mean["dice"] == pytest.approx(0.75)
    pooled = pooled_metrics(probs, gts, 0.5)
    assert tuple(pooled) == METRIC_KEYS
    assert pooled["dice"] == pytest.approx(4 / 6)  # tp 2, fn 2
    assert pooled["sen"] == pytest.approx(0.5)
    # positives 0.9,0.9,0.1,0.1 vs 28 negatives at 0.1
    assert pooled["auc"] == pytest.approx((2 * 28 + 2 * 28 * 0.5) / (4 * 28))
    assert pooled["ap"] == pytest.approx(0.5 * 1 + 0.5 * 4 / 32)
    # clDice: a = (1+1)/(1+3), b = (1+1)/(1+1); per image it is 1.0 and 0.5
    assert pooled["cldice"] == pytest.approx(2 / 3)
    assert [r["cldice"] for r in per] == pytest.approx([1.0, 0.5])
    assert all(math.isnan(pooled[k]) for k in ("betti0_error", "betti1_error", "hd95"))


def test_pooled_with_fovs_and_length_check():
    probs, gts = _pool_case()
    fovs = [np.ones((4, 4), bool), np.ones((4, 4), bool)]
    fovs[1][0, 1:3] = False  # hide the two missed vessel pixels
    assert pooled_metrics(probs, gts, 0.5, fovs)["dice"] == 1.0
    with pytest.raises(ValueError):
        pooled_metrics(probs, gts[:1], 0.5)


# ----------------------------------------------------------------------------- threshold choice


def test_choose_threshold_unique_optimum():
    prob = np.array([0.5, 0.7, 0.9, 0.1, 0.3, 0.45, 0.55])
    gt = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    grid = [0.2, 0.4, 0.6, 0.8]  # dice 6/9, 6/8, 4/5, 2/4
    assert choose_threshold([prob], [gt], grid=grid) == pytest.approx(0.6)
    assert choose_threshold([prob], [gt], metric="acc", grid=grid) == pytest.approx(0.6)
    # sensitivity ties at 0.2 and 0.4 -> the median of the tied thresholds
    assert choose_threshold([prob], [gt], metric="sen", grid=grid) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="metric"):
        choose_threshold([prob], [gt], metric="auc")


def test_choose_threshold_separated_classes_default_grid():
    gt = np.zeros((10, 10), bool)
    gt[3:6, :] = True
    prob = np.where(gt, 0.75, 0.25)
    t = choose_threshold([prob, prob], [gt, gt])
    assert abs(t - 0.5) <= 0.011
    assert image_metrics(prob, gt, t)["dice"] == 1.0


def test_choose_threshold_respects_fov():
    prob = np.array([[0.9, 0.7, 0.6]])
    gt = np.array([[1, 0, 1]], bool)
    grid = [0.5, 0.8]
    # no FOV: t=0.5 -> dice 4/5, t=0.8 -> 2/3
    assert choose_threshold([prob], [gt], grid=grid) == pytest.approx(0.5)
    # FOV hides the 0.6 positive: t=0.5 -> 2/3, t=0.8 -> 1
    fov = np.array([[1, 1, 0]], bool)
    assert choose_threshold([prob], [gt], [fov], grid=grid) == pytest.approx(0.8)


def test_grid_counts_exact():
    rng = np.random.default_rng(0)
    probs = [rng.random((16, 16)).round(2) for _ in range(2)]
    gts = [rng.random((16, 16)) > 0.6 for _ in range(2)]
    grid = np.linspace(0.05, 0.95, 19)
    for t, counts in zip(grid, _grid_counts(probs, gts, None, grid), strict=True):
        brute = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        for p, g in zip(probs, gts, strict=True):
            for k, v in confusion_counts(p > t, g).items():
                brute[k] += v
        assert counts == brute


# ----------------------------------------------------------------------------- summarise


def test_summarise_nan_and_population_std():
    rows = [{"id": "a", "dice": 1.0, "hd95": nan, "x": nan},
            {"id": "b", "dice": 0.5, "hd95": 2.0, "x": nan}]
    mean, std = summarise(rows)
    assert "id" not in mean
    assert mean["dice"] == pytest.approx(0.75) and std["dice"] == pytest.approx(0.25)
    assert mean["hd95"] == 2.0 and std["hd95"] == 0.0
    assert math.isnan(mean["x"]) and math.isnan(std["x"])
    assert summarise([]) == ({}, {})


def test_topology_metrics_known_values() -> None:
    from retinaseg.evaluation.metrics import topology_metrics

    gt = np.zeros((32, 32), bool)
    gt[5, 2:12] = True  # a 10-px line → length 9
    pred = gt.copy()
    pred[20:23, 20:23] = True  # plus a separate blob
    t = topology_metrics(pred, gt, patch=32, n=3)
    assert t["components_gt"] == 1 and t["components_pred"] == 2
    assert t["centerline_length_gt"] == pytest.approx(9.0)
    assert t["betti0_error_patch"] == pytest.approx(1.0)  # the whole image in every window
    assert t["betti1_error_patch"] == 0.0
    fov = np.ones_like(gt)
    fov[15:, 15:] = False  # hides the blob
    assert topology_metrics(pred, gt, fov, patch=32, n=3)["components_pred"] == 1


def test_choose_threshold_groups_count_equally():
    """A big group prefers 0.6, a small one 0.3: pooled picks 0.6, group-balanced picks 0.3.

    A (200 px): positives 0.7, negatives 0.5 → Dice 0.667 at 0.3, 1.0 at 0.6.
    B (20 px): positives 0.4, negatives 0.1 → Dice 1.0 at 0.3, 0.0 at 0.6.
    Pooled: 0.6875 at 0.3, 0.952 at 0.6. Balanced: 0.833 at 0.3, 0.5 at 0.6.
    """
    a_p = np.array([0.7] * 100 + [0.5] * 100, np.float32)
    a_g = np.array([1] * 100 + [0] * 100, bool)
    b_p = np.array([0.4] * 10 + [0.1] * 10, np.float32)
    b_g = np.array([1] * 10 + [0] * 10, bool)
    probs, gts = [a_p[None], b_p[None]], [a_g[None], b_g[None]]
    assert choose_threshold(probs, gts, grid=[0.3, 0.6]) == pytest.approx(0.6)
    assert choose_threshold(probs, gts, grid=[0.3, 0.6], groups=["a", "b"]) == pytest.approx(0.3)
    assert choose_threshold(probs, gts, grid=[0.3, 0.6], groups=["a", "a"]) == pytest.approx(0.6)


def test_centerline_missed_length_known_answers():
    from retinaseg.evaluation.metrics import centerline_missed_length

    g = np.zeros((20, 20), bool)
    g[9:12, 3:13] = True  # a 3-px thick bar; its centerline runs along row 10, 6.0 px long
    assert centerline_length(g) == pytest.approx(6.0)
    assert centerline_missed_length(g, g) == 0.0  # nothing missed
    assert centerline_missed_length(np.zeros_like(g), g) == pytest.approx(6.0)  # all missed
    cut = g.copy()
    cut[:, 7:10] = False  # a 3-px gap: two steps inside it, two half steps at its ends
    assert centerline_missed_length(cut, g) == pytest.approx(3.0)
    assert centerline_missed_length(g, g, spacing=0.5) == 0.0
    assert centerline_missed_length(cut, g, spacing=0.5) == pytest.approx(1.5)
    one = g.copy()
    one[:, 8] = False  # a 1-px break counts 1 (two half steps)
    assert centerline_missed_length(one, g) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        centerline_missed_length(g[:5], g)

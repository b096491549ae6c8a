"""Edge-placement metrics: boundary distance, error profile, relaxed F1 (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from retinaseg.evaluation.metrics import (
    boundary_distance,
    confusion_counts,
    error_profile,
    relaxed_f1,
    threshold_metrics,
    topology_metrics,
)


def _bar(shift: int = 0, width: int = 4) -> np.ndarray:
    m = np.zeros((20, 20), bool)
    m[:, 8 + shift: 8 + shift + width] = True
    return m


def test_boundary_distance_is_one_on_both_sides_of_the_edge():
    d = boundary_distance(_bar())
    assert d[5, 7] == 1 and d[5, 8] == 1  # background / vessel pixels next to the edge
    assert d[5, 9] == 2 and d[5, 5] == 3
    assert np.isinf(boundary_distance(np.zeros((3, 3), bool))).all()


def test_error_profile_separates_shift_from_extra_piece():
    gt = _bar()
    pred = _bar(shift=1)  # one-pixel shift: 20 extra + 20 missed pixels, all at the edge
    pred[0:3, 0:2] = True  # a far piece: 6 extra pixels at distance > 2
    prof = error_profile(pred, gt)
    assert prof == {"le1": 40, "le2": 0, "gt2": 6}


def test_relaxed_f1_forgives_a_one_pixel_shift_only():
    gt, pred = _bar(), _bar(shift=1)
    dice = threshold_metrics(confusion_counts(pred, gt))["dice"]
    assert dice == pytest.approx(0.75)  # 60 of 80 pixels agree
    assert relaxed_f1(pred, gt, tol=1) == pytest.approx(1.0)
    assert relaxed_f1(pred, gt, tol=0) == pytest.approx(dice)
    far = _bar(shift=3)  # 3 px off: one column of each within 1 px, precision = recall = 1/2
    assert relaxed_f1(far, gt, tol=1) == pytest.approx(0.5)


def test_relaxed_f1_empty_masks():
    empty = np.zeros((4, 4), bool)
    assert relaxed_f1(empty, empty) == 1.0
    assert relaxed_f1(_bar(), np.zeros((20, 20), bool)) == 0.0


def test_relaxed_f1_far_apart_is_zero():
    a = np.zeros((20, 20), bool)
    a[0, 0] = True
    b = np.zeros((20, 20), bool)
    b[19, 19] = True
    assert relaxed_f1(a, b) == 0.0


def test_evaluation_extras_include_edge_figures():
    gt, pred = _bar(), _bar(shift=1)
    out = topology_metrics(pred, gt)
    assert out["relaxed_f1_1px"] == pytest.approx(1.0)
    assert out["edge_error_share"] == pytest.approx(1.0)
    assert np.isnan(topology_metrics(gt, gt)["edge_error_share"])  # nothing wrong

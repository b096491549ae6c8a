"""The figures the ROSE paper reports for OCTA-Net (reference §9, §5): G-mean, Cohen's kappa,
FDR, and Dice of thick and thin vessels — known answers, then through ``evaluate``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retinaseg.evaluation.evaluate as evaluate_mod
from retinaseg.errors import ConfigError
from retinaseg.evaluation.metrics import (
    METRIC_KEYS,
    THICK_THIN_KEYS,
    choose_threshold,
    image_metrics,
    pooled_metrics,
    split_thick_thin,
    thick_thin_counts,
    thick_thin_dice,
    thick_thin_from_counts,
    threshold_metrics,
    vessel_width,
)

nan = math.nan


def _octanet_kappa(tp: int, fp: int, fn: int, tn: int) -> float:
    """OCTA-Net's ``calc_kappa`` loop over the 2×2 matrix (without its 1e-12 terms)."""
    matrix = np.array([[tp, fp], [fn, tn]], dtype=np.float64)
    n = matrix.sum()
    po = np.trace(matrix) / n
    pe = sum(matrix[i, :].sum() * matrix[:, i].sum() for i in range(2)) / (n * n)
    return float((po - pe) / (1 - pe))


# ----------------------------------------------------------------------------- G-mean, kappa, FDR


def test_gmean_kappa_fdr_known_answer():
    m = threshold_metrics({"tp": 30, "fp": 10, "fn": 20, "tn": 940})
    # Sen = 30/50, Spe = 940/950; p_o = 970/1000, p_e = (40·50 + 960·950)/1000² = 0.914
    assert m["gmean"] == pytest.approx(math.sqrt(0.6 * 940 / 950))
    assert m["gmean"] == pytest.approx(0.7705090593)
    assert m["kappa"] == pytest.approx((0.97 - 0.914) / (1 - 0.914))
    assert m["kappa"] == pytest.approx(28 / 43)  # 0.651163
    assert m["kappa"] == pytest.approx(_octanet_kappa(30, 10, 20, 940))
    assert m["fdr"] == pytest.approx(0.25)
    assert m["fdr"] == pytest.approx(1 - m["precision"])


def test_kappa_matches_octanet_on_other_counts():
    for c in ((5, 0, 0, 11), (3, 2, 1, 10), (0, 4, 6, 90), (7, 13, 2, 0)):
        m = threshold_metrics(dict(zip(("tp", "fp", "fn", "tn"), c, strict=True)))
        assert m["kappa"] == pytest.approx(_octanet_kappa(*c)), c


def test_gmean_kappa_fdr_empty_denominators():
    # nothing predicted: FDR undefined like precision; kappa 0 (no agreement beyond chance)
    m = threshold_metrics({"tp": 0, "fp": 0, "fn": 3, "tn": 13})
    assert math.isnan(m["fdr"]) and m["kappa"] == 0.0 and m["gmean"] == 0.0
    # prediction and GT both empty: p_e = 1, kappa undefined; Sen undefined, so G-mean too
    m = threshold_metrics({"tp": 0, "fp": 0, "fn": 0, "tn": 16})
    assert math.isnan(m["kappa"]) and math.isnan(m["gmean"]) and math.isnan(m["fdr"])
    # perfect on both classes
    m = threshold_metrics({"tp": 4, "fp": 0, "fn": 0, "tn": 12})
    assert m["kappa"] == 1.0 and m["gmean"] == 1.0 and m["fdr"] == 0.0
    # nothing at all
    m = threshold_metrics({"tp": 0, "fp": 0, "fn": 0, "tn": 0})
    assert math.isnan(m["kappa"])


def test_new_keys_in_image_and_pooled_metrics():
    assert METRIC_KEYS[-3:] == ("gmean", "kappa", "fdr")
    gt = np.zeros((8, 8), bool)
    gt[2, 1:6] = True
    prob = np.where(gt, 0.9, 0.1)
    prob[6, 6] = 0.9  # one false positive: tp 5, fp 1, fn 0, tn 58
    want = threshold_metrics({"tp": 5, "fp": 1, "fn": 0, "tn": 58})
    for m in (image_metrics(prob, gt, 0.5), pooled_metrics([prob], [gt], 0.5)):
        assert tuple(m) == METRIC_KEYS
        for k in ("gmean", "kappa", "fdr"):
            assert m[k] == pytest.approx(want[k])
    assert want["fdr"] == pytest.approx(1 / 6)


def test_choose_threshold_refuses_fdr_but_takes_kappa():
    prob = np.array([0.5, 0.7, 0.9, 0.1, 0.3, 0.45, 0.55])
    gt = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    assert choose_threshold([prob], [gt], metric="kappa", grid=[0.2, 0.4, 0.6, 0.8]) == 0.6
    with pytest.raises(ValueError, match="metric must be one of"):
        choose_threshold([prob], [gt], metric="fdr")


# ----------------------------------------------------------------------------- thick / thin


def bar_and_line() -> np.ndarray:
    """32×32: a 7-px-wide bar (rows 3-9, 196 px) and a 1-px line (row 16, 28 px)."""
    gt = np.zeros((32, 32), bool)
    gt[3:10, 2:30] = True
    gt[16, 2:30] = True
    return gt


BAR = bar_and_line() & (np.arange(32)[:, None] < 12)
LINE = bar_and_line() & ~BAR


def test_vessel_width_from_the_distance_transform():
    w = vessel_width(bar_and_line())
    assert w[6, 15] == 7.0 and w[3, 15] == 7.0  # centre and edge of the bar: 2·4 − 1
    assert set(np.unique(w[LINE])) == {1.0}
    assert (w[~bar_and_line()] == 0).all() and w[BAR].min() >= 3
    assert vessel_width(np.zeros((4, 4), bool)).sum() == 0


def test_split_by_width_and_nearest_vessel_zones():
    thick, thin, zone = split_thick_thin(bar_and_line())
    np.testing.assert_array_equal(thick, BAR)
    np.testing.assert_array_equal(thin, LINE)
    assert zone[12, 10] and not zone[13, 10]  # rows ≤ 12 are nearer the bar, ≥ 13 the line
    thick, thin, _ = split_thick_thin(bar_and_line(), width_px=8)  # 7 px is thin below 8
    assert not thick.any() and (thin == bar_and_line()).all()


def test_thick_thin_dice_known_answers():
    gt = bar_and_line()
    assert thick_thin_dice(gt, gt) == {"dice_thick": 1.0, "dice_thin": 1.0}
    assert thick_thin_dice(BAR, gt) == {"dice_thick": 1.0, "dice_thin": 0.0}  # line missed
    assert thick_thin_dice(LINE, gt) == {"dice_thick": 0.0, "dice_thin": 1.0}  # bar missed
    # 5 false positives just above the line count against thin only
    pred = gt.copy()
    pred[15, 5:10] = True
    d = thick_thin_dice(pred, gt)
    assert d["dice_thick"] == 1.0 and d["dice_thin"] == pytest.approx(56 / 61)
    # ... and 4 just below the bar against thick only
    pred = gt.copy()
    pred[10, 5:9] = True
    d = thick_thin_dice(pred, gt)
    assert d["dice_thick"] == pytest.approx(392 / 396) and d["dice_thin"] == 1.0
    # half the line found: thin tp 14, fn 14
    pred = BAR.copy()
    pred[16, 2:16] = True
    assert thick_thin_dice(pred, gt)["dice_thin"] == pytest.approx(28 / 42)


def test_thick_thin_counts_and_pooling():
    gt = bar_and_line()
    c = thick_thin_counts(BAR, gt)
    assert c["thick"]["tp"] == 196 and c["thick"]["fp"] == 0 and c["thick"]["fn"] == 0
    assert c["thin"] == {"tp": 0, "fp": 0, "fn": 28, "tn": c["thin"]["tn"]}
    assert c["thick"]["tn"] + c["thin"]["tn"] == 32 * 32 - 196 - 28
    pooled = {k: {m: c[k][m] + thick_thin_counts(gt, gt)[k][m] for m in c[k]} for k in c}
    assert thick_thin_from_counts(pooled) == pytest.approx({"dice_thick": 1.0,
                                                            "dice_thin": 56 / 84})


def test_absent_class_is_nan_and_fov_is_respected():
    d = thick_thin_dice(LINE, LINE)  # no thick vessel at all
    assert math.isnan(d["dice_thick"]) and d["dice_thin"] == 1.0
    d = thick_thin_dice(np.ones((32, 32), bool), np.zeros((32, 32), bool))
    assert math.isnan(d["dice_thick"]) and math.isnan(d["dice_thin"])
    fov = np.ones((32, 32), bool)
    fov[13:, :] = False  # hides the line and anything near it
    pred = BAR.copy()
    pred[20, :] = True  # false positives outside the FOV
    d = thick_thin_dice(pred, bar_and_line(), fov=fov)
    assert d["dice_thick"] == 1.0 and math.isnan(d["dice_thin"])
    d = thick_thin_dice(BAR, bar_and_line(), width_px=9)  # everything is thin
    assert math.isnan(d["dice_thick"]) and d["dice_thin"] == pytest.approx(392 / 420)


def test_explicit_thick_thin_labels_replace_the_width_split():
    gt = bar_and_line()
    # labels that disagree with the widths on purpose: the line labelled thick
    d = thick_thin_dice(BAR, gt, thick_gt=LINE, thin_gt=BAR)
    assert d == {"dice_thick": 0.0, "dice_thin": 1.0}
    # a pixel in both labels counts as thick
    d = thick_thin_dice(gt, gt, thick_gt=gt, thin_gt=LINE)
    assert d["dice_thick"] == 1.0 and math.isnan(d["dice_thin"])
    with pytest.raises(ValueError, match="both thick_gt and thin_gt"):
        thick_thin_dice(gt, gt, thick_gt=BAR)
    with pytest.raises(ValueError, match="same shape"):
        thick_thin_dice(gt, gt, thick_gt=BAR[:5], thin_gt=LINE[:5])


# ----------------------------------------------------------------------------- through evaluate


class _FakeSegmenter:
    """Stands in for :class:`Segmenter`: returns the probability map stored for each image."""

    probs: dict[str, np.ndarray] = {}
    threshold, head_name = 0.5, ""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, image: np.ndarray, source: str = "") -> np.ndarray:
        return self.probs[Path(source.strip("'")).stem]


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8) * (255 if arr.dtype == bool else 1)).save(path)


def _rose1_svc(root: Path, own_labels: bool) -> Path:
    """ROSE-1 SVC test split with two images whose GT is the bar and the line."""
    for name in ("31", "32"):
        _png(root / "SVC" / "test" / "img" / f"{name}.tif", np.full((32, 32), 90, np.uint8))
        _png(root / "SVC" / "test" / "gt" / f"{name}.tif", bar_and_line())
        if own_labels:
            _png(root / "SVC" / "test" / "thick_gt" / f"{name}.tif", BAR)
            _png(root / "SVC" / "test" / "thin_gt" / f"{name}.tif", LINE)
    return root


def _run(monkeypatch, root: Path, out: Path, **kw) -> dict:
    monkeypatch.setattr(evaluate_mod, "Segmenter", _FakeSegmenter)
    _FakeSegmenter.probs = {"31": np.where(bar_and_line(), 0.9, 0.1),  # perfect
                            "32": np.where(BAR, 0.9, 0.1)}  # misses the line
    return evaluate_mod.evaluate("fake.safetensors", "rose1", str(root), "test", out,
                                 threshold=0.5, save_maps=False, **kw)


@pytest.mark.parametrize("own_labels", [True, False])
def test_evaluate_reports_rose_metrics(monkeypatch, tmp_path: Path, own_labels: bool) -> None:
    root = _rose1_svc(tmp_path / "rose", own_labels)
    s = _run(monkeypatch, root, tmp_path / "ev")
    for block in ("per_image_mean", "pooled"):
        assert set(s[block]) >= {*METRIC_KEYS, *THICK_THIN_KEYS}
    assert s["per_image_mean"]["dice_thick"] == 1.0
    assert s["per_image_mean"]["dice_thin"] == pytest.approx(0.5)  # 1 and 0
    assert s["pooled"]["dice_thin"] == pytest.approx(56 / 84)  # tp 28, fn 28
    assert s["pooled"]["dice_thick"] == 1.0
    # image 32: tp 196, fp 0, fn 28, tn 800
    kappa_32 = threshold_metrics({"tp": 196, "fp": 0, "fn": 28, "tn": 800})["kappa"]
    assert s["per_image_mean"]["kappa"] == pytest.approx((1 + kappa_32) / 2)
    assert s["pooled"]["fdr"] == 0.0
    assert s["thick_width_px"] == 3.0
    want = "dataset thick_gt / thin_gt" if own_labels else "local width of 3 px"
    assert want in s["thick_thin_split"]
    rows = list(csv.DictReader((tmp_path / "ev" / "per_image.csv").open(encoding="utf-8")))
    assert list(rows[0])[:19] == ["id", *METRIC_KEYS, *THICK_THIN_KEYS]
    assert [float(r["dice_thin"]) for r in rows] == [1.0, 0.0]
    on_disk = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert on_disk["pooled"]["dice_thin"] == pytest.approx(56 / 84)


def test_evaluate_thick_width_option(monkeypatch, tmp_path: Path) -> None:
    root = _rose1_svc(tmp_path / "rose", own_labels=False)
    s = _run(monkeypatch, root, tmp_path / "ev", options={"thick_width_px": "9"})
    assert s["thick_width_px"] == 9.0 and "thick_width_px" not in s["options"]
    assert math.isnan(s["per_image_mean"]["dice_thick"])  # a 7-px bar is thin below 9 px
    assert math.isnan(s["pooled"]["dice_thick"])
    s = _run(monkeypatch, root, tmp_path / "ev2", thick_width_px=2)
    assert s["thick_width_px"] == 2.0
    with pytest.raises(ConfigError, match="thick_width_px must be a positive number"):
        _run(monkeypatch, root, tmp_path / "ev3", options={"thick_width_px": "wide"})

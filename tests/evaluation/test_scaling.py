"""Evaluation that scales with the dataset: histogram ROC/PR against the exact sort, HD95 and
edge figures from surface points / dilations against the distance-transform definitions, and
``evaluate`` scoring each image as it is predicted."""

from __future__ import annotations

import csv
import json
import math
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.stats import rankdata

import retinaseg.evaluation.evaluate as evaluate_mod
from retinaseg.errors import ConfigError
from retinaseg.evaluation.metrics import (
    METRIC_KEYS,
    TOPOLOGY_KEYS,
    ScoreHistogram,
    average_precision,
    boundary_distance,
    error_profile,
    hd95,
    image_metrics,
    pooled_metrics,
    ranking_metrics,
    relaxed_f1,
    roc_auc,
    thick_thin_dice,
    topology_metrics,
)

RNG = np.random.default_rng(7)


def _scores(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.random(n) < 0.2
    return np.clip(0.3 * gt + 0.8 * rng.random(n), 0, 1).astype(np.float32), gt


def _auc_rankdata(p: np.ndarray, g: np.ndarray) -> float:
    """The previous definition: Mann–Whitney from average ranks."""
    r = rankdata(p.astype(np.float64))
    n_pos = int(g.sum())
    return (r[g].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (g.size - n_pos))


def _ap_argsort(p: np.ndarray, g: np.ndarray) -> float:
    """The previous definition: one stable argsort, distinct thresholds, step-wise sum."""
    order = np.argsort(-p.astype(np.float64), kind="mergesort")
    p, g = p[order], g[order]
    last = np.r_[np.flatnonzero(np.diff(p)), p.size - 1]
    tps = np.cumsum(g)[last].astype(float)
    fps = last + 1 - tps
    return float(np.sum(np.diff(np.r_[0.0, tps / tps[-1]]) * tps / (tps + fps)))


def test_ranking_metrics_equal_the_rank_definitions() -> None:
    p, g = _scores()
    p[:500] = 0.5  # many ties
    want_auc, want_ap = _auc_rankdata(p, g), _ap_argsort(p, g)
    assert roc_auc(p, g) == pytest.approx(want_auc, abs=1e-12)
    assert average_precision(p, g) == pytest.approx(want_ap, abs=1e-12)
    assert ranking_metrics(p, g) == pytest.approx({"auc": want_auc, "ap": want_ap}, abs=1e-12)


def test_ranking_known_answers() -> None:
    p = np.array([0.1, 0.4, 0.35, 0.8])
    g = np.array([False, False, True, True])
    assert roc_auc(p, g) == 0.75  # sklearn's example
    assert average_precision(p, g) == pytest.approx((1.0 + 2 / 3) / 2)
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5  # a tie counts 1/2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_auc_within_its_bound_and_1e3_of_exact(seed: int) -> None:
    p, g = _scores(seed=seed)
    hist = ScoreHistogram(4096)
    half = p.size // 2
    hist.add(p[:half], g[:half])  # two "images"
    hist.add(p[half:], g[half:])
    exact = roc_auc(p, g)
    assert abs(hist.auc() - exact) <= hist.auc_error_bound() + 1e-12
    assert abs(hist.auc() - exact) <= 1e-3 and hist.auc_error_bound() <= 1e-3
    assert abs(hist.average_precision() - average_precision(p, g)) <= 2e-3


def test_histogram_is_exact_when_no_bin_mixes_classes() -> None:
    p = np.array([0.05, 0.3, 0.3, 0.62, 0.85, 0.99])
    g = np.array([False, True, False, True, False, True])
    hist = ScoreHistogram(10)
    hist.add(p, g)
    assert hist.auc() == roc_auc(p, g)
    assert hist.average_precision() == pytest.approx(average_precision(p, g))
    fpr, tpr, thr = hist.roc_curve()
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1) and thr.size == 11
    assert hist.counts.sum() == p.size and hist.counts[1].sum() == 3


def test_histogram_respects_fov_and_missing_class() -> None:
    p, g = np.array([0.2, 0.9, 0.9]), np.array([False, True, False])
    hist = ScoreHistogram()
    hist.add(p, g, np.array([True, True, False]))
    assert hist.auc() == 1.0
    empty = ScoreHistogram()
    empty.add(p, np.zeros(3, bool))
    assert math.isnan(empty.auc()) and math.isnan(empty.average_precision())


# ------------------------------------------------------------------------------- HD95, edges


def _hd95_edt(p: np.ndarray, g: np.ndarray, spacing=None) -> float:
    """The previous definition: two image-sized distance transforms."""
    cross = ndimage.generate_binary_structure(p.ndim, 1)
    sp = p & ~ndimage.binary_erosion(p, cross)
    sg = g & ~ndimage.binary_erosion(g, cross)
    d = np.r_[ndimage.distance_transform_edt(~sg, sampling=spacing)[sp],
              ndimage.distance_transform_edt(~sp, sampling=spacing)[sg]]
    return float(np.percentile(d, 95))


def _disc(shape, centre, r) -> np.ndarray:
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r ** 2


def test_hd95_known_answer_parallel_lines() -> None:
    a, b = np.zeros((30, 50), bool), np.zeros((30, 50), bool)
    a[10], b[17] = True, True  # 1-px lines are their own surface; every distance is 7
    assert hd95(a, b) == 7.0
    assert hd95(a, b, spacing=(2.0, 1.0)) == 14.0


@pytest.mark.parametrize("r1, r2, offset", [(10, 10, 3), (12, 6, 0), (8, 5, 9)])
def test_hd95_two_discs_equals_distance_transform_definition(r1, r2, offset) -> None:
    a = _disc((64, 72), (32, 30), r1)
    b = _disc((64, 72), (32, 30 + offset), r2)
    assert hd95(a, b) == _hd95_edt(a, b)
    assert hd95(a, b, spacing=(0.5, 1.5)) == pytest.approx(_hd95_edt(a, b, (0.5, 1.5)),
                                                           abs=1e-12)
    if offset == 0:  # concentric: the outer ring is r1 - r2 from the inner one
        assert hd95(a, b) == pytest.approx(r1 - r2, abs=1.0)


def test_hd95_random_masks_touching_the_border_and_3d() -> None:
    for _ in range(5):
        a = ndimage.binary_opening(RNG.random((40, 50)) < 0.4)
        b = ndimage.binary_opening(RNG.random((40, 50)) < 0.4)
        assert hd95(a, b) == pytest.approx(_hd95_edt(a, b), abs=1e-12)
    a, b = RNG.random((8, 20, 20)) < 0.3, RNG.random((8, 20, 20)) < 0.3
    assert hd95(a, b) == pytest.approx(_hd95_edt(a, b), abs=1e-12)


def _profile_edt(p, g, bands):
    err = boundary_distance(g)[p ^ g]
    out, lo = {}, 0.0
    for b in bands:
        out[f"le{b:g}"] = int(((err > lo) & (err <= b)).sum())
        lo = b
    out[f"gt{lo:g}"] = int((err > lo).sum())
    return out


def _relaxed_edt(p, g, tol):
    near_g = ndimage.distance_transform_edt(~g)[p] <= tol
    near_p = ndimage.distance_transform_edt(~p)[g] <= tol
    prec, rec = near_g.mean(), near_p.mean()
    return 2 * prec * rec / (prec + rec)


@pytest.mark.parametrize("bands", [(1.0, 2.0), (0.5, 1.5, 3.0)])
def test_edge_figures_equal_distance_transform_definitions(bands) -> None:
    for _ in range(4):
        g = ndimage.binary_opening(RNG.random((40, 50)) < 0.45)
        p = g ^ (RNG.random(g.shape) < 0.1)
        assert error_profile(p, g, bands) == _profile_edt(p, g, bands)
        for tol in (0.0, 1.0, 1.5, 3.0):
            assert relaxed_f1(p, g, tol) == pytest.approx(_relaxed_edt(p, g, tol), abs=1e-12)
    full = np.ones((5, 5), bool)
    assert error_profile(np.zeros_like(full), full) == {"le1": 0, "le2": 0, "gt2": 25}


# ------------------------------------------------------------------------------- evaluate


def _folder(root: Path, n: int = 3) -> dict[str, np.ndarray]:
    """A folder dataset (images, labels, fov) and the probability map of each image."""
    probs = {}
    for i in range(n):
        gt = np.zeros((48, 64), bool)
        gt[10 + i:14 + i, 5:60] = True
        gt[5:45, 20 + 3 * i:21 + 3 * i] = True
        fov = _disc(gt.shape, (24, 32), 26)
        rng = np.random.default_rng(i)
        probs[f"im{i}"] = np.clip(0.45 * gt + 0.6 * rng.random(gt.shape), 0, 1).astype(
            np.float32)
        for sub, arr in (("images", rng.integers(0, 256, (*gt.shape, 3), dtype=np.uint8)),
                         ("labels", gt.astype(np.uint8) * 255),
                         ("fov", fov.astype(np.uint8) * 255)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"im{i}.png")
    return probs


class _FakeSeg:
    probs: dict[str, np.ndarray] = {}
    alive: list = []
    threshold, head_name = 0.5, ""
    alive_at_call: list[int] = []

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, image: np.ndarray, source: str = "") -> np.ndarray:
        out = self.probs[Path(source.strip("'")).stem].copy()
        type(self).alive_at_call.append(sum(r() is not None for r in self.alive))
        type(self).alive.append(weakref.ref(out))
        return out


def test_evaluate_streams_and_reports_the_same_figures(monkeypatch, tmp_path: Path) -> None:
    probs = _folder(tmp_path / "ds")
    monkeypatch.setattr(evaluate_mod, "Segmenter", _FakeSeg)
    _FakeSeg.probs, _FakeSeg.alive, _FakeSeg.alive_at_call = probs, [], []
    s = evaluate_mod.evaluate("fake", "folder", str(tmp_path / "ds"), "all", tmp_path / "ev",
                              options={"fov": "fov"}, threshold=0.5)
    assert _FakeSeg.alive_at_call == [0, 0, 0]  # no probability map outlives its image
    rows = list(csv.DictReader((tmp_path / "ev" / "per_image.csv").open(encoding="utf-8")))
    assert list(rows[0]) == ["id", *evaluate_mod.METRIC_KEYS, *TOPOLOGY_KEYS]
    labels, fovs = [], []
    for row in rows:
        gt = np.asarray(Image.open(tmp_path / "ds" / "labels" / f"{row['id']}.png")) > 0
        fov = np.asarray(Image.open(tmp_path / "ds" / "fov" / f"{row['id']}.png")) > 0
        labels.append(gt)
        fovs.append(fov)
        p = probs[row["id"]]
        want = {**image_metrics(p, gt, 0.5, fov), **thick_thin_dice(p > 0.5, gt, fov),
                **topology_metrics(p > 0.5, gt, fov)}
        for k, v in want.items():
            got = float(row[k])
            assert got == pytest.approx(v, abs=1e-12) or (math.isnan(got) and math.isnan(v))
    exact = pooled_metrics([probs[r["id"]] for r in rows], labels, 0.5, fovs)
    for k in METRIC_KEYS:
        if k in ("auc", "ap"):
            assert s["pooled"][k] == pytest.approx(exact[k], abs=2e-3)
        elif not math.isnan(exact[k]):
            assert s["pooled"][k] == exact[k]
    assert "4096-bin histogram" in s["pooled_auc_ap"]
    on_disk = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert set(on_disk) >= {"per_image_mean", "per_image_std", "pooled", "threshold",
                            "n_images", "thick_thin_split"} and on_disk["n_images"] == 3
    for name in ("confusion_matrix.png", "roc_pr.png", "maps/im2_error.png", "maps/im0_prob.png"):
        assert (tmp_path / "ev" / name).is_file()


def test_evaluate_fast_metrics_keep_confusion_and_auc_values(monkeypatch, tmp_path: Path) -> None:
    probs = _folder(tmp_path / "ds")
    monkeypatch.setattr(evaluate_mod, "Segmenter", _FakeSeg)
    _FakeSeg.probs, _FakeSeg.alive, _FakeSeg.alive_at_call = probs, [], []
    full = evaluate_mod.evaluate("fake", "folder", str(tmp_path / "ds"), "all",
                                 tmp_path / "full", options={"fov": "fov"}, threshold=0.5)
    fast = evaluate_mod.evaluate("fake", "folder", str(tmp_path / "ds"), "all",
                                 tmp_path / "fast", options={"fov": "fov"}, threshold=0.5,
                                 metrics="fast")
    assert fast["metrics"] == "fast" and full["metrics"] == "full"
    skipped = {*evaluate_mod.SKELETON_KEYS, "dice_thick", "dice_thin"}
    for part in ("per_image_mean", "pooled"):
        for k in evaluate_mod.METRIC_KEYS:
            if k in skipped:
                assert math.isnan(fast[part][k])
                assert part == "pooled" or not math.isnan(full[part][k])
            else:
                assert fast[part][k] == full[part][k], (part, k)
    rows = list(csv.DictReader((tmp_path / "fast" / "per_image.csv").open(encoding="utf-8")))
    assert rows[0]["cldice"] == "nan" and rows[0]["components_gt"] == "nan"
    assert json.loads((tmp_path / "fast" / "summary.json").read_text())["pooled"]["hd95"] is None
    with pytest.raises(ConfigError, match="metrics must be one of full, fast"):
        evaluate_mod.evaluate("fake", "folder", str(tmp_path / "ds"), "all", tmp_path / "x",
                              metrics="quick")

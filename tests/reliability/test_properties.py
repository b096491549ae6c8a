"""Property-based tests (hypothesis) of the loaders and of the metrics' invariants.

Loaders: what is written as an image file is what is read back (values, shapes, ids, label
masks), whatever the names, sizes, bit depths and label encodings. Metrics: Dice is symmetric
and in [0, 1]; AUC and AP do not change under strictly increasing transforms of the
probability; an all-ones FOV equals no FOV; pixels outside the FOV do not matter; pooled
metrics of one image equal its per-image metrics.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import tifffile
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from retinaseg.data import build_dataset
from retinaseg.evaluation.metrics import (
    average_precision,
    confusion_counts,
    image_metrics,
    pooled_metrics,
    roc_auc,
    threshold_metrics,
)
from retinaseg.io import IMAGE_EXTENSIONS, list_images, natural_key, read_image, read_mask

SETTINGS = settings(max_examples=50, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
FEW = settings(SETTINGS, max_examples=25)

sizes = st.tuples(st.integers(1, 12), st.integers(1, 12))
STEM_CHARS = "abcXYZ0129 _-éïñ"
stems = st.text(STEM_CHARS, min_size=1, max_size=6).filter(lambda s: s.strip() == s)


def _close(a: dict[str, float], b: dict[str, float], keys=None) -> None:
    """Equal dicts of floats, NaN equal to NaN."""
    for k in keys or a:
        x, y = a[k], b[k]
        assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, abs_tol=1e-12), (k, x, y)


# --------------------------------------------------------------------------------------------
# loaders


@st.composite
def images(draw) -> np.ndarray:
    """A small grey/RGB uint8 or grey uint16 image."""
    h, w = draw(sizes)
    kind = draw(st.sampled_from(["grey8", "rgb8", "grey16"]))
    shape = (h, w, 3) if kind == "rgb8" else (h, w)
    dtype = np.uint16 if kind == "grey16" else np.uint8
    return draw(arrays(dtype, shape))


@FEW
@given(data=st.data())
def test_folder_dataset_round_trip(data) -> None:
    """Ids are the stems in natural order; image and label come back as written."""
    names = data.draw(st.lists(stems, min_size=1, max_size=3, unique_by=str.lower))
    with tempfile.TemporaryDirectory() as tmp:
        root, written = Path(tmp), {}
        for name in names:
            img = data.draw(images())
            label = data.draw(arrays(bool, img.shape[:2]))
            value = data.draw(st.sampled_from([1, 128, 255]))
            (root / "images").mkdir(exist_ok=True)
            (root / "labels").mkdir(exist_ok=True)
            Image.fromarray(img).save(root / "images" / f"{name}.png")
            Image.fromarray(label.astype(np.uint8) * value).save(root / "labels" / f"{name}.png")
            written[name] = (img, label)
        ds = build_dataset("folder", root, "all")
        assert [s.id for s in ds.samples] == sorted(names, key=lambda n: natural_key(f"{n}.png"))
        for i in range(len(ds)):
            item = ds[i]
            img, label = written[item["id"]]
            scale = 65535 if img.dtype == np.uint16 else 255
            np.testing.assert_array_equal(item["image"], img.astype(np.float32) / scale)
            np.testing.assert_array_equal(item["label"], label)
            assert item["fov"] is None


@SETTINGS
@given(data=st.data())
def test_read_mask_of_two_valued_labels(data) -> None:
    """{0, v} labels in any bit depth and format: foreground is exactly the v pixels."""
    fmt = data.draw(st.sampled_from([".png", ".tif", ".bmp", ".gif", ".pgm"]))
    deep = fmt in (".png", ".tif", ".pgm") and data.draw(st.booleans())
    v = data.draw(st.integers(1, 65535 if deep else 255))
    fg = data.draw(arrays(bool, data.draw(sizes)))
    arr = fg.astype(np.uint16 if deep else np.uint8) * (np.uint16(v) if deep else np.uint8(v))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"label{fmt}"
        if fmt == ".tif":
            tifffile.imwrite(path, arr)
        else:
            Image.fromarray(arr).save(path)
        np.testing.assert_array_equal(read_mask(path), fg)


@SETTINGS
@given(arr=arrays(np.uint8, sizes, elements=st.sampled_from([0, 40, 100, 130, 255])))
def test_read_mask_of_many_valued_labels_is_above_half_the_maximum(arr) -> None:
    assume(not np.any(2 * arr.astype(int) == int(arr.max())))  # no pixel exactly at half
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(arr).save(Path(tmp) / "m.png")
        expected = arr > arr.max() / 2 if arr.max() else np.zeros(arr.shape, bool)
        np.testing.assert_array_equal(read_mask(Path(tmp) / "m.png"), expected)


@SETTINGS
@given(img=images(), fmt=st.sampled_from([".png", ".tif"]))
def test_read_image_round_trip(img, fmt) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{fmt}"
        if fmt == ".tif":
            tifffile.imwrite(path, img)
        else:
            Image.fromarray(img).save(path)
        out = read_image(path)
    scale = 65535 if img.dtype == np.uint16 else 255
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_array_equal(out, img.astype(np.float32) / scale)


@SETTINGS
@given(arr=arrays(np.float32, sizes, elements=st.floats(0, 1, width=32)))
def test_float_tiff_in_unit_range_is_kept(arr) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tifffile.imwrite(Path(tmp) / "f.tif", arr)
        np.testing.assert_array_equal(read_image(Path(tmp) / "f.tif"), arr)


@SETTINGS
@given(names=st.lists(st.tuples(stems, st.sampled_from(
    [".png", ".PNG", ".tif", ".txt", ".npy", "", ".jpeg", ".gz"])), max_size=8),
       hidden=st.booleans())
def test_list_images_keeps_exactly_the_image_files_in_natural_order(names, hidden) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {f"{stem}{suffix}" for stem, suffix in names}
        for name in files:
            (folder / name).write_bytes(b"x")
        if hidden:
            (folder / ".hidden.png").write_bytes(b"x")
            (folder / "sub.png").mkdir()
        got = [p.name for p in list_images(folder)]
    expected = [n for n in files if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    assert got == sorted(expected, key=natural_key)


# --------------------------------------------------------------------------------------------
# metrics

shapes = st.tuples(st.integers(1, 10), st.integers(1, 10))


@st.composite
def cases(draw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prob in [0, 1] with ties, gt bool, fov bool) of one random shape."""
    shape = draw(shapes)
    prob = draw(arrays(np.float64, shape, elements=st.integers(0, 20).map(lambda k: k / 20)))
    return prob, draw(arrays(bool, shape)), draw(arrays(bool, shape))


@SETTINGS
@given(case=cases())
def test_dice_is_symmetric_and_in_unit_interval(case) -> None:
    prob, gt, fov = case
    pred = prob > 0.5
    for f in (None, fov):
        a = threshold_metrics(confusion_counts(pred, gt, f))
        b = threshold_metrics(confusion_counts(gt, pred, f))
        assert a["dice"] == b["dice"] and a["iou"] == b["iou"]
        assert 0.0 <= a["dice"] <= 1.0 and 0.0 <= a["iou"] <= a["dice"]


MONOTONE = {
    "cube": lambda p: p**3,
    "sqrt": np.sqrt,
    "affine": lambda p: 0.2 + 0.5 * p,
    "exp": lambda p: np.expm1(3 * p) / np.expm1(3),
    "logit-ish": lambda p: np.log((p + 0.01) / (1.01 - p)),
}


@SETTINGS
@given(case=cases(), name=st.sampled_from(sorted(MONOTONE)))
def test_auc_and_ap_are_invariant_to_increasing_transforms(case, name) -> None:
    prob, gt, fov = case
    assume(gt.any() and not gt.all())
    q = MONOTONE[name](prob)
    assert math.isclose(roc_auc(prob, gt), roc_auc(q, gt), abs_tol=1e-12)
    assert math.isclose(average_precision(prob, gt), average_precision(q, gt), abs_tol=1e-12)
    auc_fov, auc_fov_q = roc_auc(prob, gt, fov), roc_auc(q, gt, fov)
    assert (math.isnan(auc_fov) and math.isnan(auc_fov_q)) or math.isclose(auc_fov, auc_fov_q)


def _image_metrics(*args) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return image_metrics(*args)


@FEW
@given(case=cases(), threshold=st.sampled_from([0.3, 0.5, 0.72]))
def test_all_ones_fov_equals_no_fov(case, threshold) -> None:
    prob, gt, _ = case
    _close(_image_metrics(prob, gt, threshold, np.ones(gt.shape, bool)),
           _image_metrics(prob, gt, threshold))


@FEW
@given(case=cases(), data=st.data())
def test_pixels_outside_the_fov_do_not_matter(case, data) -> None:
    prob, gt, fov = case
    prob2 = np.where(fov, prob, data.draw(arrays(np.float64, prob.shape,
                                                 elements=st.floats(0, 1))))
    gt2 = np.where(fov, gt, data.draw(arrays(bool, gt.shape)))
    _close(_image_metrics(prob, gt, 0.5, fov), _image_metrics(prob2, gt2, 0.5, fov))


@FEW
@given(case=cases(), threshold=st.sampled_from([0.25, 0.5, 0.9]), use_fov=st.booleans())
def test_pooled_equals_per_image_for_one_image(case, threshold, use_fov) -> None:
    prob, gt, fov = case
    f = fov if use_fov else None
    pooled = pooled_metrics([prob], [gt], threshold, None if f is None else [f])
    single = _image_metrics(prob, gt, threshold, f)
    _close(pooled, single, keys=["dice", "iou", "acc", "sen", "spe", "bacc", "precision",
                                 "auc", "ap", "cldice"])

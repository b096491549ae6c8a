"""Dataset layouts (reference §1): tiny fake trees in the official layouts, then the real data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinaseg.data import build_dataset, describe_datasets
from retinaseg.errors import ConfigError, DatasetLayoutError, ImageReadError, RetinasegError
from retinaseg.io import RITE_PALETTE, read_class_map, read_colour_class_map
from retinaseg.preprocessing.fov import fov_from_image

S = 16  # side of the fake images, px


# ------------------------------------------------------------------------------------------
# writers


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def label_pattern(seed: int, size: int = S) -> np.ndarray:
    """Deterministic bool pattern (about a quarter foreground)."""
    return np.random.default_rng(seed).random((size, size)) < 0.25


def write_label(path: Path, seed: int = 0, size: int = S) -> Path:
    return _save(path, label_pattern(seed, size).astype(np.uint8) * 255)


def write_grey(path: Path, value: int = 100, size: int = S) -> Path:
    return _save(path, np.full((size, size), value, np.uint8))


def disc(size: int = S, frac: float = 0.45) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return (yy - c) ** 2 + (xx - c) ** 2 <= (frac * size) ** 2


def write_fundus(path: Path, size: int = S) -> Path:
    """RGB image: orange disc on black (for FOV derivation)."""
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[disc(size)] = (200, 100, 40)
    return _save(path, rgb)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def ids(ds) -> list[str]:
    return [s.id for s in ds.samples]


# ------------------------------------------------------------------------------------------
# DRIVE


def make_drive(root: Path) -> Path:
    for split, nums in (("training", (21, 22)), ("test", (1, 2))):
        for nn in nums:
            write_fundus(root / split / "images" / f"{nn:02d}_{split}.tif")
            write_label(root / split / "1st_manual" / f"{nn:02d}_manual1.gif", seed=nn)
            _save(root / split / "mask" / f"{nn:02d}_{split}_mask.gif",
                  disc().astype(np.uint8) * 255)
            if split == "test":
                write_label(root / split / "2nd_manual" / f"{nn:02d}_manual2.gif", seed=nn + 50)
    return root


def test_drive_splits_pairing_and_types(tmp_path: Path) -> None:
    root = make_drive(tmp_path / "DRIVE")
    train = build_dataset("drive", root, "training")
    assert ids(train) == ["21_training", "22_training"]
    assert train.modality == "fundus" and train.val_split is None and train.labelled
    item = train[1]
    assert set(item) == {"id", "image", "label", "fov", "path"}
    assert item["image"].shape == (S, S, 3) and item["image"].dtype == np.float32
    assert item["label"].dtype == bool and item["fov"].dtype == bool
    np.testing.assert_array_equal(item["label"], label_pattern(22))
    np.testing.assert_array_equal(item["fov"], disc())
    assert item["path"].endswith("22_training.tif")
    assert ids(build_dataset("drive", root, "train")) == ids(train)  # alias
    assert len(build_dataset("drive", root, "test")) == 2
    assert len(build_dataset("drive", root, "all")) == 4


def test_drive_second_observer(tmp_path: Path) -> None:
    root = make_drive(tmp_path)
    ds = build_dataset("drive", root, "test", observer=2)
    np.testing.assert_array_equal(ds[0]["label"], label_pattern(51))
    assert len(build_dataset("drive", root, "all", observer="2")) == 2  # test only
    with pytest.raises(ConfigError, match="test split"):
        build_dataset("drive", root, "training", observer=2)
    with pytest.raises(ConfigError, match="1, 2"):
        build_dataset("drive", root, "test", observer=3)


def test_drive_layout_errors(tmp_path: Path) -> None:
    root = make_drive(tmp_path)
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        build_dataset("drive", tmp_path / "nope", "test")
    with pytest.raises(ConfigError, match="training, test, all"):
        build_dataset("drive", root, "validation")
    with pytest.raises(ConfigError, match="valid options: observer"):
        build_dataset("drive", root, "test", obsrver=1)
    for f in (root / "training" / "mask").iterdir():
        f.unlink()
    (root / "training" / "mask").rmdir()
    with pytest.raises(DatasetLayoutError, match="has no 'training/mask' folder; expected"):
        build_dataset("drive", root, "training")


def test_missing_label_is_skipped_and_reported(tmp_path: Path) -> None:
    root = make_drive(tmp_path)
    (root / "test" / "1st_manual" / "02_manual1.gif").unlink()
    with pytest.warns(UserWarning, match="skipped 1 sample"):
        ds = build_dataset("drive", root, "test")
    assert ids(ds) == ["01_test"]
    assert ds.skipped == [("02_test", "no label '1st_manual/02_manual1.gif'")]


def test_empty_split_is_a_clear_error(tmp_path: Path) -> None:
    root = make_drive(tmp_path)
    for f in (root / "test" / "images").iterdir():
        f.unlink()
    with pytest.raises(DatasetLayoutError, match="split 'test' .* has no usable samples"):
        build_dataset("drive", root, "test")


# ------------------------------------------------------------------------------------------
# CHASE_DB1, STARE, HRF


def make_chase(root: Path, size: int = 32) -> Path:
    for n, (subject, eye) in enumerate(((1, "L"), (1, "R"), (11, "L"))):
        stem = f"Image_{subject:02d}{eye}"
        write_fundus(root / f"{stem}.jpg", size)
        write_label(root / f"{stem}_1stHO.png", seed=n, size=size)
        write_label(root / f"{stem}_2ndHO.png", seed=n + 10, size=size)
    return root


def test_chase_split_observer_and_derived_fov(tmp_path: Path) -> None:
    root = make_chase(tmp_path)
    train = build_dataset("chase_db1", root, "train")
    assert ids(train) == ["Image_01L", "Image_01R"]
    assert train.samples[0].fov is None and train.samples[0].meta["subject"] == 1
    assert ids(build_dataset("chase_db1", root, "test")) == ["Image_11L"]
    item = train[0]
    assert item["image"].shape == (32, 32, 3)
    np.testing.assert_array_equal(item["label"], label_pattern(0, 32))
    assert item["fov"].dtype == bool and iou(item["fov"], disc(32)) > 0.8  # JPEG ringing
    second = build_dataset("chase_db1", root, "all", observer=2)
    assert len(second) == 3
    np.testing.assert_array_equal(second[0]["label"], label_pattern(10, 32))


def test_chase_without_images(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="Image_NNX.jpg"):
        build_dataset("chase_db1", tmp_path, "train")


def make_stare(root: Path) -> Path:
    for stem in ("im0001", "im0162", "im0400"):  # im0400 has no label
        write_fundus(root / "stare-images" / f"{stem}.ppm")
    for n, stem in enumerate(("im0001", "im0162")):
        write_label(root / "labels-ah" / f"{stem}.ah.ppm", seed=n)
        write_label(root / "labels-vk" / f"{stem}.vk.ppm", seed=n + 10)
    return root


def test_stare_split_observer_and_fov(tmp_path: Path) -> None:
    root = make_stare(tmp_path)
    assert ids(build_dataset("stare", root, "train")) == ["im0001"]
    assert ids(build_dataset("stare", root, "test")) == ["im0162"]
    ds = build_dataset("stare", root, "all")
    assert ids(ds) == ["im0001", "im0162"]
    item = ds[1]
    np.testing.assert_array_equal(item["label"], label_pattern(1))
    assert item["fov"] is not None and item["fov"].sum() > 0
    vk = build_dataset("stare", root, "all", observer=2)
    np.testing.assert_array_equal(vk[0]["label"], label_pattern(10))
    (root / "labels-vk" / "im0001.vk.ppm").unlink()
    (root / "labels-vk" / "im0162.vk.ppm").unlink()
    (root / "labels-vk").rmdir()
    with pytest.raises(DatasetLayoutError, match="'labels-vk'"):
        build_dataset("stare", root, "all", observer=2)


def make_hrf(root: Path) -> Path:
    for n, stem in enumerate(("01_dr", "01_h", "06_g")):
        write_fundus(root / "images" / f"{stem}.{'JPG' if n == 0 else 'jpg'}")
        write_label(root / "manual1" / f"{stem}.tif", seed=n)
        _save(root / "mask" / f"{stem}_mask.tif", disc().astype(np.uint8) * 255)
    return root


def test_hrf(tmp_path: Path) -> None:
    root = make_hrf(tmp_path)
    train = build_dataset("hrf", root, "train")
    assert ids(train) == ["01_dr", "01_h"]
    assert train.samples[0].meta["category"] == "dr"
    test = build_dataset("hrf", root, "test")
    assert ids(test) == ["06_g"]
    item = test[0]
    np.testing.assert_array_equal(item["label"], label_pattern(2))
    np.testing.assert_array_equal(item["fov"], disc())
    assert len(build_dataset("hrf", root, "all")) == 3


# ------------------------------------------------------------------------------------------
# OCTA-500


def make_octa500(root: Path) -> Path:
    """Partial copy: 6M (20 px) with 4 ILM_OPL subjects, FULL/OPL_BM only for 10001; 3M
    (16 px, 'ProjectionMaps' spelling) with 2 subjects."""
    p6 = root / "OCTA_6M" / "Projection Maps"
    for sid in (10001, 10002, 10181, 10201):
        write_grey(p6 / "OCTA(ILM_OPL)" / f"{sid}.bmp", 100, 20)
        write_label(root / "OCTA_6M" / "GT_LargeVessel" / f"{sid}.bmp", sid, 20)
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0] = 50  # colour map: converted to grey (luma) when stacked
    _save(p6 / "OCTA(FULL)" / "10001.bmp", rgb)
    write_grey(p6 / "OCTA(OPL_BM)" / "10001.bmp", 200, 20)
    write_label(root / "OCTA_6M" / "GT_FAZ" / "10001.bmp", 7, 20)
    p3 = root / "OCTA_3M" / "ProjectionMaps"
    for sid in (10301, 10441):
        write_grey(p3 / "OCTA(ILM_OPL)" / f"{sid}.bmp", 100)
        write_label(root / "OCTA_3M" / "GT_LargeVessel" / f"{sid}.bmp", sid)
    return root


def test_octa500_official_splits(tmp_path: Path) -> None:
    root = make_octa500(tmp_path)
    train = build_dataset("octa500", root, "train")
    assert ids(train) == ["10001", "10002", "10301"]
    assert train.modality == "octa" and train.val_split == "val"
    assert train.samples[2].meta == {"split": "train", "fov": "3M", "subject": 10301}
    assert train[0]["image"].shape == (20, 20) and train[2]["image"].shape == (S, S)
    np.testing.assert_array_equal(train[0]["label"], label_pattern(10001, 20))
    assert train[0]["fov"] is None
    assert ids(build_dataset("octa500", root, "val")) == ["10181", "10441"]
    assert ids(build_dataset("octa500", root, "test", fov="6m")) == ["10201"]
    assert len(build_dataset("octa500", root, "all", fov="6M")) == 4
    assert ids(build_dataset("octa500", root, "val", fov="3M")) == ["10441"]


def test_octa500_multi_map_partial_copy(tmp_path: Path) -> None:
    root = make_octa500(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 sample"):
        ds = build_dataset("octa500", root, "train", fov="6M", maps="FULL,ILM_OPL,OPL_BM")
    assert ids(ds) == ["10001"]
    assert ds.skipped == [("10002", "OCTA_6M: no OCTA(FULL), OCTA(OPL_BM)")]
    image = ds[0]["image"]
    assert image.shape == (20, 20, 3)
    np.testing.assert_allclose(image[0, 0], [0.299 * 50 / 255, 100 / 255, 200 / 255], atol=1e-3)
    with pytest.warns(UserWarning, match="10002: OCTA_6M: no OCTA\\(OPL_BM\\), GT_FAZ"):
        reordered = build_dataset("octa500", root, "train", fov="6M",
                                  maps="OCTA(OPL_BM), ilm_opl", label="faz")
    assert reordered[0]["image"][0, 0, 0] == pytest.approx(200 / 255)
    np.testing.assert_array_equal(reordered[0]["label"], label_pattern(7, 20))


def test_octa500_errors(tmp_path: Path) -> None:
    root = make_octa500(tmp_path)
    with pytest.raises(ConfigError, match="unknown projection 'DEEP'"):
        build_dataset("octa500", root, "train", maps="DEEP")
    with pytest.raises(ConfigError, match="LargeVessel, Artery"):
        build_dataset("octa500", root, "train", label="Nerve")
    with pytest.raises(DatasetLayoutError, match=r"'OCTA_6M/Projection Maps/OCT\(FULL\)'"):
        build_dataset("octa500", root, "train", maps="OCT_FULL")
    # one field-of-view folder as root reads as a flat copy: the ids say 6M
    assert ids(build_dataset("octa500", tmp_path / "OCTA_6M", "train")) == ["10001", "10002"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="'OCTA_6M' or 'OCTA_3M' or 'ProjectionMaps'"):
        build_dataset("octa500", tmp_path / "empty", "train")
    (root / "OCTA_3M" / "ProjectionMaps").rename(root / "OCTA_3M" / "maps")
    with pytest.raises(DatasetLayoutError, match="'OCTA_3M/Projection Maps'"):
        build_dataset("octa500", root, "train", fov="3M")


def make_octa500_s3octa(root: Path) -> Path:
    """S3-OCTA's flat copy (§1.1): ProjectionMaps/OCTA(...)/<id>.bmp for 3M and 6M together,
    labels RV/, Artery/, Vein/; 6M maps 20 px, 3M 16 px; 10002 has no RV label."""
    for sid, size in ((10001, 20), (10002, 20), (10181, 20), (10301, 16), (10441, 16)):
        write_grey(root / "ProjectionMaps" / "OCTA(ILM_OPL)" / f"{sid}.bmp", 100, size)
        write_grey(root / "ProjectionMaps" / "OCTA(FULL)" / f"{sid}.bmp", 60, size)
        if sid != 10002:
            write_label(root / "RV" / f"{sid}.bmp", sid, size)
        write_label(root / "Artery" / f"{sid}.bmp", sid + 1, size)
    return root


def test_octa500_s3octa_flat_layout(tmp_path: Path) -> None:
    root = make_octa500_s3octa(tmp_path / "OCTA-500")
    with pytest.warns(UserWarning, match="10002: OCTA_6M: no RV"):
        train = build_dataset("octa500", root, "train")
    assert ids(train) == ["10001", "10301"]
    assert train.samples[1].meta == {"split": "train", "fov": "3M", "subject": 10301}
    assert train[0]["image"].shape == (20, 20) and train[1]["image"].shape == (16, 16)
    np.testing.assert_array_equal(train[1]["label"], label_pattern(10301, 16))
    assert ids(build_dataset("octa500", root, "val")) == ["10181", "10441"]
    assert ids(build_dataset("octa500", root, "val", fov="3M")) == ["10441"]
    artery = build_dataset("octa500", root, "train", label="Artery", maps="FULL,ILM_OPL")
    assert ids(artery) == ["10001", "10002", "10301"]
    np.testing.assert_array_equal(artery[1]["label"], label_pattern(10003, 20))
    np.testing.assert_allclose(artery[0]["image"][0, 0], [60 / 255, 100 / 255], atol=1e-6)
    with pytest.raises(DatasetLayoutError, match=r"'ProjectionMaps/OCTA\(OPL_BM\)'"):
        build_dataset("octa500", root, "train", maps="OPL_BM")


def test_octa500_sam_octa2_layout(tmp_path: Path) -> None:
    """SAM-OCTA2 (§1.1): {3M,6M}/ProjectionMaps/{FULL,ILM_OPL,OPL_BM}, GT_LargeVessel."""
    root = tmp_path / "OCTA500"
    for fov, sid, size in (("6M", 10001, 20), ("3M", 10301, 16), ("3M", 10451, 16)):
        write_grey(root / fov / "ProjectionMaps" / "ILM_OPL" / f"{sid}.bmp", 90, size)
        write_grey(root / fov / "ProjectionMaps" / "OPL_BM" / f"{sid}.bmp", 30, size)
        write_label(root / fov / "GT_LargeVessel" / f"{sid}.bmp", sid, size)
    ds = build_dataset("octa500", root, "all", maps="ILM_OPL,OPL_BM")
    assert ids(ds) == ["10001", "10301", "10451"]
    assert [s.meta["split"] for s in ds.samples] == ["train", "train", "test"]
    np.testing.assert_allclose(ds[2]["image"][0, 0], [90 / 255, 30 / 255], atol=1e-6)
    np.testing.assert_array_equal(ds[2]["label"], label_pattern(10451, 16))


def class_pattern(seed: int, n_classes: int, size: int = S) -> np.ndarray:
    """Deterministic uint8 class map with every value 0..n_classes-1 present."""
    values = np.random.default_rng(seed).integers(0, n_classes, (size, size)).astype(np.uint8)
    values.flat[:n_classes] = np.arange(n_classes)
    return values


@pytest.mark.parametrize(("label", "classes"), [
    ("AV", ["background", "artery", "vein", "overlap"]),
    ("CAVF", ["background", "capillary", "artery", "vein", "faz"]),
])
def test_octa500_class_maps(tmp_path: Path, label: str, classes: list[str]) -> None:
    root = make_octa500(tmp_path)
    for sid in (10001, 10002):
        _save(root / "OCTA_6M" / f"GT_{label}" / f"{sid}.bmp", class_pattern(sid, len(classes), 20))
    with pytest.warns(UserWarning, match="skipped"):  # the 3M subject has no class map
        ds = build_dataset("octa500", root, "train", label=label.lower())
    assert list(ds.classes) == classes and ids(ds) == ["10001", "10002"]
    got = ds[1]["label"]
    assert got.dtype == np.int64 and got.shape == (20, 20)
    np.testing.assert_array_equal(got, class_pattern(10002, len(classes), 20))
    assert build_dataset("octa500", root, "train", fov="6M").classes is None  # binary as before
    _save(root / "OCTA_6M" / f"GT_{label}" / "10002.bmp",
          np.full((20, 20), len(classes), np.uint8))
    with pytest.raises(DatasetLayoutError, match=f"holds the value {len(classes)}, but the "
                                                 f"dataset has {len(classes)} classes"):
        build_dataset("octa500", root, "train", fov="6M", label=label)[1]


def test_folder_class_option(tmp_path: Path) -> None:
    _save(tmp_path / "images" / "a.png", np.full((S, S), 90, np.uint8))
    _save(tmp_path / "labels" / "a.png", class_pattern(1, 3))
    ds = build_dataset("folder", tmp_path, "all", classes="3")
    assert ds.classes == ("class_0", "class_1", "class_2")
    np.testing.assert_array_equal(ds[0]["label"], class_pattern(1, 3))
    named = build_dataset("folder", tmp_path, "all", classes="bg, artery, vein")
    assert named.classes == ("bg", "artery", "vein")
    assert build_dataset("folder", tmp_path, "all")[0]["label"].dtype == bool
    with pytest.raises(ConfigError, match="at least 2"):
        build_dataset("folder", tmp_path, "all", classes="1")


@pytest.mark.filterwarnings("ignore:OCTA-500 split 'train'")
def test_octa500_class_maps_real(shared_data: Path) -> None:
    root = shared_data / "OCTA-500"
    if not (root / "OCTA_3M" / "GT_AV").is_dir():
        pytest.skip(f"OCTA-500 class maps not found under {root}")
    av = build_dataset("octa500", root, "train", label="AV", fov="3M")
    cavf = build_dataset("octa500", root, "train", label="CAVF", fov="6M")
    a, c = av[0]["label"], cavf[0]["label"]
    assert set(np.unique(a)) == {0, 1, 2, 3} and set(np.unique(c)) == {0, 1, 2, 3, 4}
    assert a.shape == (304, 304) and c.shape == (400, 400)
    assert cavf.classes[4] == "faz"


# ------------------------------------------------------------------------------------------
# ROSE-1, ROSE-2, ROSSA, OCTA-25K


def make_rose1(root: Path) -> Path:
    for split, names in (("train", ("01", "02")), ("test", ("31",))):
        for n, name in enumerate(names):
            write_grey(root / "SVC" / split / "img" / f"{name}.tif")
            write_label(root / "SVC" / split / "gt" / f"{name}.png", seed=n)
            write_grey(root / "DVC" / split / "img" / f"{name}.tif")
            write_label(root / "DVC" / split / "gt" / f"{name}.tif", seed=n + 20)
    write_label(root / "SVC" / "train" / "thin_gt" / "01.png", seed=99)
    return root


def test_rose1_layers_and_target_fallback(tmp_path: Path) -> None:
    root = make_rose1(tmp_path)
    svc = build_dataset("rose1", root, "train")
    assert ids(svc) == ["01", "02"] and svc[0]["image"].shape == (S, S)
    np.testing.assert_array_equal(svc[0]["label"], label_pattern(0))
    thin = build_dataset("rose1", root, "train", target="thin")
    assert [s.meta["label_source"] for s in thin.samples] == ["thin_gt", "gt"]
    np.testing.assert_array_equal(thin[0]["label"], label_pattern(99))
    dvc = build_dataset("rose1", root, "all", layer="dvc", target="thick")
    assert ids(dvc) == ["01", "02", "31"]
    np.testing.assert_array_equal(dvc[2]["label"], label_pattern(20))
    with pytest.raises(DatasetLayoutError, match="'SVC_DVC/train/img'"):
        build_dataset("rose1", root, "train", layer="SVC_DVC")


def test_rose2(tmp_path: Path) -> None:
    for split, names in (("train", ("1_OD", "2_OS")), ("test", ("3_OD",))):
        for n, name in enumerate(names):
            write_grey(tmp_path / split / "original" / f"{name}.png")
            write_label(tmp_path / split / "gt" / f"{name}.tif", seed=n)
    assert ids(build_dataset("rose2", tmp_path, "train")) == ["1_OD", "2_OS"]
    ds = build_dataset("rose2", tmp_path, "test")
    np.testing.assert_array_equal(ds[0]["label"], label_pattern(0))


def test_rose2_labels_are_also_the_centerline_label(tmp_path: Path) -> None:
    for n, name in enumerate(("1_OD", "2_OS")):
        write_grey(tmp_path / "train" / "original" / f"{name}.png")
        write_label(tmp_path / "train" / "gt" / f"{name}.tif", seed=n)
    ds = build_dataset("rose2", tmp_path, "train")
    item = ds[1]
    np.testing.assert_array_equal(item["centerline"], label_pattern(1))
    assert item["centerline"] is not item["label"] and item["centerline"].dtype == bool
    np.testing.assert_array_equal(ds.centerline(0), label_pattern(0))
    assert ds.samples[0].meta["label_level"] == "centerline"


def test_rose_labels_paired_in_sorted_order_when_no_stem_matches(tmp_path: Path) -> None:
    """OCTA-Net pairs the sorted img/ and gt/ listings; we do so only when no stem matches."""
    for n, name in enumerate(("1_OD", "2_OS", "10_OD")):
        write_grey(tmp_path / "train" / "original" / f"{name}.png")
        write_label(tmp_path / "train" / "gt" / f"{name}_gt.png", seed=n)
    ds = build_dataset("rose2", tmp_path, "train")
    assert ids(ds) == ["1_OD", "2_OS", "10_OD"]
    assert [s.label.name for s in ds.samples] == ["1_OD_gt.png", "2_OS_gt.png", "10_OD_gt.png"]
    assert {s.meta["paired_by"] for s in ds.samples} == {"order"}
    (tmp_path / "train" / "gt" / "10_OD_gt.png").unlink()  # counts differ: no order pairing
    with pytest.raises(DatasetLayoutError, match="no usable samples"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_dataset("rose2", tmp_path, "train")


def test_rose1_thick_thin_labels_on_items(tmp_path: Path) -> None:
    root = make_rose1(tmp_path)
    write_label(root / "SVC" / "train" / "thick_gt" / "01.tif", seed=7)
    write_label(root / "SVC" / "train" / "thin_gt" / "02.png", seed=8)  # 02 lacks thick_gt
    ds = build_dataset("rose1", root, "train")
    first, second = ds[0], ds[1]
    np.testing.assert_array_equal(first["thick_gt"], label_pattern(7))
    np.testing.assert_array_equal(first["thin_gt"], label_pattern(99))
    assert second["thick_gt"] is None and second["thin_gt"] is None
    assert "centerline" not in first  # SVC labels are not centerline-level
    dvc = build_dataset("rose1", root, "train", layer="DVC")
    assert dvc[0]["thick_gt"] is None
    np.testing.assert_array_equal(dvc[0]["centerline"], dvc[0]["label"])


def test_rose1_ivc_alias_and_stacked_layers(tmp_path: Path) -> None:
    root = make_rose1(tmp_path)
    for name, n in (("01", 0), ("02", 1)):
        write_grey(root / "SVC_DVC" / "train" / "img" / f"{name}.png", value=200)
        write_label(root / "SVC_DVC" / "train" / "gt" / f"{name}.tif", seed=n + 40)
    ivc = build_dataset("rose1", root, "train", layer="ivc")
    assert ids(ivc) == ["01", "02"] and ivc.samples[0].meta["layer"] == "SVC_DVC"
    np.testing.assert_array_equal(ivc[1]["label"], label_pattern(41))
    stack = build_dataset("rose1", root, "train", layer="SVC, DVC, IVC")
    item = stack[0]
    assert item["image"].shape == (S, S, 3)
    assert item["image"][0, 0, 2] > item["image"][0, 0, 0]  # channel order SVC, DVC, IVC
    np.testing.assert_array_equal(item["label"], label_pattern(40))  # the whole-vessel label
    with pytest.raises(ConfigError, match="layer 'XYZ' is not valid"):
        build_dataset("rose1", root, "train", layer="SVC,XYZ")
    with pytest.raises(ConfigError, match="given twice"):
        build_dataset("rose1", root, "train", layer="IVC,SVC_DVC")


def test_rose1_root_may_be_one_layer_folder(tmp_path: Path) -> None:
    root = make_rose1(tmp_path)
    dvc = build_dataset("rose1", root / "DVC", "all")
    assert ids(dvc) == ["01", "02", "31"] and dvc.samples[0].meta["layer"] == "DVC"
    np.testing.assert_array_equal(dvc[2]["label"], label_pattern(20))
    with pytest.raises(DatasetLayoutError, match="one layer folder"):
        build_dataset("rose1", root / "DVC", "train", layer="SVC")
    with pytest.raises(DatasetLayoutError, match="one layer folder"):
        build_dataset("rose1", root / "SVC", "train", layer="SVC,DVC")


def make_rose_o(root: Path, names=("01", "02", "31")) -> Path:
    """S3-OCTA's ROSE-O layout: img/{SVC,DVC,IVC}/NN.tif|png and gt/RV/NN.png."""
    for n, name in enumerate(names):
        write_grey(root / "img" / "SVC" / f"{name}.tif", value=50)
        write_grey(root / "img" / "DVC" / f"{name}.tif", value=100)
        write_grey(root / "img" / "IVC" / f"{name}.png", value=150)
        write_label(root / "gt" / "RV" / f"{name}.png", seed=n + 60)
    return root


def test_rose1_s3octa_layout(tmp_path: Path) -> None:
    root = make_rose_o(tmp_path)
    train = build_dataset("rose1", root, "train", layer="IVC")
    assert ids(train) == ["01", "02"]
    assert train.samples[0].meta["label_source"] == "gt/RV"
    assert train.samples[0].meta["layout"] == "s3octa"
    np.testing.assert_array_equal(train[1]["label"], label_pattern(61))
    assert train[0]["thick_gt"] is None and train[0]["thin_gt"] is None
    test = build_dataset("rose1", root, "test", layer="SVC,DVC,IVC")
    assert ids(test) == ["31"] and test[0]["image"].shape == (S, S, 3)
    np.testing.assert_allclose(test[0]["image"][0, 0], np.array([50, 100, 150]) / 255, atol=1e-6)
    # the release's per-layer vessel labels are preferred for a single layer
    write_label(root / "gt" / "vessel" / "SCC" / "01.tif", seed=70)
    write_label(root / "gt" / "vessel" / "SCC" / "02.tif", seed=71)
    svc = build_dataset("rose1", root, "train", layer="SVC")
    assert svc.samples[0].meta["label_source"] == "gt/vessel/SCC"
    np.testing.assert_array_equal(svc[0]["label"], label_pattern(70))
    # an image outside 01-39 is skipped and reported
    make_rose_o(root, names=("40",))
    with pytest.warns(UserWarning, match="numbered 01-39"):
        assert ids(build_dataset("rose1", root, "all", layer="IVC")) == ["01", "02", "31"]


def test_rose1_bad_layouts_say_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetLayoutError, match="has no 'SVC/train/img' or 'img/SVC' folder"):
        build_dataset("rose1", tmp_path, "train")
    root = make_rose_o(tmp_path / "o")
    (root / "gt" / "RV").rename(root / "gt" / "RV_old")
    with pytest.raises(DatasetLayoutError, match="has no 'gt/vessel/WRCC' or 'gt/RV' folder"):
        build_dataset("rose1", root, "train", layer="IVC")
    (root / "img" / "DVC").rename(root / "img" / "deep")
    with pytest.raises(DatasetLayoutError, match="has no 'img/DVC' folder"):
        build_dataset("rose1", root, "train", layer="DVC")


def make_rossa(root: Path) -> Path:
    for split, names in (("train_manual", (1, 2, 10)), ("val", (101,))):
        for name in names:
            write_grey(root / split / "image" / f"{name}.png")
            write_label(root / split / "label" / f"{name}.png", seed=name)
    return root


def test_rossa_present_and_absent_splits(tmp_path: Path) -> None:
    root = make_rossa(tmp_path)
    train = build_dataset("rossa", root, "train")
    assert ids(train) == ["1", "2", "10"]  # natural order
    assert build_dataset("rossa", root, "val").val_split == "val"
    assert len(build_dataset("rossa", root, "all")) == 4
    with pytest.raises(DatasetLayoutError, match="'test/image'"):
        build_dataset("rossa", root, "test")
    (root / "train_manual" / "label" / "2.png").unlink()
    with pytest.warns(UserWarning, match="2: no label"):
        assert ids(build_dataset("rossa", root, "train_manual")) == ["1", "10"]


def test_octa25k_unlabelled(tmp_path: Path) -> None:
    for fov, grade, name in (("3M", "gradable", "001"), ("3M", "outstanding", "001"),
                             ("6M", "ungradable", "101")):
        write_grey(tmp_path / fov / grade / f"{name}.png")
    ds = build_dataset("octa25k", tmp_path, "all")
    assert ids(ds) == ["3M_gradable_001", "3M_outstanding_001", "6M_ungradable_101"]
    assert not ds.labelled and ds[0]["label"] is None
    assert ds.samples[2].meta == {"split": "ungradable", "fov": "6M", "quality": "ungradable"}
    assert len(build_dataset("octa25k", tmp_path, "gradable", fov="3M")) == 1
    with pytest.raises(DatasetLayoutError, match="'6M/gradable'"):
        build_dataset("octa25k", tmp_path, "gradable", fov="6M")


# ------------------------------------------------------------------------------------------
# folder


def test_folder_labels_suffix_and_fov(tmp_path: Path) -> None:
    for n, stem in enumerate(("a", "b")):
        write_fundus(tmp_path / "images" / f"{stem}.png")
        write_label(tmp_path / "labels" / f"{stem}.png", seed=n)
        write_label(tmp_path / "gt" / f"{stem}_manual1.png", seed=n + 5)
        _save(tmp_path / "masks" / f"{stem}_mask.png", disc().astype(np.uint8) * 255)
    ds = build_dataset("folder", tmp_path, "all")
    assert ids(ds) == ["a", "b"] and ds.labelled and ds[0]["fov"] is None
    np.testing.assert_array_equal(ds[1]["label"], label_pattern(1))
    ds = build_dataset("folder", tmp_path, "all", labels="gt", label_suffix="_manual1",
                       fov="masks")
    np.testing.assert_array_equal(ds[0]["label"], label_pattern(5))
    np.testing.assert_array_equal(ds[0]["fov"], disc())
    auto = build_dataset("folder", tmp_path, "all", fov="auto", modality="octa")
    assert auto.modality == "octa" and iou(auto[0]["fov"], disc()) > 0.8
    absolute = build_dataset("folder", None, "all", images=str(tmp_path / "images"),
                             labels=str(tmp_path / "labels"))
    assert len(absolute) == 2 and absolute.labelled
    with pytest.raises(DatasetLayoutError, match="'images=images' is relative"):
        build_dataset("folder", None, "all")


def test_folder_unlabelled_and_errors(tmp_path: Path) -> None:
    write_grey(tmp_path / "images" / "a.png")
    ds = build_dataset("folder", tmp_path, "all")
    assert ds[0]["label"] is None and not ds.labelled
    with pytest.raises(DatasetLayoutError, match="'masks'"):
        build_dataset("folder", tmp_path, "all", labels="masks")
    with pytest.raises(ConfigError, match="valid splits: all"):
        build_dataset("folder", tmp_path, "train")
    with pytest.raises(DatasetLayoutError, match="'imgs'"):
        build_dataset("folder", tmp_path, "all", images="imgs")
    write_label(tmp_path / "labels" / "a.png", size=8)
    with pytest.raises(DatasetLayoutError, match="8x8 px but the image is 16x16"):
        build_dataset("folder", tmp_path, "all")[0]


# ------------------------------------------------------------------------------------------
# registry and helpers


def test_registry_and_description() -> None:
    names = [row[0] for row in describe_datasets()]
    assert set(names) >= {"drive", "chase_db1", "stare", "hrf", "octa500", "rose1", "rose2",
                          "rossa", "octa25k", "folder", "synthetic"}
    for _, modality, splits, layout in describe_datasets():
        assert modality in ("fundus", "octa") and splits[-1] == "all" and layout
    with pytest.raises(RetinasegError, match="unknown dataset 'kaggle'"):
        build_dataset("kaggle", ".", "all")
    with pytest.raises(DatasetLayoutError, match="needs a root folder"):
        build_dataset("DRIVE", None, "test")


def test_fov_from_image_ignores_specks_and_dark_lesions() -> None:
    img = np.zeros((64, 64, 3), np.float32)
    img[disc(64)] = (0.8, 0.4, 0.2)
    img[30:34, 30:34] = 0.0  # dark lesion inside: filled
    img[1, 1] = 0.9  # hot pixel outside: removed
    fov = fov_from_image(img)
    np.testing.assert_array_equal(fov, disc(64))
    assert not fov_from_image(np.zeros((8, 8), np.float32)).any()


# ------------------------------------------------------------------------------------------
# real data (../shared/data)


def test_real_drive(shared_data: Path) -> None:
    root = shared_data / "DRIVE"
    train, test = build_dataset("drive", root, "training"), build_dataset("drive", root, "test")
    assert len(train) == 20 and len(test) == 20
    fractions = []
    for ds in (train, test):
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (584, 565, 3)
            assert item["label"].dtype == bool and item["fov"].dtype == bool
            fractions.append(item["label"].mean())
    assert np.mean(fractions) == pytest.approx(0.087, abs=0.002)
    item = train[0]
    assert iou(fov_from_image(item["image"]), item["fov"]) > 0.97
    second = build_dataset("drive", root, "test", observer=2)
    assert len(second) == 20 and 0.05 < second[0]["label"].mean() < 0.15


def test_real_octa500(shared_data: Path) -> None:
    root = shared_data / "OCTA-500"
    expected = {("6M", "train"): 180, ("6M", "val"): 20, ("3M", "train"): 140,
                ("3M", "val"): 10}
    for (fov, split), n in expected.items():
        assert len(build_dataset("octa500", root, split, fov=fov)) == n
    assert build_dataset("octa500", root, "train", fov="6M")[0]["image"].shape == (400, 400)
    assert build_dataset("octa500", root, "val", fov="3M")[0]["image"].shape == (304, 304)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset("octa500", root, "train", fov="6M", maps="FULL,ILM_OPL,OPL_BM")
    # on disk: OCTA(FULL) and OCTA(OPL_BM) only for 10001-10005; everyone else is reported
    assert "10001" in ids(ds) and len(ds) + len(ds.skipped) == 180
    assert any("skipped" in str(w.message) for w in caught)
    assert all("OCTA(FULL)" in why for _, why in ds.skipped)
    item = ds[ids(ds).index("10001")]
    assert item["image"].shape == (400, 400, 3) and item["label"].shape == (400, 400)


def test_real_rossa(shared_data: Path) -> None:
    root = shared_data / "ROSSA"
    train, val = build_dataset("rossa", root, "train_manual"), build_dataset("rossa", root, "val")
    assert len(train) == 100 and len(val) == 100
    item = val[0]
    assert item["image"].shape == (320, 320) and item["label"].shape == (320, 320)
    assert item["label"].dtype == bool and 0 < item["label"].mean() < 0.5


# ------------------------------------------------------------------------------------------
# colour-coded class labels (RITE / AV-DRIVE style)


def _rite_colours(classes: np.ndarray) -> np.ndarray:
    """Class map 0-4 → RGB uint8 in the RITE colour code."""
    lut = np.array([c for _, c in RITE_PALETTE], dtype=np.uint8)
    return lut[classes]


def test_folder_rite_palette_reads_colour_labels(tmp_path: Path) -> None:
    truth = np.zeros((S, S), np.int64)
    truth[2:6, :] = 1
    truth[:, 10:13] = 2
    truth[2:6, 10:13] = 3
    truth[12:14, 1:8] = 4
    _save(tmp_path / "images" / "a.png", np.full((S, S), 90, np.uint8))
    _save(tmp_path / "labels" / "a.png", _rite_colours(truth))
    ds = build_dataset("folder", tmp_path, "all", label_colours="rite")
    assert ds.classes == ("background", "artery", "vein", "overlap", "uncertain")
    np.testing.assert_array_equal(ds[0]["label"], truth)
    # JPEG blurs the colours; the nearest palette colour still gives most pixels their class
    Image.fromarray(_rite_colours(truth)).save(tmp_path / "labels" / "a.jpg", quality=95)
    (tmp_path / "labels" / "a.png").unlink()
    blurred = build_dataset("folder", tmp_path, "all", label_colours="rite")[0]["label"]
    assert (blurred == truth).mean() > 0.97


def test_folder_custom_palette_and_bad_colours(tmp_path: Path) -> None:
    rgb = np.zeros((S, S, 3), np.uint8)
    rgb[:4] = (200, 30, 30)
    rgb[-4:] = (30, 30, 200)
    _save(tmp_path / "images" / "a.png", np.full((S, S), 90, np.uint8))
    _save(tmp_path / "labels" / "a.png", rgb)
    ds = build_dataset("folder", tmp_path, "all", label_colours="artery=#c81e1e,vein=#1e1ec8")
    assert ds.classes == ("background", "artery", "vein")
    label = ds[0]["label"]
    assert (label[:4] == 1).all() and (label[-4:] == 2).all() and (label[4:-4] == 0).all()
    rgb[10, 10] = (255, 255, 0)  # yellow is in no palette
    Image.fromarray(rgb).save(tmp_path / "labels" / "a.png")
    with pytest.raises(ImageReadError, match=r"RGB \(255, 255, 0\)"):
        _ = ds[0]
    with pytest.raises(ConfigError, match="<name>=#rrggbb"):
        build_dataset("folder", tmp_path, "all", label_colours="artery=red")
    with pytest.raises(ConfigError, match="conflicts"):
        build_dataset("folder", tmp_path, "all", label_colours="rite", classes="bg,a,v")


def test_rite_colours_of_real_octa500_av_round_trip(shared_data: Path, tmp_path: Path) -> None:
    """OCTA-500 GT_AV drawn in the RITE colour code reads back as the same class map."""
    src = shared_data / "OCTA-500" / "OCTA_3M" / "GT_AV" / "10301.bmp"
    if not src.is_file():
        pytest.skip(f"OCTA-500 GT_AV not found at {src}")
    truth = read_class_map(src)
    path = tmp_path / "av.png"
    Image.fromarray(_rite_colours(truth)).save(path)
    np.testing.assert_array_equal(read_colour_class_map(path, RITE_PALETTE), truth)

"""``sam_octa2_layers`` (reference §1.6, §7.2): the real SAM-OCTA2 samples, then fake trees."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinaseg.data import build_dataset
from retinaseg.data.sam_octa2 import read_panel
from retinaseg.errors import ConfigError, DatasetLayoutError


@pytest.fixture(scope="module")
def root(shared_data: Path) -> Path:
    path = shared_data / "OCTA-500" / "derived_SAM-OCTA2"
    if not (path / "RV_LayerSequence").is_dir():
        pytest.skip(f"SAM-OCTA2 layer samples not found at {path}")
    return path


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


# ------------------------------------------------------------------------------------------
# real samples (subjects 10301 = 3M train, 10441 = 3M val)


def test_counts_splits_and_layer_order(root: Path) -> None:
    rv = build_dataset("sam_octa2_layers", root, "all")
    assert [(s.id, s.split, s.layers[0], len(s.layers)) for s in rv.sequences] == \
        [("10301", "train", 237, 10), ("10441", "val", 260, 10)]
    assert len(rv) == 20 and rv.samples[0].id == "10301_237"
    assert len(build_dataset("sam_octa2_layers", root, "train")) == 10
    faz = build_dataset("sam_octa2_layers", root, "val", target="FAZ")
    assert len(faz) == 13 and faz.sequences[0].layers == tuple(range(303, 316))
    assert faz.sequences[0].object_ids == (0,)
    seq = build_dataset("sam_octa2_layers", root, "all", view="sequence")
    assert len(seq) == 2 and seq.sequential


def test_objects_match_objects_npy(root: Path) -> None:
    ds = build_dataset("sam_octa2_layers", root, "train")
    files = ds.sequences[0]
    assert files.object_ids == (0, 1, 2, 4, 6, 8, 9)
    for layer, ids in zip(files.layers, files.objects, strict=True):
        listed = np.load(root / "RV_LayerSequence" / "10301" / str(layer) / "objects.npy")
        assert ids == tuple(sorted(listed.tolist()))


def test_sequence_shapes_union_and_object_masks(root: Path) -> None:
    ds = build_dataset("sam_octa2_layers", root, "train", view="sequence")
    item = ds[0]
    assert item["image"].shape == (10, 512, 512) and item["image"].dtype == np.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    objects = item["objects"]
    assert objects.shape == (7, 10, 512, 512) and objects.dtype == bool
    np.testing.assert_array_equal(item["label"], np.logical_or.reduce(objects, axis=0))
    k = item["object_ids"].index(8)
    t = item["layers"].index(245)
    file = np.asarray(Image.open(root / "RV_LayerSequence/10301/245/08.png")) > 127
    np.testing.assert_array_equal(objects[k, t], file)
    seq = ds.sequence(0)
    present = [ids for ids in ds.sequences[0].objects]
    assert [tuple(np.asarray(seq.object_ids)[row]) for row in seq.present] == present


def test_partial_read_of_frames_and_objects(root: Path) -> None:
    ds = build_dataset("sam_octa2_layers", root, "val")
    seq = ds.sequence(0, frames=[0, 9], objects=[4])
    assert seq.layers == (260, 269) and seq.frames.shape == (2, 512, 512)
    assert seq.objects.shape == (1, 2, 512, 512)
    assert not seq.objects[0, 0].any() and seq.objects[0, 1].any()  # object 4 from layer 261 on
    with pytest.raises(DatasetLayoutError, match="frames 0-9"):
        ds.sequence(0, frames=[10])


def test_rv_input_is_the_grey_rightmost_panel(root: Path) -> None:
    strip = _rgb(root / "RV_LayerSequence/10301/243.png")
    panels = [strip[:, 512 * i:512 * (i + 1)] for i in range(4)]
    grey = [bool((p[..., 0] == p[..., 1]).all() and (p[..., 1] == p[..., 2]).all())
            for p in panels]
    assert grey == [True, False, False, True]  # panel 1 is the binary region mask
    assert len(np.unique(panels[0])) == 2 and len(np.unique(panels[3])) > 50
    ds = build_dataset("sam_octa2_layers", root, "train")
    item = ds[ds.sequences[0].layers.index(243)]
    assert item["id"] == "10301_243"
    np.testing.assert_allclose(item["image"], panels[3][..., 0] / 255, atol=1e-6)
    vessels = item["label"]  # the objects lie on the green vessel overlay of panel 3
    green = panels[2][..., 1] - panels[2][..., 2] >= 1
    assert vessels.any() and not (vessels & ~green).any()


def test_faz_input_is_the_middle_panel_and_mask_the_right(root: Path) -> None:
    strip = _rgb(root / "FAZ_LayerSequence/10301/305.png")
    ds = build_dataset("sam_octa2_layers", root, "train", target="FAZ")
    item = ds[ds.sequences[0].layers.index(305)]
    np.testing.assert_allclose(item["image"], strip[:, 512:1024, 0] / 255, atol=1e-6)
    np.testing.assert_array_equal(item["label"], strip[:, 1024:, 0] > 127)
    assert 500 < item["label"].sum() < 50_000


# ------------------------------------------------------------------------------------------
# fake trees (tiny strips written to tmp_path)

P = 8  # panel side, px


def write_rv_layer(root: Path, subject: str, layer: int, objects: dict[int, np.ndarray],
                   side: int = P, listed: list[int] | None = None) -> None:
    folder = root / "RV_LayerSequence" / subject
    folder.mkdir(parents=True, exist_ok=True)
    strip = np.zeros((side, 4 * side, 3), np.uint8)
    strip[:, 3 * side:] = 40 + layer  # grey layer panel
    Image.fromarray(strip).save(folder / f"{layer}.png")
    (folder / str(layer)).mkdir(exist_ok=True)
    for i, mask in objects.items():
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / str(layer) / f"{i:02d}.png")
    ids = sorted(objects) if listed is None else listed
    np.save(folder / str(layer) / "objects.npy", np.array(ids, np.int32))


def square(r0: int, c0: int, side: int = P) -> np.ndarray:
    m = np.zeros((side, side), bool)
    m[r0:r0 + 2, c0:c0 + 2] = True
    return m


def test_fake_tree_reads_frames_and_objects(tmp_path: Path) -> None:
    write_rv_layer(tmp_path, "10301", 11, {3: square(0, 0)})
    write_rv_layer(tmp_path, "10301", 9, {3: square(4, 4), 5: square(0, 6)})
    ds = build_dataset("sam_octa2_layers", tmp_path, "train", view="sequence")
    seq = ds.sequence(0)
    assert seq.layers == (9, 11) and seq.object_ids == (3, 5)  # numeric layer order
    np.testing.assert_allclose(seq.frames[:, 0, 0], [49 / 255, 51 / 255], atol=1e-6)
    assert seq.objects.sum(axis=(2, 3)).tolist() == [[4, 4], [4, 0]]
    with pytest.raises(DatasetLayoutError, match="has no object 7"):
        seq.object_mask(7)


def test_frames_of_different_sizes_raise_one_error(tmp_path: Path) -> None:
    write_rv_layer(tmp_path, "10301", 1, {0: square(0, 0)})
    write_rv_layer(tmp_path, "10301", 2, {0: square(0, 0, 2 * P)}, side=2 * P)
    ds = build_dataset("sam_octa2_layers", tmp_path, "train", view="sequence")
    with pytest.raises(DatasetLayoutError, match=r"sequence '10301': frames differ in size "
                                                 r"\('1.png' has 8 px panels, '2.png' 16 px\)"):
        ds[0]


def test_strip_of_wrong_width_and_mask_of_wrong_size(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    Image.fromarray(np.zeros((P, 3 * P, 3), np.uint8)).save(bad)
    with pytest.raises(DatasetLayoutError, match="expected a strip of 4 square panels"):
        read_panel(bad, 3, 4)
    write_rv_layer(tmp_path, "10301", 1, {0: np.ones((P + 1, P), bool)})
    ds = build_dataset("sam_octa2_layers", tmp_path, "train")
    with pytest.raises(DatasetLayoutError, match="object mask .* is 9x8 px"):
        ds[0]


def test_inconsistent_objects_npy_is_skipped_and_reported(tmp_path: Path) -> None:
    write_rv_layer(tmp_path, "10301", 1, {0: square(0, 0)})
    write_rv_layer(tmp_path, "10302", 1, {0: square(0, 0)}, listed=[0, 4])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset("sam_octa2_layers", tmp_path, "train")
    assert [s.id for s in ds.sequences] == ["10301"]
    assert ds.skipped[0][0] == "10302" and "lists objects [0, 4]" in ds.skipped[0][1]
    assert any("skipped 1 sample" in str(w.message) for w in caught)


def test_layout_and_option_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="no 'FAZ_LayerSequence' folder"):
        build_dataset("sam_octa2_layers", tmp_path, "train", target="FAZ")
    with pytest.raises(ConfigError, match="view='video' is not valid"):
        build_dataset("sam_octa2_layers", tmp_path, "train", view="video")

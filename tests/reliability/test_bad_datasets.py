"""Bad datasets through ``retinaseg evaluate``: labels, FOV masks, layouts, unicode paths.

``evaluate`` scores every image or stops with one clear error: a label whose size differs from
its image, or an image that cannot be read, is fatal (silently leaving images out would change
the scores). A sample whose label or FOV *file is missing* is skipped with one ``warning:``
line, as the dataset classes document.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RNG = np.random.default_rng(1)
H, W = 24, 32


def png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def pattern(seed: int) -> np.ndarray:
    """A fixed bool vessel pattern (bars) for sample ``seed``."""
    p = np.zeros((H, W), bool)
    p[4 + seed: 7 + seed, 3:29] = True
    p[2:22, 10 + 2 * seed: 12 + 2 * seed] = True
    return p


def image(seed: int) -> np.ndarray:
    """Grey noise image number ``seed`` (the same for every call)."""
    return np.random.default_rng(100 + seed).integers(0, 256, (H, W), dtype=np.uint8)


def folder_dataset(root: Path, n: int = 2, label=lambda p: p.astype(np.uint8) * 255) -> Path:
    """``images/im<i>.png`` = ``image(i)`` and ``labels/im<i>.png`` = ``label(pattern(i))``."""
    for i in range(n):
        png(root / "images" / f"im{i}.png", image(i))
        png(root / "labels" / f"im{i}.png", label(pattern(i)))
    return root


def evaluate(cli, model: Path, root: Path, out: Path, *extra: str):
    return cli("evaluate", "--model", model, "--dataset", "folder", "--root", root,
               "--split", "all", "--out", out, *extra)


def per_image(out: Path) -> list[dict]:
    with open(out / "per_image.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------
# label values


def _three_valued(p: np.ndarray) -> np.ndarray:
    """{0, 100, 255}: 255 on the pattern, 100 on some background (below half the maximum)."""
    low = RNG.random(p.shape) < 0.3
    return np.where(p, 255, np.where(low, 100, 0)).astype(np.uint8)


ENCODINGS = {
    "0/255": lambda p: p.astype(np.uint8) * 255,
    "0/1": lambda p: p.astype(np.uint8),
    "0/128": lambda p: p.astype(np.uint8) * 128,
    "0/65535 16-bit": lambda p: p.astype(np.uint16) * 65535,
    "1-bit": lambda p: p,
    "0/100/255 three values": _three_valued,
    "RGB 0/255": lambda p: np.repeat(p.astype(np.uint8)[..., None] * 255, 3, axis=-1),
}


@pytest.fixture(scope="module")
def reference_scores(tmp_path_factory, tiny_model) -> list[dict]:
    """Per-image scores with the plain {0, 255} labels, computed once."""
    from retinaseg.api import evaluate as api_evaluate

    tmp = tmp_path_factory.mktemp("ref")
    root = folder_dataset(tmp / "ds")
    api_evaluate(tiny_model, "folder", str(root), "all", tmp / "ev", save_maps=False)
    return per_image(tmp / "ev")


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_label_encodings_give_identical_scores(cli, tmp_path, tiny_model, reference_scores,
                                               encoding) -> None:
    """{0,1}, {0,128}, 16-bit, 1-bit, RGB and 3-valued labels: foreground is > half the max."""
    root = folder_dataset(tmp_path / "ds", label=ENCODINGS[encoding])
    res = evaluate(cli, tiny_model, root, tmp_path / "ev")
    res.assert_ok()
    assert per_image(tmp_path / "ev") == reference_scores


def test_label_size_differs_from_image_is_clear_error(cli, tmp_path, tiny_model) -> None:
    root = folder_dataset(tmp_path / "ds")
    png(root / "labels" / "im1.png", np.zeros((H - 4, W), np.uint8))
    res = evaluate(cli, tiny_model, root, tmp_path / "ev")
    res.assert_fatal(f"{root / 'labels' / 'im1.png'}", f"is {H - 4}x{W} px but the image is "
                     f"{H}x{W} px")
    assert not (tmp_path / "ev" / "summary.json").exists()


def test_unreadable_image_in_dataset_is_clear_error(cli, tmp_path, tiny_model) -> None:
    root = folder_dataset(tmp_path / "ds")
    (root / "images" / "im1.png").write_bytes(b"\x89PNG broken")
    res = evaluate(cli, tiny_model, root, tmp_path / "ev")
    res.assert_fatal(f"{root / 'images' / 'im1.png'}", "cannot read image")


def test_missing_label_file_is_skipped_with_one_warning(cli, tmp_path, tiny_model) -> None:
    root = folder_dataset(tmp_path / "ds", n=3)
    (root / "labels" / "im2.png").unlink()
    res = evaluate(cli, tiny_model, root, tmp_path / "ev")
    res.assert_ok()
    warnings = [ln for ln in res.err.splitlines() if "skipped 1 sample" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "im2" in warnings[0]
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["n_images"] == 2


# --------------------------------------------------------------------------------------------
# FOV masks


def test_missing_fov_mask_file_is_skipped_with_one_warning(cli, tmp_path, tiny_model) -> None:
    root = folder_dataset(tmp_path / "ds")
    png(root / "fov" / "im0_mask.png", np.full((H, W), 255, np.uint8))
    res = evaluate(cli, tiny_model, root, tmp_path / "ev", "--option", "fov=fov")
    res.assert_ok()
    warnings = [ln for ln in res.err.splitlines() if "no FOV mask" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "im1" in warnings[0]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["n_images"] == 1 and summary["fov"] == "inside dataset FOV mask"


def test_missing_fov_folder_is_clear_error(cli, tmp_path, tiny_model) -> None:
    root = folder_dataset(tmp_path / "ds")
    res = evaluate(cli, tiny_model, root, tmp_path / "ev", "--option", "fov=fov")
    res.assert_fatal("has no 'fov' folder", "expected layout")


def test_fov_size_differs_is_clear_error(cli, tmp_path, tiny_model) -> None:
    root = folder_dataset(tmp_path / "ds", n=1)
    png(root / "fov" / "im0.png", np.full((H, W + 1), 255, np.uint8))
    res = evaluate(cli, tiny_model, root, tmp_path / "ev", "--option", "fov=fov")
    res.assert_fatal("fov", f"{H}x{W + 1} px but the image is {H}x{W} px")


# --------------------------------------------------------------------------------------------
# folders and layouts


def test_empty_images_folder_is_clear_error(cli, tmp_path, tiny_model) -> None:
    (tmp_path / "ds" / "images").mkdir(parents=True)
    (tmp_path / "ds" / "labels").mkdir()
    res = evaluate(cli, tiny_model, tmp_path / "ds", tmp_path / "ev")
    res.assert_fatal("has no usable samples")


@pytest.mark.parametrize("dataset,split,make,expected", [
    ("drive", "test", [], "'test/images'"),
    ("drive", "training", ["training/images"], "'training/1st_manual'"),
    ("drive", "test", ["test/images", "test/1st_manual"], "'test/mask'"),
    ("hrf", "test", [], "'images'"),
    ("stare", "train", [], "'stare-images'"),
    ("folder", "all", [], "'images'"),
])
def test_wrong_dataset_layout_names_the_expected_folder(cli, tmp_path, tiny_model, dataset,
                                                        split, make, expected) -> None:
    for rel in make:
        (tmp_path / "root" / rel).mkdir(parents=True)
    (tmp_path / "root").mkdir(exist_ok=True)
    (tmp_path / "root" / "random.png").write_bytes(b"x")
    res = cli("evaluate", "--model", tiny_model, "--dataset", dataset, "--root",
              tmp_path / "root", "--split", split, "--out", tmp_path / "ev")
    res.assert_fatal(expected, "expected layout")


def test_missing_dataset_root_is_clear_error(cli, tmp_path, tiny_model) -> None:
    res = cli("evaluate", "--model", tiny_model, "--dataset", "drive", "--root",
              tmp_path / "nope", "--split", "test", "--out", tmp_path / "ev")
    res.assert_fatal("DRIVE root", "nope", "does not exist")
    assert not (tmp_path / "ev").exists()  # nothing is created for a failed run


def test_unicode_and_spaces_in_dataset_paths(cli, tmp_path, tiny_model) -> None:
    root = tmp_path / "données rétine" / "jeu 1"
    png(root / "images" / "ïmage 1.png", image(0))
    png(root / "vérité terrain" / "ïmage 1.png", pattern(0).astype(np.uint8) * 255)
    out = tmp_path / "évaluation é"
    res = evaluate(cli, tiny_model, root, out, "--option", "labels=vérité terrain")
    res.assert_ok()
    rows = per_image(out)
    assert [r["id"] for r in rows] == ["ïmage 1"]
    assert 0.0 <= float(rows[0]["relaxed_f1_1px"]) <= 1.0
    assert "relaxed_f1_1px=" in res.out
    assert (out / "maps" / "ïmage 1_error.png").is_file()


def test_symlink_loops_inside_dataset_folders(cli, tmp_path, tiny_model) -> None:
    root = folder_dataset(tmp_path / "ds")
    for sub in ("images", "labels"):
        (root / sub / "self.png").symlink_to("self.png")
        (root / sub / "up").symlink_to(".", target_is_directory=True)
    res = evaluate(cli, tiny_model, root, tmp_path / "ev")
    res.assert_ok()
    assert [r["id"] for r in per_image(tmp_path / "ev")] == ["im0", "im1"]


def test_drive_image_without_fov_mask_file_is_scored_on_the_whole_image(tmp_path) -> None:
    """DRIVE documents it: a missing ``mask/NN_test_mask.gif`` gives ``fov`` None."""
    from retinaseg.data import build_dataset

    root = tmp_path / "DRIVE" / "test"
    for n in ("01", "02"):
        png(root / "images" / f"{n}_test.tif", np.stack([image(int(n))] * 3, axis=-1))
        png(root / "1st_manual" / f"{n}_manual1.gif", pattern(0).astype(np.uint8) * 255)
    png(root / "mask" / "01_test_mask.gif", np.full((H, W), 255, np.uint8))
    ds = build_dataset("drive", tmp_path / "DRIVE", "test")
    assert ds[0]["fov"] is not None and ds[1]["fov"] is None

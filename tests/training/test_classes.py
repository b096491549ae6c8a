"""Multi-class training end to end: a tiny U-Net learns a trivially separable 3-class problem,
the saved model names its classes, and predict/evaluate report per-class results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retinaseg.errors import ConfigError, RetinasegError
from retinaseg.io import write_png
from retinaseg.training import load_config, train

CLASSES = ["background", "bright", "dim"]
CONFIG = """
name: classes
seed: 1
runs_dir: {runs}
data:
  dataset: folder
  root: {root}
  train_split: all
  options: {{modality: octa, classes: "background,bright,dim"}}
  val_fraction: 0.25
sampling: {{mode: patch, patch_size: 32, patches_per_image: 12, batch_size: 4}}
augment: {{prob: 0}}
model: {{name: unet, params: {{depth: 2, width: 8}}, classes: {classes}}}
loss: {{name: dice_ce}}
optim: {{name: adam, lr: 0.02}}
schedule: {{name: constant}}
train: {{epochs: 2, threads: 1}}
"""


def make_sample(seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A grey image and its class map: class 1 (bright, 0.9) and class 2 (dim, 0.45) boxes on
    a dark background (0.05), with a little noise; intensity alone separates the classes."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint8)
    for value in (1, 2, 1, 2):
        y, x = rng.integers(0, size - 10, 2)
        h, w = rng.integers(5, 11, 2)
        labels[y:y + h, x:x + w] = value
    image = np.choose(labels, [0.05, 0.9, 0.45]) + rng.normal(0, 0.02, labels.shape)
    return np.clip(image, 0, 1).astype(np.float32), labels


def write_folder(root: Path, n: int = 8, top: int = 2) -> Path:
    """``root/images/k.png`` and ``root/labels/k.png`` (grey class values); the last label
    has its class 2 pixels set to ``top``."""
    for k in range(n):
        image, labels = make_sample(k)
        if k == n - 1:
            labels[labels == 2] = top
        write_png(root / "images" / f"{k}.png", image)
        write_png(root / "labels" / f"{k}.png", labels)
    return root


def write_config(tmp: Path, root: Path, classes: list[str] = CLASSES) -> Path:
    path = tmp / "classes.yaml"
    path.write_text(CONFIG.format(runs=tmp / "runs", root=root, classes=json.dumps(classes)))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("classes")
    root = write_folder(tmp / "data")
    return {"summary": train(write_config(tmp, root)), "root": root}


def test_training_learns_each_class(trained: dict) -> None:
    s = trained["summary"]
    assert s["classes"] == CLASSES and "threshold" not in s
    # chance (a constant class) gives Dice 0 for at least one foreground class
    assert min(s["val_dice_per_class"].values()) > 0.5, s
    assert s["best_score"] > 0.5
    header = (Path(s["run_dir"]) / "metrics.csv").read_text().splitlines()[0]
    assert "val_dice_bright" in header and "val_dice_dim" in header
    assert list((Path(s["run_dir"]) / "val_predictions").glob("*_classes.png"))


def test_saved_model_names_classes(trained: dict) -> None:
    from retinaseg.models.persistence import read_spec

    spec = read_spec(Path(trained["summary"]["run_dir"]) / "best.safetensors")
    assert spec.classes == CLASSES
    assert spec.params["out_channels"] == 3


def test_segmenter_returns_class_probabilities(trained: dict) -> None:
    from retinaseg import Segmenter

    seg = Segmenter(trained["summary"]["run_dir"])
    image, labels = make_sample(100)
    prob = seg(image)
    assert seg.classes == CLASSES
    assert prob.shape == (3, 32, 32) and prob.dtype == np.float32
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-4)
    assert (prob.argmax(0) == labels).mean() > 0.8


def test_predict_writes_class_maps(trained: dict, tmp_path: Path) -> None:
    import retinaseg
    from retinaseg.io import read_image
    from retinaseg.io.images import read_class_map

    image, labels = make_sample(101)
    write_png(tmp_path / "in" / "a.png", image)
    rep = retinaseg.predict(tmp_path / "in", model=trained["summary"]["run_dir"],
                            out=tmp_path / "out")
    classes = read_class_map(tmp_path / "out" / "a_classes.png")
    assert classes.shape == (32, 32) and set(np.unique(classes)) <= {0, 1, 2}
    assert (classes == labels).mean() > 0.8
    assert read_image(tmp_path / "out" / "a_classes_colour.png").shape == (32, 32, 3)
    assert not (tmp_path / "out" / "a_mask.png").exists()
    row = rep.rows[0]
    assert {"fraction_bright", "fraction_dim"} <= set(row) and row["threshold"] == ""


def test_evaluate_reports_per_class_columns(trained: dict, tmp_path: Path) -> None:
    import csv

    from retinaseg.api import evaluate

    s = evaluate(trained["summary"]["run_dir"], "folder", str(trained["root"]), "all",
                 tmp_path / "eval", options={"modality": "octa",
                                             "classes": "background,bright,dim"})
    assert s["classes"] == CLASSES
    for key in ("dice_bright", "dice_dim", "sen_bright", "spe_dim", "dice_mean", "sen_mean"):
        assert key in s["per_image_mean"] and key in s["pooled"]
    assert s["per_image_mean"]["dice_mean"] > 0.5
    with (tmp_path / "eval" / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and "dice_dim" in rows[0] and "spe_mean" in rows[0]


def test_label_value_beyond_classes_is_one_sentence(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", n=4, top=3)
    cfg = load_config(write_config(tmp_path, root))
    cfg.data.options = {"modality": "octa", "classes": "4"}  # the dataset reads value 3
    with pytest.raises(ConfigError) as err:
        train(cfg)
    msg = str(err.value)
    assert "class value 3" in msg and "model.classes names 3 classes" in msg
    assert "\n" not in msg


def test_dataset_refuses_value_beyond_its_classes(tmp_path: Path) -> None:
    from retinaseg.data import build_dataset

    root = write_folder(tmp_path / "data", n=2, top=5)
    ds = build_dataset("folder", root, "all", classes="background,bright,dim")
    assert ds[0]["label"].dtype == np.int64
    with pytest.raises(RetinasegError, match="holds the value 5, but the dataset has 3 classes"):
        ds[1]


@pytest.mark.parametrize(("change", "message"), [
    ({"loss": {"name": "bce_dice"}}, "needs a multi-class loss"),
    ({"model": {"name": "unet", "classes": ["a", "a"]}}, "distinct"),
    ({"model": {"name": "unet", "classes": None}}, "needs model.classes"),
    ({"model": {"name": "unet", "classes": ["a", "b"], "heads": ["x", "y"]}}, "model.heads"),
])
def test_config_checks_classes(change: dict, message: str) -> None:
    from retinaseg.training.config import validate_config

    raw = {"data": {"dataset": "synthetic"}, "model": {"name": "unet", "classes": CLASSES},
           "loss": {"name": "dice_ce"}, **change}
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)


def test_cli_evaluate_prints_class_dice(trained: dict, tmp_path: Path, capsys) -> None:
    from retinaseg.cli import main

    code = main(["evaluate", "--model", trained["summary"]["run_dir"], "--dataset", "folder",
          "--root", str(trained["root"]), "--split", "all", "--out", str(tmp_path / "ev"),
          "--option", "modality=octa", "--option", "classes=background,bright,dim"])
    out = capsys.readouterr().out
    assert code == 0 and "classes background, bright, dim" in out and "dice_dim=" in out


def test_vessel_model_starts_a_class_model_with_a_new_output_layer(tmp_path: Path) -> None:
    """``model.init`` from a one-output vessel model: every tensor is copied except those of
    the output layer, whose channel count changes; those keep their fresh initialisation."""
    import torch

    from retinaseg.models import build_model
    from retinaseg.models.persistence import ModelSpec, save_model
    from retinaseg.training.trainer import _init_weights

    src = build_model("unet", 1, depth=2, width=8)
    save_model(tmp_path / "vessels.safetensors", src,
               ModelSpec(name="unet", in_channels=1, params={"depth": 2, "width": 8},
                         preprocess="none", modality="octa"))
    cfg_path = write_config(tmp_path, tmp_path / "data")
    write_folder(tmp_path / "data", n=4)
    cfg_path.write_text(cfg_path.read_text().replace(
        "classes: [", f"init: {tmp_path / 'vessels.safetensors'}, classes: ["))
    net = build_model("unet", 1, out_channels=3, depth=2, width=8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(UserWarning, match="start random for the 3 classes"):
        _init_weights(net, load_config(cfg_path))
    theirs = src.state_dict()
    for k, v in net.state_dict().items():
        if theirs[k].shape == v.shape:
            assert torch.equal(v, theirs[k]), k
        else:
            assert torch.equal(v, before[k]), k
    assert any(theirs[k].shape != v.shape for k, v in net.state_dict().items())

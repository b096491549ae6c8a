"""Hostile or broken model files through the CLI: nothing is unpickled, errors are one line.

Library-level checks live in ``tests/models/test_models.py``; here the same cases go through
``retinaseg predict`` end to end, with a pickle that *would* run code if it were ever loaded.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from retinaseg.models import build_model
from retinaseg.models.persistence import PICKLE_SUFFIXES


class _Payload:
    """Unpickling this creates the file named ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)).save(path)
    return path


def _predict(cli, image: Path, model: Path | str, out: Path):
    return cli("predict", image, "--model", model, "--out", out)


@pytest.mark.parametrize("suffix", sorted(PICKLE_SUFFIXES))
def test_pickle_model_files_are_refused_unopened(cli, tmp_path, image, suffix) -> None:
    marker = tmp_path / "code_ran"
    model = tmp_path / f"model{suffix}"
    torch.save({"state_dict": _Payload(marker)}, model)
    res = _predict(cli, image, model, tmp_path / "out")
    res.assert_fatal("refusing to load", "pickle")
    assert not marker.exists()


def test_pickle_renamed_to_safetensors_is_not_unpickled(cli, tmp_path, image) -> None:
    marker = tmp_path / "code_ran"
    model = tmp_path / "model.safetensors"
    model.write_bytes(pickle.dumps(_Payload(marker)))
    res = _predict(cli, image, model, tmp_path / "out")
    res.assert_fatal("not a readable safetensors model file")
    assert not marker.exists()


def test_run_folder_with_only_a_pickle_is_refused(cli, tmp_path, image) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}}, run / "last.pt")
    _predict(cli, image, run, tmp_path / "out").assert_fatal("holds no best.safetensors")


def test_truncated_safetensors_is_clear_error(cli, tmp_path, image, tiny_model) -> None:
    data = tiny_model.read_bytes()
    for n, cut in enumerate((8, len(data) // 2, len(data) - 1)):
        bad = tmp_path / f"cut{n}.safetensors"
        bad.write_bytes(data[:cut])
        _predict(cli, image, bad, tmp_path / "out").assert_fatal(f"{bad}")


def _with_meta(path: Path, meta: dict[str, str] | None) -> Path:
    """Weights of the tiny U-Net with the header metadata ``meta``."""
    net = build_model("unet", 1, depth=2, width=4)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)
    return path


def _spec(**over) -> str:
    spec = {"name": "unet", "in_channels": 1, "params": {"depth": 2, "width": 4},
            "preprocess": [{"name": "grey"}]}
    return json.dumps({**spec, **over})


@pytest.mark.parametrize("case,meta,needle", [
    ("no retinaseg metadata", None, "was not saved by retinaseg"),
    ("wrong width", {"retinaseg": _spec(params={"depth": 2, "width": 8})},
     "do not fit model 'unet'"),
    ("different architecture", {"retinaseg": _spec(name="monai_unet", params={})},
     "do not fit model 'monai_unet'"),
    ("wrong input channels", {"retinaseg": _spec(in_channels=3)}, "do not fit model 'unet'"),
    ("unknown architecture", {"retinaseg": _spec(name="resnet")}, "unknown model 'resnet'"),
    ("unknown parameter", {"retinaseg": _spec(params={"depth": 2, "width": 4, "bogus": 1})},
     "bogus"),
    ("unknown preprocessing", {"retinaseg": _spec(preprocess="magic")}, "magic"),
])
def test_mismatched_model_file_is_clear_error(cli, tmp_path, image, case, meta, needle) -> None:
    model = _with_meta(tmp_path / "m.safetensors", meta)
    _predict(cli, image, model, tmp_path / "out").assert_fatal(needle)


@pytest.mark.parametrize("meta", ["{not json", "[1, 2]", json.dumps({"in_channels": 1})])
def test_malformed_model_metadata_is_clear_error(cli, tmp_path, image, meta) -> None:
    model = _with_meta(tmp_path / "m.safetensors", {"retinaseg": meta})
    _predict(cli, image, model, tmp_path / "out").assert_fatal("m.safetensors")

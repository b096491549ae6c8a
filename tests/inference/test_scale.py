"""Fundus resolution matching by FOV diameter (retinaseg.inference.scale)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaseg.data.synthetic import make_fundus_sample, make_octa_sample
from retinaseg.inference.scale import scale_factor
from retinaseg.inference.segmenter import Segmenter
from retinaseg.models import build_model
from retinaseg.models.persistence import ModelSpec, save_model
from retinaseg.preprocessing.fov import fov_diameter, median_fov_diameter


def test_fov_diameter_of_a_disc_and_of_nothing() -> None:
    yy, xx = np.mgrid[:200, :240]
    disc = (yy - 100) ** 2 + (xx - 120) ** 2 <= 50**2
    assert fov_diameter(disc) == 101
    assert fov_diameter(np.zeros((8, 8), bool)) == 0
    assert median_fov_diameter([disc, disc[:, :150], np.zeros((4, 4), bool)]) == 101


def test_scale_factor_brings_the_fov_to_the_target() -> None:
    img = make_fundus_sample(256, seed=0)["image"]  # FOV radius 0.47·256 → diameter ≈ 241
    d = fov_diameter(make_fundus_sample(256, seed=0)["fov"])
    assert d == pytest.approx(241, abs=2)
    assert scale_factor(img, d / 2) == pytest.approx(0.5, rel=0.03)
    assert scale_factor(img, d * 1.1) == 1.0  # within the 15 % tolerance: untouched
    assert scale_factor(make_octa_sample(64, 0)["image"], 30) == 1.0  # grey: never


def _model(tmp_path, fov_diameter: float | None) -> str:
    torch.manual_seed(0)
    net = build_model("unet", 1, depth=2, width=4, norm="none")
    info = {} if fov_diameter is None else {"fov_diameter": fov_diameter}
    spec = ModelSpec("unet", 1, {"depth": 2, "width": 4, "norm": "none"},
                     [{"name": "green"}], 0.5, "fundus", info)
    return str(save_model(tmp_path / "m.safetensors", net, spec))


@pytest.mark.parametrize("stored, native, expect_side", [(120.5, False, 128),
                                                          (120.5, True, 256),
                                                          (None, False, 256)])
def test_segmenter_rescales_to_the_stored_fov_and_back(tmp_path, stored, native,
                                                       expect_side) -> None:
    img = make_fundus_sample(256, seed=1)["image"]
    seg = Segmenter(_model(tmp_path, stored), device="cpu", match_fov=not native,
                    crop_fov=False)
    seen = []
    seg.net.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    prob = seg(img)
    assert prob.shape == (256, 256) and 0 <= prob.min() <= prob.max() <= 1
    assert seen[0] == (expect_side, expect_side)
    assert seg.last_scale == (1.0 if expect_side == 256 else pytest.approx(0.5, rel=0.03))

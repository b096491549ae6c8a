"""A bundled model's adaptive restoration step (retinaseg.preprocessing.restore) in use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from retinaseg.data.synthetic import make_fundus_sample
from retinaseg.inference.segmenter import Segmenter
from retinaseg.models import build_model
from retinaseg.models.persistence import ModelSpec, save_model
from retinaseg.preprocessing.restore import noise_std


def _saved(tmp_path, steps: list, name: str) -> str:
    torch.manual_seed(0)
    net = build_model("unet", 1, depth=2, width=4, norm="none")
    spec = ModelSpec("unet", 1, {"depth": 2, "width": 4, "norm": "none"}, steps, 0.5,
                     "fundus", {})
    return str(save_model(tmp_path / f"{name}.safetensors", net, spec))


def test_denoise_step_keeps_clean_maps_and_changes_noisy_ones(tmp_path) -> None:
    raw = make_fundus_sample(128, seed=3, noise=0.012)["image"]
    clean = ndimage.gaussian_filter(raw, (1.0, 1.0, 0)).astype(np.float32)
    assert noise_std(clean[..., 1]) < 0.01 < noise_std(raw[..., 1])
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.05, clean.shape), 0, 1)
    noisy = noisy.astype(np.float32)
    plain = Segmenter(_saved(tmp_path, [{"name": "green"}], "plain"), device="cpu",
                      match_fov=False, precision="fp32")
    restoring = Segmenter(_saved(tmp_path, [{"name": "green"}, {"name": "denoise"}], "dn"),
                          device="cpu", match_fov=False, precision="fp32")
    assert np.array_equal(plain(clean), restoring(clean))
    x_plain, x_restored = plain.prepare(noisy), restoring.prepare(noisy)
    assert noise_std(x_restored[0]) < 0.5 * noise_std(x_plain[0])  # a cleaner input
    # an explicit preprocessing replaces the stored one
    override = Segmenter(_saved(tmp_path, [{"name": "green"}], "ov"), device="cpu",
                         match_fov=False, precision="fp32",
                         preprocess=[{"name": "green"}, {"name": "denoise"}])
    np.testing.assert_array_equal(override.prepare(noisy), x_restored)
    np.testing.assert_array_equal(override(noisy), restoring(noisy))


def test_predict_csv_says_which_images_were_restored(tmp_path) -> None:
    from retinaseg.inference.batch import predict_files
    from retinaseg.io import write_png

    raw = make_fundus_sample(128, seed=4)["image"]
    clean = ndimage.gaussian_filter(raw, (1.0, 1.0, 0)).astype(np.float32)
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 0.05, clean.shape), 0, 1)
    write_png(tmp_path / "clean.png", clean)
    write_png(tmp_path / "noisy.png", noisy.astype(np.float32))
    model = _saved(tmp_path, [{"name": "green"}, {"name": "denoise"}], "dn")
    report = predict_files([tmp_path / "clean.png", tmp_path / "noisy.png"], model,
                           tmp_path / "out", device="cpu", precision="fp32")
    notes = {r["image"].rsplit("/", 1)[-1]: r["restoration"] for r in report.rows}
    assert notes["clean.png"] == "none"
    assert notes["noisy.png"].startswith("denoised (tv") and "above 0.01" in notes["noisy.png"]
    assert "restoration" in (tmp_path / "out" / "predictions.csv").read_text().splitlines()[0]


def test_scale_runs_the_network_at_another_size_and_maps_back(tmp_path, capsys) -> None:
    from retinaseg.cli import main
    from retinaseg.data.synthetic import make_octa_sample
    from retinaseg.errors import RetinasegError
    from retinaseg.io import write_png

    model = _saved(tmp_path, [{"name": "grey"}], "octa")
    img = make_octa_sample(96, seed=2)["image"]
    seen: list[tuple[int, int]] = []
    seg = Segmenter(model, device="cpu", precision="fp32", crop_fov=False, scale=0.5)
    seg.net.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    prob = seg(img)
    assert seen == [(48, 48)] and prob.shape == (96, 96) and seg.last_scale == 0.5
    with pytest.raises(RetinasegError, match="scale"):
        Segmenter(model, device="cpu", scale=0.0)
    write_png(tmp_path / "m.png", img)
    assert main(["predict", str(tmp_path / "m.png"), "--model", model, "--out",
                 str(tmp_path / "o"), "--scale", "0.5", "--precision", "fp32"]) == 0
    assert "0.5" in (tmp_path / "o" / "predictions.csv").read_text().splitlines()[1]
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.png"), "--model", model, "--out",
                 str(tmp_path / "o2"), "--scale", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--scale must be at least 0.05 and at most 20" in err
    assert len(err.strip().splitlines()) == 1

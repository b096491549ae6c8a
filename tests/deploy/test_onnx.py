"""ONNX export and ONNX Runtime inference (retinaseg.deploy; issue 28 part 3).

Known answers: an exported file's metadata gives back the exact spec it was made from; the
ONNX Runtime probabilities of the bundled models on real DRIVE and OCTA-500 images are PyTorch's
(float32) to within 1e-4; ``predict --backend onnxruntime`` writes PyTorch's masks; the
plain-Python snippet of docs/how-to/export.md, run without retinaseg, gives the same
probabilities; an operator the exporter lacks is one sentence naming it.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("onnx", reason="the deploy extra (onnx) is not installed")
pytest.importorskip("onnxruntime", reason="the deploy extra (onnxruntime) is not installed")

from retinaseg.cli import main  # noqa: E402
from retinaseg.deploy import OnnxSegmenter, export_onnx, read_onnx_spec  # noqa: E402
from retinaseg.deploy.onnx import INPUT, OUTPUT, require, session  # noqa: E402
from retinaseg.errors import (  # noqa: E402
    ExportError,
    MissingDependencyError,
    ModelLoadError,
    OptionError,
)
from retinaseg.inference.segmenter import Segmenter  # noqa: E402
from retinaseg.io import read_image, read_mask  # noqa: E402
from retinaseg.models import build_model  # noqa: E402
from retinaseg.models.persistence import ModelSpec, resolve_model_path, save_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LIMIT = 1e-4
DRIVE_01 = ("DRIVE", "test", "images", "01_test.tif")
OCTA_6M = ("OCTA-500", "OCTA_6M", "Projection Maps", "OCTA(ILM_OPL)", "10001.bmp")
OCTA_3M = ("OCTA-500", "OCTA_3M", "Projection Maps", "OCTA(ILM_OPL)", "10301.bmp")


def _real(shared_data: Path, parts: tuple[str, ...]) -> Path:
    path = shared_data.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real image not found at {path}")
    return path


def _small_model(tmp_path: Path) -> tuple[Path, ModelSpec]:
    """A seeded width-4 ``unet`` with random BatchNorm statistics, saved as a model file."""
    torch.manual_seed(0)
    net = build_model("unet", 1, depth=2, width=4).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    spec = ModelSpec(name="unet", in_channels=1, params={"depth": 2, "width": 4},
                     preprocess=[{"name": "grey"}, {"name": "standardise"}], threshold=0.37,
                     modality="octa", info={"tta": "hflip", "note": "ünïcode"})
    return save_model(tmp_path / "small.safetensors", net, spec), spec


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundled models exported once per module, by name (filled on first use)."""
    folder = tmp_path_factory.mktemp("onnx")
    cache: dict[str, Path] = {}

    class Lazy(dict):
        def __missing__(self, name: str) -> Path:
            cache[name] = export_onnx(name, folder / f"{name}.onnx").path
            return cache[name]

    return Lazy()


# ---------------------------------------------------------------- export and metadata


def test_small_model_exports_with_dynamic_axes_and_its_spec(tmp_path: Path) -> None:
    import onnx

    model, spec = _small_model(tmp_path)
    report = export_onnx(model, tmp_path / "small.onnx")
    assert report.path.is_file() and report.size_bytes == report.path.stat().st_size
    assert report.max_abs_diff is not None and report.max_abs_diff <= LIMIT
    assert [s[0] for s in report.checked] == [2, 1]  # a batch of two was checked
    back, meta = read_onnx_spec(report.path)
    assert back.to_json() == spec.to_json()  # the recipe round-trips exactly
    assert back.threshold == 0.37 and back.info["tta"] == "hflip"
    assert meta["retinaseg.size_multiple"] == "4"  # 2 poolings
    assert meta["retinaseg.format"] == "1"
    assert meta["retinaseg.source"] == str(model)
    import retinaseg

    assert meta["retinaseg.version"] == retinaseg.__version__
    graph = onnx.load(str(report.path)).graph
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert graph.input[0].name == INPUT and graph.output[0].name == OUTPUT
    assert dims == ["batch", "", "height", "width"]


def test_exported_small_model_matches_torch_at_a_new_size(tmp_path: Path) -> None:
    model, _ = _small_model(tmp_path)
    out = export_onnx(model, tmp_path / "small.onnx").path
    from retinaseg.models.persistence import load_model

    net, _ = load_model(model)
    x = torch.randn(3, 1, 36, 52, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = torch.sigmoid(net(x)).numpy()
    got = 1 / (1 + np.exp(-session(out).run(None, {INPUT: x.numpy()})[0]))
    assert got.shape == (3, 1, 36, 52)
    assert np.abs(got - want).max() <= LIMIT


def test_cli_export_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model, _ = _small_model(tmp_path)
    out = tmp_path / "cli.onnx"
    assert main(["export", str(model), "--format", "onnx", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert out.is_file() and f"wrote {out}" in said and "matches PyTorch" in said


class FFT(nn.Module):
    """A network with an operator the TorchScript exporter cannot convert (``fft_fft2``)."""

    size_multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x).abs()


def test_unsupported_operator_is_one_sentence(tmp_path: Path,
                                              capfd: pytest.CaptureFixture) -> None:
    spec = ModelSpec(name="fftnet", in_channels=1)
    with pytest.raises(ExportError) as err:
        export_onnx(FFT(), tmp_path / "fft.onnx", spec=spec)
    text = str(err.value)
    assert text == ("model 'fftnet' cannot be exported to ONNX: the exporter has no conversion "
                    "for operator 'aten::fft_fft2' at opset 17")
    assert not (tmp_path / "fft.onnx").exists()
    printed = capfd.readouterr()
    assert "Torch IR graph" not in printed.out + printed.err  # the exporter's dump is hidden


def test_cli_unsupported_operator_is_one_error_line(tmp_path: Path, monkeypatch,
                                                    capfd: pytest.CaptureFixture) -> None:
    import retinaseg.deploy.onnx as deploy_onnx

    spec = ModelSpec(name="fftnet", in_channels=1)
    monkeypatch.setattr(deploy_onnx, "load_model", lambda ref: (FFT(), spec))
    assert main(["export", "fftnet", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("error: model 'fftnet' cannot be exported to ONNX") \
        and "'aten::fft_fft2'" in err


def test_volume_models_and_bad_opsets_are_refused(tmp_path: Path) -> None:
    spec = ModelSpec(name="ipn", in_channels=1, info={"input": "volume"})
    with pytest.raises(ExportError, match="takes volumes"):
        export_onnx(nn.Identity(), tmp_path / "v.onnx", spec=spec)
    with pytest.raises(ExportError, match="opset must be between 7 and 21, not 3"):
        export_onnx("octa-vessels", tmp_path / "o.onnx", opset=3)


def test_missing_packages_say_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=re.escape(
            "need the 'onnxruntime' package: install the deploy extra with "
            "pip install 'retinaseg[deploy]'")):
        require("onnxruntime")


def test_onnx_files_are_checked_when_loaded(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ModelLoadError, match="--backend onnxruntime"):
        resolve_model_path(tmp_path / "model.onnx")  # the torch backend points the way
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "img.png")
    argv = ["predict", str(tmp_path / "img.png"), "--model", str(tmp_path / "m.onnx"), "--out",
            str(tmp_path / "out")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: '{tmp_path / 'm.onnx'}' is an ONNX file; run it with the onnxruntime backend "
        "(retinaseg predict --backend onnxruntime)")
    assert main([*argv, "--backend", "onnxruntime"]) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: ONNX model file '{tmp_path / 'm.onnx'}' does not exist"
    bare = tmp_path / "bare.onnx"
    torch.onnx.export(nn.Conv2d(1, 1, 3, padding=1), (torch.zeros(1, 1, 8, 8),), str(bare),
                      dynamo=False, input_names=[INPUT], output_names=[OUTPUT])
    with pytest.raises(ModelLoadError, match="has no retinaseg metadata; export it with"):
        OnnxSegmenter(bare)
    with pytest.raises(ModelLoadError, match="does not exist"):
        OnnxSegmenter(tmp_path / "missing.onnx")
    with pytest.raises(OptionError, match="float32 only"):
        OnnxSegmenter("octa-vessels", precision="bf16")


# ---------------------------------------------------------------- real images


def _same_masks(got: np.ndarray, want: np.ndarray, prob: np.ndarray, thr: float) -> None:
    """Masks agree everywhere except where the probability lies within LIMIT of the
    threshold (float32 rounding may flip those)."""
    differ = got != want
    assert not (differ & (np.abs(prob - thr) > LIMIT)).any()
    assert differ.mean() < 1e-4


@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "image", "head"), [
    ("fundus-vessels", DRIVE_01, None),
    ("fundus-vessels-drive", DRIVE_01, None),  # the 5-member ensemble, one graph
    ("octa-vessels", OCTA_6M, None),
    ("octa-vessels", OCTA_3M, "all_vessel"),  # the second output head
    ("octanet", OCTA_6M, None),  # coarse + fine stages, padding inside forward
])
def test_bundled_models_match_torch_on_real_images(shared_data: Path, exported: dict,
                                                   name: str, image: tuple, head: str | None
                                                   ) -> None:
    img = read_image(_real(shared_data, image))
    torch_seg = Segmenter(name, precision="fp32", threads=1, head=head)
    onnx_seg = OnnxSegmenter(exported[name], threads=1, head=head)
    want, got = torch_seg(img), onnx_seg(img)
    assert got.shape == want.shape == img.shape[:2]
    assert float(np.abs(got - want).max()) <= LIMIT
    assert onnx_seg.threshold == torch_seg.threshold and onnx_seg.tta == torch_seg.tta
    assert onnx_seg.last_scale == torch_seg.last_scale  # the same FOV rescaling
    _same_masks(got > onnx_seg.threshold, want > torch_seg.threshold, want,
                torch_seg.threshold)


@pytest.mark.shared_data
def test_in_memory_export_equals_the_file(shared_data: Path, exported: dict) -> None:
    img = read_image(_real(shared_data, OCTA_6M))
    from_file = OnnxSegmenter(exported["octa-vessels"], threads=1)(img)
    in_memory = OnnxSegmenter("octa-vessels", threads=1)(img)
    np.testing.assert_array_equal(from_file, in_memory)


@pytest.mark.shared_data
def test_predict_backends_write_the_same_masks(shared_data: Path, exported: dict,
                                               tmp_path: Path) -> None:
    inputs = [str(_real(shared_data, DRIVE_01)), str(_real(shared_data, OCTA_6M))]
    common = ["--precision", "fp32", "--threads", "1"]
    runs = {"torch": [], "onnx": ["--backend", "onnxruntime"],
            "file": ["--backend", "onnxruntime", "--model", str(exported["octa-vessels"])]}
    for run, extra in runs.items():
        ins = inputs[1:] if run == "file" else inputs  # the OCTA file for the OCTA image only
        assert main(["predict", *ins, "--out", str(tmp_path / run), *common, *extra]) == 0
    rows = {r: list(csv.DictReader((tmp_path / r / "predictions.csv").open()))
            for r in runs}
    assert [row["model"] for row in rows["onnx"]] == ["fundus-vessels", "octa-vessels"]
    for stem, row in zip(("01_test", "10001"), rows["torch"]):
        thr = float(row["threshold"])
        prob = read_image(tmp_path / "torch" / f"{stem}_prob.png")
        want = read_mask(tmp_path / "torch" / f"{stem}_mask.png")
        for run in (("onnx", "file") if stem == "10001" else ("onnx",)):
            got = read_mask(tmp_path / run / f"{stem}_mask.png")
            _same_masks(got, want, prob, thr)
            assert np.abs(read_image(tmp_path / run / f"{stem}_prob.png") - prob).max() \
                <= 1 / 255 + 1e-6  # 8-bit PNGs of probabilities within 1e-4
            other = next(r for r in rows[run] if r["image"] == row["image"])
            assert other["threshold"] == row["threshold"]
            assert other["rescaled"] == row["rescaled"]


def _snippet() -> str:
    """The plain-Python block of docs/how-to/export.md (the one starting '# run_onnx.py')."""
    text = (REPO / "docs" / "how-to" / "export.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if b.startswith("# run_onnx.py")]
    assert len(found) == 1, "docs/how-to/export.md must hold one '# run_onnx.py' block"
    return found[0]


RUNNER = """
import runpy, sys
script, *args = sys.argv[1:]
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("retinaseg", "torch"))
print("LOADED", loaded)
"""


@pytest.mark.shared_data
def test_docs_snippet_runs_without_retinaseg(shared_data: Path, exported: dict,
                                             tmp_path: Path) -> None:
    # a 390×371 crop: not a multiple of 16, so the snippet's padding is exercised too
    pixels = np.asarray(Image.open(_real(shared_data, OCTA_6M)))[5:395, 13:384]
    image = tmp_path / "crop.png"
    Image.fromarray(pixels).save(image)
    script = tmp_path / "run_onnx.py"
    script.write_text(_snippet(), encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", RUNNER, str(script),
                           str(exported["octa-vessels"]), str(image), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout  # neither retinaseg nor torch was imported
    got = np.load(tmp_path / "out_prob.npy")
    seg = Segmenter("octa-vessels", precision="fp32", threads=1)
    want = seg(read_image(image))
    assert got.shape == want.shape == (390, 371)
    assert float(np.abs(got - want).max()) <= LIMIT
    mask = np.asarray(Image.open(tmp_path / "out_mask.png")) > 0
    _same_masks(mask, want > seg.threshold, want, seg.threshold)
    assert f"threshold {seg.threshold:.3f}" in done.stdout


def test_metadata_spec_is_json_with_what_inference_needs(exported: dict) -> None:
    spec, meta = read_onnx_spec(exported["octa-vessels"])
    raw = json.loads(meta["retinaseg.spec"])
    assert [h["name"] for h in raw["heads"]] == ["large_vessel", "all_vessel"]
    assert raw["preprocess"] == [{"name": "grey"}, {"name": "standardise"}]
    assert raw["info"]["tta"] == "hflip" and raw["modality"] == "octa"
    assert meta["retinaseg.output"].startswith("logits [B, 2, H, W]")
    fundus, _ = read_onnx_spec(exported["fundus-vessels"])
    assert fundus.info["fov_diameter"] == 540.0 and fundus.modality == "fundus"

"""``retinaseg measure`` and ``predict --measure`` (issue 25), and the bad input of
:func:`retinaseg.measure.measure_mask`: one sentence, never a traceback; what cannot be measured
is NaN with a reason."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from retinaseg.cli import main
from retinaseg.errors import OptionError, RetinasegError
from retinaseg.io import write_png
from retinaseg.measure import MaskValueError, measure_mask


def mesh_mask(size: int = 120, hole: int = 15) -> np.ndarray:
    m = np.zeros((size, size), bool)
    for p in range(3, size, 8):
        m[p:p + 2, :] = True
        m[:, p:p + 2] = True
    yy, xx = np.mgrid[:size, :size]
    m[np.hypot(yy - size / 2, xx - size / 2) <= hole] = False
    return m


@pytest.fixture()
def mask_file(tmp_path: Path) -> Path:
    path = tmp_path / "mask.png"
    write_png(path, mesh_mask())
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, expect: str) -> None:
    err = capsys.readouterr().err
    assert code == 2
    assert expect in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


# ---- the API: bad input ----------------------------------------------------------------------
def test_non_binary_mask_is_one_sentence() -> None:
    prob = np.linspace(0, 1, 100).reshape(10, 10)
    with pytest.raises(MaskValueError, match=r"^the mask is not binary: it has 100 distinct "
                                             r"values from 0 to 1 .*threshold it first$"):
        measure_mask(prob)
    with pytest.raises(MaskValueError, match="not binary"):
        measure_mask(np.array([[1, 2], [2, 1]]))
    with pytest.raises(MaskValueError, match="2D"):
        measure_mask(np.zeros((3, 4, 5), bool))


@pytest.mark.parametrize("scale", [0, -0.01, math.nan, math.inf, 11])
def test_bad_scale_is_an_option_error(scale: float) -> None:
    with pytest.raises(OptionError, match="mm_per_px must be"):
        measure_mask(mesh_mask(), mm_per_px=scale)


def test_bad_options_and_shapes() -> None:
    with pytest.raises(OptionError, match="modality must be one of octa, fundus"):
        measure_mask(mesh_mask(), modality="oct")
    with pytest.raises(OptionError, match="grid must be"):
        measure_mask(mesh_mask(), grid="hex")
    with pytest.raises(MaskValueError, match="the image is 10×10 px but the mask is 120×120"):
        measure_mask(mesh_mask(), image=np.zeros((10, 10), np.float32))


def test_empty_mask_is_zero_density_and_faz_not_found() -> None:
    row = measure_mask(np.zeros((100, 100), np.uint8), mm_per_px=0.03, grid="etdrs")
    assert row["vessel_area_density"] == 0 and row["skeleton_length_density_per_mm"] == 0
    assert row["faz_status"] == "not found: the vessel mask is empty"
    assert math.isnan(row["faz_area_mm2"]) and math.isnan(row["faz_circularity"])
    assert row["grid_centre"] == "image (FAZ not found)"
    assert row["etdrs_central_vessel_area_density"] == 0


def test_image_too_small_for_the_grid_has_nan_zones_and_a_reason() -> None:
    row = measure_mask(mesh_mask(), mm_per_px=0.01)  # 1.2 × 1.2 mm: the central disc fits
    assert row["grid_status"].startswith("8 of 9 zones have less than 75% of their area")
    assert 0 < row["etdrs_central_vessel_area_density"] < 1
    assert math.isnan(row["etdrs_inner_superior_vessel_area_density"])
    row = measure_mask(mesh_mask(), mm_per_px=0.005)  # 0.6 × 0.6 mm
    assert "too small for the ETDRS grid" in row["grid_status"]
    assert math.isnan(row["etdrs_central_vessel_area_density"])
    row = measure_mask(mesh_mask(), grid="etdrs")  # no scale
    assert row["grid_status"] == "the ETDRS grid needs the scale (--mm-per-px or --fov)"


def test_octa_and_fundus_rows_have_the_same_columns() -> None:
    octa = measure_mask(mesh_mask(), 0.05, "octa", "etdrs", eye="OD")
    fundus = measure_mask(mesh_mask(), 0.05, "fundus", "etdrs", eye="OD")
    assert list(octa) == list(fundus)
    assert fundus["faz_status"] == "not measured: fundus image" and fundus["grid_centre"] == "image"
    assert octa["grid_centre"] == "faz" and "etdrs_inner_nasal_vessel_area_density" in octa
    assert octa["faz_area_mm2"] == pytest.approx(math.pi * 15 ** 2 * 0.05 ** 2, rel=0.05)


def test_binary_values_other_than_bool() -> None:
    a = measure_mask(mesh_mask().astype(np.uint8) * 255, grid="none")
    b = measure_mask(mesh_mask(), grid="none")
    assert a["vessel_area_density"] == b["vessel_area_density"]
    assert a["faz_area_px2"] == b["faz_area_px2"]


# ---- the command -----------------------------------------------------------------------------
def test_measure_masks_in_mm(mask_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["measure", str(mask_file), "--out", str(out), "--mm-per-px", "0.05",
                 "--eye", "OS"]) == 0
    printed = capsys.readouterr().out
    assert "measured 1 input(s) in mm" in printed and "measured as OCTA" in printed
    (row,) = _rows(out / "measurements.csv")
    assert row["faz_status"] == "ok" and row["grid_centre"] == "faz"
    assert float(row["faz_area_mm2"]) == pytest.approx(math.pi * 15 ** 2 * 0.05 ** 2, rel=0.05)
    assert "etdrs_outer_temporal_vessel_area_density" in row
    assert (out / "mask.html").is_file() and (out / "index.html").is_file()


def test_measure_fov_sets_the_octa500_scale(mask_file: Path, tmp_path: Path) -> None:
    assert main(["measure", str(mask_file), "--out", str(tmp_path / "o"), "--fov", "3M",
                 "--grid", "quadrants", "--no-html"]) == 0
    (row,) = _rows(tmp_path / "o" / "measurements.csv")
    assert float(row["mm_per_px"]) == pytest.approx(3 / 304)
    assert "quadrant_right_vessel_area_density" in row
    assert not (tmp_path / "o" / "index.html").exists()


def test_measure_in_pixels_and_fundus(mask_file: Path, tmp_path: Path) -> None:
    assert main(["measure", str(mask_file), "--out", str(tmp_path / "o"),
                 "--modality", "fundus"]) == 0
    (row,) = _rows(tmp_path / "o" / "measurements.csv")
    assert "skeleton_length_density_per_px" in row and "faz_area_px2" in row
    assert row["faz_status"] == "not measured: fundus image"


@pytest.mark.parametrize(("args", "expect"), [
    (["--mm-per-px", "0"], "--mm-per-px must be above 0"),
    (["--mm-per-px", "-1"], "--mm-per-px must be above 0"),
    (["--mm-per-px", "nan"], "--mm-per-px must be a finite number"),
    (["--mm-per-px", "x"], "argument --mm-per-px: invalid float value"),
    (["--mm-per-px", "0.01", "--fov", "3M"], "give either --mm-per-px or --fov"),
    (["--fov", "9M"], "argument --fov: invalid choice"),
    (["--grid", "hex"], "argument --grid: invalid choice"),
    (["--eye", "left"], "argument --eye: invalid choice"),
    (["--faz", "missing.png"], "FAZ mask 'missing.png' does not exist"),
    (["--model", "nomodel", "--kind", "image"], "nomodel"),
    (["--faz-model", "nofazmodel"], "nofazmodel"),
])
def test_measure_refuses_bad_options_before_any_work(mask_file: Path, tmp_path: Path, capsys,
                                                     args: list[str], expect: str) -> None:
    out = tmp_path / "out"
    code = main(["measure", str(mask_file), "--out", str(out), *args])
    _one_line_error(capsys, code, expect)
    assert not out.exists() or not any(out.iterdir())


def test_non_binary_file_as_mask_is_skipped_with_a_sentence(tmp_path: Path, capsys) -> None:
    grey = tmp_path / "grey.png"
    write_png(grey, np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64))
    code = main(["measure", str(grey), "--out", str(tmp_path / "o"), "--kind", "mask"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "is not a binary mask (256 grey levels" in err
    assert err.strip().splitlines()[-1] == "error: no input could be measured"


def test_measure_segments_an_image_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = np.clip(0.2 + 0.6 * mesh_mask(96, 12) + 0.05 * rng.standard_normal((96, 96)), 0, 1)
    write_png(tmp_path / "octa.png", img.astype(np.float32))
    assert main(["measure", str(tmp_path / "octa.png"), "--out", str(tmp_path / "o"),
                 "--no-html", "--faz-model", "classical"]) == 0
    (row,) = _rows(tmp_path / "o" / "measurements.csv")
    assert row["input"] == "image" and row["model"] == "octa-vessels"
    assert row["modality"] == "octa" and row["faz_source"] == "classical+image"
    assert (tmp_path / "o" / "octa_mask.png").is_file()


def test_predict_measure_adds_the_columns(tmp_path: Path) -> None:
    img = np.clip(0.2 + 0.6 * mesh_mask(96, 12), 0, 1).astype(np.float32)
    write_png(tmp_path / "octa.png", img)
    assert main(["predict", str(tmp_path / "octa.png"), "--out", str(tmp_path / "p"),
                 "--measure", "--no-jit"]) == 0
    (row,) = _rows(tmp_path / "p" / "predictions.csv")
    assert "vessel_fraction" in row and "vessel_area_density" in row
    assert "quadrant_superior_vessel_area_density" in row and "faz_area_px2" in row
    assert float(row["vessel_area_density"]) == pytest.approx(float(row["vessel_fraction"]),
                                                             abs=1e-5)


def test_measure_error_classes_are_retinaseg_errors() -> None:
    assert issubclass(MaskValueError, RetinasegError)

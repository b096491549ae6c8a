"""Reports (:mod:`retinaseg.measure.report`): the CSV, the figure, self-contained HTML pages and
the index, written by :func:`retinaseg.measure.measure_files` for masks."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest

from retinaseg.io import write_png
from retinaseg.measure import analyse_mask, measure_files
from retinaseg.measure.report import figure_png, page_html, write_csv


def vessel_mask(size: int = 160, hole: int = 20) -> np.ndarray:
    """A mesh of 2-px lines every 8 px with an empty disc in the middle (an OCTA-like mask)."""
    m = np.zeros((size, size), bool)
    for p in range(3, size, 8):
        m[p:p + 2, :] = True
        m[:, p:p + 2] = True
    yy, xx = np.mgrid[:size, :size]
    m[np.hypot(yy - size / 2, xx - size / 2) <= hole] = False
    return m


def test_csv_has_the_union_of_columns_and_nan(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    write_csv(path, [{"a": 1.0, "b": math.nan}, {"a": 2.5, "c": "x"}])
    rows = list(csv.DictReader(path.open()))
    assert rows == [{"a": "1", "b": "nan", "c": ""}, {"a": "2.5", "b": "", "c": "x"}]
    write_csv(tmp_path / "none.csv", [])
    assert not (tmp_path / "none.csv").exists()


@pytest.mark.parametrize(("modality", "grid", "scale"), [("octa", "etdrs", 0.02),
                                                         ("octa", "quadrants", None),
                                                         ("fundus", "none", None)])
def test_figure_is_a_png_for_every_kind(modality: str, grid: str, scale: float | None) -> None:
    a = analyse_mask(vessel_mask(), scale, modality, grid)
    png = figure_png(a, "test")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_figure_of_an_empty_mask_and_of_an_image() -> None:
    assert figure_png(analyse_mask(np.zeros((40, 40), bool)))[:4] == b"\x89PNG"
    rgb = np.random.default_rng(0).random((160, 160, 3)).astype(np.float32)
    a = analyse_mask(vessel_mask(), None, "fundus", "quadrants", rgb)
    assert figure_png(a)[:4] == b"\x89PNG"


def test_page_is_self_contained_and_lists_every_column() -> None:
    a = analyse_mask(vessel_mask(), 0.02, "octa", "etdrs")
    text = page_html("x<y>.png", b"\x89PNG fake", a.columns, [z.name for z in a.zones])
    assert "x&lt;y&gt;.png" in text
    sources = re.findall(r"(?:src|href)=['\"]([^'\"]+)", text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http" not in text and "<script" not in text and "<link" not in text
    zones = [z.name for z in a.zones]
    for key in a.columns:  # a zone's columns are the rows of the zone table
        zone = next((z for z in zones if key.startswith(z + "_")), None)
        assert (f"<td>{zone}</td>" if zone else key) in text, key


def test_measure_files_writes_csv_figures_pages_and_index(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_png(src / "a.png", vessel_mask())
    write_png(src / "b.png", np.zeros((160, 160), bool))  # empty: measured, FAZ not found
    (src / "broken.png").write_bytes(b"not an image")
    rep = measure_files(src, tmp_path / "out", mm_per_px=0.02, grid="etdrs")
    out = tmp_path / "out"
    assert [Path(r["image"]).name for r in rep.rows] == ["a.png", "b.png"]
    assert len(rep.skipped) == 1 and "broken.png" in rep.skipped[0][0]
    for stem in ("a", "b"):
        assert (out / f"{stem}_measure.png").read_bytes()[:4] == b"\x89PNG"
        assert "data:image/png;base64," in (out / f"{stem}.html").read_text()
    index = (out / "index.html").read_text()
    assert "href='a.html'" in index and "href='b.html'" in index
    rows = list(csv.DictReader((out / "measurements.csv").open()))
    assert rows[0]["input"] == "mask" and rows[0]["faz_status"] == "ok"
    assert float(rows[0]["faz_area_mm2"]) == pytest.approx(math.pi * 20 ** 2 * 0.02 ** 2,
                                                           rel=0.05)
    assert rows[1]["vessel_area_density"] == "0" and rows[1]["faz_area_mm2"] == "nan"
    assert rows[1]["faz_status"] == "not found: the vessel mask is empty"
    assert not (out / "a_mask.png").exists()  # masks are not rewritten


def test_measure_files_without_html(tmp_path: Path) -> None:
    write_png(tmp_path / "m.png", vessel_mask())
    measure_files(tmp_path / "m.png", tmp_path / "out", html=False)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["m_measure.png", "measurements.csv"]


def test_given_faz_mask_is_measured_instead(tmp_path: Path) -> None:
    write_png(tmp_path / "m.png", vessel_mask())
    faz = np.zeros((160, 160), bool)
    faz[70:90, 70:90] = True
    write_png(tmp_path / "faz.png", faz)
    rep = measure_files(tmp_path / "m.png", tmp_path / "out", faz=tmp_path / "faz.png",
                        html=False)
    row = rep.rows[0]
    assert row["faz_source"] == "mask" and row["faz_area_px2"] == 400
    assert row["faz_file"].endswith("faz.png")


def _constant_model(path: Path, logit: float) -> Path:
    """A one-output OCTA model whose output is ``logit`` everywhere (zero weights)."""
    import torch

    from retinaseg.models import build_model
    from retinaseg.models.persistence import ModelSpec, save_model

    net = build_model("unet", 1, depth=2, width=4)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.head.bias.fill_(logit)
    return save_model(path, net, ModelSpec(name="unet", in_channels=1,
                                           params={"depth": 2, "width": 4},
                                           preprocess=[{"name": "grey"}], modality="octa"))


@pytest.mark.parametrize(("logit", "area", "status"), [(8.0, 160 * 160, "ok"),
                                                       (-8.0, math.nan, "found no FAZ")])
def test_faz_model_measures_the_faz_of_an_image(tmp_path: Path, logit: float, area: float,
                                                status: str) -> None:
    """An OCTA image's FAZ from a FAZ model: everything (area = the image) or nothing (not
    found, with the model named); ``classical`` ignores the model; masks never use it."""
    img = np.where(vessel_mask(), 0.9, 0.1) + np.random.default_rng(0).normal(0, 0.05, (160, 160))
    write_png(tmp_path / "octa.png", np.clip(img, 0, 1).astype(np.float32))
    faz_model = _constant_model(tmp_path / "faz.safetensors", logit)
    rep = measure_files(tmp_path / "octa.png", tmp_path / "out", modality="octa", html=False,
                        faz_model=str(faz_model))
    row = rep.rows[0]
    assert row["input"] == "image" and row["faz_source"] == f"model:{faz_model}"
    assert status in row["faz_status"]
    assert (math.isnan(area) and math.isnan(row["faz_area_px2"])) or row["faz_area_px2"] == area
    classical = measure_files(tmp_path / "octa.png", tmp_path / "c", modality="octa",
                              html=False, faz_model="classical").rows[0]
    assert classical["faz_source"].startswith("classical")
    write_png(tmp_path / "m.png", vessel_mask())
    mask_row = measure_files(tmp_path / "m.png", tmp_path / "m", html=False,
                             faz_model=str(faz_model)).rows[0]
    assert mask_row["faz_source"].startswith("classical")

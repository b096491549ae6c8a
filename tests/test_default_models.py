"""Bundled default models: present, checksummed, picked by modality, useful on real data."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from retinaseg.data.synthetic import make_fundus_sample, make_octa_sample
from retinaseg.inference.modality import DEFAULT_MODELS, detect_modality
from retinaseg.io import write_png
from retinaseg.models.cards import WEIGHTS_DIR, sha256


@pytest.mark.parametrize("name", sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors")))
def test_bundled_model_card_checksum_matches(name: str) -> None:
    """Every bundled file has a card naming its SHA-256; defaults ≤ 10 MB, others ≤ 15 MB."""
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    assert weights.stat().st_size < (10e6 if name in DEFAULT_MODELS.values() else 15e6)
    card = (WEIGHTS_DIR / f"{name}.md").read_text()
    assert re.search(r"sha256 \| `([0-9a-f]{64})`", card).group(1) == sha256(weights)


def test_detect_modality() -> None:
    assert detect_modality(make_fundus_sample(64, 0)["image"]) == "fundus"
    octa = make_octa_sample(64, 0)["image"]
    assert detect_modality(octa) == "octa"
    assert detect_modality(np.repeat(octa[..., None], 3, axis=-1)) == "octa"


def test_predict_without_model_picks_by_modality(tmp_path) -> None:
    import retinaseg

    write_png(tmp_path / "in" / "f.png", make_fundus_sample(96, 1)["image"])
    write_png(tmp_path / "in" / "o.png", make_octa_sample(96, 1)["image"])
    rep = retinaseg.predict(tmp_path / "in", out=tmp_path / "out")
    rows = {r["image"].rsplit("/", 1)[1]: r for r in rep.rows}
    assert rows["f.png"]["model"] == "fundus-vessels" and rows["o.png"]["model"] == "octa-vessels"
    with open(tmp_path / "out" / "predictions.csv") as f:
        table = list(csv.DictReader(f))
    assert {"vessel_fraction", "centerline_length_px"} <= set(table[0])
    for stem in ("f", "o"):
        for kind in ("prob", "mask", "overlay"):
            assert (tmp_path / "out" / f"{stem}_{kind}.png").is_file()


def test_fundus_model_on_a_real_drive_image(shared_data) -> None:
    from retinaseg.data import build_dataset
    from retinaseg.evaluation.metrics import image_metrics
    from retinaseg.inference.segmenter import Segmenter

    s = build_dataset("drive", shared_data / "DRIVE", "test")[0]
    seg = Segmenter("fundus-vessels")
    m = image_metrics(seg(s["image"]), s["label"], seg.threshold, s["fov"])
    assert m["dice"] > 0.78 and m["auc"] > 0.97


def test_octa_model_on_a_real_octa500_image(shared_data) -> None:
    from retinaseg.data import build_dataset
    from retinaseg.evaluation.metrics import image_metrics
    from retinaseg.inference.segmenter import Segmenter

    s = build_dataset("octa500", shared_data / "OCTA-500", "val", fov="6M")[0]
    seg = Segmenter("octa-vessels")
    assert image_metrics(seg(s["image"]), s["label"], seg.threshold)["dice"] > 0.8


def test_octa_model_heads_are_picked_by_name_and_by_dataset(shared_data) -> None:
    """Each head of octa-vessels segments real images of its own dataset well, and evaluate
    picks the head trained on the scored dataset."""
    from retinaseg.data import build_dataset
    from retinaseg.evaluation.metrics import image_metrics
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.models.persistence import read_spec, resolve_model_path

    spec = read_spec(resolve_model_path("octa-vessels"))
    assert spec.head_for("rossa") == "all_vessel" and spec.head_for("octa500") == "large_vessel"
    cases = (("rossa", "ROSSA", {}, "all_vessel", 0.88),
             ("octa500", "OCTA-500", {"fov": "3M"}, "large_vessel", 0.85))
    for name, folder, opts, head, floor in cases:
        s = build_dataset(name, shared_data / folder, "val", **opts)[0]
        seg = Segmenter("octa-vessels", head=head)
        assert seg.head_name == head
        assert image_metrics(seg(s["image"]), s["label"], seg.threshold)["dice"] > floor


def test_head_applies_only_to_picked_models_that_have_heads(tmp_path) -> None:
    """`predict --head all_vessel` with no --model: the OCTA image uses that head, the fundus
    image (fundus-vessels has one output) is segmented as usual instead of failing."""
    import retinaseg

    write_png(tmp_path / "in" / "f.png", make_fundus_sample(96, 2)["image"])
    write_png(tmp_path / "in" / "o.png", make_octa_sample(96, 2)["image"])
    rep = retinaseg.predict(tmp_path / "in", out=tmp_path / "out", head="all_vessel")
    rows = {r["image"].rsplit("/", 1)[1]: r for r in rep.rows}
    assert rows["o.png"]["head"] == "all_vessel" and rows["f.png"]["head"] == ""
    assert not rep.skipped

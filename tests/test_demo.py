"""The demo runs end to end (small synthetic models, 1 epoch) and writes its figure."""

from __future__ import annotations

import json


def test_demo_writes_figure_and_summary(tmp_path) -> None:
    from retinaseg.demo import run_demo

    s = run_demo(tmp_path / "demo", epochs=1)
    assert (tmp_path / "demo" / "side_by_side.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    for kind in ("octa", "fundus"):
        assert 0.0 <= summary[kind]["dice_mean"] <= 1.0
        assert (tmp_path / "demo" / "predictions" / f"{kind}_0_overlay.png").is_file()
    assert s["figure"].endswith("side_by_side.png")

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


def test_demo_root_recognises_a_real_dataset_and_scores_it(tmp_path, shared_data) -> None:
    """``--root`` on the real ROSSA copy: recognised from its layout, val images, good Dice."""
    from retinaseg.demo import run_demo

    s = run_demo(tmp_path / "demo", roots=[shared_data / "ROSSA"], n_real=1)
    real = s["real"][0]
    assert real["dataset"] == "rossa (val)"
    assert real["model"] == "octa-vessels"
    assert real["dice_mean"] > 0.8  # the bundled model scores ~0.9 on ROSSA val
    stem = f"rossa_{real['images'][0]['id']}"
    assert (tmp_path / "demo" / "predictions" / f"{stem}_overlay.png").is_file()
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["real"][0]["images"]


def test_detect_dataset_by_layout(tmp_path, shared_data) -> None:
    import pytest

    from retinaseg.demo import detect_dataset
    from retinaseg.errors import DatasetLayoutError

    assert detect_dataset(shared_data / "DRIVE") == "drive"
    assert detect_dataset(shared_data / "OCTA-500") == "octa500"
    with pytest.raises(DatasetLayoutError, match="not a dataset folder"):
        detect_dataset(tmp_path)


def test_demo_cli_bad_root_is_one_clear_error(tmp_path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "retinaseg.cli", "demo", "--out",
                        str(tmp_path / "o"), "--root", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr

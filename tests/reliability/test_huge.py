"""Large images go through the tiled (sliding-window) path and keep memory bounded.

CI-sized versions of ``benchmarks/speed/huge_images.py`` (HRF 3504 x 2336 and 8192 x 8192,
measured there with the DRIVE-size model): a 2600 x 2600 grey image with a tiny model.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinaseg.inference import predictor
from retinaseg.io import read_image

SIDE = 2600  # 6.8 M pixels > predictor.MAX_WHOLE_PIXELS (1536² = 2.4 M)


@pytest.fixture
def spy_tiled(monkeypatch) -> list[tuple[tuple[int, ...], int]]:
    """Record (input shape, tile) of every call of ``predictor._forward_tiled``."""
    calls: list[tuple[tuple[int, ...], int]] = []
    real = predictor._forward_tiled

    def spy(net, x, tile, *args, **kwargs):
        calls.append((tuple(x.shape), tile))
        return real(net, x, tile, *args, **kwargs)

    monkeypatch.setattr(predictor, "_forward_tiled", spy)
    return calls


def test_large_grey_image_is_tiled_end_to_end(cli, tmp_path, tiny_model, spy_tiled) -> None:
    assert SIDE * SIDE > predictor.MAX_WHOLE_PIXELS
    yy, xx = np.mgrid[:SIDE, :SIDE]
    arr = (128 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0)).astype(np.uint8)  # smooth: fast PNG
    Image.fromarray(arr).save(tmp_path / "big.png", compress_level=1)
    res = cli("predict", tmp_path / "big.png", "--model", tiny_model, "--out", tmp_path / "out",
              "--threads", "1")  # one thread: steady timing on a shared CI machine
    res.assert_ok()
    assert spy_tiled == [((1, 1, SIDE, SIDE), 512)]  # one sliding-window pass, 512-px tiles
    prob = read_image(tmp_path / "out" / "big_prob.png")
    assert prob.shape == (SIDE, SIDE)
    assert read_image(tmp_path / "out" / "big_overlay.png").shape == (SIDE, SIDE, 3)


def test_segmenter_tiles_non_square_rgb(tmp_path, fundus_model, spy_tiled) -> None:
    """HRF aspect ratio (3:2), RGB through the DRIVE preprocessing, scaled down to 2400 x 1600."""
    from retinaseg.inference.segmenter import Segmenter

    image = np.random.default_rng(1).random((1600, 2400, 3), dtype=np.float32)
    prob = Segmenter(fundus_model, device="cpu", threads=1)(image)
    assert prob.shape == (1600, 2400) and prob.dtype == np.float32
    assert np.isfinite(prob).all() and 0 <= prob.min() and prob.max() <= 1
    assert len(spy_tiled) == 1


def test_small_image_is_not_tiled(tiny_model: Path, spy_tiled) -> None:
    from retinaseg.inference.segmenter import Segmenter

    assert Segmenter(tiny_model)(np.zeros((64, 48), np.float32)).shape == (64, 48)
    assert spy_tiled == []


def test_overlay_memory_is_bounded() -> None:
    """``overlay`` works in row blocks: its peak is about its output, not 24 bytes per pixel.

    (It used to make float64 RGB copies: 5.5 GB peak for ``predict`` on 8192 x 8192.)
    """
    from retinaseg.evaluation.figures import overlay

    side = 3072
    image = np.random.default_rng(2).random((side, side), dtype=np.float32)
    mask = image > 0.5
    tracemalloc.start()
    try:
        out = overlay(image, mask)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (side, side, 3) and out.dtype == np.uint8
    extra = peak - out.nbytes  # the old code needed > 3 float64 RGB copies: ~700 MB here
    assert extra < 64 * 2**20, f"overlay needed {extra / 2**20:.0f} MB beyond its output"

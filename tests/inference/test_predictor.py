"""Whole-image and sliding-window inference agree; TTA and padding keep shapes."""

from __future__ import annotations

import numpy as np
import torch

from retinaseg.inference import predict_probability
from retinaseg.models import build_model


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", 1, depth=2, width=4, norm="none").eval()


def test_whole_image_handles_odd_sizes() -> None:
    img = np.random.default_rng(0).random((1, 37, 53), dtype=np.float32)
    p = predict_probability(_net(), img)
    assert p.shape == (37, 53) and p.dtype == np.float32 and 0 <= p.min() <= p.max() <= 1


def test_sliding_window_matches_whole_image() -> None:
    img = np.random.default_rng(1).random((1, 96, 120), dtype=np.float32)
    net = _net()
    whole = predict_probability(net, img)
    tiled = predict_probability(net, img, tile=48, overlap=0.5)
    forced = predict_probability(net, img, max_whole_pixels=100)  # too big → tiles of 512
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(whole - tiled)[inner].mean() < 1e-3
    assert np.abs(whole - tiled).max() < 0.05
    assert np.abs(whole - forced)[inner].max() < 1e-3


def test_tta_is_flip_equivariant() -> None:
    img = np.random.default_rng(2).random((1, 32, 32), dtype=np.float32)
    net = _net()
    a = predict_probability(net, img, tta=True)
    b = predict_probability(net, img[:, :, ::-1].copy(), tta=True)[:, ::-1]
    c = predict_probability(net, img[:, ::-1, :].copy(), tta=True)[::-1, :]
    # averaging over {id, hflip, vflip} makes the output equivariant to those flips only
    # approximately (the set is not a group without the double flip), so compare loosely
    assert np.abs(a - b).mean() < 0.02 and np.abs(a - c).mean() < 0.02

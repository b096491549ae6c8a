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


def test_class_probabilities_sum_to_one() -> None:
    from retinaseg.inference import predict_class_probabilities

    torch.manual_seed(0)
    net = build_model("unet", 1, out_channels=3, depth=2, width=4, norm="none").eval()
    img = np.random.default_rng(2).random((1, 37, 53), dtype=np.float32)
    p = predict_class_probabilities(net, img, tta="flips")
    assert p.shape == (3, 37, 53) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
    with torch.no_grad():
        logits = net(torch.from_numpy(img)[None, :, :36, :52])[0]  # no padding needed here
    plain = predict_class_probabilities(net, img[:, :36, :52])
    np.testing.assert_array_equal(plain.argmax(0), logits.argmax(0).numpy())
    fov = np.zeros((37, 53), bool)
    fov[4:20, 4:30] = True
    boxed = predict_class_probabilities(net, img, fov=fov)
    assert boxed[0, 30:, 40:].min() == 1.0 and boxed[1:, 30:, 40:].max() == 0.0

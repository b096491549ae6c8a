"""Tests for retinaseg.preprocessing.augment: labels stay binary and aligned with the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch.utils.data import default_collate

from retinaseg.preprocessing.augment import build_augmentation


def _blobs(size: int = 64, seed: int = 0) -> np.ndarray:
    """A [1, H, W] float32 0/1 label of a few rectangles (smooth borders, not noise)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((1, size, size), np.float32)
    for _ in range(4):
        r, c = rng.integers(4, size - 20, 2)
        lab[0, r:r + rng.integers(4, 16), c:c + rng.integers(4, 16)] = 1.0
    return lab


def _sample(lab: np.ndarray, fov: bool = True) -> dict:
    d = {"image": lab.copy(), "label": lab.copy(), "id": "s1"}
    if fov:
        d["fov"] = lab.copy()
    return d


def test_outputs_are_plain_float_tensors_without_extra_keys():
    out = build_augmentation(seed=0)(_sample(_blobs()))
    assert set(out) == {"image", "label", "fov", "id"}
    for key in ("image", "label", "fov"):
        assert type(out[key]) is torch.Tensor and not isinstance(out[key], MetaTensor)
        assert out[key].dtype == torch.float32 and out[key].shape == (1, 64, 64)
    assert out["id"] == "s1"


@pytest.mark.parametrize("seed", range(5))
def test_flip_rot90_intensity_keep_exact_alignment(seed):
    lab = _blobs(seed=seed)
    aug = build_augmentation(flips=True, rot90=True, intensity=True, prob=0.9, seed=seed)
    out = aug(_sample(lab))
    label = out["label"].numpy()
    assert set(np.unique(label)) <= {0.0, 1.0} and label.sum() == lab.sum()
    np.testing.assert_array_equal(out["image"].numpy() > 0.5, label > 0.5)
    np.testing.assert_array_equal(out["fov"].numpy(), label)


@pytest.mark.parametrize("seed", range(3))
def test_rotation_and_elastic_keep_labels_binary_and_aligned(seed):
    lab = _blobs(seed=seed)
    aug = build_augmentation(rotate_deg=30, elastic=True, prob=1.0, seed=seed)
    out = aug(_sample(lab))
    label, image = out["label"].numpy(), out["image"].numpy()
    assert set(np.unique(label)) <= {0.0, 1.0} and set(np.unique(out["fov"].numpy())) <= {0, 1}
    assert label.any()
    assert ((image > 0.5) == (label > 0.5)).mean() > 0.98
    np.testing.assert_array_equal(out["fov"].numpy(), label)


def test_known_flips():
    x = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    lab = (x[:1] > 20).astype(np.float32)
    aug = build_augmentation(flips=True, rot90=False, intensity=False, prob=1.0, seed=0)
    out = aug({"image": x, "label": lab})
    np.testing.assert_array_equal(out["image"].numpy(), x[:, ::-1, ::-1])
    np.testing.assert_array_equal(out["label"].numpy(), lab[:, ::-1, ::-1])


def test_intensity_touches_image_only():
    lab = _blobs()
    image = np.random.default_rng(1).random((2, 64, 64)).astype(np.float32)
    aug = build_augmentation(flips=False, rot90=False, intensity=True, prob=1.0, seed=0)
    out = aug({"image": image, "label": lab, "fov": lab})
    assert not np.allclose(out["image"].numpy(), image)
    np.testing.assert_array_equal(out["label"].numpy(), lab)
    np.testing.assert_array_equal(out["fov"].numpy(), lab)


def test_prob_zero_is_identity_and_bool_labels_accepted():
    lab = _blobs()
    out = build_augmentation(rotate_deg=10, elastic=True, prob=0.0)(
        {"image": lab, "label": lab.astype(bool)}
    )
    np.testing.assert_array_equal(out["image"].numpy(), lab)
    np.testing.assert_array_equal(out["label"].numpy(), lab)


def test_seed_reproducible_and_batches_collate():
    image = np.random.default_rng(2).random((3, 32, 32)).astype(np.float32)
    lab = _blobs(32)
    runs = []
    for _ in range(2):
        aug = build_augmentation(rotate_deg=15, elastic=True, seed=123)
        runs.append([aug({"image": image, "label": lab}) for _ in range(3)])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    batch = default_collate(runs[0])
    assert batch["image"].shape == (3, 3, 32, 32) and batch["label"].shape == (3, 1, 32, 32)


def test_invalid_prob():
    with pytest.raises(ValueError):
        build_augmentation(prob=1.5)


@pytest.mark.parametrize("seed", range(4))
def test_zoom_keeps_labels_binary_aligned_and_scales_area(seed):
    lab = np.zeros((1, 64, 64), np.float32)
    lab[0, 24:40, 24:40] = 1.0  # a central 16×16 square: its area scales with zoom²
    aug = build_augmentation(flips=False, rot90=False, intensity=False, zoom=0.5, prob=1.0,
                             seed=seed)
    out = aug(_sample(lab))
    label, image = out["label"].numpy(), out["image"].numpy()
    assert label.shape == lab.shape and set(np.unique(label)) <= {0.0, 1.0}
    assert ((image > 0.5) == (label > 0.5)).mean() > 0.98
    np.testing.assert_array_equal(out["fov"].numpy(), label)
    factor = aug.transforms[1].rand_zoom._zoom[0]
    assert 1 / 1.5 <= factor <= 1.5
    side = np.sqrt(label.sum())
    assert abs(side - 16 * factor) <= 1.5  # nearest-neighbour rounding of the edges


def test_degrade_blurs_and_adds_noise_to_the_image_only():
    lab = _blobs(seed=1)
    aug = build_augmentation(flips=False, rot90=False, intensity=False, degrade=True, prob=1.0,
                             seed=0)
    out = aug(_sample(lab))
    np.testing.assert_array_equal(out["label"].numpy(), lab)
    image = out["image"].numpy()
    inside = image[0, 1:-1, 1:-1][lab[0, 1:-1, 1:-1] == 0]
    assert 0.005 < inside.std() < 0.2  # noise (std drawn in [0, 0.1]) plus blur spill
    assert 0 < image.max() < 1.2 and not np.array_equal(image, lab)

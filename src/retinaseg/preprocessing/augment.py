"""Training-time augmentation as a MONAI dictionary ``Compose``.

The sample is a dict with ``image`` ``[C, H, W]`` (preprocessed, channel-first), ``label``
``[1, H, W]`` and optionally ``fov`` ``[1, H, W]`` (float32 or bool, 0/1); any other keys (``id``,
``path``, ...) pass through untouched. Geometric transforms draw one random draw per call and apply
it to every present key, with nearest-neighbour interpolation for ``label``/``fov`` so they stay
binary and aligned with the image. Intensity transforms touch ``image`` only.

retina-unet (reference §8) trains without augmentation; ``build_augmentation(flips=False,
rot90=False, intensity=False)`` reproduces that (only the tensor conversion remains).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
)
from monai.transforms.transform import MapTransform

KEYS = ("image", "label", "fov")
MODES = ("bilinear", "nearest", "nearest")
"""Interpolation per key for rotation / elastic deformation."""

ELASTIC_SPACING = (32, 32)
"""Distance between elastic control points, pixels."""
ELASTIC_MAGNITUDE = (1.0, 3.0)
"""Range of control-point displacements, pixels."""
NOISE_STD = 0.1
"""Upper bound of the noise standard deviation (each draw picks a std in [0, 0.1]); meant for
standardised images (unit std); on [0, 1] images it is strong."""
BLUR_SIGMA = (0.25, 1.0)
"""Range of the Gaussian blur sigma, pixels."""


def _geometric(
    flips: bool, rot90: bool, rotate_deg: float, elastic: bool, prob: float, zoom: float = 0.0
) -> list[MapTransform]:
    common = {"keys": KEYS, "prob": prob, "allow_missing_keys": True}
    out: list[MapTransform] = []
    if flips:
        out += [RandFlipd(spatial_axis=0, **common), RandFlipd(spatial_axis=1, **common)]
    if rot90:
        out.append(RandRotate90d(max_k=3, spatial_axes=(0, 1), **common))
    if rotate_deg:
        out.append(RandRotated(range_x=math.radians(abs(rotate_deg)), mode=MODES,
                               padding_mode="zeros", keep_size=True, **common))
    if zoom:
        out.append(RandZoomd(min_zoom=1 / (1 + zoom), max_zoom=1 + zoom, mode=MODES,
                             padding_mode="constant", keep_size=True, **common))
    if elastic:
        out.append(Rand2DElasticd(spacing=ELASTIC_SPACING, magnitude_range=ELASTIC_MAGNITUDE,
                                  mode=MODES, padding_mode="zeros", **common))
    return out


def _degrade(prob: float) -> list[MapTransform]:
    """Blur and noise: other devices' optics and speckle (image only)."""
    return [RandGaussianSmoothd(keys="image", prob=prob, sigma_x=BLUR_SIGMA, sigma_y=BLUR_SIGMA),
            RandGaussianNoised(keys="image", prob=prob, std=NOISE_STD)]


def _intensity(prob: float) -> list[MapTransform]:
    return [
        RandAdjustContrastd(keys="image", prob=prob, gamma=(0.7, 1.5)),
        RandScaleIntensityd(keys="image", prob=prob, factors=0.1),
        RandShiftIntensityd(keys="image", prob=prob, offsets=0.1),
    ]


def build_augmentation(
    flips: bool = True,
    rot90: bool = True,
    rotate_deg: float = 0.0,
    elastic: bool = False,
    intensity: bool = True,
    prob: float = 0.5,
    seed: int | None = None,
    zoom: float = 0.0,
    degrade: bool = False,
) -> Compose:
    """Random augmentation for 2D segmentation samples.

    Args:
        flips: random vertical and horizontal flips (each with ``prob``).
        rot90: random rotation by 90°, 180° or 270° (square images keep their shape; ``H × W``
            images may come back ``W × H``).
        rotate_deg: if non-zero, a random rotation in ``[-rotate_deg, +rotate_deg]`` degrees
            (bilinear image, nearest label/fov, zeros outside, same size).
        elastic: random elastic deformation (control points every 32 px, displaced 1–3 px).
        intensity: random gamma contrast (0.7–1.5), scale (×0.9–1.1) and shift (±0.1) of
            ``image`` only.
        prob: probability of each individual random transform.
        zoom: if non-zero, a random zoom by a factor in ``[1/(1+zoom), 1+zoom]`` about the
            centre, same size (bilinear image, nearest label/fov, zeros outside): vessels of
            other pixel spacings (3 mm vs 6 mm scans, other cameras).
        degrade: random Gaussian blur (sigma 0.25–1 px) and additive Gaussian noise (std
            drawn in [0, 0.1]) of ``image`` only; meant for standardised images.
        seed: seeds the transforms' random states for reproducibility (MONAI's DataLoader
            worker init re-seeds them per worker).

    Returns:
        ``Compose`` mapping the sample dict to a dict whose ``image``/``label``/``fov`` are plain
        ``torch.Tensor`` float32 (not ``MetaTensor``), label/fov values unchanged (0/1, or a
        soft distillation target in the label).

    >>> aug = build_augmentation(seed=0)
    >>> out = aug({"image": np.zeros((1, 8, 8), np.float32),
    ...            "label": np.zeros((1, 8, 8), np.float32)})  # doctest: +SKIP
    >>> type(out["image"]), out["label"].shape  # doctest: +SKIP
    (<class 'torch.Tensor'>, torch.Size([1, 8, 8]))
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    transforms: list[MapTransform] = [
        # MetaTensors keep MONAI's transform trace inside the tensors; with plain tensors MONAI
        # would add "<key>_transforms" entries to the sample dict.
        EnsureTyped(keys=KEYS, data_type="tensor", dtype=torch.float32, track_meta=True,
                    allow_missing_keys=True)
    ]
    transforms += _geometric(flips, rot90, rotate_deg, elastic, prob, zoom)
    if intensity:
        transforms += _intensity(prob)
    if degrade:
        transforms += _degrade(prob)
    # EnsureTyped (not the invertible ToTensord) so that no "<key>_transforms" entries appear
    transforms.append(EnsureTyped(keys=KEYS, data_type="tensor", dtype=torch.float32,
                                  track_meta=False, allow_missing_keys=True))
    compose = Compose(transforms)
    if seed is not None:
        compose.set_random_state(seed=seed)
    return compose


class VolumeAugmentation:
    """Random en-face flips and 90° turns of a volume sample, the same for image and labels.

    A volume model maps ``image [C, D, H, W]`` to a 2-D map, so only the two en-face axes
    (the last two) may move; depth never flips (the retina has a top). Each of the vertical
    flip, the horizontal flip and a turn by 90°·k (k in 1-3) happens with ``prob``. Square
    crops keep their shape; ``label``/``fov`` ``[1, H, W]`` move with the image.
    """

    def __init__(self, flips: bool = True, rot90: bool = True, prob: float = 0.5,
                 seed: int | None = None) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.flips, self.rot90, self.prob = flips, rot90, prob
        self.set_random_state(seed)

    def set_random_state(self, seed: int | None = None) -> VolumeAugmentation:
        """Re-seed (the trainer does so each epoch, as for MONAI's ``Compose``)."""
        self.rng = np.random.default_rng(seed)
        return self

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        moves: list[tuple[str, int]] = []
        if self.flips:
            moves += [("flip", ax) for ax in (-2, -1) if self.rng.random() < self.prob]
        if self.rot90 and self.rng.random() < self.prob:
            moves.append(("rot", int(self.rng.integers(1, 4))))
        out = dict(d)
        for key in KEYS:
            if key in out:
                arr = np.asarray(out[key])
                for kind, k in moves:
                    arr = np.flip(arr, axis=k) if kind == "flip" else np.rot90(arr, k, (-2, -1))
                out[key] = np.ascontiguousarray(arr)
        return out

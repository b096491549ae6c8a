"""Synthetic OCTA and fundus images with known vessel labels (no files needed).

Used for tests, smoke runs and demos; not a substitute for the real data of reference §1.
Vessel trees grow from root points by a curved random walk that branches with Murray-like radius
shrinkage (``r_parent³ = r_1³ + r_2³``); each centre-line point is drawn as an anti-aliased disc
(coverage ``clip(r + 0.5 - d, 0, 1)``, ``d`` = distance in px from the pixel centre).

- OCTA-like (``make_octa_sample``): bright vessels entering from the border, a fine capillary
  texture (band-pass noise) on a dark background, a central roughly circular foveal avascular
  zone (FAZ) free of capillaries that vessels bend around, multiplicative (gamma) speckle.
  Label = vessels of radius >= 1 px (width >= 2 px), coverage >= 0.5. ``fov`` is None.
- Fundus-like (``make_fundus_sample``): dark red vessels growing from a bright optic disc on an
  orange, vignetted background with a darker macula, inside a circular field of view (FOV);
  the image is black outside the FOV. Label = every vessel (coverage >= 0.5); ``fov`` = the disc.

Everything is deterministic for a given ``seed`` (one ``numpy.random.Generator``) and takes
well under 0.3 s for 256 × 256 px.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from retinaseg.data.base import Sample, VesselDataset
from retinaseg.errors import ConfigError
from retinaseg.registry import DATASETS

Inside = Callable[[float, float], bool]
Avoid = tuple[float, float, float]  # (centre y, centre x, radius) in px


@dataclass(frozen=True)
class TreeParams:
    """Random-walk parameters, lengths in px (already scaled to the image size)."""

    step: float = 0.5  # px between drawn centre-line points
    curvature: float = 0.06  # std of the per-step direction change (rad)
    seg_len: tuple[float, float] = (15.0, 35.0)  # segment length between branchings
    r_ref: float = 2.0  # segments of radius r are (0.5 + r / r_ref) times longer
    r_min: float = 0.5  # branches thinner than this are not grown
    taper: float = 0.999  # radius factor per step
    branch_angle: tuple[float, float] = (0.5, 1.1)  # rad, total angle between daughters
    max_points: int = 12000


# ------------------------------------------------------------------------------------------
# tree growth and rendering


def _wrap(a: float) -> float:
    """Angle wrapped to (-pi, pi]."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def _steer(a: float, y: float, x: float, avoid: Avoid | None) -> float | None:
    """Bend heading ``a`` around a forbidden disc; None when the point is inside it."""
    if avoid is None:
        return a
    cy, cx, rad = avoid
    dy, dx = y - cy, x - cx
    d = math.hypot(dy, dx)
    if d < rad:
        return None
    if d > 1.8 * rad:
        return a
    out = math.atan2(dy, dx)
    if abs(_wrap(out - a)) >= math.pi / 2:  # heading inwards: turn towards the tangent
        tangent = out + math.copysign(math.pi / 2, _wrap(a - out))
        strength = min(1.0, (1.8 * rad - d) / (0.8 * rad))
        a += strength * 0.6 * _wrap(tangent - a)
    return a


def grow_tree(rng: np.random.Generator, start: tuple[float, float], angle: float,
              radius: float, p: TreeParams, inside: Inside, avoid: Avoid | None = None,
              drift: float = 0.0) -> list[tuple[float, float, float]]:
    """Grow one vessel tree, thickest branches first; returns centre-line points ``(y, x, r)``.

    Growth stops after ``p.max_points`` points, so a cut only ever removes the thinnest twigs.

    ``drift`` (rad per step) bends the walk consistently (fundus arcades); daughters keep half.
    """
    points: list[tuple[float, float, float]] = []
    queue = [(-radius, 0, (start[0], start[1], angle, radius, drift))]
    order = 0
    while queue and len(points) < p.max_points:
        y, x, a, r, dr = heapq.heappop(queue)[2]
        n_steps = int(rng.uniform(*p.seg_len) * (0.5 + r / p.r_ref) / p.step)
        alive = True
        for _ in range(n_steps):
            a = _steer(a + rng.normal(0.0, p.curvature) + dr, y, x, avoid)
            if a is None:
                alive = False
                break
            y, x = y + p.step * math.sin(a), x + p.step * math.cos(a)
            if not inside(y, x):
                alive = False
                break
            points.append((y, x, r))
            r *= p.taper
        for kid in _daughters(rng, y, x, a, r, dr, p) if alive else []:
            order += 1
            heapq.heappush(queue, (-kid[3], order, kid))
    return points


def _daughters(rng: np.random.Generator, y: float, x: float, a: float, r: float, dr: float,
               p: TreeParams) -> list[tuple[float, float, float, float, float]]:
    """Two daughter branches with ``r1³ + r2³ = r³``; the thinner one turns away more."""
    f = rng.uniform(0.5, 0.85)
    r1, r2 = r * f ** (1 / 3), r * (1 - f) ** (1 / 3)
    spread = rng.uniform(*p.branch_angle) * (1 if rng.random() < 0.5 else -1)
    kids = [(y, x, a - spread * (1 - f), r1, dr), (y, x, a + spread * f, r2, 0.5 * dr)]
    return [k for k in kids if k[3] >= p.r_min]


def render_discs(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of discs ``points[:, (y, x, r)]`` (float32 ``[H, W]``).

    Pixel centres sit at integer coordinates; overlapping discs combine by maximum.
    """
    canvas = np.zeros(shape, np.float32)
    if len(points) == 0:
        return canvas
    half = np.ceil(points[:, 2] + 0.5).astype(int)
    for k in np.unique(half):
        sel = points[half == k]
        offs = np.arange(-k, k + 1)
        cy, cx = np.rint(sel[:, 0]).astype(int), np.rint(sel[:, 1]).astype(int)
        iy, ix = np.broadcast_arrays(cy[:, None, None] + offs[None, :, None],
                                     cx[:, None, None] + offs[None, None, :])
        d = np.hypot(iy - sel[:, 0, None, None], ix - sel[:, 1, None, None])
        cov = np.clip(sel[:, 2, None, None] + 0.5 - d, 0.0, 1.0)
        ok = (cov > 0) & (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
        np.maximum.at(canvas, (iy[ok], ix[ok]), cov[ok].astype(np.float32))
    return canvas


def _radius_scale(size: int) -> float:
    """Vessel radii scale with the image, but not below 0.6× (small images keep labels)."""
    return max(size / 256, 0.6)


def _as_array(points: list[tuple[float, float, float]]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


def _bandpass(rng: np.random.Generator, shape: tuple[int, int], lo: float, hi: float,
              ) -> np.ndarray:
    """Zero-mean, unit-std band-pass noise (difference of Gaussians with sigmas lo < hi px)."""
    noise = rng.standard_normal(shape).astype(np.float32)
    band = ndimage.gaussian_filter(noise, lo) - ndimage.gaussian_filter(noise, hi)
    return band / (band.std() + 1e-8)


# ------------------------------------------------------------------------------------------
# OCTA


def _faz(rng: np.random.Generator, size: int) -> tuple[Avoid, np.ndarray]:
    """Irregular, roughly circular FAZ near the centre: ``(cy, cx, r)`` and soft mask [0, 1]."""
    cy, cx = size / 2 + rng.normal(0, 0.03 * size, 2)
    rad = size * rng.uniform(0.06, 0.09)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    theta = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + sum(rng.uniform(0, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
                     for k in (2, 3, 5))
    d = np.hypot(yy - cy, xx - cx) / (rad * wobble)
    return (cy, cx, rad * 1.15), np.clip(1.5 - d, 0.0, 1.0)


def _octa_trees(rng: np.random.Generator, size: int, avoid: Avoid) -> np.ndarray:
    """Centre-line points of 4-6 trees entering from the border towards the FAZ."""
    s, sr = size / 256, _radius_scale(size)
    p = TreeParams(seg_len=(18 * s, 40 * s), r_ref=2.0 * sr, r_min=0.45,
                   max_points=int(9000 * s * s) + 500)
    margin = 3.0

    def inside(y: float, x: float) -> bool:
        return -margin <= y < size + margin and -margin <= x < size + margin

    points: list[tuple[float, float, float]] = []
    for _ in range(rng.integers(4, 7)):
        t = rng.uniform(0, 2 * np.pi)  # entry point on the border, heading inwards
        y0 = size / 2 - 0.5 * size * math.sin(t)
        x0 = size / 2 - 0.5 * size * math.cos(t)
        heading = t + rng.normal(0, 0.35)
        points += grow_tree(rng, (y0, x0), heading, rng.uniform(1.8, 2.8) * sr, p, inside, avoid)
    return _as_array(points)


def make_octa_sample(size: int = 256, seed: int = 0) -> dict[str, Any]:
    """One OCTA-like en-face image; returns the ``VesselDataset.__getitem__`` dict.

    ``image``: float32 ``[size, size]`` in [0, 1]; ``label``: bool ``[size, size]`` (vessels of
    width >= 2 px); ``fov``: None; ``id``: ``"octa-<seed>"``; ``path``: ``""``.
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    avoid, faz = _faz(rng, size)
    pts = _octa_trees(rng, size, avoid)
    big = pts[:, 2] >= 1.0
    cov_big = render_discs(pts[big], shape)
    cov_small = render_discs(pts[~big], shape)
    mesh = np.exp(-((_bandpass(rng, shape, 1.2, 3.0) / 0.35) ** 2))  # zero-crossing network
    img = 0.05 + 0.25 * mesh * (1 - faz)
    img = np.maximum(img, 0.35 * cov_small)
    img = np.maximum(img, (0.72 + 0.1 * rng.random()) * cov_big)
    img = img * rng.gamma(6.0, 1 / 6.0, shape)  # multiplicative speckle, mean 1
    img = ndimage.gaussian_filter(img.astype(np.float32), 0.5)
    return {"id": f"octa-{seed}", "image": np.clip(img, 0, 1).astype(np.float32),
            "label": cov_big >= 0.5, "fov": None, "path": ""}


# ------------------------------------------------------------------------------------------
# fundus


def _fundus_background(rng: np.random.Generator, size: int, disc: tuple[float, float],
                       macula: tuple[float, float], fov_r: float) -> np.ndarray:
    """Orange, vignetted retina with a bright optic disc and a darker macula, ``[H, W, 3]``."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c = size / 2
    rho2 = ((yy - c) ** 2 + (xx - c) ** 2) / fov_r**2
    low = 1 + 0.05 * ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 16) * 8
    shade = (1 - 0.3 * rho2) * low
    od = np.exp(-((yy - disc[0]) ** 2 + (xx - disc[1]) ** 2) / (2 * (0.045 * size) ** 2))
    mac = np.exp(-((yy - macula[0]) ** 2 + (xx - macula[1]) ** 2) / (2 * (0.08 * size) ** 2))
    base = np.array([0.85, 0.42, 0.18], np.float32) * rng.uniform(0.9, 1.1, 3)
    img = base * (shade * (1 - 0.3 * mac))[..., None]
    return img + np.array([0.15, 0.45, 0.35], np.float32) * od[..., None]


def _fundus_trees(rng: np.random.Generator, size: int, disc: tuple[float, float],
                  macula: tuple[float, float], fov_r: float) -> np.ndarray:
    """Four main trees (superior/inferior, temporal/nasal) growing from the optic disc."""
    s, sr = size / 256, _radius_scale(size)
    p = TreeParams(seg_len=(20 * s, 45 * s), r_ref=2.0 * sr, r_min=0.5, curvature=0.05,
                   max_points=int(7000 * s * s) + 500)
    c = size / 2

    def inside(y: float, x: float) -> bool:
        return (y - c) ** 2 + (x - c) ** 2 < (fov_r - 1) ** 2

    temporal = 0.0 if macula[1] > disc[1] else math.pi  # direction towards the macula
    side = 1.0 if temporal == 0.0 else -1.0
    avoid = (macula[0], macula[1], 0.07 * size)
    points: list[tuple[float, float, float]] = []
    for vertical in (-1.0, 1.0):  # up (-y) and down (+y)
        arcade = temporal + vertical * side * rng.uniform(1.0, 1.3)
        drift = -vertical * side * rng.uniform(0.003, 0.006)  # curve back towards the macula
        for heading, r0, dr in ((arcade, 2.3, drift), (temporal + math.pi - vertical * side
                                                        * rng.uniform(0.6, 1.1), 1.7, 0.0)):
            start = (disc[0] + vertical * 0.02 * size, disc[1])
            points += grow_tree(rng, start, heading, r0 * sr * rng.uniform(0.9, 1.1), p, inside,
                                avoid, dr)
    return _as_array(points)


def make_fundus_sample(size: int = 256, seed: int = 0, noise: float = 0.004) -> dict[str, Any]:
    """One colour-fundus-like image; returns the ``VesselDataset.__getitem__`` dict.

    ``noise``: std of the white sensor noise added (intensity units). With the default,
    Immerkær's estimate (:func:`retinaseg.preprocessing.restore.noise_std`, which the synthetic
    vessels raise too) reads 0.005-0.007 at 512 px, the demo's size, below the 0.01 trigger of
    the bundled model's ``denoise`` step (DRIVE photographs read 0.0024-0.0044); at 128 px and
    less it reads 0.008-0.019, so small generated images may be denoised.

    ``image``: float32 ``[size, size, 3]`` in [0, 1], black outside the FOV; ``label``: bool
    ``[size, size]``; ``fov``: bool circular field of view; ``id``: ``"fundus-<seed>"``.
    """
    rng = np.random.default_rng(seed)
    c, fov_r = size / 2, 0.47 * size
    eye = 1 if rng.random() < 0.5 else -1  # optic disc left or right of the centre
    disc = (c + rng.normal(0, 0.03 * size), c + eye * 0.27 * size)
    macula = (c + rng.normal(0, 0.02 * size), c - eye * 0.05 * size)
    yy, xx = np.mgrid[:size, :size]
    fov = (yy - c) ** 2 + (xx - c) ** 2 < fov_r**2
    cov = render_discs(_fundus_trees(rng, size, disc, macula, fov_r), (size, size))
    img = _fundus_background(rng, size, disc, macula, fov_r)
    img = img * (1 - cov[..., None] * np.array([0.3, 0.6, 0.5], np.float32))
    img = img + rng.normal(0, noise, img.shape)
    img = np.clip(img, 0, 1) * fov[..., None]
    return {"id": f"fundus-{seed}", "image": img.astype(np.float32),
            "label": (cov >= 0.5) & fov, "fov": fov, "path": ""}


# ------------------------------------------------------------------------------------------
# dataset


GENERATORS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "octa": make_octa_sample,
    "fundus": make_fundus_sample,
}
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


@DATASETS.register("synthetic")
class SyntheticDataset(VesselDataset):
    """Generated images; ``root`` is ignored. Each split holds ``n`` samples.

    Sample ``i`` of split ``s`` uses the generator seed derived from ``(seed, s, i)`` with
    ``numpy.random.SeedSequence``, so splits are deterministic and disjoint.
    """

    name = "synthetic"
    title = "synthetic"
    modality = "octa"
    splits = ("train", "val", "test")
    val_split = "val"
    layout = "no files: images are generated on the fly (root is ignored)"
    options_help = ("kind=octa|fundus (default octa), n=<samples per split> (default 16), "
                    "size=<px> (default 256), seed=<int> (default 0)")
    defaults = {"kind": "octa", "n": "16", "size": "256", "seed": "0"}
    choices = {"kind": ("octa", "fundus")}
    needs_root = False

    def _find_samples(self) -> list[Sample]:
        self.kind = self.options["kind"]
        self.modality = self.kind
        self.n = self._int_option("n", 1)
        self.size = self._int_option("size", 16)
        self.seed = self._int_option("seed", 0)
        return [Sample(f"{self.kind}_{split}_{i:03d}", (), None, None,
                       {"split": split, "seed": self._sample_seed(split, i)})
                for split in self._concrete_splits() for i in range(self.n)]

    def _int_option(self, key: str, minimum: int) -> int:
        value = self.options[key]
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise ConfigError(f"synthetic option {key}='{value}' must be an integer >= {minimum}")
        return number

    def _sample_seed(self, split: str, index: int) -> int:
        seq = np.random.SeedSequence([self.seed, _SPLIT_CODE[split], index])
        return int(seq.generate_state(1)[0])

    def _has_label(self, sample: Sample) -> bool:
        return True  # every generated sample has a label

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        item = GENERATORS[self.kind](self.size, sample.meta["seed"])
        item["id"] = sample.id
        return item


__all__ = ["SyntheticDataset", "grow_tree", "make_fundus_sample", "make_octa_sample",
           "render_discs"]

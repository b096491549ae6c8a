"""Volume datasets: 3D OCTA cubes with 2D vessel labels, for IPN (reference §6, §1.1).

Items are the ``VesselDataset.__getitem__`` dict with a volume image: ``image`` float32
``[D, H, W]`` in [0, 1] (``[C, D, H, W]`` when several volume folders are stacked), ``label``
bool ``[H, W]`` (en-face, the orientation of :mod:`retinaseg.io.volumes`), ``fov`` None. The
classes set ``volumetric = True`` so that callers can tell them from 2D datasets.

- ``synthetic_volume``: generated cubes (:func:`make_volume_sample`); no files.
- ``volume_folder``: volumes in one folder (B-scan sub-folders, ``.npy``, multi-page TIFF,
  NIfTI), 2D labels in another, matched by stem; e.g. OCTA-500 itself with
  ``root=OCTA_6M volumes=OCTA labels=GT_LargeVessel`` (``volumes=OCT,OCTA`` for 2 channels).

Synthetic cube (``[D, H, W]``, lengths as fractions of D so any size down to 16³ works): the 2D
vessel trees and FAZ of :mod:`retinaseg.data.synthetic` are grown in the en-face plane; a smooth,
tilted and curved retinal surface ``top(y, x)`` (0.18-0.36·D) starts the retina, which is
0.35·D thick; vessels lie inside the inner-retina band (the first half of the retina) at a depth
``z(y, x)`` that varies smoothly (a low-pass random field), with an axial Gaussian profile
(σ 0.02·D for large vessels, 0.012·D for small ones); capillary texture fills the band outside
the FAZ (inner-band level ≈ half the RPE band's, as in OCTA-500 A-scans); the outer
retina is dark; a bright RPE/choroid band closes the retina and carries the
vessels' projection artefacts. Intensity falls with depth below the surface
(``exp(-(d - top) / 0.8·D)``) and is multiplied by gamma speckle (mean 1). The label is the 2D
mask of the large vessels: ``vessels.max(axis=0) >= 0.5``, where ``vessels`` (returned with
``return_vessels=True``) is their rendered occupancy, exactly 1 at the centre plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from retinaseg.data.base import ALL, Sample
from retinaseg.data.datasets import Folder
from retinaseg.data.synthetic import SyntheticDataset, _faz, _octa_trees, render_discs
from retinaseg.errors import DatasetLayoutError
from retinaseg.io import natural_key, read_mask, read_volume
from retinaseg.io.volumes import VOLUME_FILE_SUFFIXES
from retinaseg.preprocessing.projection import project
from retinaseg.registry import DATASETS

# --------------------------------------------------------------------------------------------
# synthetic cubes


def _smooth_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Low-pass random field ``[size, size]`` scaled to [0, 1]."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return ((field - field.min()) / (np.ptp(field) + 1e-12)).astype(np.float32)


def _retina_top(rng: np.random.Generator, size: int, depth: int) -> np.ndarray:
    """Retinal surface ``[size, size]`` (planes): a tilt, a bowl and a gentle wobble."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / max(size - 1, 1) - 0.5
    ty, tx = rng.uniform(-1, 1, 2)
    shape = 0.5 * (ty * yy + tx * xx) + rng.uniform(0.5, 1.0) * (yy**2 + xx**2)
    wobble = _smooth_field(rng, size, size / 6) - 0.5
    top = 0.24 + 0.08 * shape + 0.03 * wobble
    return (np.clip(top, 0.18, 0.36) * depth).astype(np.float32)


def vessel_cube(coverage: np.ndarray, centre: np.ndarray, sigma: float,
                depth: int) -> np.ndarray:
    """Occupancy ``[D, H, W]`` of vessels of lateral ``coverage`` at depth ``centre`` (planes).

    ``coverage[y, x] · exp(-(d - round(centre[y, x]))² / 2σ²)``: exactly ``coverage`` at the
    centre plane, so ``vessel_cube(...).max(axis=0) == coverage``.
    """
    planes = np.arange(depth, dtype=np.float32)[:, None, None]
    z = np.clip(np.rint(centre), 0, depth - 1)[None]
    return (coverage[None] * np.exp(-0.5 * ((planes - z) / sigma) ** 2)).astype(np.float32)


def make_volume_sample(size: int = 64, depth: int = 64, seed: int = 0,
                       return_vessels: bool = False) -> dict[str, Any]:
    """One synthetic OCTA cube with its 2D large-vessel label (module docstring).

    Returns ``{"id", "image" float32 [depth, size, size] in [0, 1], "label" bool [size, size],
    "fov": None, "path": ""}`` plus ``"vessels"`` (float32 ``[D, H, W]`` occupancy of the
    labelled vessels) when ``return_vessels``. Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    avoid, faz = _faz(rng, size)
    pts = _octa_trees(rng, size, avoid)
    big = pts[:, 2] >= 1.0
    cov_big, cov_small = render_discs(pts[big], shape), render_discs(pts[~big], shape)
    top = _retina_top(rng, size, depth)
    band = 0.5 * 0.35 * depth  # inner retina (ILM→OPL)
    z = top + band * (0.2 + 0.6 * _smooth_field(rng, size, size / 8))
    vessels = vessel_cube(cov_big, z, max(0.02 * depth, 0.7), depth)
    small = vessel_cube(cov_small, z + 0.15 * band, max(0.012 * depth, 0.6), depth)
    image = _tissue(rng, top, band, faz, cov_big, depth)
    np.maximum(image, 0.8 * vessels, out=image)
    np.maximum(image, 0.45 * small, out=image)
    planes = np.arange(depth, dtype=np.float32)[:, None, None]
    image *= np.exp(-np.maximum(planes - top[None], 0) / (0.8 * depth))
    image *= rng.gamma(4.0, 0.25, image.shape).astype(np.float32)
    np.clip(image, 0.0, 1.0, out=image)
    item = {"id": f"volume-{seed}", "image": image, "label": cov_big >= 0.5, "fov": None,
            "path": ""}
    if return_vessels:
        item["vessels"] = vessels
    return item


def _tissue(rng: np.random.Generator, top: np.ndarray, band: float, faz: np.ndarray,
            cov_big: np.ndarray, depth: int) -> np.ndarray:
    """Background flow signal ``[D, H, W]``: capillary band, dark outer retina, RPE band."""
    size = top.shape[0]
    planes = np.arange(depth, dtype=np.float32)[:, None, None]
    rel = planes - top[None]  # planes below the surface
    noise = rng.standard_normal((size, size)).astype(np.float32)
    mesh = ndimage.gaussian_filter(noise, 0.8) - ndimage.gaussian_filter(noise, 2.0)
    mesh = np.exp(-((mesh / (mesh.std() + 1e-8) / 0.35) ** 2))
    inner = (rel >= 0) & (rel < band)
    image = np.where(inner, (0.12 + 0.25 * mesh) * (1 - 0.8 * faz), 0.0).astype(np.float32)
    image[(rel >= band) & (rel < 2 * band)] = 0.03
    rpe = np.exp(-0.5 * ((rel - 2 * band - 0.05 * depth) / max(0.04 * depth, 0.7)) ** 2)
    image += (0.4 * (1 + 0.5 * cov_big) * rpe).astype(np.float32)  # with projection artefacts
    return image


PROJECTIONS = ("none", "mean", "max", "auto_mean", "auto_max")
"""``project`` option of the volume datasets: ``none`` yields the volume; otherwise its en-face
projection (``auto_*``: inside the automatic inner-retina slab), for the "project, then a 2-D
network" route on the same volumes."""


def _projected(image: np.ndarray, how: str) -> np.ndarray:
    """``image`` ``[D,H,W]``/``[C,D,H,W]`` as the projection ``how`` (``[H,W]``/``[H,W,C]``)."""
    if how == "none":
        return image
    method = how.removeprefix("auto_")
    slab = "auto" if how.startswith("auto_") else None
    if image.ndim == 3:
        return project(image, method, slab=slab)
    return np.stack([project(ch, method, slab=slab) for ch in image], axis=-1)


class _Projecting:
    """Mixin: the ``project`` option turns a volume dataset into a 2-D one."""

    options: dict[str, str]
    volumetric: bool

    def _set_projection(self) -> None:
        self.volumetric = self.options["project"] == "none"

    def _output(self, item: dict[str, Any]) -> dict[str, Any]:
        item["image"] = _projected(item["image"], self.options["project"])
        return item


@DATASETS.register("synthetic_volume")
class SyntheticVolumeDataset(_Projecting, SyntheticDataset):
    """Generated OCTA cubes (:func:`make_volume_sample`); ``root`` is ignored.

    Each split holds ``n`` cubes; seeds are derived from ``(seed, split, i)`` as in
    ``synthetic`` (and differ from its seeds), so splits are deterministic and disjoint.
    """

    name = "synthetic_volume"
    title = "synthetic_volume"
    modality = "octa"
    volumetric = True
    layout = "no files: volumes are generated on the fly (root is ignored)"
    options_help = ("n=<volumes per split> (default 8), size=<lateral px> (default 64), "
                    "depth=<planes> (default 64), seed=<int> (default 0), project=none|mean|"
                    "max|auto_mean|auto_max (default none: the volume; else its projection)")
    defaults = {"n": "8", "size": "64", "depth": "64", "seed": "0", "project": "none"}
    choices: dict[str, tuple[str, ...]] = {"project": PROJECTIONS}

    def _find_samples(self) -> list[Sample]:
        self._set_projection()
        self.n = self._int_option("n", 1)
        self.size = self._int_option("size", 16)
        self.depth = self._int_option("depth", 16)
        self.seed = self._int_option("seed", 0)
        return [Sample(f"volume_{split}_{i:03d}", (), None, None,
                       {"split": split, "seed": self._sample_seed(split, i)})
                for split in self._concrete_splits() for i in range(self.n)]

    def _sample_seed(self, split: str, index: int) -> int:
        return super()._sample_seed(split, index) ^ 0x5EED_0003

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        item = make_volume_sample(self.size, self.depth, sample.meta["seed"])
        item["id"] = sample.id
        return self._output(item)


# --------------------------------------------------------------------------------------------
# volumes on disk


def volume_stem(path: Path) -> str | None:
    """Stem of a volume entry (``a.nii.gz`` → ``a``), or None if ``path`` is not one.

    Volumes are sub-folders (B-scan folders; hidden ones skipped) and ``.npy``, ``.tif``,
    ``.tiff``, ``.nii``, ``.nii.gz`` files.
    """
    name = path.name
    if name.startswith("."):
        return None
    if path.is_dir():
        return name
    lower = name.lower()
    for suffix in sorted(VOLUME_FILE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix) and path.is_file():
            return name[: -len(suffix)]
    return None


def _volume_index(folder: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = volume_stem(path)
        if stem is not None:
            index.setdefault(stem, path)
    return index


@DATASETS.register("volume_folder")
class VolumeFolder(_Projecting, Folder):
    """Volumes with optional 2D labels matched by stem (label ``<labels>/<stem><suffix>.*``).

    ``volumes`` may list several folders (``OCT,OCTA``): a sample needs the same stem in each,
    and its image is ``[C, D, H, W]`` in that order. ``axes`` is the stored axis order of array
    files (:func:`retinaseg.io.read_volume`). Only split ``all``.
    """

    name, title = "volume_folder", "volume_folder"
    modality = "octa"
    volumetric = True
    layout = ("<root>/<volumes>/<stem>/ (B-scans 1.bmp..N.bmp) or <stem>.npy|.tif|.nii|.nii.gz "
              "[+ <root>/<labels>/<stem>.png|bmp|...]")
    options_help = ("volumes=<folder>[,<folder>...] (default volumes); labels=<folder> "
                    "(default labels; optional); label_suffix=<text after the stem> (default "
                    "none); axes=<order of D,H,W in array files> (default DHW); project=none|"
                    "mean|max|auto_mean|auto_max (default none: the volume; else its projection)")
    defaults = {"volumes": "volumes", "labels": "labels", "label_suffix": "", "axes": "DHW",
                "project": "none"}
    choices: dict[str, tuple[str, ...]] = {"project": PROJECTIONS}

    def _find_samples(self) -> list[Sample]:
        self._set_projection()
        folders = [self._volume_dir(v) for v in self.options["volumes"].split(",")]
        labels = self._optional_dir("labels")
        label_index = self._by_stem(labels)
        indexes = [_volume_index(f) for f in folders]
        out = []
        for stem in sorted(set().union(*indexes), key=natural_key):
            paths = [idx.get(stem) for idx in indexes]
            missing = [f.name for f, p in zip(folders, paths) if p is None]
            label = label_index.get(stem + self.options["label_suffix"])
            if missing or (labels is not None and label is None):
                where = f"no volume in {', '.join(missing)}" if missing else \
                    f"no label '{labels.name if labels else ''}/{stem}.*'"
                self._skip(stem, where)
                continue
            out.append(Sample(stem, tuple(p for p in paths if p is not None), label, None,
                              {"split": ALL}))
        return out

    def _volume_dir(self, name: str) -> Path:
        """``name`` as given (absolute) or under the root; it must be a folder."""
        path = Path(name.strip()).expanduser()
        if not path.is_absolute():
            if self.root is None:
                raise DatasetLayoutError(f"volume_folder: 'volumes={name.strip()}' is relative, "
                                         "so a root folder is needed (or give an absolute path)")
            path = self.root / path
        if not path.is_dir():
            raise self._layout_error(name.strip())
        return path

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        axes = self.options["axes"]
        vols = [read_volume(p, axes=None if p.is_dir() else axes) for p in sample.image]
        shapes = {v.shape for v in vols}
        if len(shapes) > 1:
            sizes = ", ".join(f"'{p.name}' {v.shape}" for p, v in zip(sample.image, vols))
            raise DatasetLayoutError(f"volume_folder sample '{sample.id}': channel volumes "
                                     f"differ in shape ({sizes})")
        image = vols[0] if len(vols) == 1 else np.stack(vols)
        label = None if sample.label is None else read_mask(sample.label)
        if label is not None and label.shape != image.shape[-2:]:
            raise DatasetLayoutError(f"volume_folder sample '{sample.id}': label "
                                     f"'{sample.label}' is {label.shape[0]}x{label.shape[1]} px "
                                     f"but the volume is {image.shape[-2]}x{image.shape[-1]} px "
                                     "en face")
        return self._output({"id": sample.id, "image": image, "label": label, "fov": None,
                             "path": str(sample.image[-1])})


__all__ = ["SyntheticVolumeDataset", "VolumeFolder", "make_volume_sample",
           "vessel_cube", "volume_stem"]

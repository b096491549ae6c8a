"""SAM-OCTA2's layer-sequence samples as the dataset ``sam_octa2_layers`` (reference §1.6, §7.2).

SAM-OCTA2 treats the en-face layers of an OCTA volume (depth indices, e.g. 237-246) as the
frames of a video and segments vessel objects or the FAZ through them with SAM 2. Its authors
ship the layers as ready-made figures; this module reads them as they are. Layout, checked on
the files of ``OCTA-500/derived_SAM-OCTA2`` (subjects 10301 and 10441) and the seed's loader::

    <root>/RV_LayerSequence/<id>/<layer>.png           RGB strip of 4 square panels (512×2048):
        [region mask | region overlay | vessels-in-region overlay | grey OCTA layer]
    <root>/RV_LayerSequence/<id>/<layer>/<obj:02d>.png  {0, 255} mask (512×512) of vessel object
    <root>/RV_LayerSequence/<id>/<layer>/objects.npy    int array: the object ids of that layer
    <root>/RV_LayerSequence/<id>/ref_mask/<layer>.png   colour preview (not read)
    <root>/FAZ_LayerSequence/<id>/<layer>.png          RGB strip of 3 square panels (512×1536):
        [overlay preview | grey OCTA layer | FAZ mask]

The input is the grey panel (the rightmost for RV, the middle one for FAZ); the FAZ is one
object, id 0, whose mask is the rightmost FAZ panel. Frames are ordered by layer number. Object
ids index the seed's 32-colour palette of vessel trees (``Colored_RV``); an id keeps its meaning
through the layers of one subject. Subjects are split by the official OCTA-500 id ranges.

Two views (option ``view``):

- ``frames`` (default): one item per (subject, layer), the usual
  :class:`~retinaseg.data.base.VesselDataset` dict with ``image`` float32 ``[H, W]`` (the grey
  panel) and ``label`` bool ``[H, W]`` (the union of the layer's objects, or the FAZ), so the
  2-D trainers and ``evaluate`` use the layers as images.
- ``sequence``: one item per subject, ``image`` float32 ``[T, H, W]``, ``label`` bool
  ``[T, H, W]`` (union per frame) and the keys of :meth:`LayerSequence.as_item`.

In both views :meth:`SamOcta2Layers.sequence` reads one subject as a :class:`LayerSequence`,
optionally only some frames and objects (what a SAM 2 training step needs), and
``dataset.sequences`` lists each subject's layers and per-layer object ids without reading any
image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retinaseg.data.base import ALL, Sample, VesselDataset
from retinaseg.data.datasets import octa500_split
from retinaseg.errors import DatasetLayoutError
from retinaseg.io import read_image, read_mask
from retinaseg.preprocessing.functions import to_grey
from retinaseg.registry import DATASETS

STRIPS = {"RV": (4, 3, None), "FAZ": (3, 1, 2)}
"""target → (panels per strip, grey-layer panel, mask panel or None: per-object files)."""


def read_panel(path: str | Path, panel: int, panels: int) -> np.ndarray:
    """Panel ``panel`` (0-based) of a strip of ``panels`` square panels, grey float32 ``[S, S]``.

    Raises :class:`~retinaseg.errors.DatasetLayoutError` when the file is not ``S`` px high and
    ``panels · S`` px wide.
    """
    strip = read_image(path)
    h, w = strip.shape[:2]
    if w != panels * h:
        raise DatasetLayoutError(f"SAM-OCTA2 frame '{path}' is {h}x{w} px; expected a strip of "
                                 f"{panels} square panels ({h}x{panels * h} px)")
    return np.clip(to_grey(strip[:, panel * h:(panel + 1) * h]), 0.0, 1.0)


@dataclass(frozen=True)
class SequenceFiles:
    """What is known of one subject's sequence without reading images.

    ``objects[t]`` are the object ids of layer ``layers[t]`` (RV: its ``objects.npy``; FAZ:
    ``(0,)``); ``object_ids`` their sorted union.
    """

    id: str
    split: str
    fov: str
    layers: tuple[int, ...]
    strips: tuple[Path, ...]
    objects: tuple[tuple[int, ...], ...]

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(sorted({i for ids in self.objects for i in ids}))


@dataclass(frozen=True, eq=False)
class LayerSequence:
    """One subject's layers as a video.

    ``frames`` float32 ``[T, H, W]`` in [0, 1] (grey layers, in layer order ``layers``);
    ``objects`` bool ``[K, T, H, W]``, the mask of object ``object_ids[k]`` in frame t (all
    False where the object is absent from that layer).
    """

    id: str
    target: str
    layers: tuple[int, ...]
    frames: np.ndarray
    object_ids: tuple[int, ...]
    objects: np.ndarray

    @property
    def union(self) -> np.ndarray:
        """bool ``[T, H, W]``: every object of each frame."""
        return self.objects.any(axis=0)

    @property
    def present(self) -> np.ndarray:
        """bool ``[T, K]``: object k has pixels in frame t."""
        return self.objects.any(axis=(2, 3)).T

    def object_mask(self, object_id: int) -> np.ndarray:
        """bool ``[T, H, W]`` of one object id."""
        if object_id not in self.object_ids:
            raise DatasetLayoutError(f"SAM-OCTA2 sequence '{self.id}' has no object "
                                     f"{object_id}; its objects are {list(self.object_ids)}")
        return self.objects[self.object_ids.index(object_id)]

    def as_item(self, path: str = "") -> dict[str, Any]:
        """The dataset item of the ``sequence`` view: ``id``, ``image`` ``[T, H, W]``, ``label``
        (the union) ``[T, H, W]``, ``fov`` None, ``path``, ``layers``, ``object_ids``,
        ``objects`` ``[K, T, H, W]``, ``target``."""
        return {"id": self.id, "image": self.frames, "label": self.union, "fov": None,
                "path": path, "layers": self.layers, "object_ids": self.object_ids,
                "objects": self.objects, "target": self.target}


@DATASETS.register("sam_octa2_layers")
class SamOcta2Layers(VesselDataset):
    """SAM-OCTA2 layer sequences of OCTA-500 subjects (module docstring), RV or FAZ.

    Official OCTA-500 splits by subject id. A subject whose layer folder lacks a mask file
    that its ``objects.npy`` lists (or holds one it does not list) is skipped and reported; a
    layer without an object folder has no objects. Frames of one sequence must all have the
    same size (:class:`~retinaseg.errors.DatasetLayoutError` otherwise).
    """

    name, title, modality = "sam_octa2_layers", "SAM-OCTA2 layers", "octa"
    splits = ("train", "val", "test")
    val_split = "val"
    sequential = False
    layout = ("<root>/RV_LayerSequence/<id>/<layer>.png (strips [mask|overlay|overlay|grey "
              "layer]) with <layer>/<obj:02d>.png and <layer>/objects.npy; "
              "<root>/FAZ_LayerSequence/<id>/<layer>.png (strips [overlay|grey layer|FAZ mask])")
    options_help = ("target=RV|FAZ (default RV); view=frames|sequence (default frames: one 2-D "
                    "item per layer; sequence: one [T, H, W] item per subject); fov=3M|6M|both "
                    "(default both)")
    defaults = {"target": "RV", "view": "frames", "fov": "both"}
    choices = {"target": ("RV", "FAZ"), "view": ("frames", "sequence"),
               "fov": ("3M", "6M", "both")}

    def _find_samples(self) -> list[Sample]:
        self.target = self.options["target"]
        self.sequential = self.options["view"] == "sequence"
        folder = self._dir(f"{self.target}_LayerSequence")
        self.sequences: list[SequenceFiles] = []
        for sub in sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()),
                          key=lambda p: int(p.name)):
            found = self._subject(sub)
            if found is not None:
                self.sequences.append(found)
        if self.sequential:
            return [Sample(s.id, s.strips, None, None, {"split": s.split, "fov": s.fov,
                                                        "sequence": k})
                    for k, s in enumerate(self.sequences)]
        return [Sample(f"{s.id}_{layer}", (strip,), None, None,
                       {"split": s.split, "fov": s.fov, "subject": int(s.id), "layer": layer,
                        "objects": ids, "sequence": k})
                for k, s in enumerate(self.sequences)
                for layer, strip, ids in zip(s.layers, s.strips, s.objects, strict=True)]

    def _has_label(self, sample: Sample) -> bool:
        return True

    def _subject(self, sub: Path) -> SequenceFiles | None:
        subject = int(sub.name)
        fov = "6M" if subject <= 10300 else "3M"
        split = octa500_split(fov, subject)
        if split is None:
            self._skip(sub.name, "not an OCTA-500 subject id (10001-10500)")
            return None
        if self.options["fov"] not in ("both", fov) or self.split not in (ALL, split):
            return None
        frames = sorted(((int(p.stem), p) for p in sub.glob("*.png") if p.stem.isdigit()),
                        key=lambda lp: lp[0])
        if not frames:
            self._skip(sub.name, f"no '<layer>.png' frames in '{sub}'")
            return None
        objects = []
        for layer, _ in frames:
            ids = self._layer_objects(sub / str(layer))
            if isinstance(ids, str):
                self._skip(sub.name, ids)
                return None
            objects.append(ids)
        return SequenceFiles(sub.name, split, fov, tuple(lp[0] for lp in frames),
                             tuple(lp[1] for lp in frames), tuple(objects))

    def _layer_objects(self, folder: Path) -> tuple[int, ...] | str:
        """Object ids of one layer, or the reason the layer folder is inconsistent."""
        if self.target == "FAZ":
            return (0,)
        if not folder.is_dir():
            return ()
        files = {int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit()}
        listing = folder / "objects.npy"
        if not listing.is_file():
            return tuple(sorted(files))
        try:
            listed = {int(v) for v in np.load(listing, allow_pickle=False).reshape(-1)}
        except (OSError, ValueError) as exc:
            return f"unreadable '{listing}' ({exc})"
        if listed != files:
            return (f"'{listing}' lists objects {sorted(listed)} but the folder has masks "
                    f"{sorted(files)}")
        return tuple(sorted(listed))

    # -- reading -----------------------------------------------------------------------------

    def sequence(self, index: int, frames: list[int] | None = None,
                 objects: list[int] | None = None) -> LayerSequence:
        """Read subject ``dataset.sequences[index]``: all frames, or the frame positions
        ``frames`` (e.g. ``[0, 3, 6]``), and all objects or the ids ``objects``."""
        files = self.sequences[index]
        picks = list(range(len(files.layers))) if frames is None else [int(t) for t in frames]
        if not picks or not all(0 <= t < len(files.layers) for t in picks):
            raise DatasetLayoutError(f"SAM-OCTA2 sequence '{files.id}' has frames 0-"
                                     f"{len(files.layers) - 1}; asked for {frames}")
        ids = files.object_ids if objects is None else tuple(int(i) for i in objects)
        panels, grey, mask_panel = STRIPS[self.target]
        images, masks = [], []
        for t in picks:
            image = read_panel(files.strips[t], grey, panels)
            if images and image.shape != images[0].shape:
                raise DatasetLayoutError(
                    f"SAM-OCTA2 sequence '{files.id}': frames differ in size ('"
                    f"{files.strips[picks[0]].name}' has {images[0].shape[0]} px panels, '"
                    f"{files.strips[t].name}' {image.shape[0]} px); every frame of a sequence "
                    "must be the same size")
            images.append(image)
            if mask_panel is not None:
                fg = read_panel(files.strips[t], mask_panel, panels) > 0.5
                masks.append([fg if i == 0 else np.zeros_like(fg) for i in ids])
            else:
                masks.append([self._object_mask(files, t, i, image.shape) for i in ids])
        objs = np.stack([np.stack(m) for m in masks], axis=1) if ids else \
            np.zeros((0, len(picks), *images[0].shape), bool)
        return LayerSequence(files.id, self.target, tuple(files.layers[t] for t in picks),
                             np.stack(images), ids, objs)

    def _object_mask(self, files: SequenceFiles, t: int, object_id: int,
                     shape: tuple[int, ...]) -> np.ndarray:
        if object_id not in files.objects[t]:
            return np.zeros(shape, bool)
        path = files.strips[t].with_suffix("") / f"{object_id:02d}.png"
        mask = read_mask(path)
        if mask.shape != shape:
            raise DatasetLayoutError(f"SAM-OCTA2 object mask '{path}' is {mask.shape[0]}x"
                                     f"{mask.shape[1]} px but its frame's panels are "
                                     f"{shape[0]}x{shape[1]} px")
        return mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        k = sample.meta["sequence"]
        if self.sequential:
            return self.sequence(k).as_item(str(sample.image[0]))
        t = self.sequences[k].layers.index(sample.meta["layer"])
        seq = self.sequence(k, frames=[t], objects=list(self.sequences[k].objects[t]))
        return {"id": sample.id, "image": seq.frames[0], "label": seq.union[0], "fov": None,
                "path": str(sample.image[0])}


__all__ = ["LayerSequence", "SamOcta2Layers", "SequenceFiles", "read_panel"]

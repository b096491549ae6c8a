"""Training data: load and preprocess a split into memory, carve a validation set, draw patches.

Patches are drawn with their centre inside the FOV (when ``inside_fov``), optionally with a share
of centres on vessel pixels, and augmented with the MONAI dictionary transforms of
:mod:`retinaseg.preprocessing.augment` applied to image, label and FOV together. Several datasets
share the patches of an epoch by their sampling weights (``weight``), and colour fundus images
may be resized at load to one FOV diameter (``data.fov_diameter``).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from retinaseg.data import build_dataset
from retinaseg.errors import ConfigError, RetinasegError
from retinaseg.inference.volume import prepare_volume
from retinaseg.preprocessing.acquisition import random_change
from retinaseg.preprocessing.fov import fov_diameter as diameter_of
from retinaseg.preprocessing.fov import fov_from_image
from retinaseg.preprocessing.functions import resize
from retinaseg.preprocessing.pipeline import build_preprocess
from retinaseg.registry import DATASETS
from retinaseg.training.config import DataConfig, SamplingConfig, SourceConfig


@dataclass
class Item:
    """One preprocessed image: ``image [C,H,W]`` float32 (a volume: ``[C,D,H,W]``); ``label``,
    ``fov`` bool ``[H,W]`` (``label`` an int64 class map ``[H,W]`` for ``model.classes``)."""

    id: str
    image: np.ndarray
    label: np.ndarray
    fov: np.ndarray
    source: str = ""
    """The dataset the item came from (validation scores are averaged per source)."""
    head: int = 0
    """The output channel (``model.heads``) that this item's label supervises."""
    key: str = ""
    """``dataset:root:id``, the same image in any run whatever the order of its datasets (set
    by :func:`load_train_val`)."""
    target: np.ndarray | None = None
    """Soft training target ``[H,W]`` float32 in [0,1] that replaces ``label`` in the loss
    (knowledge distillation, :mod:`retinaseg.training.distill`); None: the label."""
    centerline: np.ndarray | None = None
    """A centerline-level label ``[H,W]`` bool that the dataset supplies, else None: ROSE-2's
    and ROSE-1 DVC's labels (centerline-level themselves), ROSE-1 SVC's ``thin_gt``."""
    extra: np.ndarray | None = None
    """More training targets ``[K,H,W]`` (bool or float32), stacked after the label as channels
    1..K of the loss's target, e.g. the centerline label of OCTA-Net's thin branch
    (:mod:`retinaseg.training.targets`); None: the label alone."""
    weight: float | None = None
    """The sampling weight of the item's dataset (``data.weight``, ``data.extra[i].weight``);
    None: not set (see :class:`PatchSampler`)."""


LoadCache = dict[str, list["Item"]]
"""Loaded items by source, split and preprocessing, shared by several loads (see
:func:`load_items`)."""


def load_items(src: SourceConfig, split: str, preprocess: Any, desc: str = "",
               cache: LoadCache | None = None, planes: int | None = None,
               fov_diameter: float | None = None) -> list[Item]:
    """Read and preprocess every labelled sample of ``split`` of one source into memory.

    With ``fov_diameter`` (``data.fov_diameter``), each image of a colour fundus dataset is
    first resized so that its FOV has that diameter (:func:`normalise_resolution`). With
    ``cache``, a source/split/preprocessing read before is not read again: its items come
    back as fresh copies that share the (read-only) arrays, so callers may retag them.
    """
    key = json.dumps([src.model_dump(exclude={"weight"}), split, preprocess, planes,
                      fov_diameter], sort_keys=True, default=str)
    if cache is not None and key in cache:
        return [replace(it) for it in cache[key]]
    items = _read_items(src, split, preprocess, desc, planes, fov_diameter)
    if cache is not None:
        cache[key] = [replace(it) for it in items]
    return items


RESIZE_TOLERANCE = 0.01
"""With ``data.fov_diameter``, images whose FOV diameter is within this relative difference of
the target are kept as read: resampling by under 1 % would only blur their thinnest vessels
(DRIVE's training FOVs are 536-541 px against its median of 540)."""


def normalise_resolution(sample: dict[str, Any], target: float,
                         where: str = "") -> dict[str, Any]:
    """A fundus sample resized so that its FOV diameter is ``target`` px (``data.fov_diameter``).

    The diameter is :func:`~retinaseg.preprocessing.fov.fov_diameter` of the sample's FOV mask,
    or, without one, of the FOV derived from the image's red channel (as inference measures new
    photographs). The image is resized bilinearly (anti-aliased when shrinking), label, FOV and
    centerline labels by nearest neighbour, with the shared
    :func:`~retinaseg.preprocessing.functions.resize`; a sample within
    :data:`RESIZE_TOLERANCE` of the target is kept as read. Returns a new dict; the sample is
    not changed. ``where`` names the dataset in the error of an empty FOV.
    """
    image = sample["image"]
    d = diameter_of(sample["fov"] if sample["fov"] is not None else fov_from_image(image))
    if d <= 0:
        raise ConfigError(f"data.fov_diameter cannot rescale image '{sample['id']}'{where}: its "
                          "FOV mask is empty, so its FOV diameter cannot be measured")
    h, w = image.shape[:2]
    shape = (max(1, round(h * target / d)), max(1, round(w * target / d)))
    if shape == (h, w) or abs(target / d - 1) <= RESIZE_TOLERANCE:
        return dict(sample)
    out = dict(sample, image=resize(image, shape))
    for key in ("label", "fov", "centerline", "thin_gt"):
        if out.get(key) is not None:
            out[key] = resize(np.asarray(out[key]), shape, order=0)
    return out


def _read_items(src: SourceConfig, split: str, preprocess: Any, desc: str,
                planes: int | None = None, fov_diameter: float | None = None) -> list[Item]:
    ds = build_dataset(src.dataset, src.root, split, **src.options)
    volumetric = bool(getattr(ds, "volumetric", False))
    rescale = fov_diameter if getattr(ds, "modality", "") == "fundus" and not volumetric \
        else None
    prep = build_preprocess(preprocess)
    if volumetric and prep.steps:
        raise ConfigError(f"data.preprocess must be 'none' for the volume dataset "
                          f"'{src.dataset}' (volumes go to the network as read)")
    items = []
    for i in tqdm(range(len(ds)), desc=desc or f"loading {split}", leave=False):
        s = ds[i]
        if s["label"] is None:
            continue
        if rescale:
            s = normalise_resolution(s, rescale, f" of dataset '{src.dataset}'")
        fov = s["fov"] if s["fov"] is not None else np.ones_like(s["label"], dtype=bool)
        # a volume goes in as the network input [C, P, H, W], prepared as predict_volume does
        image = prepare_volume(s["image"], planes=planes) if volumetric \
            else prep(s["image"]).astype(np.float32)
        line = s.get("centerline") if s.get("centerline") is not None else s.get("thin_gt")
        items.append(Item(s["id"], image, s["label"], fov, centerline=line))
    if not items:
        where = f" under '{src.root}'" if src.root else ""
        raise ConfigError(f"dataset '{src.dataset}' split '{split}'{where} has no labelled "
                          f"images ({len(ds)} image(s) read, none with a label), so it cannot "
                          "be trained on")
    return items


def check_class_labels(items: list[Item], classes: list[str] | None) -> None:
    """Labels must fit the task: with ``model.classes`` (K names) every label value is below
    K; without it every label is binary. One :class:`ConfigError` sentence names the image."""
    for it in items:
        binary = it.label.dtype == bool
        top = int(it.label.max()) if it.label.size else 0
        where = f"the label of image '{it.id}' ({it.source.split(':', 1)[-1] or 'dataset'})"
        if classes is None and not binary:
            raise ConfigError(f"{where} is a class map (values up to {top}), but model.classes "
                              "is not set; name the classes in model.classes to train a "
                              "multi-class model")
        if classes is not None and top >= len(classes):
            raise ConfigError(f"{where} holds the class value {top}, but model.classes names "
                              f"{len(classes)} classes (values 0-{len(classes) - 1}: "
                              f"{', '.join(classes)})")


def carve_validation(items: list[Item], fraction: float, seed: int,
                     folds: int | None = None, fold: int = 0,
                     what: str = "") -> tuple[list[Item], list[Item]]:
    """Split ``items`` into (train, val) with a seeded shuffle.

    Without ``folds``: ``ceil(fraction·n)`` validation images. With ``folds``: the shuffled
    order is cut into ``folds`` near-equal parts (``numpy.array_split``) and part ``fold`` is
    the validation set, so the folds of one seed cover every image exactly once. ``what``
    names the images in the errors (e.g. `` of dataset 'drive' split 'training'``).
    """
    if len(items) < 2:
        raise ConfigError(f"need at least 2 training images{what} to carve a validation split, "
                          f"found {len(items)}")
    order = np.random.default_rng(seed).permutation(len(items))
    if folds is not None:
        if folds > len(items):
            raise ConfigError(f"data.folds is {folds} but there are only {len(items)} "
                              f"training images{what}")
        val_idx = set(np.array_split(order, folds)[fold].tolist())
    else:
        n_val = min(len(items) - 1, max(1, math.ceil(fraction * len(items))))
        val_idx = set(order[:n_val].tolist())
    train = [it for i, it in enumerate(items) if i not in val_idx]
    val = [it for i, it in enumerate(items) if i in val_idx]
    return train, val


COPY_MARK = "~acq"
"""Marks the id of an acquisition-changed copy: ``<id>~acq<k>``."""


def acquisition_copies(src: SourceConfig, cfg: DataConfig, items: list[Item], seed: int,
                       split: str | None = None, validation: bool = False) -> list[Item]:
    """Acquisition-changed copies of ``items`` of ``split`` (default the training split):
    ``cfg.acquisition_copies`` each, or ``cfg.val_acquisition_copies`` with ``validation``.

    The raw image is read again, changed by :func:`retinaseg.preprocessing.acquisition.
    random_change` (seeded by ``seed``, training or validation, the image id and the copy
    number, so a run is reproducible) and preprocessed like the original; label and FOV are
    shared. Copies get the id ``<id>~acq<k>``.
    """
    n = cfg.val_acquisition_copies if validation else cfg.acquisition_copies
    if not n or not items:
        return []
    # with data.fov_diameter the items were resized at load: the change acts on the raw
    # photograph (the camera), then it is resized to the item's size like the original
    ds = build_dataset(src.dataset, src.root, split or src.train_split, **src.options)
    index = {sample.id: i for i, sample in enumerate(ds.samples)}
    prep = build_preprocess(cfg.preprocess)
    out = []
    for it in tqdm(items, desc=f"acquisition copies of {src.dataset}", leave=False):
        raw = ds[index[it.id]]["image"]
        for k in range(n):
            rng = np.random.default_rng([seed, int(validation), k, zlib.crc32(it.id.encode())])
            changed = random_change(raw, rng)
            if changed.shape[:2] != it.label.shape:
                changed = resize(changed, it.label.shape)
            image = prep(changed).astype(np.float32)
            out.append(replace(it, id=f"{it.id}{COPY_MARK}{k}", image=image))
    return out


def _source_train_val(src: SourceConfig, cfg: DataConfig, seed: int,
                      cache: LoadCache | None) -> tuple[list[Item], list[Item], str]:
    name = src.dataset
    planes = cfg.volume_planes
    carve = seed if cfg.split_seed is None else cfg.split_seed
    train = load_items(src, src.train_split, cfg.preprocess, f"loading {name} train", cache,
                       planes, cfg.fov_diameter)
    val_split = src.val_split or getattr(DATASETS.get(name), "val_split", None)
    if val_split and val_split != src.train_split and cfg.folds is None:
        val = load_items(src, val_split, cfg.preprocess, f"loading {name} val", cache, planes,
                         cfg.fov_diameter)
        where = f"{name} split '{val_split}'"
    else:
        train, val = carve_validation(train, cfg.val_fraction, carve, cfg.folds, cfg.fold,
                                      f" of dataset '{name}' split '{src.train_split}'")
        val_split = src.train_split
        how = f"fold {cfg.fold} of {cfg.folds}, " if cfg.folds else ""
        where = (f"{name} images carved from '{src.train_split}' ({how}seed {carve}): "
                 + ", ".join(it.id for it in val))
    train += acquisition_copies(src, cfg, train, seed)
    val += acquisition_copies(src, cfg, val, carve, val_split, validation=True)
    return train, val, where


def load_train_val(cfg: DataConfig, seed: int, heads: list[str] | None = None,
                   cache: LoadCache | None = None) -> tuple[list[Item], list[Item], str]:
    """Training and validation items of every source, and where the validation set came from.

    Each source uses its own validation split, or a seeded fraction of its training images
    when it has none. Each item records its source (``"<k>:<dataset>"``, k = 0 for the main
    dataset) and the source's sampling ``weight``; with ``data.fov_diameter`` fundus images are
    resized at load (:func:`normalise_resolution`), validation images too. With ``heads``
    (``model.heads``) each item records the index of the head its source trains (``head`` key;
    default the first). ``cache`` (a dict kept by the caller) reads each source once over
    several calls, e.g. the folds of one cross-validation.
    """
    train, val, where = [], [], []
    sources = cfg.sources()
    for k, src in enumerate(sources):
        try:
            t, v, w = _source_train_val(src, cfg, seed, cache)
        except RetinasegError as err:
            if len(sources) == 1:
                raise
            key = "data" if k == 0 else f"data.extra.{k - 1}"  # which of several datasets
            raise type(err)(f"{key} ({src.dataset}): {err}") from None
        head = heads.index(src.head) if heads and src.head else 0
        root = str(Path(src.root).resolve()) if src.root else ""
        for it in t + v:
            it.source, it.head, it.weight = f"{k}:{src.dataset}", head, src.weight
            it.key = f"{src.dataset}:{root}:{it.id}"
            if k:  # keep ids unique across sources
                it.id = f"{src.dataset}-{it.id}"
        train += t
        val += v
        where.append(w)
    return train, val, "; ".join(where)


class PatchSampler:
    """Draws (augmented) training batches from in-memory items.

    ``mode="patch"``: ``patches_per_image`` square patches per image per epoch, centres inside the
    FOV; ``mode="whole"``: each image once per epoch, batched with images of the same shape.
    When any item has a sampling :attr:`Item.weight`, the epoch keeps its length (images ×
    ``patches_per_image`` patches, or images whole images) but each source (:attr:`Item.source`)
    gets a share proportional to its weight (unset: 1.0), spread evenly over its images, which
    are drawn more or fewer times than ``patches_per_image`` (:meth:`item_counts`).
    Yields ``(image [B,C,P,P], label [B,1+K,P,P], fov [B,1,P,P], head [B])``: float tensors (the
    label is the item's soft ``target`` where it has one; K = the channels of the items'
    :attr:`Item.extra`, 0 for most runs) and
    the int64 head index of each sample (:attr:`Item.head`).
    """

    def __init__(self, items: list[Item], cfg: SamplingConfig,
                 augment: Callable[[dict], dict] | None) -> None:
        self.items, self.cfg, self.augment = items, cfg, augment
        p = cfg.patch_size
        self.pad = p // 2 if cfg.mode == "patch" else 0
        self._padded = [self._pad(it) for it in items]
        self._centres = [np.flatnonzero(it.fov if cfg.inside_fov else np.ones_like(it.fov))
                         for it in items]
        self._vessels = [np.flatnonzero(it.label & it.fov) for it in items]

    def _pad(self, it: Item) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image, target ``[1+K, H, W]`` (label, then :attr:`Item.extra`) and FOV, padded."""
        lab = (it.label if it.target is None else it.target)[None]
        if it.extra is not None:  # bool labels stay bool (a quarter of the memory)
            lab = np.concatenate([lab, it.extra.astype(lab.dtype)]) if it.target is None \
                else np.concatenate([lab, it.extra.astype(np.float32)])
        if not self.pad:
            return it.image, lab, it.fov
        q = self.pad
        mode = "reflect" if min(it.image.shape[-2:]) > q else "edge"
        lead = [(0, 0)] * (it.image.ndim - 2)  # channels (and depth, for volumes)
        img = np.pad(it.image, [*lead, (q, q), (q, q)], mode=mode)
        lab = np.pad(lab, [(0, 0), (q, q), (q, q)])
        fov = np.pad(it.fov, q)
        return img, lab, fov

    def __len__(self) -> int:
        if self.cfg.mode == "whole":
            return len(self.whole_batches(np.random.default_rng(0)))
        return math.ceil(len(self.items) * self.cfg.patches_per_image / self.cfg.batch_size)

    def _crop(self, k: int, flat: int) -> dict[str, np.ndarray]:
        img, lab, fov = self._padded[k]
        w = self.items[k].fov.shape[1]
        cy, cx = divmod(int(flat), w)
        p = self.cfg.patch_size
        sl = (slice(cy, cy + p), slice(cx, cx + p))
        return {"image": img[..., sl[0], sl[1]],
                "label": lab[:, sl[0], sl[1]].astype(np.float32),
                "fov": fov[None, sl[0], sl[1]].astype(np.float32), "head": self.items[k].head}

    def _whole(self, k: int) -> dict[str, np.ndarray]:
        img, lab, fov = self._padded[k]
        return {"image": img, "label": lab.astype(np.float32),
                "fov": fov[None].astype(np.float32), "head": self.items[k].head}

    def item_counts(self, rng: np.random.Generator, per_image: int) -> list[int]:
        """How many patches (or whole-image copies) each item gives in one epoch.

        Without sampling weights: ``per_image`` each. With weights: the epoch's
        ``len(items) · per_image`` draws are shared out between the sources in proportion to
        their weights (largest remainders, ties to the earlier source), and each source's draws
        evenly between its items, the remainder going to items chosen with ``rng`` (so an item
        may give 0 draws in an epoch when its source's share is below its image count). Equal
        weights on sources of equal size give ``per_image`` each without using ``rng``.
        """
        n = len(self.items)
        if all(it.weight is None for it in self.items):
            return [per_image] * n
        groups: dict[str, list[int]] = {}
        for k, it in enumerate(self.items):
            groups.setdefault(it.source, []).append(k)
        members = list(groups.values())
        weights = np.array([self.items[ks[0]].weight or 1.0 for ks in members], np.float64)
        exact = n * per_image * weights / weights.sum()
        shares = np.floor(exact).astype(int)
        left = n * per_image - int(shares.sum())
        for j in np.argsort(-(exact - shares), kind="stable")[:left]:
            shares[j] += 1
        counts = [0] * n
        for ks, share in zip(members, shares):
            base, extra = divmod(int(share), len(ks))
            for k in ks:
                counts[k] = base
            if extra:
                for j in rng.choice(len(ks), extra, replace=False):
                    counts[ks[int(j)]] += 1
        return counts

    def _draws(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        draws = []
        counts = self.item_counts(rng, self.cfg.patches_per_image)
        for k in range(len(self.items)):
            for _ in range(counts[k]):
                pool = self._centres[k]
                if self._vessels[k].size and rng.random() < self.cfg.vessel_fraction:
                    pool = self._vessels[k]
                draws.append((k, int(pool[rng.integers(pool.size)])))
        rng.shuffle(draws)
        return draws

    def _to_tensor(self, d: dict) -> dict:
        head = d.pop("head", 0)
        if self.augment is not None:
            d = self.augment(d)
        out = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in d.items()}
        out["head"] = torch.tensor(head, dtype=torch.int64)
        return out

    def epoch(self, seed: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield the batches of one epoch; the same ``seed`` gives the same batches."""
        for group in self._groups(seed):
            yield self._stack(group)

    def shards(self, seed: int, rank: int = 0,
               world: int = 1) -> Iterator[tuple[tuple[torch.Tensor, ...], float]]:
        """Distributed training: process ``rank``'s share of each batch of :meth:`epoch` (the
        *global* batch, the same on every rank for the same ``seed``), with the share's fraction
        of the global batch. A global batch of ``n`` samples is cut into ``world`` contiguous
        parts of ``n // world`` or ``n // world + 1``; one with fewer samples than ``world``
        (an epoch's last, short batch) is skipped on every rank. ``world`` 1: the batches of
        :meth:`epoch`, each with fraction 1.0."""
        for group in self._groups(seed):
            n = len(group)
            if n < world:
                continue
            lo, hi = rank * n // world, (rank + 1) * n // world
            yield self._stack(group[lo:hi]), (hi - lo) / n

    def steps(self, world: int = 1) -> int:
        """Optimiser steps in one epoch of :meth:`shards` with ``world`` processes."""
        if world == 1:
            return len(self)
        if self.cfg.mode == "whole":
            sizes = [len(b) for b in self.whole_batches(np.random.default_rng(0))]
        else:
            total, b = len(self.items) * self.cfg.patches_per_image, self.cfg.batch_size
            sizes = [b] * (total // b) + ([total % b] if total % b else [])
        return sum(n >= world for n in sizes)

    def _groups(self, seed: int) -> Iterator[list[dict]]:
        """The samples of each batch of one epoch (cropped, not yet augmented)."""
        rng = np.random.default_rng(seed)
        if self.cfg.mode == "whole":
            for group in self.whole_batches(rng):
                yield [self._whole(k) for k in group]
            return
        samples = [self._crop(k, f) for k, f in self._draws(rng)]
        batch: list[dict] = []
        for s in samples:
            if batch and (len(batch) == self.cfg.batch_size
                          or batch[0]["image"].shape != s["image"].shape):
                yield batch
                batch = []
            batch.append(s)
        if batch:
            yield batch

    def whole_batches(self, rng: np.random.Generator) -> list[list[int]]:
        """Item indices of one whole-image epoch, batched by image shape, in random order.

        Images of one shape are shuffled and cut into batches of ``batch_size`` (the last batch
        of a shape may be smaller); the batches of all shapes are then shuffled together, so a
        mixed-size training set (OCTA-500 3M 304², 6M 400², ROSSA 320²) still gets full batches.
        With sampling weights an item appears :meth:`item_counts` times (0, 1 or more).
        """
        by_shape: dict[tuple[int, ...], list[int]] = {}
        counts = self.item_counts(rng, 1)
        for k, it in enumerate(self.items):
            by_shape.setdefault(tuple(it.image.shape), []).extend([k] * counts[k])
        b = self.cfg.batch_size
        batches = []
        for shape in sorted(by_shape):
            idx = [by_shape[shape][i] for i in rng.permutation(len(by_shape[shape]))]
            batches += [idx[i:i + b] for i in range(0, len(idx), b)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _stack(self, batch: list[dict]) -> tuple[torch.Tensor, ...]:
        ts = [self._to_tensor(dict(d)) for d in batch]
        return tuple(torch.stack([t[k] for t in ts]) for k in ("image", "label", "fov", "head"))

"""Training data: load and preprocess a split into memory, carve a validation set, draw patches.

Patches are drawn with their centre inside the FOV (when ``inside_fov``), optionally with a share
of centres on vessel pixels, and augmented with the MONAI dictionary transforms of
:mod:`retinaseg.preprocessing.augment` applied to image, label and FOV together.
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
from retinaseg.errors import ConfigError
from retinaseg.inference.volume import prepare_volume
from retinaseg.preprocessing.acquisition import random_change
from retinaseg.preprocessing.pipeline import build_preprocess
from retinaseg.registry import DATASETS
from retinaseg.training.config import DataConfig, SamplingConfig, SourceConfig


@dataclass
class Item:
    """One preprocessed image: ``image [C,H,W]`` float32 (a volume: ``[C,D,H,W]``); ``label``,
    ``fov`` bool ``[H,W]``."""

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


LoadCache = dict[str, list["Item"]]
"""Loaded items by source, split and preprocessing, shared by several loads (see
:func:`load_items`)."""


def load_items(src: SourceConfig, split: str, preprocess: Any, desc: str = "",
               cache: LoadCache | None = None, planes: int | None = None) -> list[Item]:
    """Read and preprocess every labelled sample of ``split`` of one source into memory.

    With ``cache``, a source/split/preprocessing read before is not read again: its items come
    back as fresh copies that share the (read-only) arrays, so callers may retag them.
    """
    key = json.dumps([src.model_dump(), split, preprocess, planes], sort_keys=True, default=str)
    if cache is not None and key in cache:
        return [replace(it) for it in cache[key]]
    items = _read_items(src, split, preprocess, desc, planes)
    if cache is not None:
        cache[key] = [replace(it) for it in items]
    return items


def _read_items(src: SourceConfig, split: str, preprocess: Any, desc: str,
                planes: int | None = None) -> list[Item]:
    ds = build_dataset(src.dataset, src.root, split, **src.options)
    volumetric = bool(getattr(ds, "volumetric", False))
    prep = build_preprocess(preprocess)
    if volumetric and prep.steps:
        raise ConfigError(f"data.preprocess must be 'none' for the volume dataset "
                          f"'{src.dataset}' (volumes go to the network as read)")
    items = []
    for i in tqdm(range(len(ds)), desc=desc or f"loading {split}", leave=False):
        s = ds[i]
        if s["label"] is None:
            continue
        fov = s["fov"] if s["fov"] is not None else np.ones_like(s["label"], dtype=bool)
        # a volume goes in as the network input [C, P, H, W], prepared as predict_volume does
        image = prepare_volume(s["image"], planes=planes) if volumetric \
            else prep(s["image"]).astype(np.float32)
        line = s.get("centerline") if s.get("centerline") is not None else s.get("thin_gt")
        items.append(Item(s["id"], image, s["label"], fov, centerline=line))
    if not items:
        raise ConfigError(f"dataset '{src.dataset}' split '{split}' has no labelled images")
    return items


def carve_validation(items: list[Item], fraction: float, seed: int,
                     folds: int | None = None, fold: int = 0) -> tuple[list[Item], list[Item]]:
    """Split ``items`` into (train, val) with a seeded shuffle.

    Without ``folds``: ``ceil(fraction·n)`` validation images. With ``folds``: the shuffled
    order is cut into ``folds`` near-equal parts (``numpy.array_split``) and part ``fold`` is
    the validation set, so the folds of one seed cover every image exactly once.
    """
    if len(items) < 2:
        raise ConfigError("need at least 2 training images to carve a validation split")
    order = np.random.default_rng(seed).permutation(len(items))
    if folds is not None:
        if folds > len(items):
            raise ConfigError(f"data.folds is {folds} but there are only {len(items)} "
                              "training images")
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
    ds = build_dataset(src.dataset, src.root, split or src.train_split, **src.options)
    index = {sample.id: i for i, sample in enumerate(ds.samples)}
    prep = build_preprocess(cfg.preprocess)
    out = []
    for it in tqdm(items, desc=f"acquisition copies of {src.dataset}", leave=False):
        raw = ds[index[it.id]]["image"]
        for k in range(n):
            rng = np.random.default_rng([seed, int(validation), k, zlib.crc32(it.id.encode())])
            image = prep(random_change(raw, rng)).astype(np.float32)
            out.append(replace(it, id=f"{it.id}{COPY_MARK}{k}", image=image))
    return out


def _source_train_val(src: SourceConfig, cfg: DataConfig, seed: int,
                      cache: LoadCache | None) -> tuple[list[Item], list[Item], str]:
    name = src.dataset
    planes = cfg.volume_planes
    train = load_items(src, src.train_split, cfg.preprocess, f"loading {name} train", cache,
                       planes)
    val_split = src.val_split or getattr(DATASETS.get(name), "val_split", None)
    if val_split and val_split != src.train_split and cfg.folds is None:
        val = load_items(src, val_split, cfg.preprocess, f"loading {name} val", cache, planes)
        where = f"{name} split '{val_split}'"
    else:
        train, val = carve_validation(train, cfg.val_fraction, seed, cfg.folds, cfg.fold)
        val_split = src.train_split
        how = f"fold {cfg.fold} of {cfg.folds}, " if cfg.folds else ""
        where = (f"{name} images carved from '{src.train_split}' ({how}seed {seed}): "
                 + ", ".join(it.id for it in val))
    train += acquisition_copies(src, cfg, train, seed)
    val += acquisition_copies(src, cfg, val, seed, val_split, validation=True)
    return train, val, where


def load_train_val(cfg: DataConfig, seed: int, heads: list[str] | None = None,
                   cache: LoadCache | None = None) -> tuple[list[Item], list[Item], str]:
    """Training and validation items of every source, and where the validation set came from.

    Each source uses its own validation split, or a seeded fraction of its training images
    when it has none. With ``heads`` (``model.heads``) each item records the index of the head
    its source trains (``head`` key; default the first). ``cache`` (a dict kept by the caller)
    reads each source once over several calls, e.g. the folds of one cross-validation.
    """
    train, val, where = [], [], []
    for k, src in enumerate(cfg.sources()):
        t, v, w = _source_train_val(src, cfg, seed, cache)
        head = heads.index(src.head) if heads and src.head else 0
        root = str(Path(src.root).resolve()) if src.root else ""
        for it in t + v:
            it.source, it.head = f"{k}:{src.dataset}", head
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

    def _draws(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        draws = []
        for k in range(len(self.items)):
            for _ in range(self.cfg.patches_per_image):
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
        rng = np.random.default_rng(seed)
        if self.cfg.mode == "whole":
            for group in self.whole_batches(rng):
                yield self._stack([self._whole(k) for k in group])
            return
        samples = [self._crop(k, f) for k, f in self._draws(rng)]
        batch: list[dict] = []
        for s in samples:
            if batch and (len(batch) == self.cfg.batch_size
                          or batch[0]["image"].shape != s["image"].shape):
                yield self._stack(batch)
                batch = []
            batch.append(s)
        if batch:
            yield self._stack(batch)

    def whole_batches(self, rng: np.random.Generator) -> list[list[int]]:
        """Item indices of one whole-image epoch, batched by image shape, in random order.

        Images of one shape are shuffled and cut into batches of ``batch_size`` (the last batch
        of a shape may be smaller); the batches of all shapes are then shuffled together, so a
        mixed-size training set (OCTA-500 3M 304², 6M 400², ROSSA 320²) still gets full batches.
        """
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for k, it in enumerate(self.items):
            by_shape.setdefault(tuple(it.image.shape), []).append(k)
        b = self.cfg.batch_size
        batches = []
        for shape in sorted(by_shape):
            idx = [by_shape[shape][i] for i in rng.permutation(len(by_shape[shape]))]
            batches += [idx[i:i + b] for i in range(0, len(idx), b)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _stack(self, batch: list[dict]) -> tuple[torch.Tensor, ...]:
        ts = [self._to_tensor(dict(d)) for d in batch]
        return tuple(torch.stack([t[k] for t in ts]) for k in ("image", "label", "fov", "head"))

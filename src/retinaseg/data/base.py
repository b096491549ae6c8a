"""Dataset base class, the ``Sample`` record and the fundus FOV derivation (reference §1).

A dataset finds its files once in ``__init__`` (``samples: list[Sample]``) and reads them lazily
in ``__getitem__``. Layout problems raise :class:`DatasetLayoutError` naming the folder that was
expected; a bad split or option raises :class:`ConfigError` listing the valid ones. A sample that
lacks a required file is *skipped and reported* (``skipped`` + one warning), never fatal.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retinaseg.errors import ConfigError, DatasetLayoutError
from retinaseg.io import (
    Palette,
    list_images,
    natural_key,
    read_class_map,
    read_colour_class_map,
    read_image,
    read_mask,
)
from retinaseg.preprocessing.fov import fov_from_image
from retinaseg.preprocessing.functions import to_grey

log = logging.getLogger(__name__)

ALL = "all"
"""Split name meaning every labelled sample of every split."""

@dataclass
class Sample:
    """Files of one dataset item.

    ``image`` holds one file per channel (stacked in this order) or one RGB/grey file.
    ``meta`` carries dataset-specific facts (always ``split``; e.g. ``fov``, ``subject``).
    """

    id: str
    image: tuple[Path, ...]
    label: Path | None
    fov: Path | None
    meta: dict[str, Any] = field(default_factory=dict)


class VesselDataset:
    """Base class: subclasses set the class attributes and implement :meth:`_find_samples`.

    ``__getitem__(i)`` returns ``{"id", "image", "label", "fov", "path"}``: ``image`` float32
    ``[H,W]`` / ``[H,W,C]`` in [0, 1] (several files → grey channels stacked in the given
    order), ``label`` and ``fov`` bool ``[H,W]`` or None, ``path`` the first image file.
    A dataset whose :attr:`classes` is set (e.g. OCTA-500 ``label=AV``) gives ``label`` as an
    int64 ``[H,W]`` class map with values ``0 .. len(classes) - 1`` instead.
    """

    name: ClassVar[str] = "dataset"
    title: ClassVar[str] = ""  # display name used in messages (defaults to ``name``)
    modality: str = "fundus"  # "fundus" | "octa"; instances may override (folder, synthetic)
    splits: ClassVar[tuple[str, ...]] = ()
    val_split: ClassVar[str | None] = None
    layout: ClassVar[str] = ""
    options_help: ClassVar[str] = "no options"
    defaults: ClassVar[dict[str, str]] = {}  # option name → default value (all options)
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}  # option name → allowed values
    aliases: ClassVar[dict[str, str]] = {}  # extra split names → official split
    needs_root: ClassVar[bool] = True
    derive_fov: bool = False  # compute the FOV with fov_from_image when a sample has none
    palette: Palette | None = None  # colour-coded class labels (set with classes), else grey

    def __init__(self, root: str | Path | None, split: str, **options: Any) -> None:
        self.given_options = set(options)
        self.options = self._check_options(options)
        self.classes: tuple[str, ...] | None = self._class_names()
        self.split = self._check_split(split)
        self.root = self._check_root(root)
        self.skipped: list[tuple[str, str]] = []
        self.samples: list[Sample] = self._finalise(self._find_samples())

    # -- subclass hooks ----------------------------------------------------------------------

    def _find_samples(self) -> list[Sample]:
        """Return the samples of ``self.split`` (which may be ``"all"``); see helpers below."""
        raise NotImplementedError

    def _class_names(self) -> tuple[str, ...] | None:
        """Names of the label classes in value order (background first) when the labels, with
        the chosen options, are class maps; None for binary vessel labels (the default)."""
        return None

    def _has_label(self, sample: Sample) -> bool:
        return sample.label is not None

    # -- validation --------------------------------------------------------------------------

    @classmethod
    def display_name(cls) -> str:
        return cls.title or cls.name

    @classmethod
    def valid_splits(cls) -> tuple[str, ...]:
        """The dataset's splits plus ``"all"``."""
        return (*cls.splits, ALL)

    def _check_options(self, options: dict[str, Any]) -> dict[str, str]:
        merged = dict(self.defaults)
        for key, value in options.items():
            if key not in self.defaults:
                valid = ", ".join(sorted(self.defaults)) or "none"
                raise ConfigError(f"unknown option '{key}' for dataset '{self.name}'; valid "
                                  f"options: {valid} ({self.options_help})")
            merged[key] = self._check_choice(key, str(value).strip())
        return merged

    def _check_choice(self, key: str, value: str) -> str:
        allowed = self.choices.get(key)
        if not allowed:
            return value
        for choice in allowed:
            if value.lower() == choice.lower():
                return choice
        raise ConfigError(f"dataset '{self.name}' option {key}='{value}' is not valid; "
                          f"choose one of: {', '.join(allowed)}")

    def _check_split(self, split: str) -> str:
        key = str(split).strip().lower()
        key = self.aliases.get(key, key)
        if key not in self.valid_splits():
            raise ConfigError(f"unknown split '{split}' for dataset '{self.name}'; valid splits: "
                              f"{', '.join(self.valid_splits())}")
        return key

    def _check_root(self, root: str | Path | None) -> Path | None:
        if not self.needs_root:
            return Path(root) if root else None
        if root is None or str(root) == "":
            raise DatasetLayoutError(f"{self.display_name()} needs a root folder; expected "
                                     f"layout: {self.layout}")
        path = Path(root).expanduser()
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            raise DatasetLayoutError(f"{self.display_name()} root '{path}' {what}; expected "
                                     f"layout: {self.layout}")
        return path

    # -- helpers for subclasses --------------------------------------------------------------

    @property
    def root_dir(self) -> Path:
        """``root`` for datasets that need one (always set after ``__init__`` validation)."""
        if self.root is None:
            raise DatasetLayoutError(f"{self.display_name()} needs a root folder")
        return self.root

    def _concrete_splits(self) -> list[str]:
        """``[self.split]``, or every official split for ``"all"``."""
        return list(self.splits) if self.split == ALL else [self.split]

    def _layout_error(self, *rels: str | Path) -> DatasetLayoutError:
        """'<title> root '<root>' has no '<rel>' [or '<rel2>'] folder; expected layout: ...'."""
        names = " or ".join(f"'{r}'" for r in rels)
        return DatasetLayoutError(f"{self.display_name()} root '{self.root}' has no {names} "
                                  f"folder; expected layout: {self.layout}")

    def _dir(self, rel: str | Path) -> Path:
        """``root / rel``, which must be a folder (else :class:`DatasetLayoutError`)."""
        path = self.root_dir / rel
        if not path.is_dir():
            raise self._layout_error(rel)
        return path

    def _skip(self, sample_id: str, reason: str) -> None:
        """Record a sample that is left out because a required file is missing."""
        self.skipped.append((sample_id, reason))

    @staticmethod
    def _files(folder: Path, pattern: str) -> list[tuple[Path, re.Match[str]]]:
        """Files in ``folder`` whose whole name matches ``pattern`` (case-insensitive), sorted."""
        regex = re.compile(pattern, re.IGNORECASE)
        found = [(p, m) for p in folder.iterdir() if p.is_file() and (m := regex.fullmatch(p.name))]
        return sorted(found, key=lambda pm: natural_key(pm[0].name))

    @staticmethod
    def _by_stem(folder: Path | None) -> dict[str, Path]:
        """Image files in ``folder`` keyed by stem (first in natural order wins); {} if absent."""
        if folder is None or not folder.is_dir():
            return {}
        index: dict[str, Path] = {}
        for path in list_images(folder):
            index.setdefault(path.stem, path)
        return index

    def _paired(self, split: str, images: Path, labels: list[Path | None],
                meta: dict[str, Any] | None = None) -> list[Sample]:
        """Pair every image in ``images`` with the first of ``labels`` holding the same stem.

        ``labels`` are tried in order (a fall-back chain); images without any label are
        skipped and reported. ``meta["label_source"]`` names the folder that was used.
        """
        indexes = [(folder, self._by_stem(folder)) for folder in labels if folder is not None]
        out = []
        for path in list_images(images):
            hit = next(((f, idx[path.stem]) for f, idx in indexes if path.stem in idx), None)
            if hit is None:
                names = " or ".join(f"'{f.name}/{path.stem}.*'" for f, _ in indexes)
                self._skip(path.stem, f"no label {names}")
                continue
            info = {"split": split, "label_source": hit[0].name, **(meta or {})}
            out.append(Sample(path.stem, (path,), hit[1], None, info))
        return out

    # -- assembling --------------------------------------------------------------------------

    def _finalise(self, samples: list[Sample]) -> list[Sample]:
        if self.split == ALL and any(self._has_label(s) for s in samples):
            samples = [s for s in samples if self._has_label(s)]
        samples = self._unique_ids(samples)
        self._report_skipped()
        if not samples:
            raise self._empty_error()
        return samples

    @staticmethod
    def _unique_ids(samples: list[Sample]) -> list[Sample]:
        """Prefix ids with their split where two splits share an id (only with ``all``)."""
        ids = [s.id for s in samples]
        if len(set(ids)) == len(ids):
            return samples
        for s in samples:
            s.id = f"{s.meta.get('split', 'x')}_{s.id}"
        return samples

    def _report_skipped(self) -> None:
        if not self.skipped:
            return
        shown = "; ".join(f"{i}: {why}" for i, why in self.skipped[:5])
        more = f"; ... ({len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
        msg = (f"{self.display_name()} split '{self.split}': skipped {len(self.skipped)} "
               f"sample(s) with missing files ({shown}{more}); see dataset.skipped")
        log.warning(msg)
        warnings.warn(msg, stacklevel=4)

    def _empty_error(self) -> DatasetLayoutError:
        why = f" ({len(self.skipped)} skipped, e.g. {self.skipped[0][0]}: {self.skipped[0][1]})" \
            if self.skipped else ""
        where = f" under '{self.root}'" if self.root else ""
        return DatasetLayoutError(f"{self.display_name()} split '{self.split}'{where} has no "
                                  f"usable samples{why}; expected layout: {self.layout}")

    # -- access ------------------------------------------------------------------------------

    @property
    def labelled(self) -> bool:
        """True when every sample has a label."""
        return all(self._has_label(s) for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = self._read_image(sample)
        shape = image.shape[:2]
        label = self._read_label(sample, shape)
        fov = self._read_mask(sample, sample.fov, shape)
        if fov is None and self.derive_fov:
            fov = fov_from_image(image)
        return {"id": sample.id, "image": image, "label": label, "fov": fov,
                "path": str(sample.image[0])}

    def _read_image(self, sample: Sample) -> np.ndarray:
        if len(sample.image) == 1:
            return read_image(sample.image[0])
        channels = [to_grey(read_image(p)) for p in sample.image]
        shapes = {c.shape for c in channels}
        if len(shapes) > 1:
            sizes = ", ".join(f"'{p.name}' {c.shape}" for p, c in zip(sample.image, channels,
                                                                       strict=True))
            raise DatasetLayoutError(f"{self.display_name()} sample '{sample.id}': channel files "
                                     f"differ in size ({sizes})")
        return np.stack(channels, axis=-1)

    def _read_label(self, sample: Sample, shape: tuple[int, ...]) -> np.ndarray | None:
        """The label: bool ``[H,W]``, or int64 ``[H,W]`` class values when :attr:`classes` is
        set (a value outside the classes is a :class:`DatasetLayoutError`)."""
        if self.classes is None or sample.label is None:
            return self._read_mask(sample, sample.label, shape)
        labels = (read_class_map(sample.label) if self.palette is None
                  else read_colour_class_map(sample.label, self.palette))
        self._check_shape(sample, sample.label, labels.shape, shape)
        top = int(labels.max()) if labels.size else 0
        if top >= len(self.classes):
            raise DatasetLayoutError(
                f"{self.display_name()} sample '{sample.id}': class map '{sample.label}' holds "
                f"the value {top}, but the dataset has {len(self.classes)} classes "
                f"({', '.join(self.classes)}; values 0-{len(self.classes) - 1})")
        return labels

    def _check_shape(self, sample: Sample, path: Path, got: tuple[int, ...],
                     shape: tuple[int, ...]) -> None:
        if got != shape:
            raise DatasetLayoutError(f"{self.display_name()} sample '{sample.id}': mask '{path}' "
                                     f"is {got[0]}x{got[1]} px but the image is "
                                     f"{shape[0]}x{shape[1]} px")

    def _read_mask(self, sample: Sample, path: Path | None,
                   shape: tuple[int, ...]) -> np.ndarray | None:
        if path is None:
            return None
        mask = read_mask(path)
        self._check_shape(sample, path, mask.shape, shape)
        return mask

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} split={self.split!r} n={len(self)}>"

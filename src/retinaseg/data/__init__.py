"""Datasets (reference §1): the ``VesselDataset`` API, the registered datasets, the factory.

Importing this package registers every dataset in :data:`retinaseg.registry.DATASETS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retinaseg.data import datasets, sam_octa2, synthetic, volumes  # noqa: F401  (registers)
from retinaseg.data.base import ALL, Sample, VesselDataset
from retinaseg.data.synthetic import make_fundus_sample, make_octa_sample
from retinaseg.registry import DATASETS


def build_dataset(name: str, root: str | Path | None, split: str,
                  **options: Any) -> VesselDataset:
    """Instantiate the dataset registered as ``name`` (case-insensitive) for ``split``.

    ``options`` are dataset-specific strings, e.g. ``build_dataset("octa500", root, "train",
    fov="6M", maps="FULL,ILM_OPL,OPL_BM")``. Raises a :class:`~retinaseg.errors.RetinasegError`
    subclass for an unknown name, split or option, or a root with the wrong layout.
    """
    cls = DATASETS.get(name)
    return cls(root, split, **options)


def describe_datasets() -> list[tuple[str, str, tuple[str, ...], str]]:
    """``(name, modality, splits incl. "all", expected layout)`` of every registered dataset."""
    rows = []
    for name in DATASETS.names():
        cls = DATASETS.get(name)
        rows.append((name, cls.modality, cls.valid_splits(), cls.layout))
    return rows


__all__ = ["ALL", "Sample", "VesselDataset", "build_dataset", "describe_datasets",
           "make_fundus_sample", "make_octa_sample"]

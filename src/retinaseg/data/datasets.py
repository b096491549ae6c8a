"""The public retinal vessel datasets in their official folder layouts (reference §1).

Fundus: DRIVE (§1.4), CHASE_DB1 (§1.5), STARE, HRF. OCTA: OCTA-500 (§1.1), ROSE-1 / ROSE-2
(§1.2, OCTA-Net layout), ROSSA, OCTA-25K (§1.3). Plus ``folder``: any ``images/`` + ``labels/``
pair. Where a set has no official split the one chosen here is written in the class docstring.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from retinaseg.data.base import ALL, Sample, VesselDataset
from retinaseg.errors import ConfigError, DatasetLayoutError
from retinaseg.io import RITE_PALETTE, Palette, list_images
from retinaseg.registry import DATASETS

# ============================================================================================
# fundus


@DATASETS.register("drive")
class Drive(VesselDataset):
    """DRIVE (§1.4): official 20 training / 20 test images; FOV masks from ``mask/``.

    ``observer=2`` uses ``test/2nd_manual`` and is only available for the test images.
    Ids are the image stems (``21_training``, ``01_test``). A missing mask file gives fov None.
    """

    name, title, modality = "drive", "DRIVE", "fundus"
    splits = ("training", "test")
    aliases = {"train": "training"}
    layout = ("<root>/{training,test}/images/NN_<split>.tif, <root>/<split>/1st_manual/"
              "NN_manual1.gif, <root>/<split>/mask/NN_<split>_mask.gif, "
              "<root>/test/2nd_manual/NN_manual2.gif")
    options_help = "observer=1|2 (default 1; 2 = second observer, test split only)"
    defaults = {"observer": "1"}
    choices = {"observer": ("1", "2")}

    def _find_samples(self) -> list[Sample]:
        observer = self.options["observer"]
        if observer == "2" and self.split == "training":
            raise ConfigError("DRIVE observer=2 labels (test/2nd_manual) exist only for the "
                              "test split")
        splits = [s for s in self._concrete_splits() if observer == "1" or s == "test"]
        return [s for split in splits for s in self._split_samples(split, observer)]

    def _split_samples(self, split: str, observer: str) -> list[Sample]:
        images = self._dir(f"{split}/images")
        manual = self._dir(f"{split}/{'1st' if observer == '1' else '2nd'}_manual")
        masks = self._dir(f"{split}/mask")
        out = []
        for path, m in self._files(images, rf"(\d+)_{split}\.tiff?"):
            label = manual / f"{m.group(1)}_manual{observer}.gif"
            fov = masks / f"{m.group(1)}_{split}_mask.gif"
            if not label.is_file():
                self._skip(path.stem, f"no label '{manual.name}/{label.name}'")
                continue
            out.append(Sample(path.stem, (path,), label, fov if fov.is_file() else None,
                              {"split": split}))
        return out


@DATASETS.register("chase_db1")
class ChaseDB1(VesselDataset):
    """CHASE_DB1 (§1.5), one flat folder. No official split: FR-UNet's subjects 01-10
    (20 images) = ``train``, 11-14 (8 images) = ``test``. No FOV masks: derived from the red
    channel with :func:`~retinaseg.preprocessing.fov.fov_from_image`. Ids: ``Image_01L`` ...
    """

    name, title, modality = "chase_db1", "CHASE_DB1", "fundus"
    splits = ("train", "test")
    layout = ("<root>/Image_NNX.jpg with labels <root>/Image_NNX_1stHO.png (observer 2: "
              "_2ndHO.png) in one flat folder; NN = 01-14, X = L|R")
    options_help = "observer=1|2 (default 1: _1stHO labels; 2: _2ndHO)"
    defaults = {"observer": "1"}
    choices = {"observer": ("1", "2")}
    derive_fov = True
    TRAIN_SUBJECTS = range(1, 11)

    def _find_samples(self) -> list[Sample]:
        files = self._files(self.root_dir, r"Image_(\d+)([LR])\.jpe?g")
        if not files:
            raise DatasetLayoutError(f"CHASE_DB1 root '{self.root}' has no 'Image_NNX.jpg' "
                                     f"files; expected layout: {self.layout}")
        suffix = "_1stHO" if self.options["observer"] == "1" else "_2ndHO"
        wanted = self._concrete_splits()
        out = []
        for path, m in files:
            subject = int(m.group(1))
            split = "train" if subject in self.TRAIN_SUBJECTS else "test"
            if split not in wanted:
                continue
            label = path.with_name(f"{path.stem}{suffix}.png")
            if not label.is_file():
                self._skip(path.stem, f"no label '{label.name}'")
                continue
            out.append(Sample(path.stem, (path,), label, None,
                              {"split": split, "subject": subject, "eye": m.group(2).upper()}))
        return out


@DATASETS.register("stare")
class Stare(VesselDataset):
    """STARE: the 20 hand-labelled images (``labels-ah``, observer 2: ``labels-vk``).

    No official split; ``train`` = the first 10 labelled ids in sorted order (im0001-im0139),
    ``test`` = the last 10 (im0162-im0324) — our convention, not official. FOV derived from
    the red channel. Unlabelled images in ``stare-images`` are ignored; the official
    ``.ppm.gz`` downloads must be decompressed first.
    """

    name, title, modality = "stare", "STARE", "fundus"
    splits = ("train", "test")
    layout = ("<root>/stare-images/imNNNN.ppm with labels <root>/labels-ah/imNNNN.ah.ppm "
              "(observer 2: <root>/labels-vk/imNNNN.vk.ppm)")
    options_help = "observer=1|2 (default 1: labels-ah, Hoover; 2: labels-vk, Kouznetsova)"
    defaults = {"observer": "1"}
    choices = {"observer": ("1", "2")}
    derive_fov = True
    LABELLED = ("im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081",
                "im0082", "im0139", "im0162", "im0163", "im0235", "im0236", "im0239", "im0240",
                "im0255", "im0291", "im0319", "im0324")

    def _split_of(self, sample_id: str) -> str | None:
        if sample_id not in self.LABELLED:
            return None
        return "train" if self.LABELLED.index(sample_id) < 10 else "test"

    def _find_samples(self) -> list[Sample]:
        images = self._dir("stare-images")
        tag = "ah" if self.options["observer"] == "1" else "vk"
        labels = self._dir(f"labels-{tag}")
        out = []
        for label, m in self._files(labels, rf"(im\d+)\.{tag}\.ppm"):
            split = self._split_of(m.group(1))
            if not (self.split == ALL or split == self.split):
                continue
            image = images / f"{m.group(1)}.ppm"
            if not image.is_file():
                gz = " (only .ppm.gz found: gunzip it)" if image.with_suffix(".ppm.gz").is_file() \
                    else ""
                self._skip(m.group(1), f"no image 'stare-images/{image.name}'{gz}")
                continue
            out.append(Sample(m.group(1), (image,), label, None, {"split": split}))
        return out


@DATASETS.register("hrf")
class Hrf(VesselDataset):
    """HRF (High-Resolution Fundus): 15 healthy (h), 15 diabetic retinopathy (dr) and 15
    glaucoma (g) images with manual labels and FOV masks.

    No official split; ``train`` = numbers 01-05 of each category (15 images), ``test`` =
    06-15 (30 images) — our convention. Ids: ``01_dr`` ... A missing mask gives fov None.
    """

    name, title, modality = "hrf", "HRF", "fundus"
    splits = ("train", "test")
    layout = ("<root>/images/NN_<h|dr|g>.jpg (or .JPG), <root>/manual1/NN_<cat>.tif, "
              "<root>/mask/NN_<cat>_mask.tif")
    TRAIN_NUMBERS = range(1, 6)

    def _find_samples(self) -> list[Sample]:
        images, manual, masks = self._dir("images"), self._dir("manual1"), self._dir("mask")
        out = []
        for path, m in self._files(images, r"(\d+)_(h|dr|g)\.jpe?g"):
            split = "train" if int(m.group(1)) in self.TRAIN_NUMBERS else "test"
            if not (self.split == ALL or split == self.split):
                continue
            label = manual / f"{path.stem}.tif"
            fov = masks / f"{path.stem}_mask.tif"
            if not label.is_file():
                self._skip(path.stem, f"no label 'manual1/{label.name}'")
                continue
            out.append(Sample(path.stem, (path,), label, fov if fov.is_file() else None,
                              {"split": split, "category": m.group(2).lower()}))
        return out


# ============================================================================================
# OCTA

OCTA500_MAPS = {
    "FULL": "OCTA(FULL)", "ILM_OPL": "OCTA(ILM_OPL)", "OPL_BM": "OCTA(OPL_BM)",
    "OCT_FULL": "OCT(FULL)", "OCT_ILM_OPL": "OCT(ILM_OPL)", "OCT_OPL_BM": "OCT(OPL_BM)",
}
OCTA500_SPLITS = {  # reference §1.1, inclusive subject-id ranges
    "6M": {"train": (10001, 10180), "val": (10181, 10200), "test": (10201, 10300)},
    "3M": {"train": (10301, 10440), "val": (10441, 10450), "test": (10451, 10500)},
}
SEED003_SPLITS = {  # the U-Net student project (seed 003): 6M only, inside the official train+val
    "6M": {"train": (10001, 10160), "val": (10161, 10180), "test": (10181, 10200)},
    "3M": {},
}


def octa500_split(fov: str, subject: int, scheme: str = "official") -> str | None:
    """OCTA-500 split of ``subject`` in field of view ``fov`` ("3M"/"6M") under ``scheme``
    (``official``, or ``seed003``: the U-Net student project's 6M split), or None."""
    table = SEED003_SPLITS if scheme == "seed003" else OCTA500_SPLITS
    for split, (lo, hi) in table[fov].items():
        if lo <= subject <= hi:
            return split
    return None


def parse_octa500_maps(value: str) -> list[str]:
    """``"FULL,ILM_OPL"`` (or ``"OCTA(FULL)"``, ``"OCT(FULL)"``) → projection folder names."""
    folders = {v.upper(): v for v in OCTA500_MAPS.values()}
    out = []
    for token in (t.strip().upper() for t in value.split(",")):
        if token in OCTA500_MAPS:
            out.append(OCTA500_MAPS[token])
        elif token in folders:
            out.append(folders[token])
        else:
            raise ConfigError(f"OCTA-500 maps: unknown projection '{token}'; choose from "
                              f"{', '.join(OCTA500_MAPS)} (comma-separated)")
    if not out:
        raise ConfigError("OCTA-500 maps must name at least one projection")
    return out


OCTA500_CLASSES: dict[str, tuple[str, ...]] = {
    "AV": ("background", "artery", "vein", "overlap"),
    "CAVF": ("background", "capillary", "artery", "vein", "faz"),
}
"""OCTA-500 labels that are class maps (value = index in the tuple), not binary masks:
``GT_AV`` (overlap = pixels in both GT_Artery and GT_Vein) and ``GT_CAVF`` (vein wins at
artery/vein overlaps)."""


S3OCTA_LABELS = {"LargeVessel": "RV", "Artery": "Artery", "Vein": "Vein"}
"""Label folders of S3-OCTA's flat OCTA-500 copy (§1.1 "Loader variants"), by our label name."""


@DATASETS.register("octa500")
class Octa500(VesselDataset):
    """OCTA-500 (§1.1) en-face projections; official id splits (6M 180/20/100, 3M 140/10/50).

    Layouts (§1.1), found automatically: the official release (``OCTA_{3M,6M}/Projection
    Maps/OCTA(...)``, ``GT_*``); SAM-OCTA2's copy (``{3M,6M}/ProjectionMaps/{FULL,ILM_OPL,
    OPL_BM}``, ``GT_*``); and S3-OCTA's flat copy, 3M and 6M in one folder
    (``ProjectionMaps/OCTA(...)``, labels ``RV`` = LargeVessel, ``Artery``, ``Vein``, or
    ``GT_*``), where the field of view of a subject follows from its id (6M 10001-10300,
    3M 10301-10500) — so a single ``OCTA_6M`` folder is a valid root too.

    Works on partial copies: the subjects present in the requested map folders are the
    candidates; a candidate lacking a requested map or the label is skipped and reported.
    Several maps are stacked as channels in the order given. ``meta``: ``fov``, ``subject``.
    """

    name, title, modality = "octa500", "OCTA-500", "octa"
    splits = ("train", "val", "test")
    val_split = "val"
    layout = ("<root>/OCTA_{3M,6M}/Projection Maps/{OCTA,OCT}({FULL,ILM_OPL,OPL_BM})/<id>.bmp "
              "('ProjectionMaps' also accepted) and <root>/OCTA_{3M,6M}/GT_{LargeVessel,Artery,"
              "Vein,Capillary,FAZ,AV,CAVF}/<id>.bmp; or SAM-OCTA2's <root>/{3M,6M}/"
              "ProjectionMaps/{FULL,ILM_OPL,OPL_BM}/<id>.bmp; or S3-OCTA's flat <root>/"
              "ProjectionMaps/OCTA(...)/<id>.bmp with <root>/{RV,Artery,Vein}/<id>.bmp")
    options_help = ("fov=3M|6M|both (default both); maps=comma list of FULL, ILM_OPL, OPL_BM, "
                    "OCT_FULL, OCT_ILM_OPL, OCT_OPL_BM (default ILM_OPL); label=LargeVessel|"
                    "Artery|Vein|Capillary|FAZ (binary), or AV|CAVF (class maps: 0 background, "
                    "1 artery, 2 vein, 3 overlap | 0 background, 1 capillary, 2 artery, 3 vein, "
                    "4 FAZ) (default LargeVessel); splits=official|seed003 "
                    "(seed003: the U-Net student project's 6M split, train 10001-10160, val "
                    "10161-10180, test 10181-10200; no 3M subjects)")
    defaults = {"fov": "both", "maps": "ILM_OPL", "label": "LargeVessel", "splits": "official"}
    choices = {"fov": ("3M", "6M", "both"),
               "label": ("LargeVessel", "Artery", "Vein", "Capillary", "FAZ", "AV", "CAVF"),
               "splits": ("official", "seed003")}

    def _class_names(self) -> tuple[str, ...] | None:
        """``label=AV`` / ``label=CAVF`` are class maps (:data:`OCTA500_CLASSES`)."""
        return OCTA500_CLASSES.get(self.options["label"])

    def _find_samples(self) -> list[Sample]:
        maps = parse_octa500_maps(self.options["maps"])
        fovs = ["6M", "3M"] if self.options["fov"] == "both" else [self.options["fov"]]
        present: dict[str, Path] = {}
        for fov in fovs:  # official OCTA_6M, SAM-OCTA2's 6M
            found = [d for d in (self.root_dir / f"OCTA_{fov}", self.root_dir / fov) if d.is_dir()]
            if found:
                present[fov] = found[0]
        flat = not present and self._projection_dir(self.root_dir, required=False) is not None
        if flat:  # S3-OCTA: 3M and 6M in one folder, the field of view from the id
            present = dict.fromkeys(fovs, self.root_dir)
        if not present:
            raise self._layout_error(*(f"OCTA_{f}" for f in fovs), "ProjectionMaps")
        out: list[Sample] = []
        missing: list[str] = []
        for fov, base in present.items():
            proj = self._projection_dir(base)
            folders = [self._map_dir(proj, m) for m in maps]
            missing += [f.relative_to(self.root_dir).as_posix() for f in folders
                        if not f.is_dir()]
            out += self._fov_samples(fov, folders, self._label_dir(base, flat))
        if not out and not self.skipped and missing:
            raise self._layout_error(missing[0])
        return out

    def _projection_dir(self, base: Path, required: bool = True) -> Path | None:
        """``base/Projection Maps`` or ``base/ProjectionMaps`` (None if absent and not
        ``required``)."""
        for name in ("Projection Maps", "ProjectionMaps"):
            if (base / name).is_dir():
                return base / name
        if not required:
            return None
        raise self._layout_error((base / "Projection Maps").relative_to(self.root_dir))

    @staticmethod
    def _map_dir(proj: Path, folder: str) -> Path:
        """``proj/OCTA(FULL)``, or SAM-OCTA2's bare ``proj/FULL`` for an OCTA map."""
        bare = folder.removeprefix("OCTA(").removesuffix(")")
        if not (proj / folder).is_dir() and folder.startswith("OCTA(") and (proj / bare).is_dir():
            return proj / bare
        return proj / folder

    def _label_dir(self, base: Path, flat: bool) -> Path:
        """``base/GT_<label>``; in S3-OCTA's flat copy ``RV`` / ``Artery`` / ``Vein`` first."""
        label = self.options["label"]
        names = ([S3OCTA_LABELS[label]] if flat and label in S3OCTA_LABELS else [])
        names.append(f"GT_{label}")
        return next((base / n for n in names if (base / n).is_dir()), base / names[-1])

    def _fov_samples(self, fov: str, folders: list[Path], label_dir: Path) -> list[Sample]:
        indexes = [self._by_stem(f) for f in folders]
        labels = self._by_stem(label_dir)
        ids = sorted({s for idx in indexes for s in idx if s.isdigit()}, key=int)
        out = []
        for sid in ids:
            split = octa500_split(fov, int(sid), self.options["splits"])
            if split is None or not (self.split == ALL or split == self.split):
                continue
            lacking = [f.name for f, idx in zip(folders, indexes, strict=True) if sid not in idx]
            if lacking or sid not in labels:
                what = ", ".join(lacking + ([] if sid in labels else [label_dir.name]))
                self._skip(sid, f"OCTA_{fov}: no {what}")
                continue
            out.append(Sample(sid, tuple(idx[sid] for idx in indexes), labels[sid], None,
                              {"split": split, "fov": fov, "subject": int(sid)}))
        return out


ROSE1_LAYERS = ("SVC", "DVC", "SVC_DVC")
"""ROSE-1 en-face layers (§1.2): superficial, deep, and inner/whole (OCTA-Net ``SVC_DVC``,
S3-OCTA ``IVC``)."""
ROSE1_ALIASES = {"IVC": "SVC_DVC", "SVC+DVC": "SVC_DVC"}
ROSE_O_IMAGE = {"SVC": "SVC", "DVC": "DVC", "SVC_DVC": "IVC"}  # img/<folder> in ROSE-O
ROSE_O_VESSEL = {"SVC": "SCC", "DVC": "DCC", "SVC_DVC": "WRCC"}  # gt/vessel/<folder> in ROSE-O


def parse_rose1_layers(value: str) -> list[str]:
    """``"SVC"`` or ``"SVC,DVC,IVC"`` → canonical layer names (``IVC`` = ``SVC_DVC``)."""
    out: list[str] = []
    for token in (t.strip().upper() for t in str(value).split(",")):
        name = ROSE1_ALIASES.get(token, token)
        if name not in ROSE1_LAYERS or name in out:
            why = "is given twice" if name in out else "is not valid"
            raise ConfigError(f"ROSE-1 layer '{token}' {why}; choose from SVC, DVC, SVC_DVC "
                              "(alias IVC), or a comma list such as SVC,DVC,IVC")
        out.append(name)
    return out


def _rose_labels(images: list[Path], folder: Path | None) -> tuple[dict[str, Path], str]:
    """Label files of ``folder`` keyed by the stem of their image, and how they were paired.

    Same stem (``"stem"``); when no stem matches and both folders hold the same number of
    files, the sorted listings are paired in order (``"order"``), as OCTA-Net's loader does.
    A missing folder gives ``{}``.
    """
    index = VesselDataset._by_stem(folder)
    if not index or any(p.stem in index for p in images) or len(index) != len(images):
        return index, "stem"
    return {p.stem: label for p, label in zip(images, index.values(), strict=True)}, "order"


@DATASETS.register("rose1")
class Rose1(VesselDataset):
    """ROSE-1 (§1.2): 39 subjects, 30 train / 9 test, 304×304 SVC, DVC and SVC_DVC (= IVC)
    en-face images, in either of two layouts (found automatically):

    * OCTA-Net: ``<root>/<layer>/{train,test}/{img,gt,thin_gt,thick_gt}``; ``<root>`` may also
      be one layer folder (OCTA-Net's ``--data_dir ROSE-1/SVC``), whose name gives the layer.
    * S3-OCTA "ROSE-O": ``<root>/img/{SVC,DVC,IVC}/NN.*`` with labels ``<root>/gt/RV/NN.*``
      or the release's ``<root>/gt/vessel/{SCC,DCC,WRCC}/NN.*``; NN 01-30 = train, 31-39 =
      test (S3-OCTA's split; its val = test).

    Labels are matched to images by file stem, or in sorted order when no stem matches and the
    counts agree (``meta["paired_by"]``). ``layer`` may list several layers, stacked as grey
    channels in that order (S3-OCTA: ``SVC,DVC,IVC``); the label is then the whole-vessel one
    (OCTA-Net ``SVC_DVC/gt``; ROSE-O ``gt/RV``, else ``gt/vessel/WRCC``). A single ROSE-O layer
    uses its own ``gt/vessel`` label where present, else ``gt/RV``.

    ``target=thin|thick`` reads ``thin_gt``/``thick_gt`` and falls back to ``gt`` where that
    folder or file is missing (§5); ``meta["label_source"]`` says which folder was used.
    Where both ``thick_gt`` and ``thin_gt`` exist (OCTA-Net layout, SVC and SVC_DVC), items
    carry them as ``item["thick_gt"]`` / ``item["thin_gt"]`` (bool ``[H, W]``, else None):
    :func:`~retinaseg.evaluation.evaluate.evaluate` scores Dice of thick and thin vessels on
    them. DVC labels are centerline-level (§1.2), so DVC items (OCTA-Net layout) also carry
    ``item["centerline"]`` = the label. The ROSE paper's SVC+DVC result max-fuses the SVC and
    DVC *probability maps* (§5); that is a step on predictions, not on the images read here.
    """

    name, title, modality = "rose1", "ROSE-1", "octa"
    splits = ("train", "test")
    layout = ("<root>/{SVC,DVC,SVC_DVC}/{train,test}/{img,gt,thin_gt,thick_gt}/<name>.<tif|png>"
              " (OCTA-Net; <root> may be one layer folder: <root>/{train,test}/...), or "
              "<root>/img/{SVC,DVC,IVC}/NN.<tif|png> with <root>/gt/RV/NN.png or "
              "<root>/gt/vessel/{SCC,DCC,WRCC}/NN.* (S3-OCTA 'ROSE-O'; NN 01-30 train, 31-39 "
              "test); labels matched by file stem, else in sorted order")
    options_help = ("layer=SVC|DVC|SVC_DVC (alias IVC), or a comma list stacked as channels, "
                    "e.g. SVC,DVC,IVC (default SVC); target=gt|thin|thick (default gt)")
    defaults = {"layer": "SVC", "target": "gt"}
    choices = {"target": ("gt", "thin", "thick")}
    ROSE_O_SPLITS = {"train": range(1, 31), "test": range(31, 40)}

    def _find_samples(self) -> list[Sample]:
        layers = parse_rose1_layers(self.options["layer"])
        root = self.root_dir
        if (root / "img").is_dir() and (root / "gt").is_dir():
            return self._rose_o(layers)
        if any((root / s / "img").is_dir() for s in self.splits) \
                and not any((root / name).is_dir() for name in ROSE1_LAYERS):
            return self._layer_folder(layers)
        if not any((root / name).is_dir() for name in ROSE1_LAYERS):
            raise self._layout_error(f"{layers[0]}/{self._concrete_splits()[0]}/img",
                                     f"img/{ROSE_O_IMAGE[layers[0]]}")
        label_layer = layers[0] if len(layers) == 1 else "SVC_DVC"
        out = []
        for split in self._concrete_splits():
            images = [self._dir(f"{layer}/{split}/img") for layer in layers]
            out += self._octanet(split, images, f"{label_layer}/{split}", layers)
        return out

    def _layer_folder(self, layers: list[str]) -> list[Sample]:
        """``<root>/{train,test}/...``: the root is one OCTA-Net layer folder."""
        own = ROSE1_ALIASES.get(self.root_dir.name.upper(), self.root_dir.name.upper())
        if len(layers) > 1 or ("layer" in self.given_options and own in ROSE1_LAYERS
                               and own != layers[0]):
            raise DatasetLayoutError(
                f"ROSE-1 root '{self.root}' is one layer folder ({{train,test}}/img), so "
                f"layer={self.options['layer']} cannot be read from it; give the ROSE-1 folder "
                f"that holds {', '.join(f'{x}/' for x in ROSE1_LAYERS)} instead")
        layer = own if own in ROSE1_LAYERS else layers[0]
        return [s for split in self._concrete_splits()
                for s in self._octanet(split, [self._dir(f"{split}/img")], split, [layer])]

    def _octanet(self, split: str, images: list[Path], label_rel: str,
                 layers: list[str]) -> list[Sample]:
        base = self.root_dir / label_rel
        gt = self._dir(f"{label_rel}/gt")
        return self._assemble(images, gt, base / "thick_gt", base / "thin_gt", layers,
                              "octanet", lambda _sid: split)

    def _rose_o(self, layers: list[str]) -> list[Sample]:
        """S3-OCTA's ``ROSE-O`` layout: ``img/{SVC,DVC,IVC}``, ``gt/RV`` or ``gt/vessel/*``."""
        images = [self._dir(f"img/{ROSE_O_IMAGE[layer]}") for layer in layers]
        own = f"gt/vessel/{ROSE_O_VESSEL[layers[0] if len(layers) == 1 else 'SVC_DVC']}"
        tried = [own, "gt/RV"] if len(layers) == 1 else ["gt/RV", own]
        gt = next((self.root_dir / rel for rel in tried if (self.root_dir / rel).is_dir()), None)
        if gt is None:
            raise self._layout_error(*tried)
        wanted = self._concrete_splits()

        def split_of(sid: str) -> str | None:
            number = int(sid) if sid.isdigit() else 0
            split = next((s for s, r in self.ROSE_O_SPLITS.items() if number in r), None)
            if split is None:
                self._skip(sid, "ROSE-O images are numbered 01-39 (01-30 train, 31-39 test)")
            return split if split in wanted else None

        return self._assemble(images, gt, None, None, layers, "s3octa", split_of)

    def _assemble(self, images: list[Path], gt: Path, thick_dir: Path | None,
                  thin_dir: Path | None, layers: list[str], layout: str,
                  split_of: Callable[[str], str | None]) -> list[Sample]:
        """Samples of the first image folder's files, with the other layers' files as extra
        channels (by stem), the label chain of ``target`` and the thick/thin labels."""
        first = list_images(images[0])
        others = [self._by_stem(d) for d in images[1:]]
        labels, paired_by = _rose_labels(first, gt)
        thick, _ = _rose_labels(first, thick_dir)
        thin, _ = _rose_labels(first, thin_dir)
        gt_name = gt.relative_to(self.root_dir).as_posix() if layout == "s3octa" else gt.name
        chain = [(gt_name, labels)]
        if self.options["target"] == "thin":
            chain.insert(0, ("thin_gt", thin))
        elif self.options["target"] == "thick":
            chain.insert(0, ("thick_gt", thick))
        out = []
        for path in first:
            sid = path.stem
            split = split_of(sid)
            if split is None:
                continue
            lacking = [f"{d.parent.name}/{d.name}/{sid}.*"
                       for d, idx in zip(images[1:], others, strict=True) if sid not in idx]
            hit = next(((name, idx[sid]) for name, idx in chain if sid in idx), None)
            if lacking or hit is None:
                missing = lacking + ([] if hit else [f"label '{gt_name}/{sid}.*'"])
                self._skip(sid, f"no {', '.join(missing)}")
                continue
            meta: dict[str, Any] = {"split": split, "layer": ",".join(layers), "layout": layout,
                                    "label_source": hit[0], "paired_by": paired_by}
            if sid in thick and sid in thin:
                meta.update(thick_gt=thick[sid], thin_gt=thin[sid])
            if layout == "octanet" and layers == ["DVC"]:
                meta["label_level"] = "centerline"
            out.append(Sample(sid, (path, *(idx[sid] for idx in others)), hit[1], None, meta))
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The base item plus ``thick_gt`` / ``thin_gt`` (bool ``[H, W]`` or None) and, for
        centerline-level labels (DVC), ``centerline`` (a copy of the label)."""
        item = super().__getitem__(index)
        sample = self.samples[index]
        shape = item["image"].shape[:2]
        for key in ("thick_gt", "thin_gt"):
            item[key] = self._read_mask(sample, sample.meta.get(key), shape)
        if sample.meta.get("label_level") == "centerline" and item["label"] is not None:
            item["centerline"] = item["label"].copy()
        return item


@DATASETS.register("rose2")
class Rose2(VesselDataset):
    """ROSE-2 (§1.2) in the OCTA-Net "cria" layout: 90 train / 22 test, 840×840 SVC images
    with centerline-level labels.

    Labels are matched by file stem, or in sorted order when no stem matches and the counts
    agree (OCTA-Net pairs sorted listings; ``meta["paired_by"]``). The labels are
    centerline-level, so every item also carries them as ``item["centerline"]`` (bool
    ``[H, W]``, a copy of ``label``; also :meth:`centerline`) for training targets that want a
    centerline label (OCTA-Net's thin branch, reference §5).
    """

    name, title, modality = "rose2", "ROSE-2", "octa"
    splits = ("train", "test")
    layout = ("<root>/{train,test}/{original,gt}/<name>.<ext> (labels matched by file stem, "
              "else in sorted order)")

    def _find_samples(self) -> list[Sample]:
        out = []
        for split in self._concrete_splits():
            images, gt = self._dir(f"{split}/original"), self._dir(f"{split}/gt")
            files = list_images(images)
            labels, paired_by = _rose_labels(files, gt)
            for path in files:
                if path.stem not in labels:
                    self._skip(path.stem, f"no label 'gt/{path.stem}.*'")
                    continue
                out.append(Sample(path.stem, (path,), labels[path.stem], None,
                                  {"split": split, "label_source": "gt", "paired_by": paired_by,
                                   "label_level": "centerline"}))
        return out

    def centerline(self, index: int) -> np.ndarray:
        """The centerline label of sample ``index``, bool ``[H, W]`` (ROSE-2's own label)."""
        return self[index]["centerline"]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The base item plus ``centerline`` (bool ``[H, W]``, a copy of the label)."""
        item = super().__getitem__(index)
        item["centerline"] = None if item["label"] is None else item["label"].copy()
        return item


@DATASETS.register("rossa")
class Rossa(VesselDataset):
    """ROSSA (Ning et al., ICASSP 2024): 320×320 OCTA PNGs.

    Splits ``train_manual`` (ids 1-100), ``train_sam`` (SAM-generated labels), ``val``
    (101-200), ``test``; ``train`` is an alias of ``train_manual``. Splits absent on disk are
    fine unless requested; ``all`` uses the ones present.
    """

    name, title, modality = "rossa", "ROSSA", "octa"
    splits = ("train_manual", "train_sam", "val", "test")
    val_split = "val"
    aliases = {"train": "train_manual"}
    layout = "<root>/{train_manual,train_sam,val,test}/{image,label}/<N>.png (matched by stem)"

    def _find_samples(self) -> list[Sample]:
        splits = self._concrete_splits()
        if self.split == ALL:
            splits = [s for s in splits if (self.root_dir / s).is_dir()]
            if not splits:
                raise self._layout_error("train_manual")
        return [s for split in splits
                for s in self._paired(split, self._dir(f"{split}/image"),
                                      [self._dir(f"{split}/label")])]


@DATASETS.register("octa25k")
class Octa25k(VesselDataset):
    """OCTA-25K (§1.3) quality-graded images; no vessel labels (inference only).

    Splits are the quality grades; ``meta``: ``fov``, ``quality``. Ids: ``3M_gradable_12``.
    """

    name, title, modality = "octa25k", "OCTA-25K", "octa"
    splits = ("ungradable", "gradable", "outstanding")
    layout = "<root>/{3M,6M}/{ungradable,gradable,outstanding}/NNN.png (no labels)"
    options_help = "fov=3M|6M|both (default both)"
    defaults = {"fov": "both"}
    choices = {"fov": ("3M", "6M", "both")}

    def _find_samples(self) -> list[Sample]:
        fovs = ["3M", "6M"] if self.options["fov"] == "both" else [self.options["fov"]]
        present = [f for f in fovs if (self.root_dir / f).is_dir()]
        if not present:
            raise self._layout_error(*fovs)
        out = []
        for fov in present:
            for grade in self._concrete_splits():
                if self.split == ALL and not (self.root_dir / fov / grade).is_dir():
                    continue
                out += [Sample(f"{fov}_{grade}_{p.stem}", (p,), None, None,
                               {"split": grade, "fov": fov, "quality": grade})
                        for p in list_images(self._dir(f"{fov}/{grade}"))]
        return out


# ============================================================================================
# any folder


def parse_class_names(value: str, where: str) -> tuple[str, ...] | None:
    """``""`` → None (binary labels); ``"3"`` → ``("class_0", "class_1", "class_2")``;
    ``"background,artery,vein"`` → those names. Fewer than 2 classes or a repeated name is a
    :class:`ConfigError` naming ``where``."""
    text = str(value).strip()
    if not text:
        return None
    names = tuple(f"class_{k}" for k in range(int(text))) if text.isdigit() \
        else tuple(t.strip() for t in text.split(","))
    if len(names) < 2 or len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"{where} must be a number of classes (at least 2) or at least 2 "
                          f"distinct comma-separated names, not '{value}'")
    return names


def parse_palette(value: str) -> Palette | None:
    """``""`` → None (grey labels); ``"rite"`` → :data:`~retinaseg.io.RITE_PALETTE`;
    ``"artery=#ff0000,vein=#0000ff"`` → a black background followed by those classes. A bad
    entry is a :class:`ConfigError` saying the expected form."""
    text = str(value).strip()
    if not text:
        return None
    if text.lower() == "rite":
        return RITE_PALETTE
    out: list[tuple[str, tuple[int, int, int]]] = [("background", (0, 0, 0))]
    for entry in (e.strip() for e in text.split(",")):
        match = re.fullmatch(r"([A-Za-z_][\w-]*)=#([0-9a-fA-F]{6})", entry)
        if match is None:
            raise ConfigError(f"folder dataset option label_colours: '{entry}' is not "
                              "<name>=#rrggbb (or use label_colours=rite)")
        hexa = match.group(2)
        out.append((match.group(1), tuple(int(hexa[i:i + 2], 16) for i in (0, 2, 4))))
    names = [n for n, _ in out]
    colours = [c for _, c in out]
    if len(set(names)) != len(names) or len(set(colours)) != len(colours):
        raise ConfigError(f"folder dataset option label_colours '{value}' repeats a name or a "
                          "colour (black is the background)")
    return tuple(out)


@DATASETS.register("folder")
class Folder(VesselDataset):
    """Any folder of images with optional labels / FOV masks matched by file stem.

    A label is ``<labels>/<image stem><label_suffix>.<any image ext>``; without a labels
    folder every image is unlabelled (inference). ``fov=auto`` derives the FOV from the image
    (:func:`~retinaseg.preprocessing.fov.fov_from_image`); ``fov=<folder>`` reads ``<stem>.*`` or
    ``<stem>_mask.*`` there. Only split ``all``.
    """

    name, title = "folder", "folder"
    splits = ()
    layout = "<root>/<images>/*.<png|tif|jpg|bmp|gif|ppm> [+ <root>/<labels>/<same stem>.*]"
    options_help = ("images=<sub-folder or absolute path> (default images); labels=<folder> "
                    "(default labels; optional); label_suffix=<text after the stem, e.g. "
                    "_manual1> (default none); fov=<folder>|auto (default none); "
                    "modality=fundus|octa (default fundus); classes=<number of classes, or "
                    "their names in value order, e.g. background,artery,vein> (labels are grey "
                    "class maps 0, 1, 2, ...; default none: binary labels); label_colours=rite | "
                    "<name>=#rrggbb,... (colour-coded class labels: rite = AV-DRIVE/RITE red "
                    "artery, blue vein, green overlap, white uncertain; a custom list gives the "
                    "classes after a black background; default none)")
    defaults = {"images": "images", "labels": "labels", "label_suffix": "", "fov": "",
                "modality": "fundus", "classes": "", "label_colours": ""}
    choices = {"modality": ("fundus", "octa")}

    @cached_property
    def palette(self) -> Palette | None:  # type: ignore[override]
        """The ``label_colours`` option (:func:`parse_palette`), parsed once."""
        return parse_palette(self.options.get("label_colours", ""))

    def _class_names(self) -> tuple[str, ...] | None:
        """``classes=N`` (names ``class_0`` ...) or ``classes=a,b,c``; empty: binary labels.
        With ``label_colours`` the classes are the palette's; ``classes`` may only repeat them."""
        classes = parse_class_names(self.options.get("classes", ""),
                                    "folder dataset option classes")
        if self.palette is None:
            return classes
        names = tuple(n for n, _ in self.palette)
        if classes is not None and classes != names and classes != tuple(
                f"class_{k}" for k in range(len(names))):
            raise ConfigError(f"folder dataset: classes={self.options['classes']} conflicts "
                              f"with the palette's classes ({','.join(names)}); give one of them")
        return names

    def _check_root(self, root: str | Path | None) -> Path | None:
        """The root may be left out when the folders are given as absolute paths."""
        return None if root is None or str(root) == "" else super()._check_root(root)

    def _folder(self, key: str) -> Path:
        path = Path(self.options[key]).expanduser()
        if path.is_absolute():
            return path
        if self.root is None:
            raise DatasetLayoutError(f"folder dataset: '{key}={self.options[key]}' is relative, "
                                     "so a root folder is needed (or give an absolute path)")
        return self.root / path

    def _find_samples(self) -> list[Sample]:
        self.modality = self.options["modality"]
        images = self._folder("images")
        if not images.is_dir():
            raise self._layout_error(self.options["images"])
        labels = self._optional_dir("labels")
        fov_opt = self.options["fov"]
        self.derive_fov = fov_opt.lower() == "auto"
        fovs = None if fov_opt.lower() in ("", "auto") else self._optional_dir("fov")
        label_index, fov_index = self._by_stem(labels), self._by_stem(fovs)
        out = []
        for path in list_images(images):
            sample = self._sample(path, labels, label_index, fovs, fov_index)
            if sample is not None:
                out.append(sample)
        return out

    def _optional_dir(self, key: str) -> Path | None:
        """The folder of option ``key``; a missing folder is an error only if given explicitly."""
        path = self._folder(key)
        if path.is_dir():
            return path
        if key in self.given_options:
            raise self._layout_error(self.options[key])
        return None

    def _sample(self, path: Path, labels: Path | None, label_index: dict[str, Path],
                fovs: Path | None, fov_index: dict[str, Path]) -> Sample | None:
        label = label_index.get(path.stem + self.options["label_suffix"])
        fov = fov_index.get(path.stem) or fov_index.get(f"{path.stem}_mask")
        if labels is not None and label is None:
            self._skip(path.stem, f"no label '{labels.name}/{path.stem}"
                                  f"{self.options['label_suffix']}.*'")
            return None
        if fovs is not None and fov is None:
            self._skip(path.stem, f"no FOV mask '{fovs.name}/{path.stem}.*'")
            return None
        return Sample(path.stem, (path,), label, fov, {"split": ALL})

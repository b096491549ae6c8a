"""The :class:`Segmenter`: a saved model with its preprocessing, applied to one image at a
time, and :class:`SegmenterOptions`, the inference options of the API and the CLI, each
checked once, where it is defined.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retinaseg.errors import ModelLoadError, OptionError, RetinasegError
from retinaseg.inference.fuse import Frozen, fold_batchnorm
from retinaseg.inference.predictor import (
    TTA_FLIPS,
    predict_class_probabilities,
    predict_probability,
)
from retinaseg.inference.scale import scale_factor
from retinaseg.inference.volume import predict_volume
from retinaseg.models.persistence import ModelSpec, load_model
from retinaseg.preprocessing.fov import bright_mask
from retinaseg.preprocessing.functions import resize
from retinaseg.preprocessing.pipeline import Steps, build_preprocess
from retinaseg.utils.checks import check_number
from retinaseg.utils.runtime import (
    PRECISIONS,
    configure_threads,
    resolve_precision,
    select_device,
    tune_allocator,
)

log = logging.getLogger(__name__)

SCALE_RANGE = (0.05, 20.0)
"""Allowed ``scale`` factors (a 20-fold enlargement of a 400-px map is already 8000 px)."""
MIN_TILE = 16
"""Smallest sliding-window tile, px."""


@dataclass(frozen=True)
class SegmenterOptions:
    """How a :class:`Segmenter` runs; every value is checked when the object is made.

    Attributes:
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda`` or ``cuda:N``.
        threads: CPU threads, 1-1024 (None: the cores, at most 8).
        tile: sliding-window tile in px, at least 16 (None: the whole image at once).
        overlap: share of a tile that overlaps its neighbour, in [0, 1).
        tta: flip test-time augmentation: ``none``, ``hflip`` (2 passes), ``flips`` (3) or
            None for the model's own setting.
        match_fov: rescale colour fundus images to the model's field-of-view diameter.
        crop_fov: run fundus models on the box of the retina only (0 outside it).
        scale: resize every image by this factor, in [0.05, 20], before inference and the map
            back after it (replaces ``match_fov``); None: no such resize.
        head: output head of a model with several (None: the dataset's, else the first).
        precision: ``auto`` (bfloat16 on CPUs that compute it natively), ``fp32`` or ``bf16``.
        fuse: fold BatchNorm into the convolution before it (the same maps, faster).
        jit: TorchScript-freeze the network: None = when it runs in bfloat16 on CPU, True =
            always (failure is an error), False = never.
    """

    device: str = "auto"
    threads: int | None = None
    tile: int | None = None
    overlap: float = 0.25
    tta: bool | str | None = None
    match_fov: bool = True
    crop_fov: bool = True
    scale: float | None = None
    head: str | None = None
    precision: str = "auto"
    fuse: bool = True
    jit: bool | None = None

    def __post_init__(self) -> None:
        if self.threads is not None:
            check_number("threads", self.threads, 1, 1024, integer=True)
        if self.tile is not None:
            check_number("tile", self.tile, MIN_TILE, 1 << 16, integer=True)
        check_number("overlap", self.overlap, 0, 1, hi_open=True)
        if self.scale is not None:
            check_number("scale", self.scale, *SCALE_RANGE)
        if self.tta not in (None, True, False, *TTA_FLIPS):
            raise OptionError(f"tta must be one of {', '.join(TTA_FLIPS)}, not '{self.tta}'")
        if self.precision not in PRECISIONS:
            raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, not "
                              f"'{self.precision}'")
        if self.head is not None and not str(self.head).strip():
            raise OptionError("head must be a head name, not an empty string")
        select_device(self.device)  # an unknown or unavailable device fails here

    def updated(self, **changes: Any) -> SegmenterOptions:
        """A copy with ``changes`` (checked again); an unknown name is an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise OptionError(f"unknown inference option(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(known))}")
        return replace(self, **changes) if changes else self


def adapt_channels(image: np.ndarray, in_channels: int, source: str = "image") -> np.ndarray:
    """Match ``[C,H,W]`` to the model's input channels (grey is repeated to 3 channels)."""
    c = image.shape[0]
    if c == in_channels:
        return image
    if c == 1:
        return np.repeat(image, in_channels, axis=0)
    raise RetinasegError(f"{source} has {c} channels after preprocessing but the model "
                         f"expects {in_channels}")


class Segmenter:
    """A loaded model plus its preprocessing: ``segmenter(image) -> probability [H,W]``.

    ``options`` (:class:`SegmenterOptions`, checked when made) say how inference runs; keyword
    ``overrides`` replace single options, e.g. ``Segmenter("octa-vessels", tta="flips")``.
    ``precision="auto"`` runs the network in bfloat16 on CPUs that compute it natively
    (``avx512_bf16``/``amx_bf16``) and in float32 elsewhere; ``head`` picks the output head of a
    model with several (default: the head trained on ``dataset`` when given and there is one,
    else the first); ``tta=None`` uses the model's own flip TTA
    (``info["tta"]``, chosen on validation data at bundling; none when absent); ``fuse``
    folds BatchNorm into the convolutions (:mod:`retinaseg.inference.fuse`); ``jit`` traces and
    freezes the network with TorchScript (:class:`retinaseg.inference.fuse.Frozen`), which is
    faster per image in bfloat16 and costs 0.5-3 s once per model. ``jit=None`` (the default)
    freezes when the network runs in bfloat16 on CPU (in float32 it measured no faster) and
    keeps the plain network where freezing fails or its check does not match (``self.jit``
    says which ran, ``self.jit_note`` why not); ``True`` insists, in either precision (a
    failure raises :class:`~retinaseg.errors.ModelLoadError`); ``False`` never freezes.
    ``crop_fov`` runs a fundus model on the box of the image's non-dark pixels only
    (:mod:`retinaseg.inference.crop`; probability 0 outside it); OCTA images are never cropped.
    ``scale`` resizes every image by that factor before inference and the map back after it,
    in place of any FOV matching: for images stored at another size than they were acquired,
    e.g. ``0.4`` for a 1024-px export of a 400-px OCTA scan.
    ``preprocess`` replaces the model's stored preprocessing steps (experiments only: a model
    gives sensible maps only with the preprocessing it was trained with, plus at most the
    adaptive restorations of :mod:`retinaseg.preprocessing.restore`).
    Creating a Segmenter also tunes glibc's allocator for repeated whole-image passes
    (:func:`retinaseg.utils.runtime.tune_allocator`).
    """

    def __init__(self, model: str | Path, options: SegmenterOptions | None = None, *,
                 dataset: str | None = None, preprocess: Steps | None = None,
                 **overrides: Any) -> None:
        opt = (options or SegmenterOptions()).updated(**overrides)
        self.options = opt
        configure_threads(opt.threads)
        tune_allocator()
        self.device = select_device(opt.device)
        self.precision = resolve_precision(opt.precision, self.device)
        self.net, self.spec = self._load_network(model)
        self.takes_volumes = self.spec.info.get("input") == "volume"  # e.g. IPN
        if self.takes_volumes:  # 3-D convolutions: float32, no channels-last, no tracing
            self.precision, opt = "fp32", opt.updated(jit=False)
        head = opt.head
        self.head = head if head is not None or dataset is None else self.spec.head_for(dataset)
        self.channel = self.spec.head_index(self.head)  # checks the name
        self.preprocess = build_preprocess(self.spec.preprocess if preprocess is None
                                           else preprocess)
        if opt.fuse:  # eval-mode BatchNorm into its convolution: the same maps, faster
            fold_batchnorm(self.net)
        if self.precision == "bf16":  # oneDNN's bfloat16 convolutions are fastest channels-last
            self.net = self.net.to(memory_format=torch.channels_last)
        self.jit, self.jit_note = self._freeze(opt.jit)
        self.tile, self.overlap = opt.tile, opt.overlap
        self.tta = self.spec.info.get("tta", "none") if opt.tta is None else opt.tta
        self.match_fov, self.crop_fov, self.scale = opt.match_fov, opt.crop_fov, opt.scale
        self.last_scale = 1.0  # rescaling applied to the latest image (see scale_for)

    def _load_network(self, model: str | Path) -> tuple[torch.nn.Module, ModelSpec]:
        """(network in eval mode on ``self.device``, its spec); another backend
        (:class:`retinaseg.deploy.runtime.OnnxSegmenter`) overrides this."""
        return load_model(model, self.device)

    def _volume(self, volume: np.ndarray, source: str) -> np.ndarray:
        if volume.ndim < 3 or (volume.ndim == 3 and volume.shape[-1] in (1, 3, 4)
                               and volume.shape[0] > 4):
            raise RetinasegError(f"{source} is a 2-D image, but model '{self.spec.name}' takes "
                                 "volumes [D, H, W] (a folder of B-scans, .npy, NIfTI or a "
                                 "multi-page TIFF)")
        return predict_volume(self.net, volume, roi=self.tile or 96, overlap=self.overlap,
                              device=self.device)[self.channel]

    def _freeze(self, jit: bool | None) -> tuple[bool, str]:
        """Replace ``self.net`` by its TorchScript-frozen graph when asked, or by default when
        the network runs in bfloat16 on CPU; returns (frozen, why not)."""
        if jit is False:
            return False, "not asked"
        if jit is None and (self.device.type != "cpu" or self.precision != "bf16"):
            return False, "by default only for bfloat16 on CPU"
        try:
            self.net = Frozen(self.net, self.spec.in_channels, self.precision == "bf16")
        except ModelLoadError as err:
            if jit:
                raise
            log.info("running the plain network: %s", err)  # Frozen left self.net as it was
            return False, str(err)
        return True, ""

    @property
    def head_name(self) -> str:
        """Name of the output head in use ('' for a model with one output)."""
        return str(self.spec.heads[self.channel]["name"]) if self.spec.heads else ""

    @property
    def classes(self) -> list[str]:
        """Class names of a multi-class model (then ``self(image)`` is ``[K, H, W]`` softmax
        probabilities and the prediction their argmax); ``[]`` for a vessel model."""
        return list(self.spec.classes)

    @property
    def threshold(self) -> float:
        """The model's decision threshold for the selected head."""
        return self.spec.head_threshold(self.head)

    def prepare(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """Raw ``[H,W]``/``[H,W,C]`` image → model input ``[C,H,W]``."""
        x = self.preprocess(image).astype(np.float32, copy=False)
        return adapt_channels(x, self.spec.in_channels, source)

    def scale_for(self, image: np.ndarray) -> float:
        """Rescaling applied to ``image`` before inference (1.0: none).

        A ``scale`` given to the Segmenter applies to every image. Otherwise, models that
        store ``info["fov_diameter"]`` (fundus models trained with ``inference.match_fov``)
        get colour images rescaled so that their FOV has that diameter; see
        :mod:`retinaseg.inference.scale`.
        """
        if self.scale is not None:
            return float(self.scale)
        if not self.match_fov or self.spec.modality != "fundus":
            return 1.0
        return scale_factor(image, float(self.spec.info.get("fov_diameter") or 0))

    def fov_for(self, image: np.ndarray) -> np.ndarray | None:
        """The mask whose box the network runs on (fundus models, ``crop_fov``), or None."""
        if not self.crop_fov or self.spec.modality != "fundus":
            return None
        return bright_mask(image)

    def __call__(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """Probability ``[H, W]`` float32 in [0, 1] of an image ``[H, W]``/``[H, W, C]`` or,
        for a volume model (:attr:`takes_volumes`), of a volume ``[D, H, W]``/``[C, D, H, W]``
        (:func:`~retinaseg.inference.volume.predict_volume`, tiles of ``tile`` px, default 96).
        A multi-class model (:attr:`classes`) gives ``[K, H, W]`` class probabilities summing
        to 1 at each pixel; ``prob.argmax(0)`` is the class map."""
        if self.takes_volumes:
            return self._volume(image, source)
        f = self.last_scale = self.scale_for(image)
        h, w = image.shape[:2]
        if f != 1.0:
            image = resize(image, (max(16, round(h * f)), max(16, round(w * f))))
        predict = predict_class_probabilities if self.classes else predict_probability
        extra = {} if self.classes else {"channel": self.channel}
        prob = predict(self.net, self.prepare(image, source), self.device, tile=self.tile,
                       overlap=self.overlap, tta=self.tta, precision=self.precision,
                       fov=self.fov_for(image), **extra)
        if f == 1.0:
            return prob
        if prob.ndim == 3:  # [K, H, W]: resize channel-last
            return np.clip(resize(prob.transpose(1, 2, 0), (h, w)), 0.0, 1.0).transpose(2, 0, 1)
        return np.clip(resize(prob, (h, w)), 0.0, 1.0)

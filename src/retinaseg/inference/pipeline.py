"""From image files to probability maps and masks with a saved model.

Bad files in a batch are skipped and reported at the end; every good result is still written.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from retinaseg.errors import ModelLoadError, RetinasegError
from retinaseg.models.persistence import ModelSpec, load_model
from retinaseg.preprocessing.pipeline import Steps
from retinaseg.utils.atomic import make_out_dir, write_text_atomic
from retinaseg.utils.runtime import configure_threads, select_device, tune_allocator

log = logging.getLogger(__name__)


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

    def __init__(self, model: str | Path, device: str = "auto", threads: int | None = None,
                 tile: int | None = None, overlap: float = 0.25, tta: bool | str | None = None,
                 match_fov: bool = True, head: str | None = None,
                 precision: str = "auto", fuse: bool = True,
                 dataset: str | None = None, jit: bool | None = None,
                 crop_fov: bool = True, preprocess: Steps | None = None,
                 scale: float | None = None) -> None:
        from retinaseg.inference.fuse import fold_batchnorm
        from retinaseg.inference.predictor import tta_flips
        from retinaseg.preprocessing.pipeline import build_preprocess
        from retinaseg.utils.runtime import resolve_precision

        configure_threads(threads)
        tune_allocator()
        self.device = select_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.net, self.spec = load_model(model, self.device)
        self.head = head if head is not None or dataset is None else self.spec.head_for(dataset)
        self.channel = self.spec.head_index(self.head)  # checks the name
        self.preprocess = build_preprocess(self.spec.preprocess if preprocess is None
                                           else preprocess)
        if fuse:  # eval-mode BatchNorm into its convolution: the same maps, faster
            fold_batchnorm(self.net)
        if self.precision == "bf16":  # oneDNN's bfloat16 convolutions are fastest channels-last
            self.net = self.net.to(memory_format=torch.channels_last)
        self.jit, self.jit_note = self._freeze(jit)
        self.tile, self.overlap = tile, overlap
        self.tta = self.spec.info.get("tta", "none") if tta is None else tta
        tta_flips(self.tta)  # checks the mode
        if scale is not None and not 0.05 <= scale <= 20:
            raise RetinasegError(f"scale must be between 0.05 and 20, not {scale}")
        self.match_fov, self.crop_fov, self.scale = match_fov, crop_fov, scale
        self.last_scale = 1.0  # rescaling applied to the latest image (see scale_for)

    def _freeze(self, jit: bool | None) -> tuple[bool, str]:
        """Replace ``self.net`` by its TorchScript-frozen graph when asked, or by default when
        the network runs in bfloat16 on CPU; returns (frozen, why not)."""
        from retinaseg.inference.fuse import Frozen

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
        from retinaseg.inference.scale import scale_factor

        if self.scale is not None:
            return float(self.scale)
        if not self.match_fov or self.spec.modality != "fundus":
            return 1.0
        return scale_factor(image, float(self.spec.info.get("fov_diameter") or 0))

    def fov_for(self, image: np.ndarray) -> np.ndarray | None:
        """The mask whose box the network runs on (fundus models, ``crop_fov``), or None."""
        from retinaseg.inference.crop import bright_mask

        if not self.crop_fov or self.spec.modality != "fundus":
            return None
        return bright_mask(image)

    def __call__(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        from retinaseg.inference.predictor import predict_probability
        from retinaseg.inference.scale import resize

        f = self.last_scale = self.scale_for(image)
        h, w = image.shape[:2]
        if f != 1.0:
            image = resize(image, (max(16, round(h * f)), max(16, round(w * f))))
        prob = predict_probability(self.net, self.prepare(image, source), self.device,
                                   tile=self.tile, overlap=self.overlap, tta=self.tta,
                                   channel=self.channel, precision=self.precision,
                                   fov=self.fov_for(image))
        return prob if f == 1.0 else np.clip(resize(prob, (h, w)), 0.0, 1.0)


@dataclass
class PredictReport:
    """What a batch prediction produced: one row per good image, and the files skipped."""

    rows: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    spec: ModelSpec | None = None


def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (natural order) into a list of image files."""
    from retinaseg.io import list_images

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(list_images(p))
        elif p.exists():
            files.append(p)
        elif p.is_symlink():
            raise RetinasegError(f"input '{p}' is a broken symbolic link or a symlink loop")
        else:
            raise RetinasegError(f"input '{p}' does not exist")
    if not files:
        raise RetinasegError("no image files found in the inputs")
    return files


def unique_stem(path: Path, used: set[str]) -> str:
    """``path.stem``, or ``<stem>-2``, ``<stem>-3``, ... when taken; adds the result to ``used``."""
    stem, k = path.stem, 2
    while stem.lower() in used:  # lower(): case-insensitive file systems
        stem, k = f"{path.stem}-{k}", k + 1
    used.add(stem.lower())
    return stem


def write_outputs(out: Path, stem: str, image: np.ndarray, prob: np.ndarray,
                   thr: float) -> dict:
    """Write probability, mask and overlay PNGs; return the per-image measurements."""
    from retinaseg.evaluation.figures import overlay
    from retinaseg.evaluation.metrics import centerline_length
    from retinaseg.io import write_png

    mask = prob > thr
    write_png(out / f"{stem}_prob.png", prob)
    write_png(out / f"{stem}_mask.png", mask)
    write_png(out / f"{stem}_overlay.png", overlay(image, mask))
    return {"vessel_fraction": round(float(mask.mean()), 6),
            "centerline_length_px": round(centerline_length(mask), 2)}


class _ModelPicker:
    """One :class:`Segmenter` per model reference, chosen per image when none was given."""

    def __init__(self, model: str | Path | None, **segmenter_kw) -> None:
        self.model, self.kw = model, segmenter_kw
        self.cache: dict[str, Segmenter] = {}

    def __call__(self, image: np.ndarray) -> tuple[str, Segmenter]:
        from retinaseg.inference.modality import DEFAULT_MODELS, detect_modality

        ref = str(self.model) if self.model is not None else \
            DEFAULT_MODELS[detect_modality(image)]
        if ref not in self.cache:
            if self.model is None:
                tqdm.write(f"no --model given: using bundled model '{ref}' for this image type")
            self.cache[ref] = self._load(ref)
        return ref, self.cache[ref]

    def _load(self, ref: str) -> Segmenter:
        """A head asked for applies to the models that have heads; a bundled model picked by
        modality without heads (fundus-vessels) ignores it."""
        from retinaseg.models.persistence import read_spec, resolve_model_path

        if self.model is None and self.kw.get("head") is not None \
                and not read_spec(resolve_model_path(ref)).heads:
            return Segmenter(ref, **{**self.kw, "head": None})
        return Segmenter(ref, **self.kw)


def predict_files(inputs: Iterable[str | Path], model: str | Path | None, out: str | Path,
                  threshold: float | None = None, **segmenter_kw) -> PredictReport:
    """Segment every image in ``inputs`` and write ``<stem>_prob/_mask/_overlay.png`` to ``out``.

    ``model`` is a model file, a run folder or a bundled name; ``None`` picks the bundled model
    by modality (colour → ``fundus-vessels``, grey → ``octa-vessels``) per image. Also writes
    ``predictions.csv`` with one row per image (vessel area fraction, centerline length, and
    the adaptive restoration applied, if any: :mod:`retinaseg.preprocessing.restore`).
    Unreadable files are skipped and listed in the report's ``skipped``. Two inputs with the
    same file stem (``a/x.png``, ``b/x.tif``) get ``x`` and ``x-2`` outputs, never overwrite.
    """
    from retinaseg.io import read_image
    from retinaseg.preprocessing.restore import recording

    files = collect_inputs(inputs)
    out = make_out_dir(out)
    pick = _ModelPicker(model, **segmenter_kw)
    if model is not None:
        pick(np.zeros((8, 8), np.float32))  # load now: a bad model is one error, not N skips
    report = PredictReport()
    used: set[str] = set()
    for path in tqdm(files, desc="predicting", unit="img"):
        try:
            image = read_image(path)
            ref, seg = pick(image)
            with recording() as restored:
                prob = seg(image, source=f"'{path}'")
        except ModelLoadError:
            raise
        except RetinasegError as err:
            report.skipped.append((str(path), str(err)))
            continue
        thr = seg.threshold if threshold is None else float(threshold)
        report.spec = seg.spec
        row = {"image": str(path), "model": ref, "head": seg.head_name,
               "threshold": round(thr, 4), "rescaled": round(seg.last_scale, 4),
               "restoration": "; ".join(dict.fromkeys(restored)) or "none"}
        if restored:
            tqdm.write(f"{path.name}: {restored[0]}")
        row.update(write_outputs(out, unique_stem(path, used), image, prob, thr))
        report.rows.append(row)
    _write_csv(out / "predictions.csv", report.rows)
    return report


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())



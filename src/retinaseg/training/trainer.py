"""The training loop: one config in, one self-contained run folder out.

A run folder ``runs/<name>/<timestamp>/`` holds ``config.yaml`` (the resolved config),
``metrics.csv``, ``tensorboard/``, ``last.pt`` (resume state, loaded with ``weights_only=True``),
``best.safetensors`` (the best model by the validation metric, threshold chosen on validation),
``curves.png`` and ``val_predictions/``. Every file is written atomically, so ``kill -9`` at any
moment leaves a resumable run. Under ``torchrun`` every process trains on its share of each
global batch and rank 0 alone validates and writes (:mod:`retinaseg.training.distributed`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from retinaseg.errors import ConfigError, TrainingError
from retinaseg.evaluation.classes import class_counts, colour_classes, metrics_from_counts
from retinaseg.evaluation.figures import error_map, plot_training_curves
from retinaseg.evaluation.metrics import (
    choose_threshold,
    confusion_counts,
    roc_auc,
    threshold_metrics,
)
from retinaseg.inference import predict_class_probabilities, predict_probability
from retinaseg.inference.volume import predict_volume
from retinaseg.io import write_png
from retinaseg.losses import build_loss
from retinaseg.models import build_model
from retinaseg.models.persistence import (
    ModelSpec,
    load_model,
    read_spec,
    resolve_model_path,
    save_model,
)
from retinaseg.preprocessing.augment import VolumeAugmentation, build_augmentation
from retinaseg.preprocessing.fov import median_fov_diameter
from retinaseg.preprocessing.pipeline import without_adaptive
from retinaseg.registry import DATASETS
from retinaseg.training.config import (
    RunConfig,
    check_resolution_keys,
    dump_config,
    load_config,
    validate_config,
)
from retinaseg.training.data import (
    Item,
    LoadCache,
    PatchSampler,
    check_class_labels,
    load_train_val,
)
from retinaseg.training.distill import attach_targets, pin_teachers, teacher_runs
from retinaseg.training.distributed import (
    Dist,
    check_shards,
    env_world_size,
    process_group,
    rank_seed,
)
from retinaseg.training.runs import check_paths, write_summary
from retinaseg.training.sam2 import sam2_params, train_sam2
from retinaseg.training.sam2_layers import train_sam2_layers
from retinaseg.training.schedule import learning_rate
from retinaseg.training.targets import attach_centerlines
from retinaseg.utils.atomic import atomic_path, write_text_atomic
from retinaseg.utils.runtime import configure_threads, cpu_has_bf16, seed_everything, select_device

CSV_FIELDS = ["epoch", "train_loss", "val_loss", "val_dice", "val_auc", "lr", "seconds"]


@dataclass
class State:
    """What survives between epochs and across a resume."""

    epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    stale: int = 0
    elapsed: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    best_branch: dict[str, float] = field(default_factory=dict)
    """Best validation AUC of each branch of a branched model (octanet: thick, thin)."""


def new_run_dir(cfg: RunConfig) -> Path:
    """A fresh ``runs/<name>/<timestamp>`` folder; never reuses an existing one."""
    base = Path(cfg.runs_dir) / cfg.name
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = base / stamp
    k = 1
    while run.exists():
        run = base / f"{stamp}-{k}"
        k += 1
    run.mkdir(parents=True)
    return run


def _optimizer(cfg: RunConfig, net: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum,
                               weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(net.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def _augment(cfg: RunConfig, seed: int, volumetric: bool = False):
    a = cfg.augment
    if a.prob == 0:
        return None
    if volumetric:  # only en-face flips and turns: depth has a top
        return VolumeAugmentation(flips=a.flips, rot90=a.rot90, prob=a.prob, seed=seed)
    return build_augmentation(flips=a.flips, rot90=a.rot90, rotate_deg=a.rotate_deg,
                              elastic=a.elastic, intensity=a.intensity, prob=a.prob, seed=seed,
                              zoom=a.zoom, degrade=a.degrade)


def _modality(cfg: RunConfig) -> str:
    """``"fundus"``, ``"octa"`` or ``"any"``: the modality of the main training dataset."""
    if cfg.data.dataset == "synthetic":
        return str(cfg.data.options.get("kind", "octa"))
    if cfg.data.dataset == "folder":
        return str(cfg.data.options.get("modality", "fundus"))
    return str(getattr(DATASETS.get(cfg.data.dataset), "modality", "any"))


def _model_params(cfg: RunConfig) -> dict[str, Any]:
    """``model.params``, plus ``out_channels`` = the number of heads with ``model.heads`` or
    of classes with ``model.classes``."""
    params = dict(cfg.model.params)
    if cfg.model.heads:
        params["out_channels"] = len(cfg.model.heads)
    if cfg.model.classes:
        params["out_channels"] = len(cfg.model.classes)
    return params


INIT_ONLY_PARAMS = ("imagenet_weights",)
"""Model parameters that only initialise the weights (a file on this machine): they are not
stored in the saved model, whose state dict holds the weights."""


def _spec(cfg: RunConfig, in_channels: int, threshold: float, info: dict) -> ModelSpec:
    params = {k: v for k, v in _model_params(cfg).items() if k not in INIT_ONLY_PARAMS}
    return ModelSpec(name=cfg.model.name, in_channels=in_channels, params=params,
                     preprocess=cfg.data.preprocess, threshold=threshold,
                     modality=_modality(cfg), info=info, classes=list(cfg.model.classes or []))


def expand_heads(theirs: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """A one-output tensor widened to ``shape`` so every head starts as a copy of it, or None.

    The dims that differ must be 1 in ``theirs``. One such dim (a head's input or output
    channels, a bias, a norm statistic) is repeated; two (dims 0 and 1: a square head-to-head
    convolution) become block-diagonal, so the heads do not mix.
    """
    diff = [i for i, (a, b) in enumerate(zip(theirs.shape, shape)) if a != b]
    if theirs.dim() != len(shape) or not diff or any(theirs.shape[i] != 1 for i in diff):
        return None
    if len(diff) == 1:
        reps = [shape[i] if i in diff else 1 for i in range(len(shape))]
        return theirs.repeat(*reps)
    if diff == [0, 1] and shape[0] == shape[1]:
        out = torch.zeros(shape, dtype=theirs.dtype)
        for j in range(shape[0]):
            out[j, j] = theirs[0, 0]
        return out
    return None


def _init_weights(net: nn.Module, cfg: RunConfig) -> None:
    """Copy the weights of ``cfg.model.init`` into ``net`` (fine-tuning).

    Every tensor must match by name and shape, except that a one-output model may start a
    model with ``model.heads`` (see :func:`expand_heads`); a different preprocessing is only
    warned about (the adaptive restorations, no-ops on training images, are not compared).
    """
    src, spec = load_model(str(cfg.model.init))
    mine, theirs = net.state_dict(), src.state_dict()
    state: dict[str, torch.Tensor] = {}
    fresh: list[str] = []
    for k, v in mine.items():
        t = theirs.get(k)
        if t is not None and t.shape != v.shape and cfg.model.heads:
            t = expand_heads(t, tuple(v.shape))
        elif t is not None and cfg.model.classes and _is_output_tensor(t, v, spec.outputs):
            t = v.clone()  # a new class head: random, as a model without init starts
            fresh.append(k)
        if t is None or t.shape != v.shape or set(theirs) != set(mine):
            raise ConfigError(f"invalid config key 'model.init': '{cfg.model.init}' is a "
                              f"'{spec.name}' {spec.params} with {spec.in_channels} input "
                              f"channel(s), whose weights do not fit the configured "
                              f"'{cfg.model.name}' {_model_params(cfg)}")
        state[k] = t
    if without_adaptive(spec.preprocess) != without_adaptive(cfg.data.preprocess):
        warnings.warn(f"model.init '{cfg.model.init}' was trained with preprocessing "
                      f"{spec.preprocess}, this run uses {cfg.data.preprocess}", stacklevel=2)
    if fresh:
        warnings.warn(f"model.init '{cfg.model.init}': {len(fresh)} output tensor(s) start "
                      f"random for the {len(cfg.model.classes or [])} classes "
                      f"({', '.join(fresh)})", stacklevel=2)
    net.load_state_dict(state)


def _is_output_tensor(theirs: torch.Tensor, mine: torch.Tensor, outputs: int) -> bool:
    """Whether every dim in which ``theirs`` differs from ``mine`` is the init model's output
    count: the output layers' weights and biases (a transposed convolution's dim 1, a square
    output-to-output convolution's dims 0 and 1)."""
    if theirs.dim() != mine.dim():
        return False
    diff = [i for i, (a, b) in enumerate(zip(theirs.shape, mine.shape)) if a != b]
    return bool(diff) and all(theirs.shape[i] == outputs for i in diff)


def _model_seconds(model: str | Path) -> float:
    """Training seconds of a saved model, including any model it was fine-tuned or distilled
    from."""
    info = read_spec(resolve_model_path(str(model))).info
    return float(info.get("total_train_seconds", info.get("train_seconds", 0.0)))


def _prior_seconds(tr: Trainer) -> float:
    """Training seconds this run built on: its ``model.init`` model, its teachers and their
    soft targets (a teacher shared by several runs counts in each)."""
    models = ([str(tr.cfg.model.init)] if tr.cfg.model.init else []) + tr.teachers
    return sum(_model_seconds(m) for m in models) + tr.teacher_seconds


def _fov_diameter(cfg: RunConfig, items: list[Item]) -> float | None:
    """The FOV diameter (px) a fundus model stores for inference (``info["fov_diameter"]``,
    which :meth:`retinaseg.inference.segmenter.Segmenter.scale_for` rescales new photographs
    to): ``data.fov_diameter`` when set (the training images were resized to it), else with
    ``inference.match_fov: true`` the median FOV diameter of the training images; None for
    other modalities or when neither is set."""
    if _modality(cfg) != "fundus":
        return None
    if cfg.data.fov_diameter is not None:
        return float(cfg.data.fov_diameter)
    if not cfg.inference.match_fov:
        return None
    return median_fov_diameter(it.fov for it in items)


def _check_resolution(cfg: RunConfig) -> None:
    """``data.fov_diameter`` rescales colour fundus photographs: the main dataset must be one
    (the model's modality comes from it, and only fundus models are rescaled at inference);
    ``inference.match_fov: false`` contradicts it (:func:`check_resolution_keys`, also run when
    a config is validated)."""
    check_resolution_keys(cfg)
    if cfg.data.fov_diameter is not None and _modality(cfg) != "fundus":
        raise ConfigError(f"invalid config key 'data.fov_diameter': it resizes colour fundus "
                          f"photographs by their field of view, but the main dataset "
                          f"'{cfg.data.dataset}' is {_modality(cfg)} (remove the key)")


def source_names(cfg: RunConfig) -> dict[str, str]:
    """Column name of each training dataset (``Item.source`` → name): its dataset name, with
    the source index appended where two datasets share one (``folder_0``, ``folder_1``)."""
    srcs = cfg.data.sources()
    names = [src.dataset for src in srcs]
    return {f"{k}:{n}": n if names.count(n) == 1 else f"{n}_{k}" for k, n in enumerate(names)}


def _ema_model(net: nn.Module, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``net``'s parameters and buffers, or None."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _source_means(values: list[float], items: list[Item]) -> dict[str, float]:
    """The mean of ``values`` over the items of each source (:attr:`Item.source`)."""
    by: dict[str, list[float]] = {}
    for v, it in zip(values, items):
        by.setdefault(it.source, []).append(v)
    return {src: float(np.nanmean(vs)) for src, vs in by.items()}


def _source_mean(values: list[float], items: list[Item]) -> float:
    """Mean over sources of the per-source mean: each training dataset's val set counts equally
    (100 ROSSA val images do not outweigh 30 OCTA-500 ones). One source: the plain mean."""
    return float(np.nanmean(list(_source_means(values, items).values())))


def select_heads(logits: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """``[B,K,H,W]`` logits → ``[B,1,H,W]``: channel ``head[b]`` of sample ``b`` (K = 1: as is)."""
    if logits.shape[1] == 1:
        return logits
    idx = head.view(-1, 1, 1, 1).expand(-1, 1, *logits.shape[2:])
    return logits.gather(1, idx)


class Trainer:
    """Trains one :class:`RunConfig` into ``run_dir``; use :func:`train` rather than this."""

    def __init__(self, cfg: RunConfig, run_dir: Path,
                 coarse: tuple[dict, dict | None] | None = None, dist: Dist | None = None) -> None:
        self.cfg, self.run = cfg, run_dir
        self.dist = dist or Dist()  # torchrun: this process's rank; rank 0 alone writes files
        self.threads = configure_threads(self.dist.threads(cfg.train.threads))
        self.device = self.dist.device(select_device(cfg.train.device))
        seed_everything(cfg.seed)
        cache: LoadCache = {}  # the teachers' checks reuse the data read here
        self.train_items, self.val_items, self.val_source = load_train_val(
            cfg.data, cfg.seed, cfg.model.heads, cache)
        self.teachers, self.teacher_seconds = attach_targets(
            cfg, self.train_items, self.val_items, self.device, cache)
        self.in_channels = int(self.train_items[0].image.shape[0])
        self.volumetric = self.train_items[0].image.ndim == 4  # [C, D, H, W]
        self._check_channels()
        self.classes = cfg.model.classes
        self._check_classes()
        self.net = build_model(cfg.model.name, self.in_channels,
                               **_model_params(cfg)).to(self.device)
        if cfg.model.init and not (run_dir / "last.pt").is_file():  # a resume loads last.pt
            _init_weights(self.net, cfg)
        if coarse is not None:  # octanet_fine: the frozen coarse stage (last.pt holds it too)
            self.net.load_coarse(*coarse)
        self.branches = tuple(getattr(self.net, "branches", ()))
        self.csv_fields = CSV_FIELDS + [f"val_auc_{b}" for b in self.branches[1:]]
        # several datasets: each one's validation Dice and AUC too (val_dice is their mean)
        self.source_names = source_names(cfg) if len(cfg.data.sources()) > 1 else {}
        self.csv_fields += [f"val_{m}_{n}" for n in self.source_names.values()
                            for m in ("dice", "auc")]
        self.csv_fields += [f"val_dice_{c}" for c in (self.classes or [])[1:]]
        if self.branches:
            self._attach_branch_targets()
        self.loss_fn = build_loss(cfg.loss.name, **cfg.loss.params).to(self.device)
        self.opt = _optimizer(cfg, self.net)
        self.augment = _augment(cfg, cfg.seed, self.volumetric)
        self.sampler = PatchSampler(self.train_items, cfg.sampling, self.augment)
        self.amp, self.amp_dtype = _amp_mode(self.device, cfg.train.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")
        if self.amp_dtype == torch.bfloat16:  # oneDNN's bfloat16 convolutions are fastest NHWC
            self.net = self.net.to(memory_format=torch.channels_last)
        self.ema = _ema_model(self.net, cfg.train.ema)
        self.model = self.dist.wrap(self.net, self.device, cfg.train.sync_batchnorm)  # DDP
        check_shards(self.sampler.steps(self.dist.world), self.dist.world,
                     cfg.sampling.batch_size, len(self.train_items) * (
                         1 if cfg.sampling.mode == "whole" else cfg.sampling.patches_per_image),
                     "images" if cfg.sampling.mode == "whole" else "patches")
        self.fov_diameter = _fov_diameter(cfg, self.train_items)
        self.state = State()
        self._check_patch_size()

    @property
    def eval_net(self) -> nn.Module:
        """The network that is validated and saved: the weight average when ``train.ema``."""
        return self.ema.module if self.ema is not None else self.net

    def _attach_branch_targets(self) -> None:
        """A branched model (octanet: fused, thick, thin) trains its thin branch on centerline
        labels, with the joint ``octanet`` loss."""
        if self.cfg.loss.name != "octanet":
            raise ConfigError(f"model '{self.cfg.model.name}' returns its branches "
                              f"{list(self.branches)} in training and needs loss.name "
                              f"'octanet', not '{self.cfg.loss.name}'")
        d = self.cfg.data
        n = sum(attach_centerlines(items, d.derive_centerline, d.centerline_dilate,
                                   where=f"data ({what})")
                for items, what in ((self.train_items, "training"),
                                    (self.val_items, "validation")))
        if n:
            tqdm.write(f"centerline labels derived from the pixel labels of {n} images "
                       f"(dilated {d.centerline_dilate} px)")

    def _check_channels(self) -> None:
        shapes = {it.image.shape[0] for it in self.train_items + self.val_items}
        if len(shapes) != 1:
            raise ConfigError(f"images have different channel counts after preprocessing: {shapes}")

    def _check_classes(self) -> None:
        """Labels fit ``model.classes`` (or are binary without it); volume models have one
        sigmoid output, so they cannot be multi-class."""
        check_class_labels(self.train_items + self.val_items, self.classes)
        if self.classes and self.volumetric:
            raise ConfigError("model.classes is not supported for volume datasets (their "
                              "models predict one vessel map)")

    def _check_patch_size(self) -> None:
        m = int(getattr(self.net, "size_multiple", 1))
        if self.cfg.sampling.mode == "patch" and self.cfg.sampling.patch_size % m:
            raise ConfigError(f"sampling.patch_size must be a multiple of {m} for model "
                              f"'{self.cfg.model.name}'")
        if self.cfg.sampling.mode != "whole":
            return
        shapes = {it.image.shape[-2:] for it in self.train_items}
        if any(h % m or w % m for h, w in shapes):
            raise ConfigError(f"sampling.mode 'whole' needs image sides that are multiples of "
                              f"{m} for model '{self.cfg.model.name}'; sizes: {sorted(shapes)} "
                              "(use patch sampling)")
        if self.cfg.augment.rot90 and any(h != w for h, w in shapes):
            raise ConfigError("augment.rot90 with sampling.mode 'whole' needs square images "
                              "(a turned image would not batch with the others)")

    # ---- persistence -------------------------------------------------------------------------
    def save_last(self) -> None:
        if not self.dist.is_main:
            return
        blob = {"model": self.net.state_dict(), "optim": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(), "state": json.dumps(self.state.__dict__)}
        if self.ema is not None:
            blob["ema"] = self.ema.state_dict()
        buf = io.BytesIO()
        torch.save(blob, buf)
        with atomic_path(self.run / "last.pt") as tmp:
            tmp.write_bytes(buf.getvalue())

    def load_last(self) -> None:
        path = self.run / "last.pt"
        if not path.is_file():
            return
        try:
            blob = torch.load(path, map_location=self.device, weights_only=True)
            self.net.load_state_dict(blob["model"])
            self.opt.load_state_dict(blob["optim"])
            self.scaler.load_state_dict(blob["scaler"])
            if self.ema is not None and "ema" in blob:
                self.ema.load_state_dict(blob["ema"])
            elif self.ema is not None:  # train.ema added on resume: average from here on
                self.ema = _ema_model(self.net, self.cfg.train.ema)
            self.state = State(**json.loads(blob["state"]))
        except Exception as err:  # weights_only unpickling refuses code; any damage lands here
            why = " ".join(str(err).split())[:200] or type(err).__name__
            raise TrainingError(f"cannot resume from '{path}': not a usable retinaseg "
                                f"checkpoint ({why})") from None

    def _write_csv(self) -> None:
        if not self.dist.is_main:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.csv_fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(self.state.history)
        write_text_atomic(self.run / "metrics.csv", buf.getvalue())

    # ---- one epoch ---------------------------------------------------------------------------
    def _set_lr(self, t: float) -> float:
        """Set the lr for fractional epoch ``t``.

        With ``train.time_limit_min`` the schedule follows whichever is further along, epochs
        or the time budget, so a run cut short by the clock still ends annealed.
        """
        tc = self.cfg.train
        if tc.time_limit_min:  # the slowest clock, so every rank sets the same lr
            spent = self.dist.max(time.time() - self._t_start, "agreeing on the time spent")
            t = max(t, spent / (60 * tc.time_limit_min) * tc.epochs)
        lr = learning_rate(self.cfg.schedule, self.cfg.optim.lr, t, tc.epochs)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def _step(self, x: torch.Tensor, y: torch.Tensor, head: torch.Tensor | None = None,
              scale: float = 1.0) -> float:
        """One optimiser step on a batch; ``head [B]``: the output head of each sample (0).

        ``scale`` multiplies the loss that is back-propagated: with DDP, which averages the
        gradients of the ranks, ``world · share`` makes a rank holding ``share`` of the global
        batch count by its samples (1.0 when the global batch divides evenly)."""
        if head is None:
            head = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        self.opt.zero_grad(set_to_none=True)
        if self.amp_dtype == torch.bfloat16 and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.model(x)
        if self.branches or self.classes:  # [B, branches or classes, H, W] against y
            loss = self.loss_fn(logits.float(), y)
        else:
            loss = self.loss_fn(select_heads(logits.float(), head), y)  # the loss in float32
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at epoch {self.state.epoch + 1}; "
                                f"stopped, the last good checkpoint is kept in '{self.run}'")
        self.scaler.scale(loss * scale if scale != 1.0 else loss).backward()
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.net)
        return float(loss.item())

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One epoch; returns the mean over its steps of the global batch's loss, and the lr.

        Every rank draws the same global batches from the epoch's seed and trains on its share
        (:meth:`PatchSampler.shards`); dropout and augmentation use :func:`rank_seed`."""
        self.model.train()
        seed = self.cfg.seed * 100003 + epoch
        own = rank_seed(seed, self.dist.rank)
        torch.manual_seed(own)
        if self.augment is not None:
            self.augment.set_random_state(seed=own % 2**32)
        d, total, mine, lr = self.dist, 0.0, 0.0, 0.0
        n = self.sampler.steps(d.world)
        bar = tqdm(self.sampler.shards(seed, d.rank, d.world), total=n,
                   desc=f"epoch {epoch + 1}", leave=False, disable=not d.is_main)
        for i, ((x, y, _fov, head), share) in enumerate(bar):
            lr = self._set_lr(epoch + i / max(n, 1))
            loss = self._step(x.to(self.device), y.to(self.device), head.to(self.device),
                              scale=d.world * share)
            total, mine = total + share * loss, mine + loss
            bar.set_postfix(loss=f"{mine / (i + 1):.4f}")
        return d.sum(total, "summing the epoch's training loss") / max(n, 1), lr

    # ---- validation --------------------------------------------------------------------------
    def predict_items(self, items: list[Item]) -> list[np.ndarray]:
        net = self.eval_net
        net.eval()
        inf = self.cfg.inference
        if self.classes:  # [K, H, W] softmax probabilities
            return [predict_class_probabilities(net, it.image, self.device, tile=inf.tile,
                                                overlap=inf.overlap) for it in items]
        if self.volumetric:  # items are prepared already: no depth resampling here
            return [predict_volume(net, it.image, planes=None, roi=inf.tile or 96,
                                   overlap=inf.overlap, device=self.device)[it.head]
                    for it in items]
        return [predict_probability(net, it.image, self.device, tile=inf.tile,
                                    overlap=inf.overlap, channel=it.head) for it in items]

    def validate(self) -> dict[str, float]:
        """Validation figures of the current network: ``val_dice`` (at ``train.threshold``) and
        ``val_auc``, each the mean over datasets of the dataset's mean (every dataset counts
        equally), ``val_loss`` (BCE inside the FOV, mean over images), with several datasets
        ``val_dice_<name>`` / ``val_auc_<name>`` of each (:func:`source_names`), and the AUC of
        each extra branch. Images are scored as loaded, i.e. with ``data.fov_diameter`` at the
        normalised scale (``retinaseg evaluate`` later measures at the original resolution
        through the Segmenter, which rescales to the stored diameter and back)."""
        probs = self.predict_items(self.val_items)
        if self.classes:
            return self._validate_classes(probs)
        dice, auc, loss = [], [], []
        for p, it in zip(probs, self.val_items):
            c = confusion_counts(p > self.cfg.train.threshold, it.label, it.fov)
            dice.append(threshold_metrics(c)["dice"])
            auc.append(roc_auc(p, it.label, it.fov))
            pt = torch.from_numpy(np.clip(p, 1e-6, 1 - 1e-6))[it.fov]
            lt = torch.from_numpy(it.label.astype(np.float32))[it.fov]
            loss.append(float(nn.functional.binary_cross_entropy(pt, lt)))
        row = {"val_dice": _source_mean(dice, self.val_items),
               "val_auc": _source_mean(auc, self.val_items), "val_loss": float(np.mean(loss))}
        row.update(self._branch_aucs())
        for metric, values in (("dice", dice), ("auc", auc)):
            for src, v in _source_means(values, self.val_items).items():
                if src in self.source_names:
                    row[f"val_{metric}_{self.source_names[src]}"] = v
        return row

    def _validate_classes(self, probs: list[np.ndarray]) -> dict[str, float]:
        """Multi-class validation: ``val_dice_<class>`` of each foreground class on the argmax
        map and ``val_dice`` their mean (each pooled over a source's images, sources counting
        equally), ``val_auc`` the mean one-vs-rest AUC of the foreground classes, ``val_loss``
        the cross-entropy inside the FOV (mean over images)."""
        assert self.classes is not None
        rows, auc, loss = [], [], []
        for p, it in zip(probs, self.val_items):
            rows.append(metrics_from_counts(class_counts(p.argmax(0), it.label,
                                                         len(self.classes), it.fov),
                                            self.classes))
            auc.append(float(np.nanmean([roc_auc(p[c], it.label == c, it.fov)
                                         for c in range(1, len(self.classes))])))
            picked = np.take_along_axis(p, it.label[None].astype(np.int64), 0)[0][it.fov]
            loss.append(float(-np.log(np.clip(picked, 1e-6, 1.0)).mean()))
        row = {"val_dice": _source_mean([r["dice_mean"] for r in rows], self.val_items),
               "val_auc": _source_mean(auc, self.val_items), "val_loss": float(np.mean(loss))}
        for c in self.classes[1:]:
            row[f"val_dice_{c}"] = _source_mean([r[f"dice_{c}"] for r in rows], self.val_items)
        return row

    def _branch_aucs(self) -> dict[str, float]:
        """``val_auc_<branch>`` of each branch after the fused one: thick against the label,
        thin against the centerline label (octanet; the seed keeps the best of each)."""
        out = {}
        inf = self.cfg.inference
        for k, name in enumerate(self.branches[1:], start=1):
            net = _Branch(self.eval_net, name).eval()
            aucs = []
            for it in self.val_items:
                p = predict_probability(net, it.image, self.device, tile=inf.tile,
                                        overlap=inf.overlap)
                truth = it.label if k == 1 or it.extra is None else it.extra[0]
                aucs.append(roc_auc(p, truth, it.fov))
            out[f"val_auc_{name}"] = _source_mean(aucs, self.val_items)
        return out

    def _score(self, row: dict[str, float]) -> float:
        m = self.cfg.train.monitor
        return -row["val_loss"] if m == "loss" else row.get(f"val_{m}", row["val_dice"])

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> None:
        tc, st = self.cfg.train, self.state
        start = self._t_start = time.time() - st.elapsed
        for epoch in range(st.epoch, tc.epochs):
            t0 = time.time()
            train_loss, lr = self.train_epoch(epoch)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr}
            if (epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs:
                row.update(self.dist.on_main(self.validate, "validating"))  # rank 0 validates
                self._maybe_best(row, epoch + 1)
            row["seconds"] = time.time() - t0
            st.epoch = epoch + 1  # rank 0's clock decides the time limit for every rank
            st.elapsed = self.dist.share(time.time() - start, "sharing the time spent")
            st.history.append(row)
            self._log(row)
            self.save_last()
            self._write_csv()
            if tc.early_stopping and st.stale >= tc.early_stopping:
                tqdm.write(f"early stopping after {st.stale} validations without improvement")
                break
            if tc.time_limit_min and st.elapsed > 60 * tc.time_limit_min:
                tqdm.write(f"time limit of {tc.time_limit_min} min reached")
                break

    def _maybe_best_branches(self, row: dict[str, float], epoch: int) -> None:
        """``best_<branch>.safetensors``: the checkpoint of the best AUC of each branch."""
        for name in self.branches[1:]:
            auc = row.get(f"val_auc_{name}", float("nan"))
            if not np.isnan(auc) and auc > self.state.best_branch.get(name, -math.inf):
                self.state.best_branch[name] = auc
                info = {"epoch": epoch, "selected_by": f"val_auc_{name}", "val": {
                    k: v for k, v in row.items() if k.startswith("val")}}
                if self.dist.is_main:
                    save_model(self.run / f"best_{name}.safetensors", self.eval_net,
                               _spec(self.cfg, self.in_channels, self.cfg.train.threshold, info))

    def _maybe_best(self, row: dict[str, float], epoch: int) -> None:
        self._maybe_best_branches(row, epoch)
        score = self._score(row)
        if score > self.state.best:
            self.state.best, self.state.best_epoch, self.state.stale = score, epoch, 0
            info = {"epoch": epoch, "val": {k: v for k, v in row.items() if k.startswith("val")}}
            if self.fov_diameter:
                info["fov_diameter"] = self.fov_diameter
                info["fov_diameter_source"] = (
                    "data.fov_diameter: every fundus training and validation image was resized "
                    "to it" if self.cfg.data.fov_diameter is not None
                    else "median FOV diameter of the training images")
            if self.volumetric:  # predict and Segmenter feed this model volumes, not images
                info["input"] = "volume"
            if self.dist.is_main:
                save_model(self.run / "best.safetensors", self.eval_net,
                           _spec(self.cfg, self.in_channels, self.cfg.train.threshold, info))
        else:
            self.state.stale += 1

    def _log(self, row: dict[str, float]) -> None:
        if not self.dist.is_main:
            return
        vals = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
        tqdm.write(f"epoch {int(row['epoch'])}/{self.cfg.train.epochs} {vals}")
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch":
                    self.tb.add_scalar(k, v, int(row["epoch"]))
            self.tb.flush()

    tb: Any = None
    _t_start: float = 0.0


class _Branch(nn.Module):
    """One branch of a branched model as a ``[B, C, H, W]`` → ``[B, 1, H, W]`` network."""

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        self.net, self.name = net, name
        self.size_multiple = int(getattr(net, "size_multiple", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_branches(x)[self.name]


def _amp_mode(device: torch.device, amp: bool | None) -> tuple[bool, torch.dtype | None]:
    """``(enabled, dtype)`` of mixed precision for training.

    CUDA: float16 with loss scaling unless ``amp`` is False. CPU: bfloat16 only when ``amp`` is
    True and the CPU computes it natively (about twice the steps per second there; emulated
    bfloat16 would be slower than float32, so it falls back to float32 with a warning).
    """
    if device.type == "cuda":
        return (False, None) if amp is False else (True, torch.float16)
    if device.type == "cpu" and amp:
        if cpu_has_bf16():
            return True, torch.bfloat16
        warnings.warn("train.amp: this CPU has no native bfloat16; training in float32",
                      stacklevel=2)
    return False, None


def _precision_name(tr: Trainer) -> str:
    """``bf16``/``fp16`` when training ran under autocast, else ``fp32``."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(tr.amp_dtype, "fp32")


def head_thresholds(probs: list[np.ndarray], items: list[Item], n_heads: int) -> list[float]:
    """The Dice-best threshold of each head, on the validation items that head predicts.

    ``probs[i]`` is item ``i``'s probability map from its own head (:attr:`Item.head`); each
    dataset counts equally within a head. A head without validation items gets 0.5.
    """
    out = []
    for h in range(n_heads):
        sel = [i for i, it in enumerate(items) if it.head == h]
        out.append(float(choose_threshold(
            [probs[i] for i in sel], [items[i].label for i in sel], [items[i].fov for i in sel],
            metric="dice", groups=[items[i].source for i in sel])) if sel else 0.5)
    return out


def _head_specs(tr: Trainer, thresholds: list[float]) -> list[dict[str, Any]]:
    """One entry per ``model.heads`` name: its threshold and the datasets that trained it."""
    heads = tr.cfg.model.heads or []
    out = []
    for h, name in enumerate(heads):
        srcs = sorted({it.source.split(":", 1)[1] for it in tr.train_items if it.head == h})
        out.append({"name": name, "threshold": thresholds[h], "trained_on": srcs})
    return out


def _finish(tr: Trainer) -> dict[str, Any]:
    """Reload the best model, choose the threshold on validation, write predictions and plots."""
    best = tr.run / "best.safetensors"
    if not best.is_file():
        raise TrainingError(f"no validation was run, so '{best}' was never written")
    net, spec = load_model(best, tr.device)
    tr.net, tr.ema = net, None
    if tr.classes:
        return _finish_classes(tr, net, spec)
    probs = tr.predict_items(tr.val_items)
    thresholds = head_thresholds(probs, tr.val_items, len(tr.cfg.model.heads or [None]))
    thr = thresholds[0]
    spec.threshold = thr
    spec.heads = _head_specs(tr, thresholds)
    spec.info.update({"threshold_source": f"chosen on validation ({tr.val_source})",
                      "train_seconds": round(tr.state.elapsed, 1), "threads": tr.threads,
                      "device": str(tr.device), "train_precision": _precision_name(tr)})
    if tr.cfg.model.init:
        spec.info["init"] = str(tr.cfg.model.init)
    if tr.cfg.model.init or tr.teachers:  # also record what the starting model/teachers cost
        spec.info["total_train_seconds"] = round(tr.state.elapsed + _prior_seconds(tr), 1)
    if tr.teachers:
        spec.info["distilled_from"] = {"teachers": tr.teachers, "weight": tr.cfg.distill.weight,
                                       "tta": tr.cfg.distill.tta}
    save_model(best, net, spec)
    out = tr.run / "val_predictions"
    for p, it in zip(probs, tr.val_items):
        write_png(out / f"{it.id}_prob.png", p)
        write_png(out / f"{it.id}_error.png", error_map(p > thresholds[it.head], it.label, it.fov))
    plot_training_curves(tr.run / "metrics.csv", tr.run / "curves.png")
    summary = {"run_dir": str(tr.run), "best_epoch": tr.state.best_epoch,
               "best_score": tr.state.best, "monitor": tr.cfg.train.monitor, "threshold": thr,
               "validation": tr.val_source, "epochs_run": tr.state.epoch,
               "train_seconds": round(tr.state.elapsed, 1)}
    if tr.source_names:
        summary["per_source"] = _per_source_best(tr)
    if tr.teachers:
        summary["teachers"] = tr.teachers
    write_summary(tr.run, summary)
    return summary


def _provenance(tr: Trainer) -> dict[str, Any]:
    """What the saved model records about its training (time, device, precision)."""
    return {"train_seconds": round(tr.state.elapsed, 1), "threads": tr.threads,
            "device": str(tr.device), "train_precision": _precision_name(tr)}


def _finish_classes(tr: Trainer, net: nn.Module, spec: ModelSpec) -> dict[str, Any]:
    """A multi-class run's end: no threshold (the argmax decides), the class names in the
    saved model, ``val_predictions/<id>_classes.png`` (colour) and the summary."""
    spec.info.update({"prediction": "argmax of the softmax over model.classes",
                      **_provenance(tr)})
    if tr.cfg.model.init:
        spec.info["init"] = str(tr.cfg.model.init)
    save_model(tr.run / "best.safetensors", net, spec)
    for p, it in zip(tr.predict_items(tr.val_items), tr.val_items):
        write_png(tr.run / "val_predictions" / f"{it.id}_classes.png",
                  colour_classes(p.argmax(0)))
    plot_training_curves(tr.run / "metrics.csv", tr.run / "curves.png")
    row = next((r for r in tr.state.history if int(r["epoch"]) == tr.state.best_epoch), {})
    summary = {"run_dir": str(tr.run), "best_epoch": tr.state.best_epoch,
               "best_score": tr.state.best, "monitor": tr.cfg.train.monitor,
               "classes": list(tr.classes or []),
               "val_dice_per_class": {c: row.get(f"val_dice_{c}") for c in (tr.classes or [])[1:]},
               "validation": tr.val_source, "epochs_run": tr.state.epoch,
               "train_seconds": round(tr.state.elapsed, 1)}
    if tr.source_names:
        summary["per_source"] = _per_source_best(tr)
    write_summary(tr.run, summary)
    return summary


def _per_source_best(tr: Trainer) -> dict[str, dict[str, Any]]:
    """Each training dataset's validation figures at the best epoch (the checkpoint, chosen on
    their mean) and its number of validation images."""
    row = next((r for r in tr.state.history if int(r["epoch"]) == tr.state.best_epoch), {})
    out: dict[str, dict[str, Any]] = {}
    for src, name in tr.source_names.items():
        out[name] = {"val_dice": row.get(f"val_dice_{name}"),
                     "val_auc": row.get(f"val_auc_{name}"),
                     "val_images": sum(it.source == src for it in tr.val_items)}
    return out


def _check_inputs(cfg: RunConfig) -> None:
    """Dataset roots, ``model.init``, the teachers and the resolution settings, before any run
    folder is made."""
    check_paths(cfg)
    _check_resolution(cfg)
    if cfg.distill.teachers:
        teacher_runs(cfg)


def train(cfg: RunConfig | str | Path, overrides: list[str] | None = None,
          resume: str | Path | None = None) -> dict[str, Any]:
    """Train from a config (object or YAML path), or resume the run folder ``resume``.

    Returns the run summary (``run_dir``, ``best_epoch``, ``threshold``, ...). A ``sam2``
    config is trained by :func:`retinaseg.training.sam2.train_sam2` (en-face) or
    :func:`retinaseg.training.sam2_layers.train_sam2_layers` (layer sequences; LoRA, prompts;
    no resume).
    """
    if resume is not None:
        run = Path(resume)
        if not (run / "config.yaml").is_file():
            raise ConfigError(f"'{run}' is not a run folder: it has no config.yaml")
        cfg = load_config(run / "config.yaml", overrides)
        if cfg.model.name == "sam2":
            raise ConfigError(f"'{run}' is a sam2 run; resuming sam2 training is not supported "
                              "(start a new run)")
        _check_inputs(cfg)
    else:
        if not isinstance(cfg, RunConfig):
            cfg = load_config(cfg, overrides)
        _check_inputs(cfg)
        if cfg.model.name == "sam2":  # LoRA fine-tuning with prompts (reference §7)
            if env_world_size() > 1:
                raise ConfigError("sam2 training runs in one process; launch it without "
                                  "torchrun")
            mode = sam2_params(cfg).mode
            run = new_run_dir(cfg)
            write_text_atomic(run / "config.yaml", dump_config(cfg))
            return (train_sam2_layers if mode == "layers" else train_sam2)(cfg, run)
        if cfg.distill.teachers:  # a resume must learn from these same runs
            pin_teachers(cfg)
    t = cfg.train  # torchrun: join the process group (one process: nothing to join)
    with process_group(select_device(t.device), t.dist_backend, t.dist_timeout_s) as dist:
        if resume is None:  # rank 0 makes the folder, every rank trains into it
            run = dist.on_main(lambda: _new_run(cfg), "creating the run folder")
        return _train_stages(cfg, run, resume is not None, dist)


def _new_run(cfg: RunConfig) -> Path:
    """A new run folder holding the resolved ``config.yaml``."""
    run = new_run_dir(cfg)
    write_text_atomic(run / "config.yaml", dump_config(cfg))
    return run


def _train_stages(cfg: RunConfig, run: Path, resumed: bool, dist: Dist) -> dict[str, Any]:
    """Train the coarse stage (any one-stage run) unless it finished, then the fine stage of a
    two-stage OCTA-Net run; only rank 0 writes the stage markers and the summary."""
    if _stage(run) == "coarse":
        summary = _run_trainer(Trainer(cfg, run, dist=dist), resumed)
    else:  # a resumed two-stage run whose coarse stage had finished
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        summary.pop("fine", None)
    if cfg.fine.epochs:
        if dist.is_main:
            write_text_atomic(run / "stage.json", json.dumps({"stage": "fine"}) + "\n")
        summary["fine"] = _train_fine(cfg, run, resumed, dist)
        if dist.is_main:
            write_summary(run, summary)
            write_text_atomic(run / "stage.json", json.dumps({"stage": "done"}) + "\n")
    return summary


def _run_trainer(tr: Trainer, resumed: bool) -> dict[str, Any]:
    """Resume from ``last.pt`` if there is one, fit, and finish (threshold, summary)."""
    tr.load_last()
    main = tr.dist.is_main
    if resumed and main:
        tqdm.write(f"resuming '{tr.run}' after epoch {tr.state.epoch}")
    if main:
        from torch.utils.tensorboard import SummaryWriter

        tr.tb = SummaryWriter(str(tr.run / "tensorboard"), purge_step=tr.state.epoch + 1)
    try:
        with tr.dist.guard("training"):  # DDP's gradient all-reduce
            tr.fit()
    finally:
        if tr.tb is not None:
            tr.tb.close()
    return tr.dist.on_main(lambda: _finish(tr), "choosing the threshold and writing the "
                                                "summary")


def _stage(run: Path) -> str:
    """The stage of a two-stage (OCTA-Net) run folder: coarse (also any one-stage run), fine,
    or done, from ``stage.json``."""
    path = run / "stage.json"
    if not path.is_file():
        return "coarse"
    return str(json.loads(path.read_text(encoding="utf-8")).get("stage", "coarse"))


def fine_config(cfg: RunConfig) -> RunConfig:
    """The config of OCTA-Net's fine stage (reference §5) from the coarse run's config:
    model ``octanet_fine`` of the same preset, ``fine.epochs``, ``fine.lr``, the poly offset,
    the same data, loss and the rest."""
    f = cfg.fine
    raw = cfg.model_dump()
    params = {k: v for k, v in cfg.model.params.items() if k != "imagenet_weights"}
    raw["name"] = f"{cfg.name}-fine"
    raw["model"] = {**raw["model"], "name": "octanet_fine",
                    "params": {**params, "two_coarse": f.checkpoints == "two"}}
    raw["train"] = {**raw["train"], "epochs": f.epochs,
                    "time_limit_min": f.time_limit_min or cfg.train.time_limit_min}
    raw["optim"] = {**raw["optim"], "lr": f.lr or cfg.optim.lr}
    raw["schedule"] = {**raw["schedule"], "poly_offset": f.poly_offset}
    raw["fine"] = {}
    return validate_config(raw)


def _coarse_states(run: Path, checkpoints: str) -> tuple[dict, dict | None]:
    """State dicts of the frozen coarse model(s): best thick and best thin AUC, or best."""
    names = ["best_thick", "best_thin"] if checkpoints == "two" else ["best"]
    states = []
    for name in names:
        path = run / f"{name}.safetensors"
        if not path.is_file():
            raise TrainingError(f"the fine stage needs the coarse checkpoint '{path}', which "
                                "was never written (no validation ran?)")
        net, spec = load_model(path)
        if spec.name != "octanet":
            raise TrainingError(f"'{path}' is a '{spec.name}' model, not the coarse OCTA-Net")
        states.append(net.state_dict())
    return states[0], (states[1] if len(states) > 1 else None)


def _train_fine(cfg: RunConfig, run: Path, resumed: bool,
                dist: Dist | None = None) -> dict[str, Any]:
    """Train OCTA-Net's fine stage into ``run/fine`` on the frozen coarse checkpoint(s)."""
    dist = dist or Dist()
    fcfg = fine_config(cfg)
    folder = run / "fine"
    if dist.is_main:
        folder.mkdir(exist_ok=True)
        write_text_atomic(folder / "config.yaml", dump_config(fcfg))
        which = "best thick/thin AUC checkpoints" if cfg.fine.checkpoints == "two" \
            else "best one"
        tqdm.write(f"fine stage: {fcfg.train.epochs} epochs on the coarse {which}")
    coarse = _coarse_states(run, cfg.fine.checkpoints)
    return _run_trainer(Trainer(fcfg, folder, coarse=coarse, dist=dist), resumed)

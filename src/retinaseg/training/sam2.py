"""SAM 2 fine-tuning with LoRA on en-face images: SAM-OCTA / SAM-OCTA2 training (reference §7).

``model.name: sam2`` runs are trained here instead of by the patch :class:`Trainer` (reference
§7.1 and §7.2): a SAM 2 image model with LoRA adapters on its image encoder (everything else
frozen), one image per step, point prompts sampled afresh from the image's label at every step
with a seeded random generator, and the config's loss. The seed's missing ``zero_grad`` (§7.2
**(bug)**) is fixed: the gradients are zeroed before every step.

``model.params``:

- ``size``: tiny, small, base_plus, large or test-tiny (default tiny);
- ``weights``: a model folder written by ``retinaseg sam2 init`` / ``sam2 convert``; required
  unless ``size`` is test-tiny, where random weights are written into the run folder (``base/``);
- ``lora``: :class:`~retinaseg.models.sam2.lora.LoraSettings` fields (rank, alpha, dropout,
  targets, mask_decoder, bias); default the seed's (r 32, α 32, dropout 0.1, ``qkv``);
- ``prompt``: ``{sampler, n_pos, n_neg}``, sampler ``prompt_generation`` (SAM-OCTA2, default),
  ``global`` (SAM-OCTA global mode), ``centroid`` (SAM-OCTA2 en-face mode: one positive per
  component centroid; n_pos/n_neg unused) or ``faz`` (centroids plus ``n_pos`` border points).

Loss: the decoder's 256×256 low-resolution logits are upsampled back to the image (the inverse
of the canvas mapping, :func:`~retinaseg.models.sam2.preprocess.from_canvas`, differentiable)
and compared with the label at the image's own resolution, so thin vessels are not lost by
shrinking the label to 256². One mask per prompt (``multimask_output`` off, as SAM-OCTA2).

Validation (before training, as epoch 0 of ``metrics.csv``; every ``train.val_every`` epochs
and after the last): each validation image is
prompted with points sampled by the same sampler from a generator with a fixed seed (the same
prompts at every validation), its probability map is thresholded at ``train.threshold`` (0.5
= logit > 0, SAM-OCTA2's binarisation) and Dice is averaged per source; AUC and BCE are logged
too. The best LoRA tensors by ``train.monitor`` are written to ``best_lora.safetensors``
(:func:`~retinaseg.models.sam2.lora.save_lora`, with the base folder and its SHA-256), with
``metrics.csv`` and ``summary.json``.

Honoured: ``train.epochs``, ``val_every``, ``time_limit_min`` (checked after every step; a
final validation follows), ``monitor``, ``threshold``, ``device``, ``threads``, ``grad_clip``,
``optim`` (over the trainable tensors only), ``schedule``, ``loss``, ``seed``. Not applied:
``sampling`` (always whole images, batch 1), ``augment``, ``train.amp`` (float32),
``train.ema``, ``early_stopping``, ``model.init``, ``model.heads``, ``distill``.
Resume is not supported: a SAM 2 run keeps no ``last.pt``. Images with an empty prompt (no
foreground in the label) are skipped in training and predicted empty in validation.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from retinaseg.errors import ConfigError, TrainingError
from retinaseg.evaluation.metrics import confusion_counts, roc_auc, threshold_metrics
from retinaseg.losses import build_loss
from retinaseg.models.sam2.preprocess import from_canvas, preprocess_image, scale_points
from retinaseg.preprocessing import prompts as P
from retinaseg.training.config import RunConfig
from retinaseg.training.data import Item, load_train_val
from retinaseg.training.runs import write_summary
from retinaseg.training.schedule import learning_rate
from retinaseg.utils.atomic import write_text_atomic
from retinaseg.utils.runtime import configure_threads, seed_everything, select_device

CSV_FIELDS = ["epoch", "train_loss", "val_loss", "val_dice", "val_auc", "lr", "skipped",
              "seconds"]
SAMPLERS = ("prompt_generation", "global", "centroid", "faz")
PARAM_KEYS = ("size", "weights", "lora", "prompt", "mode", "sequence")
MODES = ("enface", "layers")
VAL_SEED = 1_000_003
"""Offset of the validation prompts' seed from ``seed`` (fixed: the same prompts every time)."""


@dataclass(frozen=True)
class PromptSettings:
    """How training and validation prompts are drawn from a label."""

    sampler: str = "prompt_generation"
    n_pos: int = 1
    n_neg: int = 0

    def sample(self, label: np.ndarray, rng: np.random.Generator) -> P.Prompt:
        if self.sampler == "prompt_generation":
            return P.prompt_generation(label, self.n_pos, self.n_neg, rng=rng)
        if self.sampler == "global":
            return P.global_points(label, self.n_pos, self.n_neg, rng=rng)
        if self.sampler == "centroid":
            return P.centroid_points(label)
        return P.faz_points(label, self.n_pos, rng=rng)


@dataclass(frozen=True)
class SequenceSettings:
    """``model.params.sequence``: how a layer-sequence training clip is drawn (reference §7.2;
    the defaults are the seed's). Ranges are inclusive ``[low, high]``.

    ``frames``: clip length T; ``prompt_frames``: P prompted frames, at {0}, {0, T−1} or
    {0, ⌊T/2⌋, T−1}; ``n_pos`` / ``n_neg``: points per prompted frame; ``val_frames``: frames
    evenly spaced over the whole sequence in validation; ``flip``: horizontal flip with
    probability 0.5; ``rotate``: rotation by up to ± this many degrees with probability 0.5
    (the same for every frame of a clip).
    """

    frames: tuple[int, int] = (4, 8)
    prompt_frames: tuple[int, int] = (1, 3)
    n_pos: tuple[int, int] = (1, 10)
    n_neg: tuple[int, int] = (0, 6)
    val_frames: int = 4
    flip: bool = True
    rotate: float = 10.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SequenceSettings:
        """Checked settings; a ConfigError names the bad key."""
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"invalid config key 'model.params.sequence.{unknown[0]}': it "
                              f"takes {', '.join(cls.__dataclass_fields__)}")
        out: dict[str, Any] = {}
        for key, (lo_min, hi_max) in {"frames": (1, 64), "prompt_frames": (1, 3),
                                      "n_pos": (0, 100), "n_neg": (0, 100)}.items():
            if key in raw:
                pair = raw[key]
                if (not isinstance(pair, list | tuple) or len(pair) != 2
                        or not all(isinstance(v, int) for v in pair)
                        or not lo_min <= pair[0] <= pair[1] <= hi_max):
                    raise ConfigError(f"invalid config key 'model.params.sequence.{key}': a "
                                      f"range [low, high] of whole numbers with {lo_min} <= "
                                      f"low <= high <= {hi_max}, got {pair!r}")
                out[key] = (int(pair[0]), int(pair[1]))
        if "val_frames" in raw:
            v = raw["val_frames"]
            if not isinstance(v, int) or not 1 <= v <= 64:
                raise ConfigError("invalid config key 'model.params.sequence.val_frames': a "
                                  f"whole number from 1 to 64, got {v!r}")
            out["val_frames"] = v
        if "flip" in raw:
            out["flip"] = bool(raw["flip"])
        if "rotate" in raw:
            r = raw["rotate"]
            if not isinstance(r, int | float) or not 0 <= r <= 180:
                raise ConfigError("invalid config key 'model.params.sequence.rotate': degrees "
                                  f"from 0 to 180, got {r!r}")
            out["rotate"] = float(r)
        return cls(**out)


@dataclass(frozen=True)
class Sam2Params:
    """``model.params`` of a ``sam2`` run, checked."""

    size: str
    weights: Path | None
    lora: dict[str, Any]
    prompt: PromptSettings
    mode: str = "enface"
    sequence: SequenceSettings = field(default_factory=SequenceSettings)


def sam2_params(cfg: RunConfig) -> Sam2Params:
    """Check ``model.params`` of a sam2 run (before a run folder is made); errors name the key."""
    params = dict(cfg.model.params)
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if unknown:
        raise ConfigError(f"invalid config key 'model.params.{unknown[0]}': a sam2 run takes "
                          f"{', '.join(PARAM_KEYS)}")
    if cfg.model.heads or cfg.model.init:
        raise ConfigError("model.heads and model.init are not supported for sam2 runs (the "
                          "starting weights are model.params.weights)")
    size = str(params.get("size", "tiny"))
    weights = params.get("weights")
    if weights is None and size != "test-tiny":
        raise ConfigError("invalid config key 'model.params.weights': sam2 training needs a "
                          "model folder (`retinaseg sam2 convert` of an official checkpoint); "
                          "only size test-tiny may start from random weights")
    path = None
    if weights is not None:
        path = Path(str(weights)).expanduser()
        if not path.is_dir():
            raise ConfigError(f"invalid config key 'model.params.weights': '{weights}' is not "
                              "a folder (convert official weights with `retinaseg sam2 "
                              "convert`)")
        path = path.resolve()
    lora = params.get("lora") or {}
    if not isinstance(lora, dict):
        raise ConfigError("invalid config key 'model.params.lora': a mapping of LoRA settings")
    raw = params.get("prompt") or {}
    if not isinstance(raw, dict) or set(raw) - {"sampler", "n_pos", "n_neg"}:
        raise ConfigError("invalid config key 'model.params.prompt': a mapping of sampler, "
                          "n_pos and n_neg")
    prompt = PromptSettings(**raw)
    if prompt.sampler not in SAMPLERS:
        raise ConfigError(f"invalid config key 'model.params.prompt.sampler': "
                          f"'{prompt.sampler}' is not one of {', '.join(SAMPLERS)}")
    if int(prompt.n_pos) < 0 or int(prompt.n_neg) < 0 or prompt.n_pos + prompt.n_neg < 1:
        raise ConfigError("invalid config key 'model.params.prompt': n_pos and n_neg must be "
                          "at least 0, with at least one point")
    mode = str(params.get("mode", "enface"))
    if mode not in MODES:
        raise ConfigError(f"invalid config key 'model.params.mode': '{mode}' is not one of "
                          f"{', '.join(MODES)}")
    seq = params.get("sequence") or {}
    if not isinstance(seq, dict):
        raise ConfigError("invalid config key 'model.params.sequence': a mapping of settings")
    if seq and mode != "layers":
        raise ConfigError("invalid config key 'model.params.sequence': it applies to mode "
                          "'layers' only")
    if mode == "layers" and (cfg.data.dataset != "sam_octa2_layers" or cfg.data.extra):
        raise ConfigError("invalid config key 'data.dataset': sam2 mode 'layers' trains on "
                          "one dataset of layer sequences, 'sam_octa2_layers'")
    return Sam2Params(size, path, lora, prompt, mode, SequenceSettings.from_dict(seq))


def _as_image(item: Item) -> np.ndarray:
    """``[C, H, W]`` → grey ``[H, W]`` or RGB ``[H, W, 3]`` for SAM 2's preprocessing."""
    img = item.image
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ConfigError(f"sam2 training takes en-face images with 1 or 3 channels; "
                          f"'{item.id}' has shape {list(img.shape)}")
    return img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)


class Sam2Task:
    """What a SAM 2 training mode supplies to :func:`fit`: the model, its base folder and LoRA
    settings, the number of training units per epoch, the loss of one unit (None: skipped, e.g.
    no foreground to prompt) and a validation pass. Subclasses: :class:`EnfaceTask` here,
    :class:`~retinaseg.training.sam2_layers.LayerTask` for layer sequences."""

    csv_fields: tuple[str, ...] = tuple(CSV_FIELDS)

    def __init__(self, cfg: RunConfig, model: nn.Module, base: Path, settings: Any,
                 prompt: PromptSettings, device: torch.device) -> None:
        self.cfg, self.model, self.base, self.settings = cfg, model, base, settings
        self.prompt, self.device = prompt, device
        self.loss_fn = build_loss(cfg.loss.name, **cfg.loss.params).to(device)
        self.validation = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def train_mode(self) -> None:
        """Enable the adapters' dropout (the model itself stays in eval mode: transformers'
        SAM 2 video model only returns object scores outside training mode)."""
        self.model.eval()
        for name, module in self.model.named_modules():
            if "lora_dropout" in name:
                module.train()

    def train_loss(self, index: int, rng: np.random.Generator) -> torch.Tensor | None:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        raise NotImplementedError


class EnfaceTask(Sam2Task):
    """En-face images (one image, one prompt set per step; reference §7.1, §7.2 en-face mode)."""

    def __init__(self, cfg: RunConfig, model: nn.Module, base: Path, settings: Any,
                 prompt: PromptSettings, device: torch.device) -> None:
        super().__init__(cfg, model, base, settings, prompt, device)
        self.train_items, self.val_items, self.validation = load_train_val(cfg.data, cfg.seed)
        if not self.train_items or not self.val_items:
            raise ConfigError("sam2 training needs training and validation images")

    def __len__(self) -> int:
        return len(self.train_items)

    def logits(self, item: Item, prompt: P.Prompt) -> torch.Tensor:
        """``[1, 1, H, W]`` mask logits at the image's size for a prompt."""
        pixels, geom = preprocess_image(_as_image(item))
        points = torch.from_numpy(scale_points(prompt.points, geom))[None, None]
        labels = torch.from_numpy(prompt.labels.astype(np.int64))[None, None]
        out = self.model(pixel_values=pixels.to(self.device),
                         input_points=points.to(self.device),
                         input_labels=labels.to(self.device), multimask_output=False)
        low = out.pred_masks[:, 0, :1].float()  # [1, 1, 256, 256]
        return from_canvas(low, geom)

    def target(self, item: Item) -> torch.Tensor:
        return torch.from_numpy(item.label.astype(np.float32))[None, None].to(self.device)

    def train_loss(self, index: int, rng: np.random.Generator) -> torch.Tensor | None:
        it = self.train_items[index]
        prompt = self.prompt.sample(it.label, rng)
        if not len(prompt):
            return None
        return self.loss_fn(self.logits(it, prompt), self.target(it))

    def validate(self) -> dict[str, float]:
        self.model.eval()
        rng = np.random.default_rng(self.cfg.seed + VAL_SEED)
        per_source: dict[str, list[float]] = {}
        aucs, losses = [], []
        with torch.no_grad():
            for it in self.val_items:
                prompt = self.prompt.sample(it.label, rng)
                if len(prompt):
                    logit = self.logits(it, prompt)
                    losses.append(float(nn.functional.binary_cross_entropy_with_logits(
                        logit, self.target(it))))
                    prob = torch.sigmoid(logit)[0, 0].cpu().numpy()
                else:
                    prob = np.zeros(it.label.shape, np.float32)
                c = confusion_counts(prob > self.cfg.train.threshold, it.label, it.fov)
                per_source.setdefault(it.source, []).append(threshold_metrics(c)["dice"])
                aucs.append(roc_auc(prob, it.label, it.fov))
        dice = float(np.mean([np.mean(v) for v in per_source.values()])) if per_source else 0.0
        return {"val_dice": dice, "val_auc": float(np.nanmean(aucs)) if aucs else float("nan"),
                "val_loss": float(np.mean(losses)) if losses else float("nan")}


def _optimizer(cfg: RunConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


def _score(cfg: RunConfig, row: dict[str, float]) -> float:
    m = cfg.train.monitor
    value = -row["val_loss"] if m == "loss" else row.get(f"val_{m}", row["val_dice"])
    return -math.inf if math.isnan(value) else value


def _write_csv(path: Path, fields: tuple[str, ...], history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    write_text_atomic(path, buf.getvalue())


def setup_model(cfg: RunConfig, run_dir: Path, video: bool = False
                ) -> tuple[Sam2Params, nn.Module, Path, Any, torch.device, int]:
    """Check the params, seed, pick the device and threads, and build the LoRA model (random
    ``test-tiny`` weights are written to ``run_dir/base`` when no weights are given)."""
    from retinaseg.models.sam2.build import build_sam2, lora_settings
    from retinaseg.models.sam2.weights import init_weights

    params = sam2_params(cfg)
    threads = configure_threads(cfg.train.threads)
    device = select_device(cfg.train.device)
    seed_everything(cfg.seed)
    base = params.weights or init_weights("test-tiny", run_dir / "base", seed=cfg.seed)
    settings = lora_settings(params.lora)
    model = build_sam2(size=params.size, weights=base, video=video, lora=settings).to(device)
    return params, model, Path(base), settings, device, threads


def train_sam2(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Fine-tune SAM 2 with LoRA on en-face images of ``cfg`` into ``run_dir`` (which holds
    config.yaml already); returns the summary (also written to ``summary.json``)."""
    params, model, base, settings, device, threads = setup_model(cfg, run_dir)
    task = EnfaceTask(cfg, model, base, settings, params.prompt, device)
    return fit(task, cfg, run_dir, params, threads)


def fit(task: Sam2Task, cfg: RunConfig, run_dir: Path, params: Sam2Params,
        threads: int) -> dict[str, Any]:
    """The training loop shared by the SAM 2 modes (module docstring); returns the summary."""
    from retinaseg.models.sam2.lora import parameter_counts, save_lora

    trainable = [p for p in task.model.parameters() if p.requires_grad]
    opt = _optimizer(cfg, trainable)
    tc = cfg.train
    start = time.time()
    out_of_time = False
    epochs_run, best, best_epoch = 0, -math.inf, 0
    history: list[dict[str, float]] = []
    if tc.val_every:  # the starting point (LoRA B = 0: the base model), logged, never saved
        history.append({"epoch": 0, **task.validate(), "lr": 0.0, "skipped": 0,
                        "seconds": time.time() - start})
        tqdm.write(f"epoch 0 (before training) val_dice={history[0]['val_dice']:.4g}")
    for epoch in range(tc.epochs):
        t0 = time.time()
        task.train_mode()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(task))
        total, steps, skipped, lr = 0.0, 0, 0, 0.0
        bar = tqdm(order, desc=f"epoch {epoch + 1}", leave=False)
        for i, k in enumerate(bar):
            t = epoch + i / len(order)
            if tc.time_limit_min:
                t = max(t, (time.time() - start) / (60 * tc.time_limit_min) * tc.epochs)
            lr = learning_rate(cfg.schedule, cfg.optim.lr, t, tc.epochs)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)  # every step: the seed's accumulation bug, fixed
            loss = task.train_loss(int(k), rng)
            if loss is None:
                skipped += 1
                continue
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1}; stopped "
                                    f"(the best LoRA so far is kept in '{run_dir}')")
            loss.backward()
            if tc.grad_clip:
                nn.utils.clip_grad_norm_(trainable, tc.grad_clip)
            opt.step()
            total += float(loss.item())
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
            if tc.time_limit_min and time.time() - start > 60 * tc.time_limit_min:
                out_of_time = True
                break
        row: dict[str, float] = {"epoch": epoch + 1, "train_loss": total / max(steps, 1),
                                 "lr": lr, "skipped": skipped}
        last = out_of_time or epoch + 1 == tc.epochs
        if (epoch + 1) % tc.val_every == 0 or last:
            row.update(task.validate())
            score = _score(cfg, row)
            if score > best or best_epoch == 0:
                best, best_epoch = score, epoch + 1
                info = {"epoch": epoch + 1, "size": params.size, "mode": params.mode,
                        "prompt": asdict(task.prompt),
                        "val": {k: v for k, v in row.items() if k.startswith("val")}}
                save_lora(run_dir / "best_lora.safetensors", task.model, task.base,
                          task.settings, info)
        row["seconds"] = time.time() - t0
        history.append(row)
        epochs_run = epoch + 1
        tqdm.write(f"epoch {epoch + 1}/{tc.epochs} " + " ".join(
            f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        _write_csv(run_dir / "metrics.csv", task.csv_fields, history)
        if out_of_time:
            tqdm.write(f"time limit of {tc.time_limit_min} min reached")
            break
    n_train, n_total = parameter_counts(task.model)
    summary = {"run_dir": str(run_dir), "model": "sam2", "size": params.size,
               "mode": params.mode, "base": str(task.base), "lora": "best_lora.safetensors",
               "best_epoch": best_epoch, "best_score": best, "monitor": tc.monitor,
               "threshold": tc.threshold, "validation": task.validation,
               "prompt": asdict(task.prompt), "epochs_run": epochs_run,
               "train_seconds": round(time.time() - start, 1),
               "trainable_parameters": n_train, "total_parameters": n_total,
               "threads": threads, "device": str(task.device)}
    write_summary(run_dir, summary)
    return summary

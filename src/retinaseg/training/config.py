"""Training configuration: one YAML file validated into typed objects.

Unknown keys are errors, and every error names the offending key. ``--set a.b=c`` overrides are
applied to the raw mapping before validation, so they are validated the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from retinaseg.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SourceConfig(_Strict):
    """One dataset to train on: name, root, splits and dataset options."""

    dataset: str
    root: str | None = None
    train_split: str = "train"
    val_split: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    head: str | None = Field(None, description=(
        "with model.heads: the output head this dataset's labels train (default: the first)"))


class DataConfig(SourceConfig):
    """The main dataset, the shared preprocessing, and optional extra datasets mixed in."""

    val_fraction: float = Field(0.2, gt=0, lt=1)
    folds: int | None = Field(None, ge=2, description=(
        "k-fold cross-validation: each dataset's training images are shuffled with the seed "
        "and cut into this many near-equal folds, and 'fold' is held out for validation "
        "(instead of a val split or val_fraction; with 5 folds, fold 0 is the "
        "val_fraction 0.2 carve)"))
    fold: int = Field(0, ge=0, description="the held-out fold, 0 ≤ fold < folds")
    preprocess: str | list[str | dict[str, Any]] = "none"
    extra: list[SourceConfig] = Field(default_factory=list)
    acquisition_copies: int = Field(0, ge=0, description=(
        "each training image (not validation) of every source is added this many more times, "
        "each copy after a random acquisition change of its raw pixels (colour balance, "
        "gamma, blur, noise, JPEG; retinaseg.preprocessing.acquisition) and then the same "
        "preprocessing: robustness to other cameras and devices"))
    val_acquisition_copies: int = Field(0, ge=0, description=(
        "validation holds each validation image and this many acquisition-changed copies "
        "(other draws than the training copies), so that the checkpoint and the threshold are "
        "chosen for unchanged and changed images together"))

    @model_validator(mode="after")
    def _fold_in_range(self) -> DataConfig:
        if self.folds is None and self.fold:
            raise ValueError("data.fold needs data.folds (the number of folds)")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"data.fold must be below data.folds ({self.folds}), "
                             f"not {self.fold}")
        return self

    def sources(self) -> list[SourceConfig]:
        """The main dataset followed by the extra ones."""
        main = SourceConfig(dataset=self.dataset, root=self.root, train_split=self.train_split,
                            val_split=self.val_split, options=self.options, head=self.head)
        return [main, *self.extra]


class SamplingConfig(_Strict):
    mode: Literal["patch", "whole"] = "patch"
    patch_size: int = Field(128, ge=8)
    patches_per_image: int = Field(16, ge=1)
    inside_fov: bool = True
    vessel_fraction: float = Field(0.0, ge=0, le=1)
    batch_size: int = Field(8, ge=1)


class AugmentConfig(_Strict):
    flips: bool = True
    rot90: bool = True
    rotate_deg: float = Field(0.0, ge=0, le=180)
    elastic: bool = False
    zoom: float = Field(0.0, ge=0, le=1, description="random zoom in [1/(1+z), 1+z]")
    intensity: bool = True
    degrade: bool = Field(False, description="random blur and noise of the image")
    prob: float = Field(0.5, ge=0, le=1)


class ModelConfig(_Strict):
    name: str = "unet"
    params: dict[str, Any] = Field(default_factory=dict)
    init: str | None = Field(None, description=(
        "start from these weights (a .safetensors file, a run folder or a bundled model name) "
        "instead of a random initialisation; the architecture must match (a one-output "
        "model may start a model with several heads: every head starts as its copy)"))
    heads: list[str] | None = Field(None, min_length=2, description=(
        "names of output heads, one per label convention (for example 'large_vessel' for "
        "OCTA-500 GT_LargeVessel and 'all_vessel' for ROSSA); each dataset trains the head named "
        "by its 'head' key; the model gets one output channel per head"))


class LossConfig(_Strict):
    name: str = "bce_dice"
    params: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)


class ScheduleConfig(_Strict):
    name: Literal["constant", "step", "cosine", "onecycle", "poly"] = "cosine"
    step_size: int = Field(30, ge=1)
    gamma: float = Field(0.1, gt=0)
    power: float = Field(0.9, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)


class TrainConfig(_Strict):
    epochs: int = Field(50, ge=1)
    val_every: int = Field(1, ge=1)
    early_stopping: int = Field(0, ge=0, description="patience in validations; 0 = off")
    monitor: Literal["dice", "auc", "cldice", "loss"] = "dice"
    threshold: float = Field(0.5, gt=0, lt=1)
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    amp: bool | None = Field(None, description=(
        "mixed precision: on CUDA float16 unless false; on a CPU with native bfloat16 "
        "(avx512_bf16/amx_bf16) bfloat16 when true, about twice the steps per second; "
        "None/false on CPU = float32"))
    time_limit_min: float | None = Field(None, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)
    ema: float | None = Field(None, gt=0, lt=1, description=(
        "decay of an exponential moving average of the weights (and BatchNorm statistics), "
        "updated every step; validation, checkpoints and the saved model use the average"))


class InferenceConfig(_Strict):
    tile: int | None = Field(None, ge=16, description="sliding-window size; None = whole image")
    overlap: float = Field(0.25, ge=0, lt=1)
    tta: bool = False
    match_fov: bool = Field(False, description=(
        "store the training images' median FOV diameter in the model, so that fundus images "
        "of other resolutions are rescaled to it at inference"))


class DistillConfig(_Strict):
    teachers: list[str] = Field(default_factory=list, description=(
        "finished training run folders (or folders of runs: the newest is used) whose "
        "models teach this run; '{fold}' is replaced by data.fold. No teacher may have trained "
        "on a validation image of this run, nor be fine-tuned. Empty = no distillation"))
    weight: float = Field(0.5, ge=0, le=1, description=(
        "the teachers' share of the training target: (1 - weight)·label + weight·teacher; "
        "0 = no distillation. Losses that binarise their target (ibp_cldice, skeleton "
        "recall) see it thresholded at 0.5"))
    tta: Literal["none", "hflip", "flips"] = Field("flips", description=(
        "flip TTA of the teachers' predictions"))


class RunConfig(_Strict):
    name: str = "run"
    seed: int = 0
    runs_dir: str = "runs"
    data: DataConfig
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @model_validator(mode="after")
    def _check_names(self) -> RunConfig:
        from retinaseg.registry import DATASETS, LOSSES, MODELS

        checks = [("data.dataset", DATASETS, self.data.dataset),
                  ("model.name", MODELS, self.model.name), ("loss.name", LOSSES, self.loss.name)]
        checks += [(f"data.extra.{i}.dataset", DATASETS, src.dataset)
                   for i, src in enumerate(self.data.extra)]
        for kind, reg, name in checks:
            if name not in reg:
                raise ValueError(f"{kind} '{name}' is not registered; known: {reg.names()}")
        self._check_heads()
        if any("{fold}" in t for t in self.distill.teachers) and self.data.folds is None:
            raise ValueError("distill.teachers uses '{fold}' but data.folds is not set")
        return self

    def _check_heads(self) -> None:
        heads = self.model.heads
        if heads and len(set(heads)) != len(heads):
            raise ValueError(f"model.heads must be distinct names, got {heads}")
        if heads and "out_channels" in self.model.params:
            raise ValueError("model.params.out_channels is set by model.heads; remove it")
        for i, src in enumerate(self.data.sources()):
            where = "data.head" if i == 0 else f"data.extra.{i - 1}.head"
            if src.head is not None and not heads:
                raise ValueError(f"{where} '{src.head}' needs model.heads")
            if src.head is not None and src.head not in heads:
                raise ValueError(f"{where} '{src.head}' is not one of model.heads {heads}")


def _parse_value(text: str) -> Any:
    """Parse an override value with YAML rules (numbers, booleans, lists, null)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a raw config mapping (in place) and return it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}': '{part}' is not a section")
        node[parts[-1]] = _parse_value(value)
    return raw


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"invalid config key '{loc}': {msg}{more}"


def validate_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a raw mapping into a :class:`RunConfig`; errors name the offending key."""
    import retinaseg.data  # noqa: F401  (registers datasets)
    import retinaseg.losses  # noqa: F401
    import retinaseg.models  # noqa: F401

    if not isinstance(raw, dict):
        raise ConfigError("config must be a YAML mapping at the top level")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def _yaml_error(path: Path, err: yaml.YAMLError) -> str:
    """One line: where the YAML parser stopped and why."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = getattr(err, "problem", None) or " ".join(str(err).split())
    return f"config file '{path}' is not valid YAML{where}: {what}"


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config, apply overrides and validate it.

    Relative ``data.root`` paths are resolved against the current directory first and then
    against the config file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error(path, err)) from None
    raw = apply_overrides(raw, overrides or [])
    cfg = validate_config(raw)
    for src in [cfg.data, *cfg.data.extra]:
        root = src.root
        if root and not Path(root).is_absolute() and not Path(root).exists():
            alt = (path.parent / root).resolve()
            if alt.exists():
                src.root = str(alt)
    init = cfg.model.init
    if init and not Path(init).is_absolute():  # a file or run folder: kept absolute for resume
        for cand in (Path(init), path.parent / init):
            if cand.exists():
                cfg.model.init = str(cand.resolve())
                break
    return cfg


def check_paths(cfg: RunConfig) -> None:
    """Fail early when a configured dataset root is not a folder; the error names the key.

    Called before a run folder is created, so a typo in ``data.root`` costs nothing. A root left
    out is not checked here (the dataset says whether it needs one).
    """
    if cfg.distill.teachers:
        from retinaseg.training.distill import teacher_runs

        teacher_runs(cfg)
    if cfg.model.init:
        from retinaseg.errors import ModelLoadError
        from retinaseg.models.persistence import resolve_model_path

        try:
            resolve_model_path(cfg.model.init)
        except ModelLoadError as err:
            raise ConfigError(f"invalid config key 'model.init': {err}") from None
    sources = [("data.root", cfg.data.root)]
    sources += [(f"data.extra.{i}.root", src.root) for i, src in enumerate(cfg.data.extra)]
    for key, root in sources:
        if not root:
            continue
        path = Path(root).expanduser()
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            raise ConfigError(f"invalid config key '{key}': '{root}' {what} (relative paths are "
                              "tried from the current folder, then from the config's folder)")


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML text (what each run saves next to its results)."""
    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)

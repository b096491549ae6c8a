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
from retinaseg.registry import DATASETS, LOSSES, MODELS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SourceConfig(_Strict):
    """One dataset to train on: name, root, splits and dataset options."""

    dataset: str = Field(description=(
        "a registered dataset name (`retinaseg datasets` lists them with their layouts)"))
    root: str | None = Field(None, description=(
        "the dataset's folder; a relative path is tried from the current folder, then from "
        "the config file's folder; null for a dataset that needs none (synthetic)"))
    train_split: str = Field("train", description=(
        "the split to train on (validation images are carved from it where the dataset has "
        "no validation split or data.folds is set)"))
    val_split: str | None = Field(None, description=(
        "the split that chooses the checkpoint and the threshold; null = the dataset's own "
        "validation split, or a seeded carve of train_split (val_fraction or a fold) where "
        "it has none; ignored when data.folds is set"))
    options: dict[str, Any] = Field(default_factory=dict, description=(
        "dataset options, e.g. for octa500 {fov: 6M, maps: ILM_OPL, label: LargeVessel}; "
        "each dataset documents its own"))
    head: str | None = Field(None, description=(
        "with model.heads: the output head this dataset's labels train (default: the first)"))
    weight: float | None = Field(None, gt=0, description=(
        "sampling weight: once any dataset sets one, each dataset's share of the training "
        "patches (whole images with sampling.mode whole) is weight / the sum of the weights, "
        "whatever its image count (an unset weight counts as 1.0; the epoch keeps training "
        "images x patches_per_image patches); null on every dataset = every image draws "
        "patches_per_image patches, so datasets share in proportion to their image counts"))


class DataConfig(SourceConfig):
    """The main dataset, the shared preprocessing, and optional extra datasets mixed in."""

    val_fraction: float = Field(0.2, gt=0, lt=1, description=(
        "share of the training images held out for validation (seeded by seed) when the "
        "dataset has no validation split and data.folds is not set"))
    folds: int | None = Field(None, ge=2, description=(
        "k-fold cross-validation: each dataset's training images are shuffled with the seed "
        "and cut into this many near-equal folds, and 'fold' is held out for validation "
        "(instead of a val split or val_fraction; with 5 folds, fold 0 is the "
        "val_fraction 0.2 carve)"))
    fold: int = Field(0, ge=0, description="the held-out fold, 0 ≤ fold < folds")
    split_seed: int | None = Field(None, description=(
        "seed of the validation carve (val_fraction or folds) and of the validation "
        "acquisition copies; null = the run's seed. Fix it to train several seeds that hold "
        "out the same images (a seed ensemble scored on images no member saw)"))
    preprocess: str | list[str | dict[str, Any]] = Field("none", description=(
        "preprocessing of every image, stored in the model so that inference repeats it: a "
        "preset name or a list of steps (a step name, or {name: STEP, ...parameters}); "
        "'none' only converts to channel-first"))
    extra: list[SourceConfig] = Field(default_factory=list, description=(
        "more datasets mixed into training, each with the keys of a dataset entry (dataset, "
        "root, splits, options, head, weight); each keeps its own validation split, and the "
        "validation score and the threshold weight every dataset equally"))
    derive_centerline: bool = Field(True, description=(
        "models trained on a centerline label too (octanet's thin branch): derive it from the "
        "pixel label with the exact centerline where a dataset has none (ROSE-2 has its own); "
        "false: such a dataset is an error"))
    centerline_dilate: int = Field(0, ge=0, le=5, description=(
        "dilate a derived centerline label by this many px (3×3 steps, kept inside the "
        "label); 0 = the 1-px centerline"))
    volume_planes: int | None = Field(None, ge=1, description=(
        "volume datasets (synthetic_volume, volume_folder): resample each volume's depth to "
        "this many planes when it is loaded, as inference does for a volume model (IPN's "
        "model.params.depth); null keeps the depth as read"))
    acquisition_copies: int = Field(0, ge=0, description=(
        "each training image (not validation) of every source is added this many more times, "
        "each copy after a random acquisition change of its raw pixels (colour balance, "
        "gamma, blur, noise, JPEG; retinaseg.preprocessing.acquisition) and then the same "
        "preprocessing: robustness to other cameras and devices"))
    fov_diameter: float | None = Field(None, ge=32, description=(
        "resolution normalisation of colour fundus datasets (px): every training and "
        "validation image is resized when it is loaded so that the diameter of its own FOV "
        "(the dataset's FOV mask, else one derived from the red channel) is this value "
        "(bilinear image, nearest label and FOV; images within 1 % of it are kept as read), "
        "and the model stores it so that inference rescales new photographs to the same FOV "
        "diameter (inference.match_fov); validation scores are at this scale. Datasets of "
        "other modalities are left as read. null = off (images as read)"))
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
                            val_split=self.val_split, options=self.options, head=self.head,
                            weight=self.weight)
        return [main, *self.extra]


class SamplingConfig(_Strict):
    mode: Literal["patch", "whole"] = Field("patch", description=(
        "patch: random square patches; whole: each whole image once per epoch, batched with "
        "images of the same size"))
    patch_size: int = Field(128, ge=8, description=(
        "patch side in px (mode patch); a multiple of the model's size multiple"))
    patches_per_image: int = Field(16, ge=1, description=(
        "patches drawn from each training image per epoch (mode patch)"))
    inside_fov: bool = Field(True, description=(
        "draw patch centres inside the FOV mask only (mode patch)"))
    vessel_fraction: float = Field(0.0, ge=0, le=1, description=(
        "share of patch centres drawn on vessel pixels rather than anywhere in the FOV"))
    batch_size: int = Field(8, ge=1, description=(
        "patches, or whole images of one size, per optimiser step; with torchrun this is the "
        "global batch, shared out between the processes (at least one sample each)"))


class AugmentConfig(_Strict):
    flips: bool = Field(True, description="random horizontal and vertical flips")
    rot90: bool = Field(True, description=(
        "random rotations by 90, 180 or 270 degrees (with sampling.mode whole the images must "
        "be square)"))
    rotate_deg: float = Field(0.0, ge=0, le=180, description=(
        "random rotation within plus or minus this many degrees; 0 = off"))
    elastic: bool = Field(False, description=(
        "random elastic deformation (control points every 32 px, displaced 1-3 px)"))
    zoom: float = Field(0.0, ge=0, le=1, description="random zoom in [1/(1+z), 1+z]")
    intensity: bool = Field(True, description=(
        "random gamma contrast (0.7-1.5), scale (x0.9-1.1) and shift (+-0.1) of intensities"))
    degrade: bool = Field(False, description="random blur and noise of the image")
    prob: float = Field(0.5, ge=0, le=1, description=(
        "probability of each random transform; 0 turns augmentation off"))


class ModelConfig(_Strict):
    name: str = Field("unet", description=(
        "a registered architecture (`retinaseg models` lists them)"))
    params: dict[str, Any] = Field(default_factory=dict, description=(
        "keyword arguments of the architecture (e.g. unet width and depth); the input "
        "channels come from the preprocessed data and out_channels from model.heads"))
    init: str | None = Field(None, description=(
        "start from these weights (a .safetensors file, a run folder or a bundled model name) "
        "instead of a random initialisation; the architecture must match (a one-output "
        "model may start a model with several heads: every head starts as its copy)"))
    heads: list[str] | None = Field(None, min_length=2, description=(
        "names of output heads, one per label convention (for example 'large_vessel' for "
        "OCTA-500 GT_LargeVessel and 'all_vessel' for ROSSA); each dataset trains the head named "
        "by its 'head' key; the model gets one output channel per head"))
    classes: list[str] | None = Field(None, min_length=2, description=(
        "multi-class segmentation: the class names in label-value order, background first "
        "(e.g. [background, artery, vein, overlap] for octa500 label AV); the model gets one "
        "output channel per class, trained with softmax and a multi-class loss (dice_ce), and "
        "validated with the mean Dice of the classes after the first; the labels must be class "
        "maps with values below the number of classes. null = binary vessel segmentation"))


class LossConfig(_Strict):
    name: str = Field("bce_dice", description=(
        "a registered loss (retinaseg.registry.LOSSES: bce, dice, bce_dice, cldice, ...)"))
    params: dict[str, Any] = Field(default_factory=dict, description=(
        "keyword arguments of the loss, e.g. the terms of combo"))


class OptimConfig(_Strict):
    name: Literal["adam", "adamw", "sgd"] = Field("adamw", description="the optimiser")
    lr: float = Field(1e-3, gt=0, description=(
        "base learning rate, scaled over training by the schedule"))
    weight_decay: float = Field(1e-4, ge=0, description=(
        "weight decay (decoupled from the gradient for adamw)"))
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum (sgd only)")


class ScheduleConfig(_Strict):
    name: Literal["constant", "step", "cosine", "onecycle", "poly"] = Field(
        "cosine", description=(
            "learning-rate schedule over training progress: constant; step (x gamma every "
            "step_size epochs); cosine (to 0 at the last epoch); onecycle (rising from 4 % "
            "to the base lr over the first 30 %, then cosine); poly ((1 - progress)^power)"))
    step_size: int = Field(30, ge=1, description="epochs between lr drops (step)")
    gamma: float = Field(0.1, gt=0, description="lr factor at each drop (step)")
    power: float = Field(0.9, gt=0, description="exponent of the poly schedule")
    poly_offset: float = Field(0.0, ge=0, lt=1, description=(
        "poly only: progress starts at this fraction, lr = lr0·(1 − (f + (1 − f)·e/E))^power; "
        "0.5 reproduces the OCTA-Net seed's fine stage, whose lr starts at 0.5^0.9 ≈ 0.54·lr0 "
        "(a quirk of its code); 0 = none"))
    warmup_epochs: int = Field(0, ge=0, description=(
        "linear warm-up from near 0 to the base lr over this many epochs; 0 = none"))
    min_lr: float = Field(0.0, ge=0, description="the lr never falls below this")


class TrainConfig(_Strict):
    epochs: int = Field(50, ge=1, description=(
        "epochs to train; the schedule spans them (see time_limit_min)"))
    val_every: int = Field(1, ge=1, description=(
        "validate every this many epochs, and after the last"))
    early_stopping: int = Field(0, ge=0, description="patience in validations; 0 = off")
    monitor: Literal["dice", "auc", "cldice", "loss"] = Field("dice", description=(
        "the validation figure that picks the best checkpoint (loss: the lowest validation "
        "BCE; cldice is not computed during validation and falls back to dice)"))
    threshold: float = Field(0.5, gt=0, lt=1, description=(
        "threshold of the validation Dice during training; the saved model's own threshold "
        "is chosen on the validation images after training"))
    device: str = Field("auto", description=(
        "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"))
    threads: int | None = Field(None, ge=1, description=(
        "CPU threads for torch; null = the cores this process may use, at most 8"))
    amp: bool | None = Field(None, description=(
        "mixed precision: on CUDA float16 unless false; on a CPU with native bfloat16 "
        "(avx512_bf16/amx_bf16) bfloat16 when true, about twice the steps per second; "
        "null or false on CPU = float32"))
    time_limit_min: float | None = Field(None, gt=0, description=(
        "stop after this many minutes; the schedule follows whichever is further along, "
        "epochs or this budget, so a run cut short by the clock still ends annealed"))
    grad_clip: float | None = Field(1.0, gt=0, description=(
        "clip the gradient norm to this value; null = no clipping"))
    ema: float | None = Field(None, gt=0, lt=1, description=(
        "decay of an exponential moving average of the weights (and BatchNorm statistics), "
        "updated every step; validation, checkpoints and the saved model use the average"))
    sync_batchnorm: bool = Field(False, description=(
        "distributed training (torchrun): BatchNorm statistics over the whole global batch "
        "instead of each process's share (SyncBatchNorm; CUDA only)"))
    dist_backend: Literal["auto", "gloo", "nccl"] = Field("auto", description=(
        "distributed training: the process-group backend; auto = nccl on CUDA, gloo on CPU "
        "(the environment variable RETINASEG_DIST_BACKEND overrides it)"))
    dist_timeout_s: float = Field(1800.0, gt=0, description=(
        "distributed training: seconds a process waits for the others (including rank 0's "
        "validation) before it stops with an error, so a dead process does not hang the run"))


class InferenceConfig(_Strict):
    tile: int | None = Field(None, ge=16, description="sliding-window size; null = whole image")
    overlap: float = Field(0.25, ge=0, lt=1, description=(
        "overlap of neighbouring sliding-window tiles, as a fraction of the tile"))
    tta: bool = Field(False, description=(
        "not read: validation predicts without TTA; kept so that older configs validate "
        "(a model's TTA is set by `retinaseg ensemble --tta` or `predict --tta`)"))
    match_fov: bool | None = Field(None, description=(
        "store a FOV diameter in the model, so that fundus images of other resolutions are "
        "rescaled to it at inference: data.fov_diameter when set, else the training images' "
        "median FOV diameter; null = on with data.fov_diameter, else off; false with "
        "data.fov_diameter is an error (the model would see new photographs at another scale "
        "than it was trained on)"))


class FineConfig(_Strict):
    epochs: int = Field(0, ge=0, description=(
        "OCTA-Net (model octanet) only: epochs of the fine stage (octanet_fine), trained after "
        "the coarse stage in <run>/fine/ in the same command (reference §5); 0 = none"))
    checkpoints: Literal["one", "two"] = Field("two", description=(
        "the frozen coarse model(s) feeding the fine stage: two = the best-thick-AUC checkpoint "
        "gives P_thick and the best-thin-AUC one P_thin (the seed); one = the coarse run's "
        "best.safetensors gives both"))
    lr: float | None = Field(None, gt=0, description=(
        "the fine stage's base learning rate (default optim.lr)"))
    poly_offset: float = Field(0.0, ge=0, lt=1, description=(
        "schedule.poly_offset of the fine stage; 0.5 reproduces the seed's quirk (its lr "
        "starts at 0.5^0.9 ≈ 0.54·lr0); 0 = none"))
    time_limit_min: float | None = Field(None, gt=0, description=(
        "stop the fine stage after this many minutes (default train.time_limit_min)"))


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
    name: str = Field("run", description="run name: runs go to runs_dir/name/<timestamp>")
    seed: int = Field(0, description=(
        "seed of everything random (validation carve, folds, patches, augmentation, "
        "initialisation); the same seed gives the same metrics on CPU"))
    runs_dir: str = Field("runs", description="the folder that holds the run folders")
    data: DataConfig = Field(description=(
        "the main dataset, its preprocessing and validation, and extra datasets"))
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description=(
        "how training batches are drawn: patches or whole images"))
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description=(
        "random augmentation of training images (MONAI dictionary transforms)"))
    model: ModelConfig = Field(default_factory=ModelConfig, description=(
        "the architecture, its parameters, output heads and starting weights"))
    loss: LossConfig = Field(default_factory=LossConfig, description=(
        "the training loss, on logits"))
    optim: OptimConfig = Field(default_factory=OptimConfig, description="the optimiser")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description=(
        "the learning rate as a function of training progress"))
    train: TrainConfig = Field(default_factory=TrainConfig, description=(
        "the training loop: length, validation, checkpoint choice, device and precision"))
    inference: InferenceConfig = Field(default_factory=InferenceConfig, description=(
        "how validation images are predicted, and what the model stores for inference"))
    distill: DistillConfig = Field(default_factory=DistillConfig, description=(
        "knowledge distillation from finished runs"))
    fine: FineConfig = Field(default_factory=FineConfig, description=(
        "OCTA-Net's second (fine) stage, trained after the coarse stage"))

    @model_validator(mode="after")
    def _check_names(self) -> RunConfig:
        checks = [("data.dataset", DATASETS, self.data.dataset),
                  ("model.name", MODELS, self.model.name), ("loss.name", LOSSES, self.loss.name)]
        checks += [(f"data.extra.{i}.dataset", DATASETS, src.dataset)
                   for i, src in enumerate(self.data.extra)]
        for kind, reg, name in checks:
            if name not in reg:
                raise ValueError(f"{kind} '{name}' is not registered; known: {reg.names()}")
        self._check_heads()
        self._check_classes()
        if self.fine.epochs and self.model.name != "octanet":
            raise ValueError(f"fine.epochs trains OCTA-Net's fine stage after the model "
                             f"'octanet'; model.name is '{self.model.name}'")
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


    def _check_classes(self) -> None:
        """``model.classes`` needs a multi-class loss and excludes what assumes one sigmoid
        vessel map (heads, distillation); a multi-class loss needs ``model.classes``."""
        classes, multi = self.model.classes, bool(getattr(LOSSES.get(self.loss.name),
                                                          "multiclass", False))
        if classes is None:
            if multi:
                raise ValueError(f"loss.name '{self.loss.name}' is a multi-class loss and "
                                 "needs model.classes (the class names)")
            return
        if len(set(classes)) != len(classes):
            raise ValueError(f"model.classes must be distinct names, got {classes}")
        if not multi:
            raise ValueError(f"model.classes needs a multi-class loss (dice_ce), not "
                             f"'{self.loss.name}'")
        for key, bad in (("model.heads", self.model.heads),
                         ("model.params.out_channels", "out_channels" in self.model.params),
                         ("distill.teachers", self.distill.teachers)):
            if bad:
                raise ValueError(f"model.classes cannot be combined with {key}")


def check_resolution_keys(cfg: RunConfig) -> None:
    """``data.fov_diameter`` with ``inference.match_fov: false`` is a contradiction: the model
    trains at a normalised FOV diameter, which it must store so that inference rescales new
    photographs to it (:class:`ConfigError`)."""
    if cfg.data.fov_diameter is not None and cfg.inference.match_fov is False:
        raise ConfigError(f"invalid config key 'inference.match_fov': false contradicts "
                          f"data.fov_diameter ({cfg.data.fov_diameter:g} px), which trains at a "
                          "normalised FOV diameter that the model must store for inference; "
                          "remove inference.match_fov or set it true")


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
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    check_resolution_keys(cfg)
    return cfg


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


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML text (what each run saves next to its results)."""
    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)

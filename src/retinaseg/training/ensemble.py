"""k-fold training and ensembling: train every fold, build an ensemble model file from the
runs, and unpack an ensemble file back into run folders.

Reference: the recipe of the bundled ``fundus-vessels`` (its model card names the config); the
model itself is :class:`retinaseg.models.ensemble.Ensemble`.

Two kinds of members. **k-fold**: each run chose its checkpoint on its own held-out fold,
and the ensemble's decision threshold is chosen on the **out-of-fold** probabilities: every
validation image is predicted by the one member that never saw it, and the threshold maximises
Dice over all of them (each dataset counting equally, as in training). Those images were seen by
the other members, so the ensemble itself has no held-out score; its out-of-fold figure
describes one member. **Seeds**: runs that differ only in ``seed`` and share
``data.split_seed`` hold out the same images, which no member trained on; the ensemble is
scored and its threshold chosen on its own predictions there, so a seed ensemble has a
validation score comparable with a single run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from retinaseg.errors import ConfigError
from retinaseg.evaluation.metrics import confusion_counts, threshold_metrics
from retinaseg.inference import predict_probability
from retinaseg.models.ensemble import Ensemble, Flipped
from retinaseg.models.persistence import ModelSpec, load_model, resolve_model_path, save_model
from retinaseg.training.config import RunConfig, dump_config, load_config
from retinaseg.training.data import Item, LoadCache, load_train_val
from retinaseg.training.distill import pin_teachers
from retinaseg.training.runs import Member, load_members, newest_run, write_summary
from retinaseg.training.trainer import head_thresholds, train
from retinaseg.utils.atomic import write_text_atomic

SAME_KEYS = ("name", "in_channels", "params", "preprocess", "modality")


def _check_compatible(members: list[Member]) -> str:
    """Same architecture, input and preprocessing; validation images either disjoint (k-fold
    members: ``"out_of_fold"``) or the same for every member (seed members: ``"shared"``)."""
    first = members[0]
    for m in members:
        for key in SAME_KEYS:
            if getattr(m.spec, key) != getattr(first.spec, key):
                raise ConfigError(f"runs '{first.run}' and '{m.run}' differ in {key}; an "
                                  "ensemble needs members of one recipe")
    sets = [{(it.source, it.id) for it in m.val} for m in members]
    if all(s == sets[0] for s in sets[1:]):
        return "shared"
    seen: dict[tuple[str, str], Path] = {}
    for m in members:
        for it in m.val:
            key = (it.source, it.id)
            if key in seen:
                raise ConfigError(f"runs '{seen[key]}' and '{m.run}' both validate on "
                                  f"'{it.id}' but not on the same images; an ensemble needs "
                                  "disjoint validation folds (data.folds, one run per "
                                  "data.fold) or the same held-out images for every member "
                                  "(data.split_seed fixed, seeds differing)")
            seen[key] = m.run
    return "out_of_fold"


def shared_validation(net: nn.Module, items: list[Item], modality: str, tta: str = "none",
                      progress: bool = True) -> list[np.ndarray]:
    """The ensemble's probabilities ``[H,W]`` on validation items that no member trained on.

    Fundus images run on the box of their FOV mask, as at inference.
    """
    return [_probability(net, it, modality, tta)
            for it in tqdm(items, desc="ensemble validation predictions",
                           disable=not progress, leave=False)]


def _probability(net: nn.Module, it: Item, modality: str, tta: str) -> np.ndarray:
    """``net``'s probability ``[H,W]`` for item ``it`` (its head; fundus on the FOV box)."""
    fov = it.fov if modality == "fundus" else None
    return predict_probability(net, it.image, tta=tta, channel=it.head, fov=fov)


def out_of_fold(members: list[Member], tta: str = "none", progress: bool = True,
                member_flips: Sequence[str] | None = None
                ) -> tuple[list[np.ndarray], list[Item]]:
    """Each member's probabilities ``[H,W]`` on its own validation items, and those items.

    Fundus members run on the box of each image's FOV mask, as
    :class:`~retinaseg.inference.segmenter.Segmenter` does by default
    (:mod:`retinaseg.inference.crop`), so the threshold is chosen on the maps it will see.
    ``member_flips``: each member sees its view of the image, as in the ensemble.
    """
    flips = list(member_flips or ["none"] * len(members))
    if len(flips) != len(members):
        raise ConfigError(f"member_flips names {len(flips)} views for {len(members)} members")
    probs, items = [], []
    jobs = [(m, f, it) for m, f in zip(members, flips) for it in m.val]
    for m, f, it in tqdm(jobs, desc="out-of-fold predictions", disable=not progress,
                         leave=False):
        probs.append(_probability(Flipped(m.net, f), it, m.spec.modality, tta))
        items.append(it)
    return probs, items


def _per_image_dice(probs: list[np.ndarray], items: list[Item],
                    thresholds: list[float]) -> list[float]:
    return [threshold_metrics(confusion_counts(p > thresholds[it.head], it.label,
                                               it.fov))["dice"]
            for p, it in zip(probs, items)]


def _thread_span(members: list[Member]) -> int | str | None:
    """The members' training thread count: one number, or ``"lo-hi"`` where they differ."""
    counts = sorted({int(n) for m in members if (n := m.spec.info.get("threads")) is not None})
    if not counts:
        return None
    return counts[0] if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def _info(members: list[Member], tta: str, oof_dice: list[float],
          flips: list[str] | None = None, mode: str = "out_of_fold") -> dict[str, Any]:
    """Provenance: members (with the view each sees), where the threshold came from, total
    training time."""
    runs = []
    for m, flip in zip(members, flips or ["none"] * len(members), strict=True):
        runs.append({"run": str(m.run), "epoch": m.spec.info.get("epoch"),
                     "fold": m.cfg.data.fold if m.cfg.data.folds else None,
                     "folds": m.cfg.data.folds, "n_val": len(m.val),
                     "validation": m.val_source,
                     "val_dice": m.spec.info.get("val", {}).get("val_dice"),
                     "train_seconds": m.spec.info.get("train_seconds"),
                     "threads": m.spec.info.get("threads"), "flip": flip})
        for key in ("total_train_seconds", "distilled_from"):  # fine-tuned or distilled
            if m.spec.info.get(key) is not None:
                runs[-1][key] = m.spec.info[key]
    first = members[0].spec.info
    if mode == "shared":
        source = (f"chosen on the ensemble's predictions on the {len(oof_dice)} validation "
                  f"images that all {len(members)} members held out "
                  f"({members[0].val_source})")
    else:
        source = (f"chosen on out-of-fold validation predictions: each of the "
                  f"{len(oof_dice)} held-out images by the member that never saw it "
                  f"({len(members)} members)")
    info: dict[str, Any] = {
        "members": runs, "tta": tta, "validation_mode": mode, "threshold_source": source,
        "oof_dice_mean": float(np.mean(oof_dice)),
        "train_seconds": round(sum(float(m.spec.info.get("total_train_seconds")
                                         or m.spec.info.get("train_seconds") or 0)
                                   for m in members), 1),
        "threads": _thread_span(members), "device": first.get("device"),
        "train_precision": first.get("train_precision"),
    }
    diam = [float(m.spec.info["fov_diameter"]) for m in members
            if m.spec.info.get("fov_diameter")]
    if diam:
        info["fov_diameter"] = median(diam)
    return info


def build_ensemble(runs: Sequence[str | Path], out: str | Path, tta: str = "none",
                   progress: bool = True, member_flips: Sequence[str] | None = None
                   ) -> dict[str, Any]:
    """Average the best models of ``runs`` into one safetensors file at ``out``.

    Args:
        runs: training run folders of one recipe, at least two, with disjoint validation
            images (the folds of ``data.folds``: the threshold is chosen on out-of-fold
            probabilities) or all with the same held-out images (seeds of one
            ``data.split_seed``: the threshold is chosen on the ensemble's own predictions
            there, and ``oof_dice_mean`` is then the ensemble's validation Dice).
        out: the ensemble's ``.safetensors`` path (written atomically).
        tta: flip TTA used for the out-of-fold predictions and stored as the model's default
            (``none``, ``hflip`` or ``flips``).
        member_flips: per run, the view its member sees (``none``, ``h``, ``v``, ``hv``;
            :class:`~retinaseg.models.ensemble.Flipped`), also in the out-of-fold predictions;
            None: all ``none``.

    Returns:
        ``{"path", "threshold", "thresholds", "oof_dice_mean", "n_images", "members"}``.
    """
    if len(runs) < 2:
        raise ConfigError("an ensemble needs at least two run folders")
    resolved = [Path(r).resolve() for r in runs]
    twice = next((r for i, r in enumerate(runs) if resolved[i] in resolved[:i]), None)
    if twice is not None:
        raise ConfigError(f"run '{twice}' is given twice; an ensemble needs different runs")
    flips = list(member_flips) if member_flips else None
    if flips is not None and len(flips) != len(runs):
        raise ConfigError(f"member_flips names {len(flips)} views for {len(runs)} runs; give "
                          "one per run")
    members = load_members(runs)
    mode = _check_compatible(members)
    params: dict[str, Any] = {"member": members[0].spec.name, "n_members": len(members),
                              "member_params": members[0].spec.params}
    if flips and any(f != "none" for f in flips):
        params["member_flips"] = flips
    net = Ensemble(members[0].spec.in_channels, **params)  # checks the flips
    for slot, m in zip(net.members, members):
        slot.load_state_dict(m.net.state_dict())
    net.eval()
    first = members[0].spec
    if mode == "shared":
        items = members[0].val
        probs = shared_validation(net, items, first.modality, tta, progress)
    else:
        probs, items = out_of_fold(members, tta, progress, flips)
    thresholds = head_thresholds(probs, items, max(1, len(first.heads)))
    scores = _per_image_dice(probs, items, thresholds)
    heads = [{**h, "threshold": t} for h, t in zip(first.heads, thresholds)]
    spec = ModelSpec(name="ensemble", in_channels=first.in_channels, params=params,
                     preprocess=first.preprocess, threshold=thresholds[0],
                     modality=first.modality,
                     info=_info(members, tta, scores, flips, mode), heads=heads)
    path = save_model(out, net, spec)
    return {"path": str(path), "threshold": thresholds[0], "thresholds": thresholds,
            "oof_dice_mean": float(np.mean(scores)), "validation_mode": mode,
            "n_images": len(items), "members": [str(m.run) for m in members]}


def _check_fold(run: Path, fold: int, cfg: RunConfig) -> None:
    """A reused or resumed run must hold out that fold and follow the same recipe."""
    saved = load_config(run / "config.yaml")
    folds = cfg.data.folds
    if (saved.data.folds, saved.data.fold) != (folds, fold):
        raise ConfigError(f"'{run}' holds out fold {saved.data.fold} of {saved.data.folds}, not "
                          f"fold {fold} of {folds}; move it away to train this fold afresh")
    theirs, mine = saved.model_dump(), cfg.model_dump()
    if cfg.distill.teachers:  # the saved run pinned its teachers (distill.pin_teachers)
        now = cfg.model_copy(deep=True)
        now.data.fold = fold
        pin_teachers(now)
        mine["distill"]["teachers"] = now.distill.teachers
    for d in (theirs, mine):
        d["name"], d["data"]["fold"] = "", fold
    differ = [k for k in mine if mine[k] != theirs[k]]
    if differ:
        raise ConfigError(f"'{run}' was trained with other settings ({', '.join(differ)}); "
                          "move it away to train this fold with the current config")


def train_folds(config: str | Path, overrides: list[str] | None = None,
                out: str | Path | None = None, tta: str = "none",
                progress: bool = True) -> dict[str, Any]:
    """Train every fold of a ``data.folds`` config, then build their ensemble.

    Fold ``k`` runs as ``<name>_f<k>`` (``runs_dir/<name>_f<k>/<stamp>``). Rerunning the same
    command is safe: a fold whose newest run finished is reused, and one that was killed is
    resumed from its ``last.pt``, so a long k-fold job survives interruptions.

    Returns:
        ``{"runs": [run folders], "reused": [fold numbers], **build_ensemble(...)}``; the
        ensemble goes to ``out`` (default ``runs_dir/<name>/ensemble.safetensors``).
    """
    overrides = list(overrides or [])
    cfg = load_config(config, overrides)
    if cfg.data.folds is None:
        raise ConfigError("training every fold needs data.folds in the config (for example "
                          "--set data.folds=5)")
    runs, reused = [], []
    for k in range(cfg.data.folds):
        name = f"{cfg.name}_f{k}"
        run, finished = newest_run(Path(cfg.runs_dir) / name)
        if run is not None:
            _check_fold(run, k, cfg)
        if run is not None and finished:
            tqdm.write(f"fold {k}: reusing the finished run {run}")
            reused.append(k)
        elif run is not None:
            tqdm.write(f"fold {k}: resuming {run}")
            train(None, resume=run)
        else:
            run = Path(train(config, overrides + [f"data.fold={k}", f"name={name}"])["run_dir"])
        runs.append(run)
    out = Path(out) if out else Path(cfg.runs_dir) / cfg.name / "ensemble.safetensors"
    res = build_ensemble(runs, out, tta=tta, progress=progress)
    return {"runs": [str(r) for r in runs], "reused": reused, **res}


MEMBER_FACTS = ("threads", "device", "train_precision")  # fov_diameter: stamped at bundling


def _member_seconds(ens: ModelSpec, member: dict[str, Any]) -> tuple[float, float | None]:
    """(own, total) training seconds of an unpacked member, as its record names them; files
    written before members recorded their time give each an equal share of the total."""
    if member.get("train_seconds") is None:
        members = ens.info.get("members") or [member]
        return round(float(ens.info.get("train_seconds") or 0) / len(members), 1), None
    return float(member["train_seconds"]), member.get("total_train_seconds")


def _member_spec(ens: ModelSpec, member: dict[str, Any]) -> ModelSpec:
    """The spec of an unpacked member's ``best.safetensors``: the ensemble's input,
    preprocessing, modality and heads, the member's architecture and its recorded facts (the
    threshold is the ensemble's; :func:`build_ensemble` chooses its own again)."""
    own, total = _member_seconds(ens, member)
    info = {"epoch": member.get("epoch"), "val": {"val_dice": member.get("val_dice")},
            "train_seconds": own, "unpacked_from": "ensemble file",
            "threshold_source": "the ensemble's, copied when unpacked"}
    if member.get("distilled_from"):
        info["distilled_from"] = member["distilled_from"]
    if total is not None:
        info["total_train_seconds"] = total
    info.update({k: ens.info[k] for k in MEMBER_FACTS if k in ens.info})
    if member.get("threads") is not None:  # its own count, where members trained differently
        info["threads"] = member["threads"]
    return ModelSpec(name=ens.params["member"], in_channels=ens.in_channels,
                     params=ens.params["member_params"], preprocess=ens.preprocess,
                     threshold=ens.threshold, modality=ens.modality, info=info,
                     heads=ens.heads)


def _member_config(config: str | Path, member: dict[str, Any], cache: LoadCache) -> RunConfig:
    """``config`` with the member's name and fold, checked to hold out the member's images
    (``cache``: the training data is read once for all members)."""
    if member.get("fold") is None or member.get("folds") is None or "run" not in member:
        raise ConfigError("the ensemble file does not record its members' folds (it predates "
                          "k-fold ensembles), so they cannot be unpacked")
    cfg = load_config(config, [f"name={Path(member['run']).parent.name}",
                               f"data.folds={member['folds']}", f"data.fold={member['fold']}"])
    _, _, where = load_train_val(cfg.data, cfg.seed, cfg.model.heads, cache)
    if where != member.get("validation"):
        raise ConfigError(f"the config holds out other images than member '{member['run']}' "
                          f"did ({where!r} against {member.get('validation')!r}); use a run "
                          "config of the members' recipe")
    return cfg


def unpack_ensemble(model: str | Path, config: str | Path,
                    root: str | Path = ".") -> list[Path]:
    """Write each member of ensemble ``model`` back as the run folder it records.

    An ensemble file keeps its members' weights and provenance but not their run folders, which
    live on the machine that trained them. Each member's recorded folder (relative to ``root``)
    gets ``best.safetensors`` (its weights, epoch and held-out Dice), ``config.yaml`` (the run
    config ``config`` of the same recipe with the member's ``name`` and fold; it must hold out
    exactly the images the member recorded) and ``summary.json``, which marks the run finished
    so that ``train --all-folds`` reuses it instead of training it again.
    :func:`build_ensemble` then treats them like any run, so new folds can join a bundled
    ensemble. Each member keeps the training time and teachers its record names; files written
    before members recorded their time give each an equal share of the total. Existing folders
    are refused, never overwritten.

    Returns:
        The run folders written, in member order.
    """
    net, ens = load_model(resolve_model_path(model))
    if ens.name != "ensemble":
        raise ConfigError(f"'{model}' is a '{ens.name}' model, not an ensemble")
    members = ens.info.get("members") or []
    cache: LoadCache = {}
    cfgs = [_member_config(config, m, cache) for m in members]
    runs = [Path(root) / m["run"] for m in members]
    for run in runs:
        if run.exists():
            raise ConfigError(f"'{run}' exists already; move it away to unpack the ensemble")
    for member, m, cfg, run in zip(net.members, members, cfgs, runs):
        run.mkdir(parents=True)
        spec = _member_spec(ens, m)
        seconds = spec.info["train_seconds"]
        save_model(run / "best.safetensors", member.eval(), spec)
        write_text_atomic(run / "config.yaml", dump_config(cfg))
        write_summary(run, {"run_dir": str(run), "best_epoch": m.get("epoch"),
                            "best_score": m.get("val_dice"), "monitor": "dice",
                            "validation": m.get("validation"), "unpacked_from": str(model),
                            "train_seconds": seconds})
    return runs

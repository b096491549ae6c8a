"""Knowledge distillation: train a network on its teachers' probabilities as well as the labels.

Reference: none of the seed methods distils; this follows Hinton, Vinyals and Dean, "Distilling
the knowledge in a neural network" (2015, arXiv:1503.02531), where the soft targets of an
ensemble train one network. Here the teachers are finished training runs (in
an archived DRIVE experiment: the two k-fold members of the student's own fold) and each
training image gets the target ``(1 - w)·label + w·mean_t p_t``, ``p_t`` with the teachers' flip
TTA, so the student learns the averaged teachers' soft vessel edges in one network.

Honesty: a teacher that had trained on one of the student's validation images would leak that
label into the student's checkpoint and threshold choice, so a teacher is refused when any
validation image of the student is among its training images (same dataset, root and image id,
from the teacher's saved config), or when it was fine-tuned from another model (whose training
images cannot be checked). Teachers are pinned to absolute run folders when a run starts, so a
resumed run learns from the same teachers even if newer runs appeared since.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from retinaseg.errors import ConfigError
from retinaseg.inference import predict_probability
from retinaseg.training.config import RunConfig
from retinaseg.training.data import Item, LoadCache, load_train_val
from retinaseg.training.runs import Member, load_member, resolve_run, run_finished


def teacher_runs(cfg: RunConfig) -> list[Path]:
    """The teachers' run folders: ``{fold}`` filled in; a folder of runs gives its newest run.

    A teacher must have finished training (``summary.json``, see
    :func:`~retinaseg.training.runs.run_finished`).
    """
    runs = []
    for ref in cfg.distill.teachers:
        path = resolve_run(ref.replace("{fold}", str(cfg.data.fold)))
        if not run_finished(path):
            raise ConfigError(f"invalid config key 'distill.teachers': '{path}' is not a "
                              "finished training run (nor a folder whose newest run finished): "
                              "it needs best.safetensors and summary.json")
        runs.append(path)
    return runs


def pin_teachers(cfg: RunConfig) -> None:
    """Replace ``cfg.distill.teachers`` by the absolute run folders they name now."""
    cfg.distill.teachers = [str(p.resolve()) for p in teacher_runs(cfg)]


def _check_teacher(t: Member, cfg: RunConfig, val: list[Item], cache: LoadCache) -> None:
    """Same preprocessing and heads; none of the student's ``val`` images among ``t``'s
    training images; no ``model.init`` behind ``t``."""
    if t.cfg.data.preprocess != cfg.data.preprocess:
        raise ConfigError(f"teacher '{t.run}' used other preprocessing than this run")
    if (t.cfg.model.heads or []) != (cfg.model.heads or []):
        raise ConfigError(f"teacher '{t.run}' has other output heads than this run")
    if t.cfg.model.init:
        raise ConfigError(f"teacher '{t.run}' was fine-tuned from '{t.cfg.model.init}', whose "
                          "training images cannot be checked against this run's validation "
                          "images; use teachers trained from scratch")
    trained, _, _ = load_train_val(t.cfg.data, t.cfg.seed, t.cfg.model.heads, cache)
    keys = {it.key for it in trained}
    seen = [it.id for it in val if it.key in keys]
    if seen:
        raise ConfigError(f"teacher '{t.run}' trained on this run's validation images "
                          f"({', '.join(seen[:4])}); its knowledge would leak into the choice of "
                          "checkpoint and threshold")


def teacher_probability(teachers: list[Member], item: Item,
                        tta: Literal["none", "hflip", "flips"],
                        device: str | torch.device = "cpu") -> np.ndarray:
    """Mean of the teachers' probabilities ``[H,W]`` float32 in [0,1] on one training item."""
    probs = [predict_probability(t.net, item.image, device, tta=tta, channel=item.head)
             for t in teachers]
    return np.mean(probs, axis=0).astype(np.float32)


def attach_targets(cfg: RunConfig, train: list[Item], val: list[Item],
                   device: str | torch.device = "cpu",
                   cache: LoadCache | None = None) -> tuple[list[str], float]:
    """Give each training item its soft ``target`` from ``cfg.distill``.

    Returns the teachers' run folders and the seconds spent on their targets (``[]`` and 0
    without teachers, or with ``weight`` 0, where the labels are used as they are). ``cache``
    (see :func:`~retinaseg.training.data.load_items`): the one the student's own items were
    read with, so the teachers' checks do not read the data again.
    """
    if not cfg.distill.teachers or cfg.distill.weight == 0:
        return [], 0.0
    start = time.time()
    cache = {} if cache is None else cache
    teachers = [load_member(r, cache) for r in teacher_runs(cfg)]
    for t in teachers:
        _check_teacher(t, cfg, val, cache)
        t.net.to(device)
    w = cfg.distill.weight
    for it in tqdm(train, desc="teacher targets", leave=False):
        soft = teacher_probability(teachers, it, cfg.distill.tta, device)
        it.target = ((1 - w) * it.label + w * soft).astype(np.float32)
    return [str(t.run) for t in teachers], time.time() - start

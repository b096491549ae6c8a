"""Knowledge distillation: train a network on its teachers' probabilities as well as the labels.

Reference: none of the seed methods distils; this follows Hinton, Vinyals and Dean, "Distilling
the knowledge in a neural network" (2015, arXiv:1503.02531), where the soft targets of an
ensemble train one network. Here the teachers are finished training runs (for the default
fundus model: the members of the same cross-validation fold, ``configs/drive_unet_kfold_kd.yaml``)
and each training image gets the target ``(1 - w)·label + w·mean_t p_t`` with the teachers' flip
TTA, so the student learns the averaged ensemble's soft vessel edges in one network.

Honesty: a teacher that had trained on one of the student's validation images would leak that
label into the student's checkpoint and threshold choice, so every teacher must hold out every
validation image of the student (checked against the teacher's saved config).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from retinaseg.errors import ConfigError
from retinaseg.training.config import RunConfig
from retinaseg.training.data import Item, LoadCache
from retinaseg.training.ensemble import Member, load_member, newest_run, run_finished


def teacher_runs(cfg: RunConfig) -> list[Path]:
    """The teachers' run folders: ``{fold}`` filled in; a folder of runs gives its newest run.

    A teacher must have finished training (see :func:`~retinaseg.training.ensemble.run_finished`).
    """
    runs = []
    for ref in cfg.distill.teachers:
        path = Path(ref.replace("{fold}", str(cfg.data.fold)))
        if not (path / "config.yaml").is_file():
            path = newest_run(path)[0] or path
        if not run_finished(path):
            raise ConfigError(f"teacher '{path}' is not a finished training run (nor a folder "
                              "whose newest run finished): it needs best.safetensors and "
                              "summary.json")
        runs.append(path)
    return runs


def _check_teacher(t: Member, cfg: RunConfig, val: list[Item]) -> None:
    """Same preprocessing and heads; ``t`` held out every one of the student's ``val`` images."""
    if t.cfg.data.preprocess != cfg.data.preprocess:
        raise ConfigError(f"teacher '{t.run}' used other preprocessing than this run")
    if (t.cfg.model.heads or []) != (cfg.model.heads or []):
        raise ConfigError(f"teacher '{t.run}' has other output heads than this run")
    held_out = {(it.source, it.id) for it in t.val}
    seen = [it.id for it in val if (it.source, it.id) not in held_out]
    if seen:
        raise ConfigError(f"teacher '{t.run}' trained on this run's validation images "
                          f"({', '.join(seen[:4])}); its knowledge would leak into the choice of "
                          "checkpoint and threshold")


def teacher_probability(teachers: list[Member], item: Item, tta: str) -> np.ndarray:
    """Mean of the teachers' probabilities ``[H,W]`` float32 on one training item."""
    from retinaseg.inference import predict_probability

    probs = [predict_probability(t.net, item.image, tta=tta, channel=item.head)
             for t in teachers]
    return np.mean(probs, axis=0).astype(np.float32)


def attach_targets(cfg: RunConfig, train: list[Item], val: list[Item],
                   cache: LoadCache | None = None) -> list[str]:
    """Give each training item its soft ``target`` from ``cfg.distill``; returns the teachers'
    run folders (nothing to do, and ``[]``, without teachers)."""
    if not cfg.distill.teachers:
        return []
    teachers = [load_member(r, cache) for r in teacher_runs(cfg)]
    for t in teachers:
        _check_teacher(t, cfg, val)
    w = cfg.distill.weight
    for it in tqdm(train, desc="teacher targets", leave=False):
        soft = teacher_probability(teachers, it, cfg.distill.tta)
        it.target = ((1 - w) * it.label + w * soft).astype(np.float32)
    return [str(t.run) for t in teachers]

"""Run folders: the checks made before one is created, the single writer of ``summary.json``,
and loading the finished runs that k-fold ensembles and knowledge distillation build on.

A run folder ``runs/<name>/<stamp>/`` holds ``config.yaml`` (the resolved config), ``last.pt``
(resume state), ``best.safetensors`` (the model chosen on validation), ``metrics.csv``, curves
and ``summary.json``, whose presence marks the run finished.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from retinaseg.errors import ConfigError, ModelLoadError
from retinaseg.models.persistence import ModelSpec, load_model, read_spec, resolve_model_path
from retinaseg.training.config import RunConfig, load_config
from retinaseg.training.data import Item, LoadCache, load_train_val
from retinaseg.utils.atomic import write_text_atomic


def check_paths(cfg: RunConfig) -> None:
    """Fail early when a configured dataset root is not a folder; the error names the key.

    Called before a run folder is created, so a typo in ``data.root`` costs nothing. A root left
    out is not checked here (the dataset says whether it needs one). The teachers of
    ``distill`` are checked by :func:`retinaseg.training.distill.teacher_runs`.
    """
    if cfg.model.init:
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


@dataclass
class Member:
    """One trained run: its network, spec, config and validation items."""

    run: Path
    net: nn.Module
    spec: ModelSpec
    cfg: RunConfig
    val: list[Item]
    val_source: str


def load_member(run: str | Path, cache: LoadCache | None = None) -> Member:
    """A run's best model, config and validation items (``cache``: see ``load_train_val``)."""
    run = Path(run)
    cfg_path = run / "config.yaml"
    if not run.is_dir() or not cfg_path.is_file():
        raise ConfigError(f"'{run}' is not a training run folder (it needs config.yaml and "
                          "best.safetensors)")
    net, spec = load_model(resolve_model_path(run))
    cfg = load_config(cfg_path)
    _, val, where = load_train_val(cfg.data, cfg.seed, cfg.model.heads, cache)
    return Member(run, net, spec, cfg, val, where)


def load_members(runs: Sequence[str | Path]) -> list[Member]:
    """:func:`load_member` for each run, reading the shared training data only once."""
    cache: LoadCache = {}
    return [load_member(r, cache) for r in runs]


def ensemble_members(model: str | Path, root: str | Path = ".") -> list[Member]:
    """The member runs recorded in an ensemble model file (paths relative to ``root``)."""
    spec = read_spec(resolve_model_path(model))
    if spec.name != "ensemble":
        raise ConfigError(f"'{model}' is a '{spec.name}' model, not an ensemble")
    return load_members([Path(root) / m["run"] for m in spec.info["members"]])


def run_finished(run: Path) -> bool:
    """A run folder whose training finished (``summary.json``, also written by
    :func:`~retinaseg.training.ensemble.unpack_ensemble`) and that holds its model."""
    return (run / "summary.json").is_file() and (run / "best.safetensors").is_file()


def newest_run(base: Path) -> tuple[Path | None, bool]:
    """The newest run folder under ``base`` and whether it finished (:func:`run_finished`)."""
    runs = sorted(p for p in base.glob("*") if (p / "config.yaml").is_file()) \
        if base.is_dir() else []
    if not runs:
        return None, False
    return runs[-1], run_finished(runs[-1])


def resolve_run(path: str | Path) -> Path:
    """``path`` itself when it is a run folder (has ``config.yaml``), else the newest run in
    it (``path`` unchanged when it holds none)."""
    path = Path(path)
    if (path / "config.yaml").is_file():
        return path
    return newest_run(path)[0] or path


def write_summary(run: Path, summary: dict[str, Any]) -> Path:
    """Write ``run/summary.json`` atomically: the one place a run is marked finished."""
    path = run / "summary.json"
    write_text_atomic(path, json.dumps(summary, indent=2))
    return path

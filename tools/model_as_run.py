"""Maintainer tool: write a single trained model file back as a training run folder.

Reference: the seed ensemble of ``configs/fundus_drive_chase.yaml`` (issue 26). A bundled model
keeps its weights and provenance, not its run folder; ``retinaseg ensemble`` needs run folders
(it reloads each member's held-out images from ``config.yaml``). This writes ``best.safetensors``
(the model, unchanged), ``config.yaml`` (``--config`` with ``--set`` overrides, checked to hold
out exactly the images the model's record names) and ``summary.json`` (the run is finished).

Usage::

    PYTHONPATH=src .venv/bin/python tools/model_as_run.py fundus-vessels \\
        --config configs/fundus_drive_chase.yaml --out runs/fundus_drive_chase_s0/bundled
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from retinaseg.errors import ConfigError
from retinaseg.models.persistence import read_spec, resolve_model_path
from retinaseg.training.config import dump_config, load_config
from retinaseg.training.data import load_train_val
from retinaseg.training.runs import write_summary
from retinaseg.utils.atomic import write_text_atomic


def model_as_run(model: str, config: Path, out: Path, overrides: list[str]) -> Path:
    """Write ``model`` as the finished run folder ``out`` of ``config``; returns ``out``."""
    path = resolve_model_path(model)
    spec = read_spec(path)
    if spec.name == "ensemble":
        raise ConfigError(f"'{model}' is an ensemble; use tools/unpack_ensemble.py")
    cfg = load_config(config, overrides)
    _, _, where = load_train_val(cfg.data, cfg.seed, cfg.model.heads)
    recorded = str(spec.info.get("threshold_source", ""))
    if where not in recorded:
        raise ConfigError(f"the config holds out {where!r}, but the model records "
                          f"{recorded!r}; give the model's own recipe")
    if out.exists():
        raise ConfigError(f"'{out}' exists already; move it away")
    out.mkdir(parents=True)
    shutil.copyfile(path, out / "best.safetensors")
    write_text_atomic(out / "config.yaml", dump_config(cfg))
    write_summary(out, {"run_dir": str(out), "best_epoch": spec.info.get("epoch"),
                        "best_score": spec.info.get("val", {}).get("val_dice"),
                        "monitor": "dice", "validation": where, "copied_from": str(path),
                        "train_seconds": spec.info.get("train_seconds")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a single model: bundled name or .safetensors file")
    ap.add_argument("--config", type=Path, required=True, help="the model's recipe (YAML)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, required=True, help="the run folder to write")
    a = ap.parse_args()
    try:
        print(f"wrote {model_as_run(a.model, a.config, a.out, a.set)}")
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()

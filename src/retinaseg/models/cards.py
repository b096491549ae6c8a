"""Bundling a trained model with the package, and its model card.

A bundled model is ``retinaseg/weights/<name>.safetensors`` plus ``<name>.md``, the model card:
architecture, preprocessing, training data and terms, threshold, measured scores, training time,
date and the SHA-256 of the weights file (so a copy passed around can be checked).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

from retinaseg.models.persistence import read_spec
from retinaseg.utils.atomic import atomic_path, write_text_atomic

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _heads_row(heads: list[dict[str, Any]]) -> str:
    """A card row naming each output head and the datasets whose labels trained it."""
    if not heads:
        return ""
    parts = [f"`{h['name']}` (channel {i}, trained on {', '.join(h.get('trained_on', []))})"
             for i, h in enumerate(heads)]
    return ("\n| output heads | " + "; ".join(parts) + "; the first is the default, "
            "`--head NAME` picks another |")


def _tta(info: dict[str, Any]) -> str:
    """The default flip TTA, and how to change it."""
    mode = info.get("tta", "none")
    if mode == "none":
        return "one pass by default (`--tta hflip` adds a flipped pass)"
    return f"flip TTA `{mode}` by default (`--tta none` turns it off)"


def _checkpoint(info: dict[str, Any]) -> str:
    """Which checkpoint(s): the epoch, or one per member of an ensemble."""
    members = info.get("members")
    if members:
        epochs = ", ".join(str(m.get("epoch")) for m in members)
        return (f"one per member, each chosen by Dice on the fold it held out: epochs "
                f"{epochs}")
    return f"epoch {info.get('epoch')} chosen by validation Dice"


def _extent(modality: str) -> str:
    """What the network sees: fundus photographs run on the box of their field of view."""
    if modality == "fundus":
        return ("whole field of view (the box of the non-dark pixels; `--no-crop-fov` runs the "
                "whole image)")
    return "whole image"


def _restoration(steps: Any) -> str:
    """A card row naming the adaptive restorations among the preprocessing steps, if any."""
    from retinaseg.preprocessing.pipeline import ADAPTIVE_STEPS, normalise_steps

    found = [f"`{n}` ({', '.join(f'{k} {v}' for k, v in p.items())})"
             for n, p in normalise_steps(steps) if n in ADAPTIVE_STEPS]
    if not found:
        return ""
    return ("\n| restoration | " + "; ".join(found) + ": adaptive steps "
            "(`retinaseg.preprocessing.restore`) that change only images far noisier or blurrier "
            "than clean photographs and maps (none of the DRIVE, OCTA-500 or ROSSA images), with "
            "parameters chosen on validation data (`tools/choose_restore.py`) |")


def _threads(n: object) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def card_summary(name: str) -> str:
    """The one-line summary of bundled model ``name``: the card's ``> `` line under its title
    ('' when the card or the line is missing)."""
    card = WEIGHTS_DIR / f"{name}.md"
    if not card.is_file():
        return ""
    for line in card.read_text(encoding="utf-8").splitlines()[1:6]:
        if line.startswith("> "):
            return line[2:].strip()
    return ""


def bundled_models() -> list[tuple[str, str]]:
    """(name, one-line summary) of every model bundled in ``retinaseg/weights``, by name."""
    return [(p.stem, card_summary(p.stem)) for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))]


def card_text(name: str, weights: Path, data: str, scores_md: str, notes: str = "",
              summary: str | None = None) -> str:
    """The markdown model card of a bundled model (``summary``: its one-line summary; None
    keeps the one of the card already there)."""
    summary = card_summary(name) if summary is None else summary
    spec = read_spec(weights)
    info: dict[str, Any] = spec.info
    steps = json.dumps(spec.preprocess)
    threshold = f"{spec.threshold:.3f} ({info.get('threshold_source', 'stored')})"
    if spec.heads:
        threshold = "per head, chosen on validation data: " + "; ".join(
            f"`{h['name']}` {h['threshold']:.3f}" for h in spec.heads)
    return f"""# Model card: {name}

> {summary}

| field | value |
|---|---|
| file | `retinaseg/weights/{weights.name}` ({weights.stat().st_size / 1e6:.1f} MB, safetensors) |
| sha256 | `{sha256(weights)}` |
| date | {date.today().isoformat()} |
| architecture | `{spec.name}` {json.dumps(spec.params)}, {spec.in_channels} input channel(s) |
| preprocessing | `{steps}` |{_restoration(spec.preprocess)}
| modality | {spec.modality} |
| threshold | {threshold} |{_heads_row(spec.heads)}
| inference | {_extent(spec.modality)}; {_tta(info)}; bfloat16 on CPUs with native bfloat16, else \
float32; the bfloat16 network TorchScript-frozen on CPU (`--no-jit` turns it off) |
| checkpoint | {_checkpoint(info)} |
| training time | {info.get("train_seconds", float("nan")) / 60:.1f} min on {info.get("device")} \
({_threads(info.get("threads"))}, {info.get("train_precision", "fp32")}) |

## Training data and terms
{data}

## Scores
{scores_md}

{notes}
"""


def bundle(run_or_file: str | Path, name: str, data: str, scores_md: str,
           notes: str = "") -> Path:
    """Copy a trained model into the package as ``<name>.safetensors`` and write its card."""
    from retinaseg.models.persistence import resolve_model_path

    src = resolve_model_path(run_or_file)
    dst = WEIGHTS_DIR / f"{name}.safetensors"
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    write_text_atomic(WEIGHTS_DIR / f"{name}.md", card_text(name, dst, data, scores_md, notes))
    return dst

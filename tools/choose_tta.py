"""Maintainer tool: choose the bundled models' flip TTA (validation accuracy against time).

The default models' TTA mode is chosen here, on validation data only:

- fundus: the DRIVE training images that the recipe's seed holds out (never DRIVE test);
- OCTA: OCTA-500 val (6M and 3M) and ROSSA val, each with its own head when the model has heads.

For each mode (``none``, ``hflip``, ``flips``) the threshold is chosen on those same images for
that mode (so every mode gets the same, optimistic, treatment) and the per-image-mean Dice and
AUC are reported, with the inference time of one image (whole image, preprocessing included,
median of 21 runs, default threads, fresh process) in float32 and in the default precision.
Timing is the median over 3 fresh processes (each the median of 21 runs): on this shared
2-core machine one such measurement moved by up to ±50 % from minute to minute.

The mode chosen is the cheapest one whose mean validation Dice is within 0.002 of the best mode
that meets the issue's time target in the default precision (fundus 584×565 ≤ 0.15 s, OCTA 400²
≤ 0.05 s): differences below that are within the noise of these validation sets (4 DRIVE
images), and each extra pass costs a full network evaluation.

Usage::

    PYTHONPATH=src .venv/bin/python tools/choose_tta.py \
        --fundus MODEL --fundus-config configs/X.yaml --octa MODEL --octa-config configs/Y.yaml

Without arguments the bundled models and their recipes' configs are used. Writes the ``tta``
section of ``benchmarks/RESULTS.md``; ``tools/bundle.py --fundus-tta/--octa-tta`` then stamps
the chosen mode into a bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # common

import numpy as np
import torch
from common import REPO, RESULTS, md_table, speed, write_section

from retinaseg.errors import ConfigError
from retinaseg.evaluation.metrics import choose_threshold, image_metrics, summarise
from retinaseg.inference.segmenter import Segmenter
from retinaseg.training.config import load_config
from retinaseg.training.data import load_train_val

MODES = ["none", "hflip", "flips"]
TARGET_S = {"fundus": 0.15, "octa": 0.05}
TOLERANCE = 0.002  # validation Dice differences below this do not buy an extra pass
PROCESSES = 3
INPUTS = {"fundus": "584×565 colour fundus", "octa": "400×400 OCTA"}


def _val_scores(seg: Segmenter, items: list, mode: str) -> dict[str, dict[str, float]]:
    """Per-source per-image-mean Dice (threshold chosen here for this mode) and AUC."""
    from retinaseg.inference.predictor import predict_probability

    probs = [predict_probability(seg.net, it.image, tta=mode, precision=seg.precision,
                                 channel=it.head) for it in items]
    return _scores(probs, items)


def _oof_scores(members: list, mode: str, flips: list[str] | None = None
                ) -> tuple[dict[str, dict[str, float]], list]:
    """As :func:`_val_scores` for an ensemble: each member on the fold it held out, in its
    own view (``flips``: the ensemble's ``member_flips``)."""
    from retinaseg.training.ensemble import out_of_fold

    probs, items = out_of_fold(members, tta=mode, progress=False, member_flips=flips)
    return _scores(probs, items), items


def _scores(all_probs: list, items: list) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for src in sorted({it.source for it in items}):
        sel = [k for k, it in enumerate(items) if it.source == src]
        its = [items[k] for k in sel]
        probs = [all_probs[k] for k in sel]
        thr = float(choose_threshold(probs, [it.label for it in its], [it.fov for it in its],
                                     metric="dice"))
        m = summarise([image_metrics(p, it.label, thr, it.fov) for p, it in zip(probs, its)])[0]
        out[src] = {"dice": m["dice"], "auc": m["auc"], "threshold": thr}
    return out


def _split_name(source: str, items: list) -> str:
    size = {it.image.shape[-1] for it in items if it.source == source}
    name = source.split(":", 1)[1]
    if name.startswith("octa500"):
        return f"OCTA-500 val {'6M' if 400 in size else '3M'}"
    return {"rossa": "ROSSA val", "drive": "DRIVE held-out training images"}.get(name, name)


def _by_size(items: list) -> list:
    """OCTA-500 val mixes 3M (304²) and 6M (400²): give each its own source label."""
    for it in items:
        if it.source.endswith("octa500"):
            it.source = f"{it.source}-{it.image.shape[-1]}"
    return items


def _time(model: str, kind: str, mode: str, precision: str) -> tuple[float, str]:
    """Median seconds per image in a fresh process, as ``benchmarks/speed/inference.py``
    measures."""
    shape = "584x565x3" if kind == "fundus" else "400x400"
    runs = [speed(model, shape, precision=precision, tta=mode) for _ in range(PROCESSES)]
    return float(np.median([r["median_s"] for r in runs])), str(runs[0]["precision"])


def run(kind: str, model: str, config: str, members: list | None = None) -> dict:
    """Every TTA mode of ``model``: validation scores and timing, and the mode chosen.

    An ensemble's members (``members``, from :func:`_ensemble_members`) together saw every
    training image, so it is scored out of fold: each member on the fold it held out (the
    accuracy of one member under each mode); the timing is the whole ensemble's.
    """
    if members is None:
        cfg = load_config(REPO / config)
        _, val, _ = load_train_val(cfg.data, cfg.seed, cfg.model.heads)
        val = _by_size(val)
    res: dict = {"model": model, "config": config, "modes": {},
                 "out_of_fold": members is not None,
                 "members": [str(m.run) for m in members or []]}
    for mode in MODES:
        if members is None:
            scores = _val_scores(Segmenter(model, tta=mode), val, mode)
        else:
            from retinaseg.models.persistence import read_spec, resolve_model_path

            flips = read_spec(resolve_model_path(model)).params.get("member_flips")
            scores, val = _oof_scores(members, mode, flips)
        default_s, precision = _time(model, kind, mode, "auto")
        res["modes"][mode] = {"val": {_split_name(s, val): v for s, v in scores.items()},
                              "seconds_default": default_s,
                              "seconds_fp32": _time(model, kind, mode, "fp32")[0],
                              "precision": precision}
    res["chosen"] = choose_mode(res["modes"], TARGET_S[kind])
    return res


def _ensemble_members(model: str) -> list | None:
    """The loaded member runs of a k-fold ensemble ``model``; None for any other model
    (a single model, or a seed ensemble whose members all held out the same images).

    Raises ``ConfigError`` when a member run folder is not on this machine.
    """
    from retinaseg.models.persistence import read_spec, resolve_model_path
    from retinaseg.training.runs import ensemble_members

    spec = read_spec(resolve_model_path(model))
    if spec.name != "ensemble" or spec.info.get("validation_mode") == "shared":
        return None  # a seed ensemble: no member saw the validation images; score it whole
    return ensemble_members(model, REPO)


def choose_mode(modes: dict[str, dict], target_s: float) -> str:
    """The cheapest mode (``MODES`` order) within ``TOLERANCE`` of the best one in time."""
    def dice(m: str) -> float:
        return float(np.mean([v["dice"] for v in modes[m]["val"].values()]))

    ok = [m for m in MODES if modes[m]["seconds_default"] <= target_s]
    if not ok:
        return "none"
    best = max(dice(m) for m in ok)
    return next(m for m in ok if dice(m) >= best - TOLERANCE)


def report(results: dict[str, dict]) -> str:
    parts = []
    for kind, r in results.items():
        splits = list(r["modes"]["none"]["val"])
        rows = []
        for mode, m in r["modes"].items():
            rows.append([mode, *[m["val"][s]["dice"] for s in splits],
                         *[m["val"][s]["auc"] for s in splits],
                         f"{m['seconds_default']:.4f} ({m['precision']})",
                         f"{m['seconds_fp32']:.4f}"])
        header = ["TTA", *[f"{s} Dice" for s in splits], *[f"{s} AUC" for s in splits],
                  "s / image, default precision", "s / image, fp32"]
        where = (f"out of fold: each of the {len(r['members'])} members on the images it held "
                 "out" if r.get("out_of_fold") else f"validation images of `{r['config']}`")
        parts.append(f"**{kind}** (`{r['model']}`, {where}; "
                     f"timing input: {INPUTS[kind]}; target ≤ {TARGET_S[kind]} s). Chosen: "
                     f"**{r['chosen']}**.\n\n" + md_table(header, rows))
    return ("Validation only: Dice at a threshold chosen on the same images for each mode "
            "(optimistic, equally for every mode), per-image means. Timing: whole image with "
            "preprocessing, default threads, the median over 3 fresh processes of the median of "
            "21 runs (one such figure moved by up to ±50 % on this shared machine). Chosen: the "
            "cheapest mode within 0.002 mean validation Dice of the best mode that meets the "
            "time target in the default precision.\n\n" + "\n\n".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fundus", default="fundus-vessels")
    ap.add_argument("--fundus-config", default="configs/fundus_vessels.yaml")
    ap.add_argument("--octa", default="octa-vessels")
    ap.add_argument("--octa-config", default="configs/octa_vessels/stage6.yaml")
    ap.add_argument("--kinds", default="fundus,octa",
                    help="which models to measure again; the others keep their last result")
    a = ap.parse_args()
    torch.manual_seed(0)
    cache = RESULTS / "tta.json"
    before = json.loads(cache.read_text()) if cache.is_file() else {}
    results = {}
    kinds = {k.strip() for k in a.kinds.split(",")}
    for kind, model, config in (("fundus", a.fundus, a.fundus_config),
                                ("octa", a.octa, a.octa_config)):
        if kind not in kinds and kind in before:
            results[kind] = before[kind]
            continue
        try:
            members = _ensemble_members(model)
        except ConfigError as err:  # an ensemble whose member runs are not on this machine
            if kind not in before:
                raise SystemExit(f"{model}: {err}; train its members first (see the "
                                 "recipe's header)") from None
            print(f"[keep] {kind}: {err}; keeping the previous result")
            results[kind] = before[kind]
            continue
        results[kind] = run(kind, model, config, members)
    cache.write_text(json.dumps(results, indent=2, default=float))
    body = report(results)
    write_section("tta", "Flip TTA and precision: validation accuracy against time", body)
    print(body)


if __name__ == "__main__":
    main()

"""Maintainer tool: apply the replacement rule of ``configs/fundus_drive_chase.yaml`` (issue 26).

The rule, written in the recipe's header before any candidate was trained: replace the bundled
``fundus-vessels`` only if the mean of the per-dataset validation Dice (DRIVE-val, CHASE-val),
measured for both models on the same held-out images, improves. DRIVE test is never read here.

- DRIVE-val: the DRIVE training images the recipe holds out (seed 0, val_fraction 0.2). Today's
  ensemble has seen them through four of its five members, so it is scored there by its fold-0
  member (``--today-member``: a run folder written by ``tools/unpack_ensemble.py``), which never
  saw them (the ``seen`` column checks it from the model files).
- CHASE-val: the recipe's held-out CHASE_DB1 images of subjects 01-10. Today's model never saw
  CHASE_DB1, so the whole ensemble is scored there (and its fold-0 member, for reference).

Each model runs with its default inference options (``Segmenter``: a model storing a FOV
diameter gets each photograph rescaled to it), at its own threshold, inside the FOV; Dice is the
per-image mean of each dataset. Writes the ``fundus_choice`` section.

Usage::

    PYTHONPATH=src .venv/bin/python tools/choose_fundus.py [--candidate RUN] \\
        [--today-member UNPACKED_FOLD0_RUN]
    # the seed-ensemble rule: today's single model is scored whole, plus the speed target
    PYTHONPATH=src .venv/bin/python tools/choose_fundus.py \\
        --candidate runs/fundus_seeds3.safetensors --today fundus-vessels \\
        --section fundus_choice_seeds --title "..." --target-s 0.15
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # common
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy"))

from common import REPO, SHARED_DATA, md_table, publish, speed
from cross_dataset import CHASE_CONFIG, Case, _ids, chase_case, score

from retinaseg.training.config import load_config
from retinaseg.training.data import carve_validation
from retinaseg.training.ensemble import unpack_ensemble


def drive_val_case(root: Path) -> Case:
    """The DRIVE training images that :data:`CHASE_CONFIG` holds out for validation."""
    cfg = load_config(CHASE_CONFIG)
    src = next(s for s in cfg.data.sources() if s.dataset == "drive")
    _, held = carve_validation(_ids("drive", root, src.train_split), cfg.data.val_fraction,
                               cfg.seed, cfg.data.folds, cfg.data.fold)
    return Case("drive_val", f"DRIVE held-out val images ({len(held)}: {', '.join(held)})",
                "drive", root, src.train_split, held)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", default=None,
                    help="the candidate run folder or file (default: the newest run of the "
                         "recipe in runs/fundus_drive_chase/)")
    ap.add_argument("--today", default="fundus-vessels-drive",
                    help="the model to replace (bundled name or file)")
    ap.add_argument("--today-member", default=None,
                    help="where today's model saw DRIVE-val (the DRIVE-only ensemble): its "
                         "fold-0 member (unpacked run folder; default: unpacked from the "
                         "bundled ensemble into a temporary folder)")
    ap.add_argument("--drive-root", type=Path, default=SHARED_DATA / "DRIVE")
    ap.add_argument("--chase-root", type=Path, default=SHARED_DATA / "CHASE_DB1")
    ap.add_argument("--section", default="fundus_choice",
                    help="the RESULTS section written (fundus_choice: the first replacement)")
    ap.add_argument("--title", default="Replacing fundus-vessels: the validation rule")
    ap.add_argument("--target-s", type=float, default=None,
                    help="also require the candidate to run a 584x565 photograph in at most "
                         "this many seconds on this CPU (the seed-ensemble rule: 0.15)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a.candidate = a.candidate or newest_run()
        a.tmp = Path(tmp)
        choose(a)


def newest_run() -> str:
    runs = sorted((REPO / "runs" / "fundus_drive_chase").glob("*/best.safetensors"))
    if not runs:
        raise SystemExit("no run of configs/fundus_drive_chase.yaml in runs/; give --candidate")
    return str(runs[-1].parent)


def fold0_member(model: str, tmp: Path) -> str:
    """Unpack ``model`` (an ensemble) into ``tmp`` and return its fold-0 member's run folder."""
    from retinaseg.models.persistence import load_model, read_spec, resolve_model_path, save_model

    runs = unpack_ensemble(model, REPO / "configs" / "fundus_vessels.yaml", tmp)
    run = next(r for r in runs if r.parent.name.endswith("_f0"))
    fov = read_spec(resolve_model_path(model)).info.get("fov_diameter")
    if fov:  # the bundle's FOV diameter (stamped at bundling), so the member rescales the same
        net, spec = load_model(run / "best.safetensors")
        spec.info["fov_diameter"] = fov
        save_model(run / "best.safetensors", net, spec)
    return str(run)


def _row(role: str, model: str, case: Case, r: dict) -> list[object]:
    seen = "?" if r["seen"] is None else str(r["seen"])
    return [role, str(model), case.label, r["n"], r["mean"]["dice"], r["mean"]["auc"],
            r["mean"]["cldice"], f"{r['threshold']:.3f}", f"{r['scale']:.2f}", seen]


def choose(a: argparse.Namespace) -> None:
    """Score the candidate and today's model and publish the decision.

    Today's model is scored whole on both datasets when it never trained on DRIVE-val (its
    record says so); otherwise (the DRIVE-only ensemble) DRIVE-val goes to its fold-0 member.
    """
    drive = drive_val_case(a.drive_root)
    chase = chase_case(None if a.chase_root == SHARED_DATA / "CHASE_DB1" else a.chase_root)
    if chase is None or chase.split == "test":
        raise SystemExit("CHASE-val needs the CHASE_DB1 train subjects (01-10)")
    rows, raw, dice = [], {}, {}

    def run(role: str, model: str, case: Case, r: dict | None = None) -> dict:
        r = r or score(model, case)
        if r["seen"]:
            raise SystemExit(f"{model} trained on {r['seen']} of the {case.key} images")
        dice[(role, case.key)] = r["mean"]["dice"]
        raw[f"{role} | {case.key}"] = {"model": str(model), **r}
        rows.append(_row(role, model, case, r))
        return r

    run("candidate", a.candidate, drive)
    run("candidate", a.candidate, chase)
    whole = f"today: {a.today}"
    today_drive = score(a.today, drive)
    if today_drive["seen"] == 0:  # e.g. a single model of this recipe
        run(whole, a.today, drive, today_drive)
        run(whole, a.today, chase)
        today = (dice[(whole, "drive_val")] + dice[(whole, "chase")]) / 2
        how, member = "whole on both datasets (it never trained on either)", None
    else:
        fold0 = a.today_member or fold0_member(a.today, a.tmp)
        run("today: fold-0 member", fold0, drive)
        run("today: fold-0 member", fold0, chase)
        run(whole, a.today, chase)
        today = (dice[("today: fold-0 member", "drive_val")] + dice[(whole, "chase")]) / 2
        member = (dice[("today: fold-0 member", "drive_val")]
                  + dice[("today: fold-0 member", "chase")]) / 2
        how = ("on DRIVE-val by its fold-0 member (which never saw those images; given the "
               "bundle's FOV diameter) and on CHASE-val by the whole ensemble (it never saw "
               "CHASE_DB1)")
    cand = (dice[("candidate", "drive_val")] + dice[("candidate", "chase")]) / 2
    verdict = "replace" if cand > today else "keep today's model"
    timing = ""
    if a.target_s is not None:  # rule (b): the speed target, on this CPU, default inference
        secs = {m: speed(m, "584x565x3") for m in (a.candidate, a.today)}
        fast = secs[a.candidate]["median_s"] <= a.target_s
        verdict = verdict if fast else "keep today's model"
        raw["speed"] = secs
        timing = (" Speed (584×565 uniform noise, default inference, median of 21 runs in a "
                  "fresh process, this CPU): " + "; ".join(
                      f"`{m}` {v['median_s']:.3f} s ({v['precision']}, {v['threads']} threads)"
                      for m, v in secs.items())
                  + f"; target ≤ {a.target_s} s: {'met' if fast else 'not met'}.")
    raw["decision"] = {"candidate": cand, "today": today, "today_member_only": member,
                       "verdict": verdict}
    extra = "" if member is None else f" (fold-0 member on both: {member:.4f})"
    extra += "." + timing
    body = ("The replacement rule of `configs/fundus_drive_chase.yaml` (written before training): "
            "mean of the per-dataset validation Dice (per-image means, inside the FOV, each "
            f"model's own threshold and default inference). Today's model is scored {how}. "
            "`seen`: images of the row the model trained on."
            "\n\n" + md_table(["model", "file", "data", "n", "dice", "auc", "cldice",
                               "threshold", "scale", "seen"], rows)
            + f"\n\nMean of the two validation Dice: candidate **{cand:.4f}**, today's model "
            f"**{today:.4f}**{extra} Verdict: **{verdict}**.")
    publish(a.section, a.title, body, raw)
    print(f"candidate {cand:.4f} vs today {today:.4f}: {verdict}")


if __name__ == "__main__":
    main()

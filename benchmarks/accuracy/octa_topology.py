"""What topology-aware training buys on OCTA (issue 27; reference §2.4 S3-OCTA, §3 IBP, §4 losses).

Setups, each one training run under the same CPU budget (10 min, 1 thread; two run side by
side on the 2 cores), then scored on OCTA-500 val 6M, OCTA-500 val 3M and ROSSA val:

* **from scratch** (``configs/topology/unet_scratch.yaml``, ``s3octa_scratch.yaml``): the
  octa-vessels U-Net (two heads, OCTA-500 + ROSSA) with Dice, IBP clDice (α 0.5 and 0.2,
  product deletion), skeleton recall, soft clDice; the S3-OCTA network with Dice and IBP clDice;
* **warm start** (``configs/topology/octa_vessels_finetune.yaml``): the bundled ``octa-vessels``
  continued with its own BCE + Dice (the control) or a topology loss;
* the bundled ``octa-vessels`` as it is.

Every model is scored without test-time flips (the bundle's own hflip TTA is switched off), so
the rows compare training alone. Checkpoints and thresholds are chosen on the val splits, which
also score them: these are validation figures (the test splits are held out from the project).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/octa_topology.py --only 0,1   # train+score
    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/octa_topology.py --report     # the tables

Each setup keeps its result in ``benchmarks/results/octa_topology/<slug>.json``, so two
processes may train different setups at once and a finished setup is never rerun
(``--force`` reruns it); every call joins them into the tracked
``benchmarks/results/octa_topology.json``, from which ``--report`` rebuilds the tables. Not
part of ``make bench`` (``run_all.py --training`` runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

from common import REPO, RESULTS, SHARED_DATA, md_table, write_section

from retinaseg.evaluation.evaluate import evaluate
from retinaseg.training import train
from retinaseg.utils.atomic import write_text_atomic

UNET, S3, FT = ("configs/topology/unet_scratch.yaml", "configs/topology/s3octa_scratch.yaml",
                "configs/topology/octa_vessels_finetune.yaml")
IBP = ["loss.name=ibp_cldice"]
SETUPS: dict[str, tuple[str, str | None, list[str]]] = {
    # slug: (label, config or None for the bundled model, overrides)
    "unet_dice": ("U-Net + Dice", UNET, []),
    "unet_ibp": ("U-Net + IBP clDice α 0.5", UNET, IBP),
    "unet_ibp02": ("U-Net + IBP clDice α 0.2", UNET, [*IBP, "loss.params.alpha=0.2"]),
    "unet_sr": ("U-Net + skeleton recall", UNET, ["loss.name=skeleton_recall"]),
    "unet_cldice": ("U-Net + soft clDice α 0.5", UNET, ["loss.name=dice_cldice"]),
    "s3_dice": ("S3-OCTA + Dice", S3, []),
    "s3_ibp": ("S3-OCTA + IBP clDice α 0.5", S3, IBP),
    "bundled": ("octa-vessels (bundled)", None, []),
    "ft_bcedice": ("octa-vessels → BCE + Dice (control)", FT, []),
    "ft_ibp": ("octa-vessels → IBP clDice α 0.5", FT, IBP),
    "ft_ibp02": ("octa-vessels → IBP clDice α 0.2", FT, [*IBP, "loss.params.alpha=0.2"]),
    "ft_sr": ("octa-vessels → skeleton recall", FT, ["loss.name=skeleton_recall"]),
}
SPLITS = {"OCTA-500 val 6M": ("octa500", "OCTA-500", {"fov": "6M"}),
          "OCTA-500 val 3M": ("octa500", "OCTA-500", {"fov": "3M"}),
          "ROSSA val": ("rossa", "ROSSA", {})}
COLUMNS = {"dice": "Dice", "cldice": "clDice", "betti0_error": "β0 err",
           "betti1_error": "β1 err", "betti0_error_patch": "β0 err 64²",
           "betti1_error_patch": "β1 err 64²", "components_pred": "components",
           "components_gt": "label comps", "centerline_missed_px": "missed centerline px"}
OUT = RESULTS / "octa_topology"
BUNDLED = "octa-vessels"
BASELINE = {"unet_ibp": "unet_dice", "unet_ibp02": "unet_dice", "unet_sr": "unet_dice",
            "unet_cldice": "unet_dice", "s3_ibp": "s3_dice", "ft_ibp": "ft_bcedice",
            "ft_ibp02": "ft_bcedice", "ft_sr": "ft_bcedice"}
RULE = """Bundling rule (issue 27, written before the first topology row was scored): a setup is
bundled as `octa-vessels-topo` when, against its Dice-only counterpart (same network, start and
budget: the `BASELINE` pairs of the script), the whole-image Betti-0 error averaged over the
three splits is at least 20 % lower, the Dice averaged over the three splits at most 0.005
lower, and no split loses more than 0.010 Dice; among several, the lowest Betti-0 error."""


NOTES = """Notes, read before comparing rows:
- Trained 2026-12-06 on the AMD EPYC host (2 cores, no native bf16), each setup 10 minutes on
  one thread with another setup running beside it; the time limit is checked after each epoch,
  so a run may overrun by one epoch and its validation. Epochs differ because a step's cost
  differs: IBP clDice about 1.5× a Dice step, soft clDice (10 soft-skeleton iterations) about
  1.8×, skeleton recall about 1×, the S3-OCTA `cpu` network about 35× the U-Net (one thread,
  8 × 128² patches: 5-6 s a step; its validation on the 130 val images takes about 7 minutes,
  so within the budget it trains a single epoch of 53 steps).
- Noise: the Dice-only U-Net was trained twice with the same seed; the first run shared the
  two cores with a third process and reached 8 epochs instead of 11 (Dice 0.8638 / 0.8893 /
  0.8895, Betti-0 error 74.0 / 22.7 / 40.6 on 6M / 3M / ROSSA, against the row's
  0.8672 / 0.8903 / 0.8952 and 66.6 / 18.1 / 38.5: +11 / +25 / +6 %). Differences of a few
  thousandths of Dice and of 10-25 % Betti-0 error on one split are within what the budget
  alone moves; the rule therefore averages the three splits.
- From scratch, IBP clDice at S3-OCTA's α 0.5 (product deletion, the default since
  2026-12-06) lowers the Betti-0 error most among the U-Net setups: 19 % over the three
  splits (−15 / −11 / −29 % on 6M / 3M / ROSSA) for 0.010 Dice; missed centerline −15 / +2 /
  −9 %. α 0.2 costs 0.004 Dice and leaves Betti-0 unchanged. Skeleton recall cuts the missed
  centerline most consistently (−17 / −17 / −14 %) but not the fragments, for 0.015 Dice; soft
  clDice costs 0.048 Dice and misses more centerline. The reference's `min` deletion collapsed
  at α 0.5 from scratch in the previous table (OCTA-500 only, 8 min, 2 threads: Dice 0.535
  against 0.877; git 022c15b; `benchmarks/accuracy/ibp_gradient.py` for the cause) and is not
  rerun.
- Warm start: continuing the bundled `octa-vessels` with IBP clDice for 10 minutes changes
  Betti-0 by −8 / −4 / −9 % and missed centerline by −6 / −6 / −3 % at no Dice cost: the same
  sign on every split, but within the noise above. With checkpoints chosen by validation Dice
  the first epoch wins (later epochs trade Dice for topology), so the gain stays small.
- S3-OCTA under the same budget (one epoch of 53 steps) loses to the U-Net by 0.06-0.11 Dice
  (0.803 / 0.782 / 0.821); IBP clDice on it lowers Betti-0 by 27 % for 0.016 Dice (fewer
  fragments, as on the U-Net) but misses 5-21 % more centerline. On this CPU the comparison
  measures the network's cost per step, not what it reaches when trained to convergence (the
  seed trains on a GPU).
- No setup meets the bundling rule: `octa-vessels-topo` is not bundled. The best trade is IBP
  clDice α 0.5 from scratch (−19 % Betti-0 for −0.010 Dice), short of −20 % at ≤ 0.005.
- Whole-image Betti-0 errors are dominated by small fragments (`components` against
  `label comps`); the 64² columns average 100 random windows per image, as topology papers
  report them. `missed centerline px` is the length of the label's centerline outside the
  prediction (the broken stretches; a step half in, half out counts half).
"""


def run_setup(slug: str, minutes: float) -> dict:
    """Train one setup (unless it is the bundled model) and score it on every split."""
    label, config, overrides = SETUPS[slug]
    rec: dict = {"label": label}
    model: str = BUNDLED
    if config is not None:
        ov = [*overrides, f"train.time_limit_min={minutes}", f"name=topo_{slug}"]
        s = train(REPO / config, overrides=ov)
        model = s["run_dir"]
        rec.update(run=s["run_dir"], train_min=s["train_seconds"] / 60, epochs=s["epochs_run"])
    return score(rec, model, slug)


def score(rec: dict, model: str, slug: str) -> dict:
    """``rec`` with the scores of ``model`` on every split (replacing any it had)."""
    rec["splits"] = {}
    for split, (dataset, folder, options) in SPLITS.items():
        ev = evaluate(model, dataset, str(SHARED_DATA / folder), "val",
                      RESULTS / f"octa_topology_{slug}_{dataset}_{options.get('fov', '')}",
                      options=options, save_maps=False, tta="none")
        rec["splits"][split] = {"threshold": ev["threshold"], "mean": ev["per_image_mean"],
                                "pooled_dice": ev["pooled"]["dice"]}
    return rec


def tables(done: dict[str, dict]) -> str:
    """One table per split; rows in SETUPS order."""
    parts = []
    for split in SPLITS:
        rows = []
        for slug in SETUPS:
            rec = done.get(slug)
            if rec is None or split not in rec["splits"]:
                continue
            m = rec["splits"][split]["mean"]
            budget = (f"{rec['train_min']:.1f} ({rec['epochs']} ep)" if "train_min" in rec
                      else "228 (bundle)")
            rows.append([rec["label"], *[m.get(k, float("nan")) for k in COLUMNS], budget])
        parts.append(f"**{split}** (per-image means)\n\n"
                     + md_table(["setup", *COLUMNS.values(), "train min (epochs)"], rows))
    return "\n\n".join(parts)


def _split_means(rec: dict, key: str) -> list[float]:
    return [rec["splits"][split]["mean"][key] for split in SPLITS]


def verdicts(done: dict[str, dict]) -> tuple[str, str | None]:
    """The rule's table (each topology setup against its Dice-only counterpart) and the winner."""
    rows, best = [], None
    for slug, base in BASELINE.items():
        if slug not in done or base not in done:
            continue
        d_t, d_b = _split_means(done[slug], "dice"), _split_means(done[base], "dice")
        b_t = _split_means(done[slug], "betti0_error")
        b_b = _split_means(done[base], "betti0_error")
        d_mean = sum(d_t) / len(d_t) - sum(d_b) / len(d_b)
        d_worst = min(t - b for t, b in zip(d_t, d_b, strict=True))
        b0 = sum(b_t) / sum(b_b) - 1
        met = b0 <= -0.20 and d_mean >= -0.005 and d_worst >= -0.010
        if met and (best is None or sum(b_t) < sum(_split_means(done[best], "betti0_error"))):
            best = slug
        rows.append([done[slug]["label"], done[base]["label"], f"{d_mean:+.4f}",
                     f"{d_worst:+.4f}", f"{100 * b0:+.0f} %", "yes" if met else "no"])
    table = md_table(["setup", "against", "Δ Dice (mean of splits)", "Δ Dice (worst split)",
                      "Δ β0 err (mean of splits)", "rule met"], rows)
    return table, best


def record(slug: str, a: argparse.Namespace) -> None:
    """Train and score ``slug`` (or, with ``--rescore``, score its recorded run again) into
    its own JSON file; a recorded setup is kept unless ``--force``."""
    path = OUT / f"{slug}.json"
    recorded = path.is_file()
    if a.rescore and not recorded:
        print(f"{slug}: no recorded run to score again ({path.name}); skipped")
        return
    if recorded and not (a.rescore or a.force):
        print(f"{slug}: recorded already ({path.name}); --force reruns it")
        return
    if a.rescore:
        rec = json.loads(path.read_text())
        rec = score(rec, rec.get("run", BUNDLED), slug)
    else:
        rec = run_setup(slug, a.minutes)
    write_text_atomic(path, json.dumps(rec, indent=2, default=float))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="CPU training budget per setup")
    ap.add_argument("--only", default=None,
                    help="comma-separated setup slugs or indices (see SETUPS), e.g. 0,1")
    ap.add_argument("--force", action="store_true", help="rerun setups already recorded")
    ap.add_argument("--report", action="store_true", help="only rebuild the tables")
    ap.add_argument("--rescore", action="store_true",
                    help="score the recorded runs of the chosen setups again, without training")
    a = ap.parse_args()
    slugs = list(SETUPS)
    chosen = ([] if a.report else
              [slugs[int(s)] if s.isdigit() else s for s in a.only.split(",")] if a.only
              else slugs)
    OUT.mkdir(parents=True, exist_ok=True)
    for slug in chosen:
        record(slug, a)
    combined = RESULTS / "octa_topology.json"  # tracked; the per-setup files are not
    done = json.loads(combined.read_text()) if combined.is_file() else {}
    done = {k: v for k, v in done.items() if k in SETUPS}
    done.update({p.stem: json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))
                 if p.stem in SETUPS})
    write_text_atomic(combined, json.dumps(done, indent=2, default=float))
    verdict, best = verdicts(done)
    body = (tables(done) + "\n\n" + RULE + "\n\n" + verdict + "\n\n"
            + (f"Rule met by: {done[best]['label']}." if best else "Rule met by: none.")
            + "\n\n" + NOTES)
    write_section("octa_topology", "OCTA-500 and ROSSA: what topology-aware training buys", body)
    print(body)


if __name__ == "__main__":
    main()

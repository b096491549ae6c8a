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
(``--force`` reruns it). Not part of ``make bench`` (``run_all.py --training`` runs it).
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
BASELINE = {"unet_ibp": "unet_dice", "unet_ibp02": "unet_dice", "unet_sr": "unet_dice",
            "unet_cldice": "unet_dice", "s3_ibp": "s3_dice", "ft_ibp": "ft_bcedice",
            "ft_ibp02": "ft_bcedice", "ft_sr": "ft_bcedice"}
RULE = """Bundling rule (issue 27, written before the first topology row was scored): a setup is
bundled as `octa-vessels-topo` when, against its Dice-only counterpart (same network, start and
budget: the `BASELINE` pairs of the script), the whole-image Betti-0 error averaged over the
three splits is at least 20 % lower, the Dice averaged over the three splits at most 0.005
lower, and no split loses more than 0.010 Dice; among several, the lowest Betti-0 error."""


def run_setup(slug: str, minutes: float) -> dict:
    """Train one setup (unless it is the bundled model) and score it on every split."""
    label, config, overrides = SETUPS[slug]
    rec: dict = {"label": label}
    model: str = "octa-vessels"
    if config is not None:
        ov = [*overrides, f"train.time_limit_min={minutes}", f"name=topo_{slug}"]
        s = train(REPO / config, overrides=ov)
        model = s["run_dir"]
        rec.update(run=s["run_dir"], train_min=s["train_seconds"] / 60, epochs=s["epochs_run"])
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="CPU training budget per setup")
    ap.add_argument("--only", default=None,
                    help="comma-separated setup slugs or indices (see SETUPS), e.g. 0,1")
    ap.add_argument("--force", action="store_true", help="rerun setups already recorded")
    ap.add_argument("--report", action="store_true", help="only rebuild the tables")
    a = ap.parse_args()
    slugs = list(SETUPS)
    chosen = ([] if a.report else
              [slugs[int(s)] if s.isdigit() else s for s in a.only.split(",")] if a.only
              else slugs)
    OUT.mkdir(parents=True, exist_ok=True)
    for slug in chosen:
        path = OUT / f"{slug}.json"
        if path.is_file() and not a.force:
            print(f"{slug}: recorded already ({path.name}); --force reruns it")
            continue
        write_text_atomic(path, json.dumps(run_setup(slug, a.minutes), indent=2, default=float))
    done = {p.stem: json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))}
    body = (Path(__file__).with_suffix(".notes.md").read_text()
            if Path(__file__).with_suffix(".notes.md").is_file() else "")
    verdict, best = verdicts(done)
    body = (tables(done) + "\n\n" + RULE + "\n\n" + verdict + "\n\n"
            + (f"Rule met by: {done[best]['label']}." if best else "Rule met by: none (yet).")
            + ("\n\n" + body if body else ""))
    write_section("octa_topology", "OCTA-500 and ROSSA: what topology-aware training buys", body)
    print(body)


if __name__ == "__main__":
    main()

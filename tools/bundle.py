"""Maintainer tool: bundle a trained run as a default model, and write the model cards.

With ``--bundle-fundus RUN`` / ``--bundle-octa RUN`` the run's ``best.safetensors`` (or
ensemble file) is copied into the package as ``fundus-vessels`` / ``octa-vessels`` (stamping
the FOV diameter and adaptive restoration steps where needed, and with ``--*-tta`` a default
flip TTA whose threshold is chosen again on the recipe's validation images). Then the bundled
models are measured (``benchmarks/accuracy/default_models.py`` and
``benchmarks/speed/inference.py``, run as scripts; ``--no-measure`` reuses their last
``benchmarks/results/default_models.json`` and ``inference_speed.json``), and the model card
(``src/retinaseg/weights/<name>.md``) of every bundled model, and with ``--cards`` of every
model whose config is given, is rewritten with those scores, the recipe's config and the
file's SHA-256.

Usage::

    PYTHONPATH=src .venv/bin/python tools/bundle.py \
        --bundle-fundus runs/drive_unet_kfold_bce5/ensemble.safetensors \
        --fundus-config configs/fundus_vessels.yaml
    PYTHONPATH=src .venv/bin/python tools/bundle.py --cards --no-measure \
        --fundus-config configs/fundus_vessels.yaml \
        --octa-config configs/octa_vessels/stage6.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # common

from common import (
    KEYS,
    REPO,
    RESULTS,
    SHARED_DATA,
    md_table,
    second_observer,
    target_status,
    training_minutes,
)

from retinaseg.models.cards import WEIGHTS_DIR, card_text
from retinaseg.models.persistence import read_spec, resolve_model_path
from retinaseg.utils.atomic import atomic_path, write_text_atomic

MEASURE = ["benchmarks/accuracy/default_models.py", "benchmarks/speed/inference.py"]

DATA_TERMS = {
    "fundus-vessels": (
        "DRIVE (Staal et al., \"Ridge-based vessel segmentation in color images of the retina\",\n"
        "IEEE TMI 23(4):501-509, 2004): the 20 training images with the 1st observer's labels; "
        "4 of them\n(seeded: {val}) were held out to choose the checkpoint and the threshold. "
        "The DRIVE\ntest images were used only for the scores below. Research use only; cite "
        "the paper."),
    "fundus-vessels drive+chase": (
        "- DRIVE (Staal et al., \"Ridge-based vessel segmentation in color images of the "
        "retina\",\n  IEEE TMI 23(4):501-509, 2004): the 20 training images, 1st observer.\n"
        "- CHASE_DB1 (Fraz et al., \"An ensemble classification-based approach applied to "
        "retinal blood\n  vessel segmentation\", IEEE TBME 59(9):2538-2548, 2012): the 20 "
        "images of subjects 01-10, 1st\n  observer (`_1stHO`); subjects 11-14 (its test "
        "split) were never used.\n"
        "Held out to choose the checkpoint and the threshold (the combined score: the mean of "
        "the two\ndatasets' validation Dice): {val}. Every image is resized so that its FOV is "
        "540 px wide\n(the DRIVE median), at training and at inference. The DRIVE test images "
        "were used only for the\nscores below. Research use only; cite both papers."),
    "fundus-vessels ensemble": (
        "DRIVE (Staal et al., \"Ridge-based vessel segmentation in color images of the retina\",\n"
        "IEEE TMI 23(4):501-509, 2004): the 20 training images with the 1st observer's labels, "
        "cut into\n{folds} folds of 4 (seeded). The {members} members are the runs of folds "
        "{fold_list}: each was trained\non 16 images and chose its checkpoint on the 4 it held "
        "out. The threshold was chosen on the\nout-of-fold probabilities ({n_oof} images, each "
        "from the member that never saw it). The DRIVE\ntest images were used only for the "
        "scores below. Research use only; cite the paper."),
    "octa-vessels": (
        "- OCTA-500 (Li et al., \"OCTA-500: A retinal dataset for optical coherence tomography\n"
        "  angiography study\", Medical Image Analysis 93:103092, 2024): official train split, "
        "3M (140)\n  and 6M (180) subjects, input `OCTA(ILM_OPL)` projection, label "
        "`GT_LargeVessel`; val split\n  (10 + 20) for checkpoint and threshold selection. "
        "Research use only; cite the paper.\n"
        "- ROSSA (Ning et al., \"An accurate and efficient neural network for OCTA vessel "
        "segmentation\n  and a new dataset\", ICASSP 2024): `train_manual` (100) for training, "
        "`val` (100) for selection.\n  MIT-licensed release; research use; cite the paper.\n"
        "ROSSA labels all visible vessels of its scans while OCTA-500 `GT_LargeVessel` labels "
        "large\nvessels only. A model with output heads has one per label convention: "
        "`large_vessel` learns\nfrom OCTA-500 labels only and `all_vessel` from ROSSA labels "
        "only (every other layer is\nshared); each split below is scored with its own "
        "convention's head. Measured on the val splits,\nthe two heads' masks agree at Dice "
        "0.975-0.977 and each head scores 0.002-0.004 higher on its own\ndataset than the other "
        "head (`benchmarks/RESULTS.md`): the network tells the two kinds of scan\napart by "
        "itself, so the heads add little."),
}
TARGETS = {"fundus-vessels": "DRIVE test per-image-mean F1 ≥ 0.82, AUC ≥ 0.980 (issue 26: a "
                             "small loss on DRIVE for a gain on unseen cameras)",
           "octa-vessels": "OCTA-500 val Dice 6M ≥ 0.90, 3M ≥ 0.92; ROSSA val Dice ≥ 0.90"}


def bundle_weights(run: str, name: str, config: str) -> None:
    """Copy the run's best model into the package as the bundled model ``name``.

    A fundus model trained without ``inference.match_fov`` gets the median FOV diameter of the
    DRIVE training images (its own training data) stamped into its metadata, so that resolution
    matching works for it too. Adaptive restorations in the config's preprocessing
    (``denoise``, ``sharpen``: no-ops on the training images) that the run lacks are stamped in
    too, provided the other steps are exactly the run's. The weights are untouched, and each
    stamp is printed.
    """
    from retinaseg.models.persistence import load_model, save_model

    src = resolve_model_path(run)
    dst = WEIGHTS_DIR / f"{name}.safetensors"
    spec = read_spec(src)
    stamps = []
    if spec.modality == "fundus" and not spec.info.get("fov_diameter"):
        from retinaseg.data import build_dataset
        from retinaseg.preprocessing.fov import median_fov_diameter

        ds = build_dataset("drive", str(SHARED_DATA / "DRIVE"), "training")
        spec.info["fov_diameter"] = median_fov_diameter(ds[i]["fov"] for i in range(len(ds)))
        spec.info["fov_diameter_source"] = "stamped at bundling: median of the DRIVE training FOVs"
        stamps.append(f"FOV diameter {spec.info['fov_diameter']} px")
    steps = _config_steps(config, spec.preprocess)
    if steps is not None:
        spec.preprocess = steps
        stamps.append(f"preprocessing {json.dumps(steps)}")
    if stamps:
        net, _ = load_model(src)
        save_model(dst, net, spec)
        print(f"bundled {src} as {name} ({'; '.join(stamps)} stamped)")
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    print(f"bundled {src} as {name}")


def _config_steps(config: str, stored: object) -> list | None:
    """The config's preprocessing when it differs from ``stored`` only by adaptive steps (added,
    removed or with other parameters); None when they are the same; a ValueError when they
    differ otherwise."""
    from retinaseg.preprocessing.pipeline import (
        normalise_steps,
        preprocess_signature,
        without_adaptive,
    )
    from retinaseg.training.config import load_config

    wanted = load_config(REPO / config).data.preprocess
    if preprocess_signature(wanted) == preprocess_signature(stored):
        return None
    if without_adaptive(wanted) != without_adaptive(stored):
        raise ValueError(f"{config}'s preprocessing differs from the run's beyond the adaptive "
                         "restorations; bundle the run with the config it was trained with")
    return [{"name": n, **p} for n, p in normalise_steps(wanted)]


def stamp_tta(name: str, config: str, mode: str) -> None:
    """Give bundled model ``name`` flip TTA ``mode`` by default, with its threshold(s) chosen
    again on the recipe's validation images with that TTA and the default inference.

    Only validation data is used (the DRIVE images held out by the config's seed; OCTA-500 and
    ROSSA ``val``); each head gets its own threshold, as at training time.
    """
    from retinaseg.inference.predictor import predict_probability
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.models.persistence import load_model, save_model
    from retinaseg.training.config import load_config
    from retinaseg.training.data import load_train_val
    from retinaseg.training.trainer import head_thresholds

    cfg = load_config(REPO / config)
    _, val, _ = load_train_val(cfg.data, cfg.seed, cfg.model.heads)
    dst = WEIGHTS_DIR / f"{name}.safetensors"
    seg = Segmenter(dst, tta=mode)
    probs = [predict_probability(seg.net, it.image, tta=mode, precision=seg.precision,
                                 channel=it.head) for it in val]
    thresholds = head_thresholds(probs, val, max(1, len(seg.spec.heads)))
    net, spec = load_model(dst)  # the stored (unfolded) weights, saved again unchanged
    for h, thr in zip(spec.heads, thresholds):
        h["threshold"] = thr
    spec.threshold = thresholds[0]
    spec.info["tta"] = mode
    spec.info["threshold_source"] = (spec.info.get("threshold_source", "chosen on validation")
                                     + f"; chosen again there with {mode} TTA at bundling")
    save_model(dst, net, spec)
    print(f"{name}: default TTA {mode}, threshold(s) {[round(t, 3) for t in thresholds]}")


def _fold_facts(members: list[dict]) -> dict[str, object]:
    """Folds, member count, their fold numbers and out-of-fold images of an ensemble
    (the member records ``retinaseg ensemble`` writes)."""
    return {"folds": members[0].get("folds") or len(members), "members": len(members),
            "n_oof": sum(m["n_val"] for m in members),
            "fold_list": ", ".join(str(m["fold"]) for m in members)}


def _member_seed(member: dict) -> object:
    """A member's training seed, from its run folder's config when that is on this machine."""
    from retinaseg.training.config import load_config

    cfg = REPO / member["run"] / "config.yaml"
    return load_config(cfg).seed if cfg.is_file() else "?"


def _distilled(members: list[dict]) -> str:
    """A sentence on the teachers of distilled ensemble members ('' when none was)."""
    d = [m["distilled_from"] for m in members if m.get("distilled_from")]
    if not d:
        return ""
    per = sorted({len(x["teachers"]) for x in d})
    return (f"\nEach member was distilled (`distill` in its config) from "
            f"{'/'.join(map(str, per))} teacher runs of its own fold, trained on the same images "
            f"as the member, with flip TTA `{d[0]['tta']}`: target = "
            f"{1 - d[0]['weight']:g}·label + {d[0]['weight']:g}·teachers. No teacher saw the "
            "images a member held out.")


def write_card(name: str, config: str, run: str, raw: dict, speeds: dict,
               rows: list[list]) -> None:
    """Rewrite the model card of ``name`` from the measured accuracy (``raw``, ``rows``) and
    speed (``speeds``)."""
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    spec = read_spec(weights)
    minutes, how = training_minutes(run)
    val = spec.info.get("threshold_source", "")
    found = re.search(r": ([^)]*)\)", val)
    val_ids = found.group(1) if found else "see threshold"
    mine = [r[1:] for r in rows if r[0] == name]
    table = md_table(["data", *KEYS], mine)
    obs = [r[1:] for r in rows if r[0].startswith("2nd observer")] if "fundus" in name else []
    if obs:
        table += "\n" + "\n".join("| 2nd human observer, " + " | ".join(
            f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + " |" for r in obs)
    speed = [v for v in speeds.values() if v.get("model") == name]
    speed_md = "; ".join(f"{v['what']}: {v['median_s']:.3f} s ({v['threads']} threads, "
                         f"{v['precision']}, TTA {v['tta']})" for v in speed if v.get("default"))
    scores = (f"Thresholds: the model's own. DRIVE inside the FOV mask; OCTA on the whole "
              f"image. OCTA val splits also chose the checkpoint and threshold, so those "
              f"figures are optimistic.\n\n{table}\n\nInference on this 2-core CPU, "
              f"median of 21 runs, preprocessing included: {speed_md}.\n\nTargets: "
              f"{TARGETS[name]}. Measured (per-image means): {target_status(name, raw)}. "
              f"Measured by `benchmarks/accuracy/default_models.py` and "
              f"`benchmarks/speed/inference.py`; candidates tried are compared in "
              f"`benchmarks/RESULTS.md` (archived \"Default-model candidates\").")
    if spec.name == "ensemble" and spec.info.get("validation_mode") == "shared":
        val_ids = "; ".join(re.sub(r" \(.*?\)", "", part) for part in
                            val.split("(", 1)[1].rsplit(")", 1)[0].split("; "))
        seeds = [str(_member_seed(m)) for m in spec.info["members"]]
        terms = DATA_TERMS["fundus-vessels drive+chase"].format(val=val_ids) + (
            f"\nThe {len(seeds)} members are this recipe trained with seeds {', '.join(seeds)} "
            "(initialisation, patches, augmentation), all\nholding out the same images "
            "(`data.split_seed`); the threshold was chosen on the ensemble's own\npredictions "
            "there, which no member trained on.")
        how_to = (f"`retinaseg train {config} --set seed=S --set data.split_seed=0` for S in "
                  f"{', '.join(seeds)}, then `retinaseg ensemble` over those run folders (the "
                  "config's header has the commands)")
    elif spec.name == "ensemble":
        facts = _fold_facts(spec.info["members"])
        terms = DATA_TERMS[f"{name} ensemble"].format(**facts) + _distilled(spec.info["members"])
        how_to = (f"`retinaseg train {config} --set data.fold=K --set name=NAME_fK` for K in "
                  f"{facts['fold_list']}, then `retinaseg ensemble` over those run folders "
                  "(the config's header has the commands)")
    else:
        key = f"{name} drive+chase" if "chase_db1" in val else name
        if key != name:  # every source's held-out ids: "(<ds> images carved ...: ids; ...)"
            val_ids = "; ".join(re.sub(r" \(.*?\)", "", part) for part in
                                val.split("(", 1)[1].rsplit(")", 1)[0].split("; "))
        terms = DATA_TERMS[key].format(val=val_ids)
        how_to = (f"`retinaseg train {config}` (see the config's header for the stage it "
                  "starts from)")
    data = terms + (
        f"\nReproduce: {how_to}. Total training: {minutes:.0f} min on a 2-core CPU"
        + (f" ({how})." if how else "."))
    write_text_atomic(WEIGHTS_DIR / f"{name}.md", card_text(name, weights, data, scores))
    print(f"wrote the model card of {name}")


def measured() -> tuple[dict, dict, list[list]]:
    """The last accuracy and speed figures of the bundled models, and the accuracy table's
    rows (the models' rows as ``benchmarks/accuracy/default_models.py`` prints them, then the
    2nd DRIVE observer's)."""
    raw = json.loads((RESULTS / "default_models.json").read_text(encoding="utf-8"))
    speeds = json.loads((RESULTS / "inference_speed.json").read_text(encoding="utf-8"))
    rows = []
    for label, r in raw.items():
        if "summary" not in r:  # not a scored split
            continue
        s = r["summary"]
        label += f", head {s['head']}" if s.get("head") else ""
        rows.append([r["model"], f"{label}, per-image mean",
                     *[s["per_image_mean"][k] for k in KEYS]])
        rows.append([r["model"], f"{label}, pooled", *[s["pooled"][k] for k in KEYS]])
    mean, pooled = second_observer(SHARED_DATA / "DRIVE")
    rows += [["2nd observer vs 1st", "DRIVE test, per-image mean", *[mean[k] for k in KEYS]],
             ["2nd observer vs 1st", "DRIVE test, pooled", *[pooled[k] for k in KEYS]]]
    return raw, speeds, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle-fundus", default=None, metavar="RUN")
    ap.add_argument("--fundus-config", default=None, metavar="YAML")
    ap.add_argument("--bundle-octa", default=None, metavar="RUN")
    ap.add_argument("--octa-config", default=None, metavar="YAML")
    ap.add_argument("--fundus-tta", default=None, choices=["hflip", "flips"],
                    help="bundle fundus-vessels with this flip TTA as its default")
    ap.add_argument("--octa-tta", default=None, choices=["hflip", "flips"],
                    help="bundle octa-vessels with this flip TTA as its default")
    ap.add_argument("--cards", action="store_true",
                    help="rewrite the model card of every model whose config is given with the "
                         "measured scores and times, without re-bundling its weights")
    ap.add_argument("--no-measure", action="store_true",
                    help="write the cards from the last measurements in benchmarks/results")
    a = ap.parse_args()
    bundles = {"fundus-vessels": (a.bundle_fundus, a.fundus_config),
               "octa-vessels": (a.bundle_octa, a.octa_config)}
    for name, (run, config) in bundles.items():
        if run:
            if not config:
                ap.error(f"bundling {name} needs its config (--{name.split('-')[0]}-config)")
            bundle_weights(run, name, config)
            tta = a.fundus_tta if name.startswith("fundus") else a.octa_tta
            if tta:
                stamp_tta(name, config, tta)
    if not a.no_measure:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        for script in MEASURE:
            subprocess.run([sys.executable, script], cwd=REPO, env=env, check=True)
    raw, speeds, rows = measured()
    for name, (run, config) in bundles.items():
        if run or (a.cards and config):
            write_card(name, config, run or name, raw, speeds, rows)


if __name__ == "__main__":
    main()

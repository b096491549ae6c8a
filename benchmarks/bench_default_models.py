"""Bundled default models (issue: default models): accuracy on every split we have, speed,
peak memory and training time.

- ``fundus-vessels`` on DRIVE test, inside the FOV, plus the 2nd human observer as reference;
- ``octa-vessels`` on OCTA-500 val (6M and 3M apart) and ROSSA val.

Thresholds are the models' own, chosen on validation data when they were trained.

With ``--bundle-fundus RUN`` / ``--bundle-octa RUN`` the run's ``best.safetensors`` is first
copied into the package as the default model, and after scoring, that model's card
(``src/retinaseg/weights/<name>.md``) is rewritten with the measured scores, the recipe's config
and the file's SHA-256.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_default_models.py
    PYTHONPATH=src .venv/bin/python benchmarks/bench_default_models.py \
        --bundle-fundus runs/drive_unet_fullres/<stamp> --fundus-config configs/X.yaml
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import REPO, RESULTS, SHARED_DATA, md_table, publish

from retinaseg.evaluation.evaluate import evaluate
from retinaseg.models.cards import WEIGHTS_DIR, card_text
from retinaseg.models.persistence import read_spec, resolve_model_path
from retinaseg.utils.atomic import atomic_path, write_text_atomic

DATA_TERMS = {
    "fundus-vessels": (
        "DRIVE (Staal et al., \"Ridge-based vessel segmentation in color images of the retina\",\n"
        "IEEE TMI 23(4):501-509, 2004): the 20 training images with the 1st observer's labels; "
        "4 of them\n(seeded: {val}) were held out to choose the checkpoint and the threshold. "
        "The DRIVE\ntest images were used only for the scores below. Research use only; cite "
        "the paper."),
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
TARGETS = {"fundus-vessels": "DRIVE test per-image-mean F1 ≥ 0.83, AUC ≥ 0.982",
           "octa-vessels": "OCTA-500 val Dice 6M ≥ 0.90, 3M ≥ 0.92; ROSSA val Dice ≥ 0.90"}

TARGET_CHECKS = {  # (case label, metric, name, target): per-image means against the bar
    "fundus-vessels": [("DRIVE test (20, inside FOV)", "dice", "DRIVE test F1", 0.83),
                       ("DRIVE test (20, inside FOV)", "auc", "DRIVE test AUC", 0.982)],
    "octa-vessels": [("OCTA-500 val 6M (20)", "dice", "OCTA-500 val 6M Dice", 0.90),
                     ("OCTA-500 val 3M (10)", "dice", "OCTA-500 val 3M Dice", 0.92),
                     ("ROSSA val (100)", "dice", "ROSSA val Dice", 0.90)],
}
KEYS = ["dice", "auc", "acc", "sen", "spe", "cldice"]
CASES = [  # (model, dataset, root, split, options, label)
    ("fundus-vessels", "drive", "DRIVE", "test", {}, "DRIVE test (20, inside FOV)"),
    ("octa-vessels", "octa500", "OCTA-500", "val", {"fov": "6M"}, "OCTA-500 val 6M (20)"),
    ("octa-vessels", "octa500", "OCTA-500", "val", {"fov": "3M"}, "OCTA-500 val 3M (10)"),
    ("octa-vessels", "rossa", "ROSSA", "val", {}, "ROSSA val (100)"),
]
SPEED_CHILD = """
import sys, time, json
def hwm_mb():  # VmHWM: this process's own peak (ru_maxrss would include the parent's at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
import numpy as np
from retinaseg.inference.pipeline import Segmenter
tta = None if sys.argv[5] == "model" else sys.argv[5]
graph = sys.argv[6]
seg = Segmenter(sys.argv[1], precision=sys.argv[4], tta=tta, fuse=graph != "nofuse",
                jit={"default": None, "jit": True}.get(graph, False))
if sys.argv[2].endswith((".tif", ".png")):  # a real image
    from retinaseg.io import read_image
    img = read_image(sys.argv[2])
else:
    shape = tuple(int(v) for v in sys.argv[2].split("x"))
    img = np.random.default_rng(0).random(shape, dtype=np.float32)
seg(img)
ts = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); seg(img); ts.append(time.perf_counter() - t0)
import torch
print(json.dumps({"median_s": float(np.median(ts)), "threads": torch.get_num_threads(),
                  "precision": seg.precision, "tta": seg.tta, "jit": seg.jit,
                  "peak_rss_mb": hwm_mb()}))
"""
SPEED_CASES = [  # (model, input shape, what, precision, tta, graph): the default first
    # (BatchNorm folded; TorchScript-frozen in bfloat16), then "eager" (folded, not frozen:
    # `--no-jit`), float32 with the same TTA (a CPU without native bfloat16; not frozen by
    # default), and "nofuse" (float32, one pass, BatchNorm separate, not frozen: the first
    # default)
    ("fundus-vessels", "584x565x3", "584×565 colour fundus", "auto", "model", "default"),
    ("fundus-vessels", "584x565x3", "584×565 colour fundus", "auto", "model", "eager"),
    ("fundus-vessels", "584x565x3", "584×565 colour fundus", "fp32", "model", "default"),
    ("fundus-vessels", "584x565x3", "584×565 colour fundus", "fp32", "model", "eager"),
    ("fundus-vessels", "584x565x3", "584×565 colour fundus", "fp32", "none", "nofuse"),
    ("fundus-vessels", str(SHARED_DATA / "DRIVE" / "test" / "images" / "01_test.tif"),
     "DRIVE test 01_test.tif (584×565)", "auto", "model", "default"),
    ("octa-vessels", "400x400", "400×400 OCTA", "auto", "model", "default"),
    ("octa-vessels", "400x400", "400×400 OCTA", "auto", "model", "eager"),
    ("octa-vessels", "400x400", "400×400 OCTA", "fp32", "model", "default"),
    ("octa-vessels", "400x400", "400×400 OCTA", "fp32", "none", "nofuse"),
    ("octa-vessels", "304x304", "304×304 OCTA", "auto", "model", "default"),
]


def speed(model: str, shape: str, repeats: int = 21, precision: str = "auto",
          tta: str = "model", graph: str = "default") -> dict:
    """Median inference seconds (preprocessing included) and peak RSS, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", SPEED_CHILD, model, shape, str(repeats),
                          precision, tta, graph], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def freeze_ab(rounds: int = 3, model: str = "fundus-vessels") -> str:
    """Frozen against plain, interleaved: ``rounds`` rounds of the four settings (bfloat16 and
    float32, each frozen and not), so that a slow minute on the shared machine hits all four."""
    settings = [("auto", "default"), ("auto", "eager"), ("fp32", "jit"), ("fp32", "eager")]
    times: dict[tuple[str, str], list[float]] = {k: [] for k in settings}
    for _ in range(rounds):
        for prec, graph in settings:
            times[(prec, graph)].append(speed(model, "584x565x3", precision=prec,
                                              graph=graph)["median_s"])
    rows = []
    for prec in ("auto", "fp32"):
        frozen = times[(prec, "default" if prec == "auto" else "jit")]
        plain = times[(prec, "eager")]
        ratio = [p / f for f, p in zip(frozen, plain)]
        rows.append([f"{model}, 584×565, {'bfloat16' if prec == 'auto' else 'float32'}",
                     ", ".join(f"{t:.3f}" for t in frozen), ", ".join(f"{t:.3f}" for t in plain),
                     f"{min(ratio):.2f}-{max(ratio):.2f}×"])
    return ("\n\nTorchScript freezing, frozen against plain (BatchNorm folded in both), "
            f"{rounds} interleaved rounds of fresh processes, each the median of 21 runs; the "
            "default freezes in bfloat16 only:\n\n"
            + md_table(["model, input, precision", "frozen s / image", "plain s / image",
                        "plain / frozen, per round"], rows))


def head_agreement(model: str = "octa-vessels") -> str:
    """For a model with heads: on each OCTA val split, how much its heads' masks differ and
    how each head scores against that split's labels (per-image means, own thresholds)."""
    from retinaseg.data import build_dataset
    from retinaseg.evaluation.metrics import confusion_counts, image_metrics, threshold_metrics
    from retinaseg.inference.pipeline import Segmenter

    spec = read_spec(resolve_model_path(model))
    if len(spec.heads) < 2:
        return ""
    segs = [Segmenter(model, head=h["name"]) for h in spec.heads]
    rows = []
    for _, ds, folder, split, opts, label in CASES[1:]:
        data = build_dataset(ds, str(SHARED_DATA / folder), split, **opts)
        agree, frac, dice = [], [], [[] for _ in segs]
        for i in range(len(data)):
            smp = data[i]
            probs = [seg(smp["image"]) for seg in segs]
            masks = [p > seg.threshold for p, seg in zip(probs, segs)]
            agree.append(threshold_metrics(confusion_counts(masks[1], masks[0]))["dice"])
            frac.append(masks[1].sum() / max(1, masks[0].sum()))
            for k, (p, seg) in enumerate(zip(probs, segs)):
                dice[k].append(image_metrics(p, smp["label"], seg.threshold)["dice"])
        rows.append([label, float(np.mean(agree)), float(np.mean(frac)),
                     *[float(np.mean(d)) for d in dice]])
    names = [h["name"] for h in spec.heads]
    return ("\n\nHeads of `octa-vessels` on each split (per-image means, each head with its own "
            f"threshold): Dice between the `{names[1]}` and `{names[0]}` masks, the ratio of "
            "their vessel areas, and each head's Dice against the split's labels.\n\n"
            + md_table(["split", "Dice between heads", "area ratio",
                        *[f"{n} Dice" for n in names]], rows))


def observer_rows() -> list[list]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_drive_unet import second_observer

    mean, pooled = second_observer(SHARED_DATA / "DRIVE")
    return [["2nd observer vs 1st", "DRIVE test, per-image mean", *[mean[k] for k in KEYS]],
            ["2nd observer vs 1st", "DRIVE test, pooled", *[pooled[k] for k in KEYS]]]


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
        from retinaseg.inference.scale import median_fov_diameter

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
    from retinaseg.inference.pipeline import Segmenter
    from retinaseg.inference.predictor import predict_probability
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


def total_minutes(run: str) -> tuple[float, str]:
    """Training minutes of a run including the model it was fine-tuned from, and a note."""
    from retinaseg.training.config import load_config

    spec = read_spec(resolve_model_path(run))
    own = float(spec.info.get("train_seconds", float("nan")))
    total = spec.info.get("total_train_seconds")
    init = spec.info.get("init")
    cfg_path = resolve_model_path(run).parent / "config.yaml"
    if total is None and cfg_path.is_file():
        init = load_config(cfg_path).model.init
        if init:
            before = read_spec(resolve_model_path(init)).info
            total = own + float(before.get("total_train_seconds", before.get("train_seconds")))
    members = spec.info.get("members") or []
    if total is None and any(m.get("distilled_from") for m in members):
        mine = sum(float(m.get("train_seconds") or 0) for m in members)
        return own / 60, (f"{mine / 60:.0f} min for the {len(members)} members plus "
                          f"{(own - mine) / 60:.0f} min for the teachers they were distilled "
                          "from")
    if total is None:
        return own / 60, ""
    if not init:  # a single distilled run: the rest is its teachers
        return float(total) / 60, (f"{own / 60:.0f} min for this network plus "
                                   f"{(float(total) - own) / 60:.0f} min for its teachers")
    start = f"`{Path(init).name}`"
    if Path(init).name in DATA_TERMS:  # a bundled name: the bundle it was, not the one it becomes
        start = f"the previous {start} bundle (see the config's header)"
    return float(total) / 60, (f"{own / 60:.0f} min fine-tuning from {start} plus "
                               f"{(float(total) - own) / 60:.0f} min for that model")


def _fold_facts(members: list[dict]) -> dict[str, object]:
    """Folds, member count, their fold numbers and out-of-fold images of an ensemble
    (the member records ``retinaseg ensemble`` writes)."""
    return {"folds": members[0].get("folds") or len(members), "members": len(members),
            "n_oof": sum(m["n_val"] for m in members),
            "fold_list": ", ".join(str(m["fold"]) for m in members)}


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


def target_status(name: str, raw: dict) -> str:
    """Each accuracy target of ``name`` with its per-image mean to five decimals and whether it
    is met, so that a figure rounded to four decimals cannot hide a miss."""
    parts = []
    for label, key, what, need in TARGET_CHECKS[name]:
        v = float(raw[label]["summary"]["per_image_mean"][key])
        parts.append(f"{what} {v:.5f} ({'met' if v >= need else 'not met'}, target ≥ {need:g})")
    return "; ".join(parts)


def write_card(name: str, config: str, run: str, raw: dict, rows: list[list]) -> None:
    """Rewrite the model card of ``name`` with the scores just measured."""
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    spec = read_spec(weights)
    minutes, how = total_minutes(run)
    val = spec.info.get("threshold_source", "")
    found = re.search(r": ([^)]*)\)", val)
    val_ids = found.group(1) if found else "see threshold"
    mine = [r[1:] for r in rows if r[0] == name]
    table = md_table(["data", *KEYS], mine)
    obs = [r[1:] for r in rows if r[0].startswith("2nd observer")] if "fundus" in name else []
    if obs:
        table += "\n" + "\n".join("| 2nd human observer, " + " | ".join(
            f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + " |" for r in obs)
    speed = [v for k, v in raw.items() if k.startswith("speed") and v.get("model") == name]
    speed_md = "; ".join(f"{v['what']}: {v['median_s']:.3f} s ({v['threads']} threads, "
                         f"{v['precision']}, TTA {v['tta']})" for v in speed if v.get("default"))
    scores = (f"Thresholds: the model's own. DRIVE inside the FOV mask; OCTA on the whole "
              f"image. OCTA val splits also chose the checkpoint and threshold, so those "
              f"figures are optimistic.\n\n{table}\n\nInference on this 2-core CPU, "
              f"median of 21 runs, preprocessing included: {speed_md}.\n\nTargets: "
              f"{TARGETS[name]}. Measured (per-image means): {target_status(name, raw)}. "
              f"Measured by `benchmarks/bench_default_models.py`; candidates "
              f"tried are compared in `benchmarks/RESULTS.md` (bench_candidates).")
    if spec.name == "ensemble":
        facts = _fold_facts(spec.info["members"])
        terms = DATA_TERMS[f"{name} ensemble"].format(**facts) + _distilled(spec.info["members"])
        how_to = (f"`retinaseg train {config} --set data.fold=K --set name=NAME_fK` for K in "
                  f"{facts['fold_list']}, then `retinaseg ensemble` over those run folders "
                  "(the config's header has the commands)")
    else:
        terms = DATA_TERMS[name].format(val=val_ids)
        how_to = (f"`retinaseg train {config}` (see the config's header for the stage it "
                  "starts from)")
    data = terms + (
        f"\nReproduce: {how_to}. Total training: {minutes:.0f} min on a 2-core CPU"
        + (f" ({how})." if how else "."))
    write_text_atomic(WEIGHTS_DIR / f"{name}.md", card_text(name, weights, data, scores))
    print(f"wrote the model card of {name}")


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
                    help="rewrite the model card of every model whose config is given with this "
                         "run's scores and times, without re-bundling its weights")
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
    rows, raw = [], {}
    for model, ds, folder, split, opts, label in CASES:
        t0 = time.time()
        s = evaluate(model, ds, str(SHARED_DATA / folder), split,
                     RESULTS / f"default_{model}_{ds}_{opts.get('fov', '')}", options=opts,
                     save_maps=False)
        raw[label] = {"model": model, "summary": s, "seconds": time.time() - t0}
        label += f", head {s['head']}" if s.get("head") else ""
        rows.append([model, f"{label}, per-image mean", *[s["per_image_mean"][k] for k in KEYS]])
        rows.append([model, f"{label}, pooled", *[s["pooled"][k] for k in KEYS]])
    rows += observer_rows()
    sp_rows = []
    for model, shape, what, precision, tta, graph in SPEED_CASES:
        sp = speed(model, shape, precision=precision, tta=tta, graph=graph)
        default = (precision, tta, graph) == ("auto", "model", "default")
        key = f"speed {what}" + ("" if default else f" {precision} {tta} {graph}")
        raw[key] = {**sp, "model": model, "what": what, "asked": precision, "default": default}
        how = ("**default**: " if default else "") + (
            f"{sp['precision']}, TTA {sp['tta']}, BatchNorm "
            f"{'separate' if graph == 'nofuse' else 'folded'}, "
            + ("TorchScript-frozen" if sp["jit"] else "not frozen"))
        sp_rows.append([model, what, f"{sp['median_s']:.4f}", how, sp["threads"],
                        f"{sp['peak_rss_mb']:.0f}", f"{total_minutes(model)[0]:.1f}"])
    body = ("Accuracy: thresholds are each model's own (chosen on validation data at training "
            "time); DRIVE metrics inside the FOV mask, OCTA on the whole image. A model with "
            "several output heads is scored on each dataset with the head trained on that "
            "dataset's labels (`retinaseg evaluate` does the same by default). Default "
            "precision (see the speed table).\n\n"
            + md_table(["model", "data", *KEYS], rows)
            + "\n\nAgainst the accuracy targets (per-image means, five decimals): "
            + "; ".join(target_status(n, raw) for n in TARGET_CHECKS)
            + ".\n\nSpeed: median of 21 runs after one warm-up, whole image, preprocessing "
              "included, default threads, fresh process per row (peak RSS of that process). "
              "Default inference: the model's own flip TTA (chosen on validation data, "
              "`bench_tta`), BatchNorm folded into the convolutions, and precision `auto` = "
              "bfloat16 on CPUs with native bfloat16 (this one has AVX512-BF16), float32 "
              "elsewhere, and in bfloat16 the network TorchScript-frozen (tracing costs "
              "0.5-3 s once per model, which the median after a warm-up leaves out; see the "
              "interleaved comparison below). The other rows: the same without "
              "freezing (`--no-jit`), float32 (what a CPU without bfloat16 gets), and the first "
              "default (float32, one pass, BatchNorm separate, not frozen). The timing "
              "inputs are uniform noise, which has no dark surround, so fundus models run on the "
              "whole image there (the worst case), and `fundus-vessels` also denoises it over "
              "the whole frame first (its `denoise` step takes uniform noise for a very noisy "
              "photograph); the DRIVE test row is a real photograph, "
              "where the network runs on the box of the retina only "
              "(`retinaseg.inference.crop`).\n\n"
            + md_table(["model", "input", "seconds / image", "inference", "threads",
                        "peak RSS MB",
                        "training min (all members of an ensemble; incl. the model it "
                        "was fine-tuned from)"], sp_rows)
            + freeze_ab() + head_agreement())
    publish("default_models", "Bundled default models", body, raw)
    for name, (run, config) in bundles.items():
        if run or (a.cards and config):
            write_card(name, config, run or name, raw, rows)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()

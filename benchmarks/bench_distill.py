"""Distillation of the fundus k-fold members: out-of-fold accuracy of teachers and students.

The rows of a table score the same held-out DRIVE training images (validation folds of the
k-fold recipes), each image by models of its own fold only, so none of them saw it: the bundled
members (plain BCE), their teachers (the plain-BCE and the BCE + Dice members of the fold,
averaged with flip TTA) and the students distilled from them (width 8,
``configs/drive_unet_kfold_kd.yaml``, and width 5, ``configs/drive_unet_kfold_kd_w5.yaml``;
:mod:`retinaseg.training.distill`). A row is scored on the folds whose runs all finished, with
the bundled member on the same images. One threshold per row, chosen on the scored images themselves
(optimistic, equally for every row); the student rows also give the Dice at the threshold
their training runs chose on their own folds. DRIVE test is not used.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_distill.py            # folds 0-3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from common import REPO, RESULTS, md_table, write_section
from tqdm import tqdm

from retinaseg.evaluation.metrics import confusion_counts, roc_auc, threshold_metrics
from retinaseg.inference import predict_probability
from retinaseg.inference.predictor import tta_flips
from retinaseg.training.data import LoadCache
from retinaseg.training.ensemble import Member, load_member, resolve_run, run_finished
from retinaseg.training.trainer import head_thresholds

MEMBER, PARTNER = "runs/drive_unet_kfold_bce_f{k}", "runs/drive_unet_kfold_f{k}"
STUDENT, STUDENT_W5 = "runs/drive_unet_kfold_kd_f{k}", "runs/drive_unet_kfold_kd_w5_f{k}"
ROWS = [  # (label, run-folder patterns averaged, flip TTA)
    ("bundled member (width 8, plain BCE)", [MEMBER], "none"),
    ("bundled member, hflip", [MEMBER], "hflip"),
    ("teacher: plain-BCE + BCE+Dice members, flips", [MEMBER, PARTNER], "flips"),
    ("student, width 8 (`drive_unet_kfold_kd`)", [STUDENT], "none"),
    ("student, width 8, hflip", [STUDENT], "hflip"),
    ("student, width 5 (`drive_unet_kfold_kd_w5`)", [STUDENT_W5], "none"),
    ("student, width 5, hflip", [STUDENT_W5], "hflip"),
]


def _run(pattern: str, k: int) -> Path:
    return resolve_run(REPO / pattern.format(k=k))


def _trained(pattern: str, k: int) -> bool:
    return run_finished(_run(pattern, k))


def _fold_members(folds: list[int]) -> dict[tuple[str, int], Member]:
    cache: LoadCache = {}
    return {(p, k): load_member(_run(p, k), cache)
            for p in {p for _, ps, _ in ROWS for p in ps} for k in folds if _trained(p, k)}


def _score(label: str, patterns: list[str], tta: str, folds: list[int],
           members: dict[tuple[str, int], Member]) -> dict:
    probs, items, own = [], [], []
    for k in folds:
        models = [members[p, k] for p in patterns]
        for it in tqdm(models[0].val, desc=f"{label}, fold {k}", leave=False):
            probs.append(np.mean([predict_probability(m.net, it.image, tta=tta)
                                  for m in models], axis=0))
            items.append(it)
            own.append(models[0].spec.threshold)
    thr = head_thresholds(probs, items, 1)[0]
    dice = [threshold_metrics(confusion_counts(p > thr, it.label, it.fov))["dice"]
            for p, it in zip(probs, items)]
    dice_own = [threshold_metrics(confusion_counts(p > t, it.label, it.fov))["dice"]
                for p, it, t in zip(probs, items, own)]
    auc = [roc_auc(p, it.label, it.fov) for p, it in zip(probs, items)]
    return {"row": label, "passes": len(patterns) * len(tta_flips(tta)), "threshold": thr,
            "dice": float(np.mean(dice)), "dice_own": float(np.mean(dice_own)),
            "auc": float(np.mean(auc)), "n": len(items),
            "per_image": {it.id: d for it, d in zip(items, dice)}}


def _frozen(m: Member, bf16: bool) -> torch.nn.Module:
    """The member's network as inference runs it: BatchNorm folded, TorchScript-frozen."""
    import copy

    from retinaseg.inference.fuse import Frozen, fold_batchnorm

    net = copy.deepcopy(m.net).eval()
    fold_batchnorm(net)
    if bf16:
        net = net.to(memory_format=torch.channels_last)
    return Frozen(net, m.spec.in_channels, bf16)


def _pass_times(members: dict[tuple[str, int], Member], rounds: int = 3) -> str:
    """One network pass on a 584×565 input, by width: TorchScript-frozen bfloat16 where the CPU
    has it (else float32), median of 21 runs, ``rounds`` interleaved rounds."""
    import time

    from retinaseg.utils.runtime import resolve_precision

    bf16 = resolve_precision("auto", torch.device("cpu")) == "bf16"
    nets: dict[int, torch.nn.Module] = {}
    for m in members.values():
        nets.setdefault(int(m.spec.params.get("width", 0)), _frozen(m, bf16))
    x = torch.randn(1, 1, 592, 576)  # 584×565 padded to the networks' multiple of 16
    if bf16:
        x = x.contiguous(memory_format=torch.channels_last)
    times: dict[int, list[float]] = {w: [] for w in nets}
    with torch.inference_mode():
        for _ in range(rounds):
            for w, f in nets.items():
                f(x)
                runs = []
                for _ in range(21):
                    t0 = time.perf_counter()
                    f(x)
                    runs.append(time.perf_counter() - t0)
                times[w].append(float(np.median(runs)))
    ref = max(nets)
    rows = [[f"width {w}", ", ".join(f"{t * 1000:.1f}" for t in times[w]),
             float(np.median([t / r for t, r in zip(times[w], times[ref])]))]
            for w in sorted(nets)]
    return (f"One network pass by width ({'bfloat16' if bf16 else 'float32'}, TorchScript-"
            f"frozen, BatchNorm folded, 592×576 input = 584×565 padded, {rounds} interleaved "
            "rounds, each the median of 21 runs, 2 threads):\n\n"
            + md_table(["network", "ms / pass, per round",
                        f"relative to width {ref} (median of the rounds)"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    args = ap.parse_args()
    if not all(_trained(p, k) for p in (MEMBER, PARTNER) for k in args.folds):
        print("[skip] distill: the k-fold member runs are missing (see configs/"
              "drive_unet_kfold_kd.yaml)")
        return
    members = _fold_members(args.folds)
    groups: dict[tuple[int, ...], list[tuple[str, list[str], str]]] = {}
    for row in ROWS:  # each row on the folds where all its runs exist
        have = tuple(k for k in args.folds if all((p, k) in members for p in row[1]))
        if have:
            groups.setdefault(have, []).append(row)
    tables, raw = [], []
    for folds in sorted(groups, key=len, reverse=True):  # every row that has these folds
        rows = [r for r in ROWS if all((p, k) in members for p in r[1] for k in folds)]
        out = [_score(label, ps, tta, list(folds), members) for label, ps, tta in rows]
        raw.append({"folds": list(folds), "rows": out})
        tables.append(f"Folds {', '.join(map(str, folds))} ({out[0]['n']} held-out images):\n\n"
                      + md_table(["model (per fold)", "network passes / image", "Dice (mean)",
                                  "AUC (mean)", "threshold (chosen here)",
                                  "Dice at each run's own threshold (teacher: its "
                                  "plain-BCE member's)"],
                                 [[r["row"], r["passes"], r["dice"], r["auc"], r["threshold"],
                                   r["dice_own"]] for r in out]))
    (RESULTS / "distill.json").write_text(json.dumps(raw, indent=2))
    minutes = [f"{p.split('/')[1].removesuffix('_f{k}')} fold {k} "
               f"{m.spec.info.get('train_seconds', 0) / 60:.1f}"
               for (p, k), m in sorted(members.items()) if p in (STUDENT, STUDENT_W5)]
    body = (f"{__doc__.split(chr(10) + chr(10))[1]}\n\nPer-image means. Student training, "
            f"min (1 thread, bfloat16, after the teachers): {', '.join(minutes)}.\n\n"
            + "\n\n".join(tables) + "\n\n" + _pass_times(members))
    print(write_section("distill", "Fundus distillation: out-of-fold students and teachers",
                        body).read_text())


if __name__ == "__main__":
    main()

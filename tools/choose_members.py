"""Maintainer tool: choose the fundus ensemble's member count (inference time per count).

Reference: the member-count rule of ``configs/fundus_vessels.yaml`` (its header; the history is
in docs/models/selection-log.md, "Member count after faster inference"): the bundled
``fundus-vessels`` keeps the largest number of fold members whose default inference of a
584×565 image meets 0.15 s in *every* repeated measurement;
``tools/choose_tta.py`` then picks the flip TTA for that count. Each count ``m`` is timed on an
ensemble of the first ``m`` members of ``--ensemble`` (written to a temporary file), for each TTA
mode, in ``--repeats`` fresh processes, each the median of 21 runs after a warm-up
(``common.speed``: preprocessing included, default threads, default precision, uniform-noise
input, so no FOV crop: the worst case). Accuracy is not measured here: no held-out images
exist for an ensemble of folds (each image was seen by all members but one).

Usage::

    PYTHONPATH=src .venv/bin/python tools/choose_members.py \
        --ensemble runs/drive_unet_kfold_bce5/ensemble.safetensors

Without ``--ensemble`` the bundled ``fundus-vessels`` is used.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # common

import torch
from common import md_table, publish, speed

from retinaseg.models.ensemble import Ensemble
from retinaseg.models.persistence import load_model, save_model

TARGET_S = 0.15
SHAPE = "584x565x3"


def sub_ensemble(src: str, m: int, dst: Path) -> Path:
    """Write the ensemble of the first ``m`` members of ``src`` to ``dst`` (``m`` ≥ 2)."""
    net, spec = load_model(src)
    params = {**spec.params, "n_members": m}
    if params.get("member_flips"):  # each member keeps its own view
        params["member_flips"] = params["member_flips"][:m]
    sub = Ensemble(spec.in_channels, **params)
    for slot, member in zip(sub.members, net.members):
        slot.load_state_dict(member.state_dict())
    spec.params = params
    spec.info = {**spec.info, "members": spec.info.get("members", [])[:m]}
    return save_model(dst, sub, spec)


def time_counts(src: str, counts: list[int], modes: list[str], repeats: int) -> list[dict]:
    """One record per (count, mode): every repeat's median seconds and whether all met."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in counts:
            path = sub_ensemble(src, m, Path(tmp) / f"ensemble{m}.safetensors")
            for mode in modes:
                runs = [speed(str(path), SHAPE, tta=mode) for _ in range(repeats)]
                secs = [r["median_s"] for r in runs]
                out.append({"members": m, "tta": mode, "seconds": secs,
                            "precision": runs[0]["precision"], "jit": runs[0]["jit"],
                            "threads": runs[0]["threads"],
                            "all_met": all(s <= TARGET_S for s in secs)})
                print(f"{m} members, TTA {mode}: {', '.join(f'{s:.3f}' for s in secs)} s")
    return out


def report(rows: list[dict], src: str) -> str:
    table = [[r["members"], r["tta"], ", ".join(f"{s:.3f}" for s in r["seconds"]),
              f"{min(r['seconds']):.3f}-{max(r['seconds']):.3f}",
              "yes" if r["all_met"] else "no"] for r in rows]
    fit = [r for r in rows if r["all_met"]]
    largest = max((r["members"] for r in fit), default=None)
    fits = [r["tta"] for r in fit if r["members"] == largest]
    first = rows[0]
    return (f"Members of `{src}`; input {SHAPE.replace('x', '×', 1).rsplit('x', 1)[0]} uniform "
            f"noise (no FOV crop: the worst case); {first['precision']}, "
            f"{'TorchScript-frozen' if first['jit'] else 'not frozen'}, {first['threads']} "
            f"threads; each value the median of 21 runs in a fresh process. Target ≤ "
            f"{TARGET_S} s in every repeat. Largest member count that fits: "
            f"**{largest if largest else 'none'}**"
            + (f" (TTA that fits with it: {', '.join(fits)})" if largest else "") + ".\n\n"
            + md_table(["members", "TTA", "s / image, each repeat", "range", "all ≤ target"],
                       table))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ensemble", default="fundus-vessels",
                    help="ensemble (file, run or bundled name) to take members from")
    ap.add_argument("--counts", default=None, help="member counts, e.g. 3,4,5 (default 2..all)")
    ap.add_argument("--modes", default="none,hflip")
    ap.add_argument("--repeats", type=int, default=6)
    a = ap.parse_args()
    n = int(load_model(a.ensemble)[1].params["n_members"])
    counts = [int(c) for c in a.counts.split(",")] if a.counts else list(range(2, n + 1))
    if max(counts) > n or min(counts) < 2:
        raise SystemExit(f"counts must lie in 2..{n}, the members of {a.ensemble}")
    torch.manual_seed(0)
    rows = time_counts(a.ensemble, counts, a.modes.split(","), a.repeats)
    publish("members", "Fundus ensemble: member count against inference time",
            report(rows, a.ensemble), rows)


if __name__ == "__main__":
    main()

"""Run the benchmarks and regenerate ``benchmarks/RESULTS.md``.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/run_all.py            # the core suite (make bench)
    PYTHONPATH=src .venv/bin/python benchmarks/run_all.py --training # also the training runs
    PYTHONPATH=src .venv/bin/python benchmarks/run_all.py --only centerline,tta
    PYTHONPATH=src .venv/bin/python benchmarks/run_all.py --assemble # only rebuild RESULTS.md

The core suite is ``benchmarks/speed/`` and ``benchmarks/accuracy/`` without trainings: the
speed of the toolkit's parts and of the bundled models, and the accuracy of the bundled models.
Every script writes its own section to ``benchmarks/results/<name>.md``; sections that were not
re-run are kept, so the slow training benchmarks need not be repeated to refresh the quick
ones. The maintainer tools in ``tools/`` (choosing TTA, member count and restoration) write
sections too and run only when named with ``--only``; archived experiments keep their section,
their script is gone (each section names the commit that produced it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# section name -> (script and args, group); the groups in the order of RESULTS.md
SUITE: dict[str, tuple[list[str], str]] = {
    "centerline": (["benchmarks/speed/centerline.py"], "speed"),
    "denoise_speed": (["benchmarks/speed/denoise.py"], "speed"),
    "dsconv": (["benchmarks/speed/dsconv.py"], "speed"),
    "train_precision": (["benchmarks/speed/train_step.py"], "speed"),
    "ibp_speed": (["benchmarks/speed/ibp_step.py", "--baseline-rev", "f88e6e4"], "speed"),
    "huge_images": (["benchmarks/speed/huge_images.py"], "speed"),
    "inference_speed": (["benchmarks/speed/inference.py"], "speed"),
    "volume_projection": (["benchmarks/speed/volume_projection.py"], "speed"),
    "sam2": (["benchmarks/speed/sam2.py"], "speed"),
    "octanet_speed": (["benchmarks/speed/octanet.py"], "speed"),
    "measure_speed": (["benchmarks/speed/measure.py"], "speed"),
    "evaluate_scale": (["benchmarks/speed/evaluate_scale.py"], "speed"),
    "sharded_inference": (["benchmarks/speed/sharded.py"], "speed"),
    "onnx": (["benchmarks/speed/onnx_speed.py"], "speed"),  # not onnx.py: it would shadow onnx
    "serve_speed": (["benchmarks/speed/serve.py"], "speed"),
    "default_models": (["benchmarks/accuracy/default_models.py"], "accuracy"),
    "robustness": (["benchmarks/accuracy/robustness.py"], "accuracy"),
    "resolution": (["benchmarks/accuracy/robustness.py", "--mode", "resolution"], "accuracy"),
    "octa_scale": (["benchmarks/accuracy/robustness.py", "--mode", "octa-scale"], "accuracy"),
    "errors": (["benchmarks/accuracy/errors.py"], "accuracy"),
    "cross_dataset": (["benchmarks/accuracy/cross_dataset.py"], "accuracy"),
    "faz": (["benchmarks/accuracy/faz.py"], "accuracy"),
    "measure_agreement": (["benchmarks/accuracy/measure_agreement.py"], "accuracy"),
    "ibp_gradient": (["benchmarks/accuracy/ibp_gradient.py"], "accuracy"),
    "drive_unet": (["benchmarks/accuracy/drive_unet.py"], "training"),
    "ddp": (["benchmarks/speed/ddp.py"], "training"),
    "octa_topology": (["benchmarks/accuracy/octa_topology.py"], "training"),
    "seed003": (["benchmarks/accuracy/seed003.py"], "training"),
    "volumes_ipn": (["benchmarks/accuracy/volumes.py"], "training"),
    "octanet": (["benchmarks/accuracy/octanet.py"], "training"),
    "octa_classes": (["benchmarks/accuracy/octa_classes.py", "--train", "--ensemble",
                      "runs/octa_faz_ensemble.safetensors"], "training"),
    "propagation": (["benchmarks/accuracy/propagation.py"], "mechanics"),
    "sam2_finetune": (["benchmarks/accuracy/sam2_finetune.py"], "training"),
    "sam2_gpu": (["benchmarks/speed/sam2.py", "--gpu"], "gpu"),
    "tta": (["tools/choose_tta.py"], "tools"),
    "fundus_choice": (["tools/choose_fundus.py"], "tools"),
    "fundus_choice_seeds": (["tools/choose_fundus.py", "--candidate",
                             "runs/fundus_seeds3.safetensors", "--today", "fundus-vessels",
                             "--section", "fundus_choice_seeds", "--title",
                             "Replacing fundus-vessels: seed ensemble against the single model",
                             "--target-s", "0.15"], "tools"),
    "members": (["tools/choose_members.py"], "tools"),
    "restore": (["tools/choose_restore.py"], "tools"),
}
ARCHIVED = ["candidates", "distill", "flip_members", "robustness_oof", "robustness_octa_acq"]
"""Sections of finished experiments: no script any more (each names its commit)."""

PARTS = {  # group -> heading of its part of RESULTS.md
    "speed": "Speed (`benchmarks/speed/`)",
    "accuracy": "Accuracy of the bundled models (`benchmarks/accuracy/`)",
    "training": "Training regressions (`benchmarks/accuracy/`, `run_all.py --training`)",
    "mechanics": "Mechanics with random weights (`--only propagation`; not in `make bench`)",
    "gpu": "Measured on a lent GPU (`--only sam2_gpu` on a CUDA machine; not in `make bench`)",
    "tools": "Release decisions (`tools/`)",
    "archived": "Archived experiments",
    "other": "Other sections",
}

HEADER = """# retinaseg benchmark results

Regenerated by `PYTHONPATH=src .venv/bin/python benchmarks/run_all.py` (see its docstring for
options). Each section states the date, the machine, the thread count and the exact command.
Per-image means and pooled (all pixels together) figures are labelled as such. Commands of
sections measured before the benchmarks were sorted into `speed/`, `accuracy/` and `tools/`
name the script as it was then (`benchmarks/bench_*.py`; `run_all.py` lists where each section
comes from now).
"""


def run(names: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for name in names:
        if name not in SUITE:
            raise SystemExit(f"unknown benchmark {name!r}; known: {', '.join(SUITE)}")
        args = SUITE[name][0]
        if not (REPO / args[0]).is_file():
            print(f"[skip] {name}: {args[0]} not found")
            continue
        print(f"[run] {name}")
        subprocess.run([sys.executable, *args], cwd=REPO, env=env, check=True)


def assemble() -> Path:
    groups = {name: group for name, (_, group) in SUITE.items()}
    groups.update({name: "archived" for name in ARCHIVED})
    groups.update({p.stem: "other" for p in RESULTS.glob("*.md") if p.stem not in groups})
    parts = [HEADER]
    for group, heading in PARTS.items():
        names = [n for n, g in groups.items() if g == group and (RESULTS / f"{n}.md").is_file()]
        if names:
            parts.append(f"# {heading}\n")
            parts += [(RESULTS / f"{n}.md").read_text(encoding="utf-8") for n in sorted(
                names, key=list(groups).index)]
    out = REPO / "benchmarks" / "RESULTS.md"
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--training", action="store_true", help="also run the training benchmarks")
    ap.add_argument("--only", default=None,
                    help="comma-separated section names (any of the suite or tools)")
    ap.add_argument("--assemble", action="store_true", help="only rebuild RESULTS.md")
    a = ap.parse_args()
    if not a.assemble:
        wanted = ("speed", "accuracy", "training") if a.training else ("speed", "accuracy")
        names = a.only.split(",") if a.only else [n for n, (_, g) in SUITE.items()
                                                   if g in wanted]
        run(names)
    print(f"wrote {assemble()}")


if __name__ == "__main__":
    main()

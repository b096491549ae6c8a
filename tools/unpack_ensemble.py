"""Maintainer tool: write an ensemble file's members back as training run folders.

Reference: the default fundus model's recipe (``configs/fundus_vessels.yaml``;
docs/models/selection-log.md, "Cross-validated ensemble"); the work is
:func:`retinaseg.training.ensemble.unpack_ensemble`.

The bundled ``fundus-vessels`` keeps its members' weights and provenance, not their run folders.
To add folds to it on another machine (as when folds 0-2 of the Xeon were joined by fold 3
trained on the EPYC), unpack it, train the new folds, and run ``retinaseg ensemble`` over all
the folders: it reloads each member's held-out images, checks that the folds are disjoint and
the recipes equal, and chooses the threshold on the out-of-fold probabilities again.

Usage::

    PYTHONPATH=src .venv/bin/python tools/unpack_ensemble.py \\
        src/retinaseg/weights/fundus-vessels.safetensors \\
        --config runs/drive_unet_kfold_bce_f3/<stamp>/config.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from retinaseg.training.ensemble import unpack_ensemble


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="an ensemble .safetensors file")
    ap.add_argument("--config", type=Path, required=True,
                    help="a run config.yaml of the members' recipe (name and fold replaced)")
    ap.add_argument("--root", type=Path, default=Path("."),
                    help="folder the recorded run paths are relative to")
    a = ap.parse_args()
    for run in unpack_ensemble(a.model, a.config, a.root):
        print(f"wrote {run}")


if __name__ == "__main__":
    main()

"""Where the IBP clDice gradient points, and how much it varies: ``min`` against ``product``
deletion (issue 27, part 2: why α = 0.5 from scratch collapsed).

Reference: §3 (IBP peeling) and §4 (clDice) of ``../shared/docs/reference.md``;
:func:`retinaseg.losses.skeleton.ibp_skeleton` (``deletion``).

Labels: 128² crops of OCTA-500 6M ``GT_LargeVessel`` of **training** subjects (one seeded crop
each). Predictions are synthetic logits at stages of training: ``init`` (N(0, 0.1²), a network
at initialisation), ``noisy σ`` (±1 on and off the label plus N(0, σ²) noise: a network
half-way) and ``trained`` (±3 plus N(0, 1)). For each stage and deletion rule, over ``--draws``
draws of the logit noise and of the stochastic binarisation, the script reports the gradient
of the clDice term with respect to the logits: its norm, its cosine with the Dice gradient, and
the sum of the descent direction (−∇) over label pixels ("raise on label") and over background
("raise off label"; negative = pushes false positives down, as it should), mean ± std over
draws.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/accuracy/ibp_gradient.py [--draws 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

from common import SHARED_DATA, md_table, publish

from retinaseg.losses.skeleton import ibp_skeleton
from retinaseg.losses.topology import cldice_loss, soft_dice_loss

SUBJECTS = [10001, 10005, 10010, 10020, 10030, 10040, 10050, 10060]  # OCTA-500 6M train
STAGES = {"init": None, "noisy σ 0.5": 0.5, "noisy σ 1": 1.0, "noisy σ 2": 2.0,
          "trained": "trained"}


def labels(root: Path, size: int = 128) -> torch.Tensor:
    """``[N, 1, size, size]`` crops of the training labels, one seeded crop per subject."""
    rng = np.random.default_rng(0)
    out = []
    for s in SUBJECTS:
        lab = np.array(Image.open(root / "OCTA_6M" / "GT_LargeVessel" / f"{s}.bmp")) > 0
        y, x = rng.integers(0, lab.shape[0] - size, 2)
        out.append(lab[y:y + size, x:x + size])
    return torch.tensor(np.stack(out), dtype=torch.float32)[:, None]


def logits(g: torch.Tensor, stage: object, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(g.shape, generator=gen)
    if stage is None:
        return 0.1 * noise
    if stage == "trained":
        return (2 * g - 1) * 3 + noise
    return (2 * g - 1) + float(stage) * noise  # type: ignore[arg-type]


def one_draw(g: torch.Tensor, gs: torch.Tensor, stage: object, deletion: str,
             seed: int) -> dict[str, float]:
    z = logits(g, stage, torch.Generator().manual_seed(seed)).requires_grad_(True)
    p = torch.sigmoid(z)
    sp = ibp_skeleton(p, generator=torch.Generator().manual_seed(1000 + seed),
                      deletion=deletion)
    cl = cldice_loss(p, g, sp, gs, 1.0)
    gd = torch.autograd.grad(soft_dice_loss(p, g, 1e-6), z, retain_graph=True)[0]
    gc = torch.autograd.grad(cl, z)[0]
    return {"norm": float(gc.norm()),
            "cos": float(torch.nn.functional.cosine_similarity(gd.flatten(), gc.flatten(), 0)),
            "on": float((-gc[g > 0]).sum()), "off": float((-gc[g == 0]).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--root", type=Path, default=SHARED_DATA / "OCTA-500")
    a = ap.parse_args()
    if not (a.root / "OCTA_6M" / "GT_LargeVessel").is_dir():
        raise SystemExit(f"OCTA-500 labels not found under {a.root}")
    torch.set_num_threads(1)
    g = labels(a.root)
    gs = ibp_skeleton(g, stochastic=False)
    rows, raw = [], {}
    for stage_name, stage in STAGES.items():
        for deletion in ("min", "product"):
            d = [one_draw(g, gs, stage, deletion, s) for s in range(a.draws)]
            v = {k: (float(np.mean([x[k] for x in d])), float(np.std([x[k] for x in d])))
                 for k in d[0]}
            raw[f"{stage_name} | {deletion}"] = v
            rows.append([stage_name, deletion, f"{v['norm'][0]:.4f}", f"{v['cos'][0]:+.2f}",
                         f"{v['on'][0]:+.3f} ± {v['on'][1]:.3f}",
                         f"{v['off'][0]:+.3f} ± {v['off'][1]:.3f}"])
    body = (f"{len(SUBJECTS)} crops of 128² from OCTA-500 6M training labels (label pixels "
            f"{float(g.mean()):.1%}, label skeleton {float(gs.mean()):.1%}); {a.draws} draws "
            "per row (logit noise and stochastic binarisation); IBP with 5 iterations, early "
            "stop. Gradient of the clDice term of `ibp_cldice` w.r.t. the logits; "
            "\"raise\" columns sum the descent direction over label / background pixels "
            "(negative off the label = pushes false positives down), mean ± std over draws.\n\n"
            + md_table(["stage", "deletion", "|∇ clDice|", "cos with ∇ Dice",
                        "raise on label", "raise off label"], rows))
    publish("ibp_gradient", "IBP clDice gradient: min against product deletion", body, raw)


if __name__ == "__main__":
    main()

"""Maintainer tool: draw ``docs/images/prompts.png``, the points of each prompt sampler.

Panels: SAM-OCTA global and local modes, SAM-OCTA2 ``PromptGeneration`` with its (3, 9] px
ring, en-face centroids, all on an OCTA-500 6M training subject (``Projection Maps/OCTA(ILM_OPL)``
with ``GT_LargeVessel``); the FAZ prompt (centroid + border points, and its box) on ``GT_FAZ``;
and :func:`~retinaseg.preprocessing.prompts.object_points` on one vessel object of a SAM-OCTA2
layer frame (subject 10301, 3M training split). Positives are green dots, negatives red crosses.

Usage::

    PYTHONPATH=src .venv/bin/python tools/figure_prompts.py [--data ../shared/data] \
        [--subject 10001] [--out docs/images/prompts.png]

Only training-split subjects (10001-10180) are allowed: the figure must not show test data.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from retinaseg.data import build_dataset  # noqa: E402
from retinaseg.io import read_image, read_mask  # noqa: E402
from retinaseg.preprocessing import prompts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED = 0


def overlay(ax, image: np.ndarray, mask: np.ndarray, colour=(0.2, 0.6, 1.0),
            extra: np.ndarray | None = None, extra_colour=(1.0, 0.55, 0.0)) -> None:
    """Grey image with ``mask`` (and ``extra``) tinted."""
    rgb = np.repeat(image[..., None], 3, axis=2) * 0.8
    rgb[mask] = 0.45 * rgb[mask] + 0.55 * np.array(colour)
    if extra is not None:
        rgb[extra] = 0.3 * rgb[extra] + 0.7 * np.array(extra_colour)
    ax.imshow(np.clip(rgb, 0, 1), interpolation="nearest")
    ax.set_axis_off()


def draw(ax, prompt: prompts.Prompt, title: str, size: float = 45) -> None:
    pos, neg = prompt.positives, prompt.negatives
    ax.scatter(pos[:, 0], pos[:, 1], s=size, c="lime", edgecolors="black", linewidths=0.8)
    ax.scatter(neg[:, 0], neg[:, 1], s=size * 1.4, c="red", marker="X", edgecolors="black",
               linewidths=0.6)
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                               ec="yellow", lw=1.2))
    ax.set_title(title, fontsize=9)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--subject", type=int, default=10001)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "prompts.png")
    args = ap.parse_args(argv)
    if not 10001 <= args.subject <= 10180:
        print("figure_prompts: --subject must be an OCTA-500 6M training subject "
              "(10001-10180)", file=sys.stderr)
        return 2
    base = args.data / "OCTA-500" / "OCTA_6M"
    image = read_image(base / "Projection Maps" / "OCTA(ILM_OPL)" / f"{args.subject}.bmp")
    vessels = read_mask(base / "GT_LargeVessel" / f"{args.subject}.bmp")
    faz = read_mask(base / "GT_FAZ" / f"{args.subject}.bmp")

    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7.4))
    ax = axes.ravel()
    overlay(ax[0], image, vessels)
    draw(ax[0], prompts.global_points(vessels, 1, 1, rng=SEED),
         "global_points(1, 1): per component,\nnegatives within 4 px")
    prompt, target = prompts.local_points(vessels, 3, 3, rng=SEED + 2)
    overlay(ax[1], image, vessels, extra=target)
    draw(ax[1], prompt, "local_points(3, 3): one component\n(orange) is the target")
    ring = prompts.chebyshev_ring(vessels, 3, 9)
    overlay(ax[2], image, vessels, extra=ring, extra_colour=(0.5, 0.0, 0.5))
    draw(ax[2], prompts.prompt_generation(vessels, 10, 6, rng=SEED),
         "prompt_generation(10, 6):\nnegatives in the (3, 9] px ring (purple)")
    overlay(ax[3], image, vessels)
    draw(ax[3], prompts.centroid_points(vessels), "centroid_points: one per\n4-connected component",
         size=25)

    ys, xs = np.nonzero(faz)
    pad = 40
    r0, r1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, faz.shape[0])
    c0, c1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, faz.shape[1])
    crop = faz[r0:r1, c0:c1]
    overlay(ax[4], image[r0:r1, c0:c1], crop, colour=(1.0, 0.85, 0.1))
    fp = prompts.faz_points(crop, 3, rng=SEED)
    draw(ax[4], prompts.Prompt(fp.points, fp.labels, prompts.box_prompt(crop).box),
         "faz_points(3) + box_prompt on GT_FAZ\n(centroid + 3 border points)", size=70)

    layers = build_dataset("sam_octa2_layers", args.data / "OCTA-500" / "derived_SAM-OCTA2",
                           "train", view="sequence")
    seq = layers.sequence(0, frames=[len(layers.sequences[0].layers) - 1])
    k = int(np.argmax(seq.objects[:, 0].sum(axis=(1, 2))))  # the largest object of the frame
    obj = seq.objects[k, 0]
    ys, xs = np.nonzero(obj)
    r0, c0 = max(ys.min() - 20, 0), max(xs.min() - 20, 0)
    r1, c1 = ys.max() + 21, xs.max() + 21
    overlay(ax[5], seq.frames[0][r0:r1, c0:c1], obj[r0:r1, c0:c1])
    draw(ax[5], prompts.object_points(obj[r0:r1, c0:c1], 5, 5, rng=SEED),
         f"object_points(5, 5): SAM-OCTA2 layer {seq.id}/\n{seq.layers[0]}, vessel object "
         f"{seq.object_ids[k]} (crop)", size=70)

    fig.suptitle(f"Prompt samplers on OCTA-500 6M subject {args.subject} (ILM-OPL projection, "
                 "GT_LargeVessel / GT_FAZ; seed 0)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    img = img.quantize(colors=256, method=Image.Quantize.FASTOCTREE)  # about 170 KB, not 650
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

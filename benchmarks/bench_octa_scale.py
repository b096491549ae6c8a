"""OCTA maps stored larger than scanned: the cost, and what ``--scale`` gives back.

Some devices export en-face maps interpolated to a larger size than their scan (for example a
400-A-scan map saved at 1024 px). ``octa-vessels`` has no resolution matching (the fundus model
matches the field of view; an OCTA map carries no such landmark), so such a map reaches the
network with vessels several pixels wider than in training. This benchmark upsamples every
map of the OCTA val splits by 1.5, 2 and 2.5 (bilinear, 8-bit, as an exported file; labels by
nearest neighbour) and scores the bundled model as it runs by default, and with
``Segmenter(scale=1/f)`` (``retinaseg predict --scale``), which resizes each map back to the
scanned size before inference and the probability map up again after it. Per-image mean Dice
at the model's own threshold, on the enlarged labels. The val splits also chose the model's
checkpoint and threshold, so read the differences, not the levels.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_octa_scale.py
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_restore import OCTA_SPLITS, UPSAMPLE, dice, upsampled
from common import SHARED_DATA, md_table, publish
from tqdm import tqdm

from retinaseg.data import build_dataset
from retinaseg.inference.pipeline import Segmenter


def score(model: str) -> dict[str, dict[str, float]]:
    """Per split: Dice at the scanned size, and per factor by default and with ``--scale``."""
    out = {}
    for label, dataset, folder, options in OCTA_SPLITS:
        ds = build_dataset(dataset, SHARED_DATA / folder, "val", **options)
        plain = Segmenter(model, dataset=dataset)
        back = {f: Segmenter(model, dataset=dataset, scale=1 / f) for f in UPSAMPLE}
        acc: dict[str, list[float]] = {"scanned size": []}
        for i in tqdm(range(len(ds)), desc=label, unit="img"):
            item = ds[i]
            acc["scanned size"].append(dice(plain(item["image"]), item, plain.threshold))
            for f in UPSAMPLE:
                img, big = upsampled(item, f)
                acc.setdefault(f"×{f}, default", []).append(
                    dice(plain(img), big, plain.threshold))
                acc.setdefault(f"×{f}, --scale {1 / f:.3g}", []).append(
                    dice(back[f](img), big, plain.threshold))
        out[label] = {k: float(np.mean(v)) for k, v in acc.items()}
    return out


def report(res: dict[str, dict[str, float]], model: str) -> str:
    cols = list(next(iter(res.values())))
    rows = [[c, *[res[s][c] for s in res]] for c in cols]
    return (f"Model `{model}`. OCTA val maps upsampled by each factor (bilinear, 8-bit; labels "
            "nearest), scored at the enlarged size: by default, and with `--scale 1/f`, which "
            "runs the network at the scanned size. Per-image mean Dice, the model's own "
            "threshold.\n\n" + md_table(["maps", *res], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="octa-vessels")
    a = ap.parse_args()
    res = score(a.model)
    publish("octa_scale", "OCTA maps stored larger than scanned", report(res, a.model), res)


if __name__ == "__main__":
    main()

"""Speed: the clinical measurements (``retinaseg.measure``) per image, and their reports.

Rows: a 400×400 OCTA map (OCTA-500 6M 10001: the bundled ``octa-vessels`` mask of
``OCTA(ILM_OPL)``, 6 mm / 400 px, ETDRS grid on the FAZ), with the map (the FAZ from its
capillaries) and from the mask alone; a 584×565 DRIVE mask (test image 01, the first observer's
label, quadrant grid) as a fundus mask alone and with its photograph (the densities inside the
field of view). ``measure`` is :func:`retinaseg.measure.analyse_mask` (centerline, graph,
tortuosity, fractal dimension, FAZ, grid); ``report`` is the PNG figure and the HTML page
(:func:`retinaseg.measure.report.figure_png` and ``page_html``). Medians of ``--repeats`` runs
after one warm-up, in this process, single-threaded NumPy/SciPy. For scale, the segmentation of
the same image by the bundled model (``Segmenter``, its defaults but one thread, median of 9
after 10 warm-up runs).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/measure.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import numpy as np
from common import SHARED_DATA, md_table, publish

from retinaseg.io import read_image, read_mask
from retinaseg.measure import analyse_mask
from retinaseg.measure.report import figure_png, page_html


def median_s(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def segmentation_s(model: str, image: np.ndarray) -> tuple[float, np.ndarray]:
    """Median seconds of the bundled model on ``image`` (one thread, like the measurements; 9
    runs after 10 warm-up runs: a TorchScript-frozen model reaches its speed after about 7) and
    its mask. Two threads on a machine shared with another job swing between 30 and 750 ms."""
    from retinaseg.inference.segmenter import Segmenter

    seg = Segmenter(model, threads=1)
    return median_s(lambda: seg(image), 9, warmup=10), seg(image) > seg.threshold


def cases(data: Path) -> list[dict]:
    """The measured inputs, with the segmentation time of their image."""
    octa_img = read_image(data / "OCTA-500/OCTA_6M/Projection Maps/OCTA(ILM_OPL)/10001.bmp")
    t_octa, octa_mask = segmentation_s("octa-vessels", octa_img)
    drive_img = read_image(data / "DRIVE/test/images/01_test.tif")
    drive_mask = read_mask(data / "DRIVE/test/1st_manual/01_manual1.gif")
    t_drive, _ = segmentation_s("fundus-vessels", drive_img)
    octa = {"mm_per_px": 6 / 400, "modality": "octa", "grid": "etdrs"}
    fundus = {"mm_per_px": None, "modality": "fundus", "grid": "quadrants"}
    return [
        {"what": "OCTA 400×400, octa-vessels mask + map", "mask": octa_mask, "image": octa_img,
         "kw": octa, "segment_s": t_octa},
        {"what": "OCTA 400×400, octa-vessels mask alone", "mask": octa_mask, "image": None,
         "kw": octa, "segment_s": t_octa},
        {"what": "DRIVE 584×565 label alone", "mask": drive_mask, "image": None, "kw": fundus,
         "segment_s": t_drive},
        {"what": "DRIVE 584×565 label + photograph", "mask": drive_mask, "image": drive_img,
         "kw": fundus, "segment_s": t_drive},
    ]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    raw, rows = [], []
    for c in cases(args.data):
        def measure(c: dict = c) -> object:
            return analyse_mask(c["mask"], image=c["image"], **c["kw"])

        a = measure()
        t_measure = median_s(measure, args.repeats)
        t_figure = median_s(lambda a=a: figure_png(a, "bench"), max(3, args.repeats // 3))
        png = figure_png(a, "bench")
        zones = [z.name for z in a.zones]
        t_html = median_s(lambda a=a, png=png, zones=zones: page_html("bench", png, a.columns,
                                                                      zones),
                          args.repeats)
        r = {"what": c["what"], "measure_s": t_measure, "figure_s": t_figure, "html_s": t_html,
             "segment_s": c["segment_s"], "segments": a.columns["segments"],
             "faz_status": a.columns["faz_status"], "png_kb": len(png) / 1024}
        raw.append(r)
        rows.append([r["what"], f"{1000 * t_measure:.0f}", f"{1000 * (t_figure + t_html):.0f}",
                     f"{1000 * r['segment_s']:.0f}", r["segments"], r["faz_status"]])
    body = ("Per image, median of repeated runs in one process (single-threaded NumPy/SciPy; "
            "another job was using the 2 cores while this ran, so absolute times are "
            "pessimistic and the ratios are what to read). *measure*: "
            "`retinaseg.measure.analyse_mask` (centerline, graph, tortuosity, fractal "
            "dimension, FAZ, grid); *report*: the PNG figure plus the HTML page; *segmentation*: "
            "the bundled model on the same image, for scale (`octa-vessels` for OCTA, "
            "`fundus-vessels` for DRIVE; its defaults but one thread, like the measurements; "
            "the `inference_speed` section has both models with two threads on an idle "
            "machine).\n\n"
            + md_table(["input", "measure (ms)", "report (ms)", "segmentation (ms)",
                        "segments", "FAZ"], rows))
    publish("measure_speed", "Clinical measurements: time per image", body, raw)
    return raw


if __name__ == "__main__":
    main()

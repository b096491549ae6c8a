"""Reports of the measurements: ``measurements.csv``, a PNG figure and a self-contained HTML
page per image, and an ``index.html`` for the folder.

The figure (matplotlib, Agg canvas, no ``pyplot`` state) shows the image, the mask overlay with
the FAZ outline and the grid with each zone's vessel area density, the centerline coloured by
calibre and by tortuosity (arc/chord per segment), and the distributions of both. The HTML page
embeds that figure as a base64 PNG and lists every column; it loads nothing from elsewhere, so
it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

from retinaseg.evaluation.figures import overlay
from retinaseg.measure.grid import ETDRS_DIAMETERS_MM
from retinaseg.utils.atomic import write_bytes_atomic, write_text_atomic

if TYPE_CHECKING:  # api imports this module to write its reports
    from retinaseg.measure.api import Analysis

__all__ = ["figure_png", "page_html", "write_csv", "write_image_report", "write_index"]

INDEX_COLUMNS = ("vessel_area_density", "skeleton_length_density", "vessel_diameter_index",
                 "tortuosity_arc_chord_mean", "fractal_dimension_skeleton", "faz_area",
                 "faz_circularity", "faz_status")
"""Columns (by prefix: the unit suffix varies) shown in ``index.html``."""
TORTUOSITY_RANGE = (1.0, 1.4)
"""Colour range of the arc/chord map."""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _cell(value: Any, digits: int | None) -> Any:
    """A CSV cell: ``digits`` set: :func:`_fmt`'s text at that precision; None: the value as
    ``csv`` writes it (floats in full, None empty), NaN as ``nan``."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if digits is None:
        return value
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def csv_text(rows: list[dict[str, Any]], digits: int | None = 6,
             lineterminator: str = "\r\n") -> str:
    """``rows`` as CSV text: the union of their columns in first-seen order (a missing value
    is empty), floats to ``digits`` significant digits (None: as Python prints them), NaN as
    ``nan``."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=names, restval="", lineterminator=lineterminator)
    w.writeheader()
    w.writerows({k: _cell(v, digits) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV (:func:`csv_text`, floats to 6 significant digits); nothing when
    there are no rows."""
    if rows:
        write_text_atomic(path, csv_text(rows))


# ----------------------------------------------------------------------------------------------
# Figure
# ----------------------------------------------------------------------------------------------


def _grey(a: Analysis) -> np.ndarray:
    """The image as RGB float in [0, 1] (the mask in grey when there is no image)."""
    if a.image is None:
        return np.repeat((a.mask * 0.6)[..., None], 3, axis=-1)
    img = np.clip(np.asarray(a.image, dtype=np.float32), 0, 1)
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img[..., :3]


def _thick(values: np.ndarray) -> np.ndarray:
    """Centerline values spread to their 3×3 neighbourhood (visible when the figure is
    smaller than the image); NaN stays NaN."""
    filled = np.where(np.isfinite(values), values, -np.inf)
    out = ndimage.maximum_filter(filled, size=3)
    return np.where(np.isfinite(out), out, np.nan)


def _segment_map(a: Analysis) -> np.ndarray:
    """Arc/chord of each segment painted on its pixels (NaN elsewhere and where unmeasured)."""
    out = np.full(a.mask.shape, np.nan)
    g = a.vessels.graph
    for seg, val in zip(g.segments, a.vessels.arc_chord):
        if np.isfinite(val):
            out[seg[:, 0], seg[:, 1]] = val
    return out


def _draw_grid(ax: Any, a: Analysis) -> None:
    """Grid lines and each zone's vessel area density (%) at its centroid."""
    cy, cx = a.centre
    h, w = a.mask.shape
    names = [z.name for z in a.zones]
    if names and names[0].startswith("etdrs") and a.mm_per_px is not None:
        radii = [d / 2 / a.mm_per_px for d in ETDRS_DIAMETERS_MM]
        for r in radii:
            ax.add_patch(_circle((cx, cy), r))
        for ang in (45, 135, 225, 315):
            t = math.radians(ang)
            ax.plot([cx + radii[0] * math.cos(t), cx + radii[2] * math.cos(t)],
                    [cy - radii[0] * math.sin(t), cy - radii[2] * math.sin(t)],
                    color="yellow", lw=0.8)
    elif names and names[0].startswith("quadrant"):
        reach = 2 * max(h, w)
        for ang in (45, 135):
            t = math.radians(ang)
            ax.plot([cx - reach * math.cos(t), cx + reach * math.cos(t)],
                    [cy + reach * math.sin(t), cy - reach * math.sin(t)], color="yellow", lw=0.8)
    for z in a.zones:
        val = a.columns.get(f"{z.name}_vessel_area_density", math.nan)
        if z.mask.any() and np.isfinite(val):
            ry, rx = ndimage.center_of_mass(z.mask)
            ax.text(rx, ry, f"{100 * val:.0f}", color="yellow", fontsize=8, ha="center",
                    va="center", fontweight="bold")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def _circle(xy: tuple[float, float], r: float) -> Any:
    from matplotlib.patches import Circle

    return Circle(xy, r, fill=False, color="yellow", lw=0.8)


def _panel_image(ax: Any, a: Analysis, title: str) -> None:
    ax.imshow(_grey(a), interpolation="antialiased")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def figure_png(a: Analysis, title: str = "", dpi: int = 90) -> bytes:
    """The report figure of one analysis as PNG bytes (2 × 3 panels)."""
    fig = Figure(figsize=(14, 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    _panel_image(axes[0, 0], a, "image" if a.image is not None else "mask (no image given)")
    ov = overlay(_grey(a), a.mask, color=(255, 60, 60), alpha=0.55)
    axes[0, 1].imshow(ov)
    if a.faz.found:
        axes[0, 1].contour(a.faz.mask, levels=[0.5], colors="cyan", linewidths=1.2)
    _draw_grid(axes[0, 1], a)
    axes[0, 1].set_title("mask, FAZ (cyan), grid: vessel area density %", fontsize=9)
    axes[0, 1].set_axis_off()
    dim = np.repeat((a.mask * 0.25)[..., None], 3, axis=-1)
    path = a.vessels.graph.degree == 2  # branch points read the width of the junction
    for ax, values, cmap, label, rng in (
            (axes[0, 2], np.where(path, a.vessels.calibre, np.nan), "viridis", "calibre (px)",
             None),
            (axes[1, 0], _segment_map(a), "plasma", "tortuosity (arc/chord)", TORTUOSITY_RANGE)):
        ax.imshow(dim)
        shown = _thick(values)
        finite = values[np.isfinite(values)]
        lo, hi = rng or ((float(finite.min()), float(np.percentile(finite, 98)))
                         if finite.size else (0.0, 1.0))
        im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=lo, vmax=max(hi, lo + 1e-6),
                       interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label=label)
        ax.set_title(f"centerline coloured by {label}", fontsize=9)
        ax.set_axis_off()
    _histogram(axes[1, 1], a.vessels.arc_chord, "tortuosity, arc/chord per segment", "segments")
    _histogram(axes[1, 2], a.vessels.calibre[path], "calibre at centerline pixels (px)",
               "pixels")
    if title:
        fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _histogram(ax: Any, values: np.ndarray, xlabel: str, ylabel: str) -> None:
    v = values[np.isfinite(values)]
    if v.size:
        ax.hist(v, bins=min(40, max(5, v.size // 5)), color="#4477aa")
        ax.axvline(float(np.median(v)), color="k", lw=1, ls="--", label="median")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------

_STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:1300px}"
          "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
          "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:0.9em}"
          "th{background:#eee}img{max-width:100%}")


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(_fmt(v))}</td>"
                   "</tr>" for k, v in rows)
    return f"<table><tr><th>column</th><th>value</th></tr>{body}</table>"


def _groups(row: dict[str, Any], zones: list[str]) -> list[tuple[str, list[tuple[str, Any]]]]:
    zone_cols = {k for k in row if any(k.startswith(z + "_") for z in zones)}
    faz = [(k, v) for k, v in row.items() if k.startswith("faz_")]
    grid = [(k, v) for k, v in row.items() if k.startswith("grid") and k not in zone_cols]
    rest = [(k, v) for k, v in row.items()
            if not k.startswith(("faz_", "grid")) and k not in zone_cols]
    return [("Image and vessels", rest), ("Foveal avascular zone", faz), ("Grid", grid)]


def _zone_table(row: dict[str, Any], zones: list[str]) -> str:
    if not zones:
        return ""
    per = next((k.split("skeleton_length_density_")[1] for k in row
                if "_skeleton_length_density_" in k), "per_px")
    body = "".join(
        f"<tr><td>{html.escape(z)}</td>"
        f"<td>{_fmt(row.get(f'{z}_vessel_area_density', math.nan))}</td>"
        f"<td>{_fmt(row.get(f'{z}_skeleton_length_density_{per}', math.nan))}</td></tr>"
        for z in zones)
    return (f"<h2>Zones</h2><table><tr><th>zone</th><th>vessel area density</th>"
            f"<th>skeleton length density ({per.replace('_', ' ')})</th></tr>{body}</table>")


def page_html(title: str, png: bytes, row: dict[str, Any], zones: list[str]) -> str:
    """A self-contained HTML page: the figure (base64 PNG), the zones and every column."""
    img = base64.b64encode(png).decode("ascii")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<img alt='measurement figure' src='data:image/png;base64,{img}'>",
             _zone_table(row, zones)]
    for name, rows in _groups(row, zones):
        parts.append(f"<h2>{name}</h2>{_table(rows)}")
    parts.append("<p>Column definitions: docs/reference/measurements.md of retinaseg.</p>"
                 "</body></html>")
    return "\n".join(parts)


def write_image_report(out: Path, stem: str, a: Analysis, row: dict[str, Any], *,
                       html: bool = True, write_mask: bool = False) -> list[Path]:
    """Write ``<stem>_measure.png``, ``<stem>.html`` (``html``) and ``<stem>_mask.png``
    (``write_mask``) into ``out``; returns the paths written."""
    from retinaseg.io import write_png

    title = Path(str(row.get("image", stem))).name
    png = figure_png(a, title)
    written = [out / f"{stem}_measure.png"]
    write_bytes_atomic(written[0], png)
    if html:
        written.append(out / f"{stem}.html")
        write_text_atomic(written[-1], page_html(title, png, row, [z.name for z in a.zones]))
    if write_mask:
        written.append(out / f"{stem}_mask.png")
        write_png(written[-1], a.mask)
    return written


def write_index(path: Path, pages: list[tuple[str, dict[str, Any]]]) -> None:
    """``index.html``: one row per image, linking its page, with the main columns."""
    first = pages[0][1]
    cols = [next((k for k in first if k.startswith(p)), None) for p in INDEX_COLUMNS]
    cols = [c for c in cols if c]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["image", *cols])
    body = "".join(
        f"<tr><td><a href='{html.escape(stem)}.html'>{html.escape(Path(row['image']).name)}"
        f"</a></td>" + "".join(f"<td>{html.escape(_fmt(row.get(c, '')))}</td>" for c in cols)
        + "</tr>" for stem, row in pages)
    write_text_atomic(path, f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
                            f"measurements</title><style>{_STYLE}</style></head><body>"
                            f"<h1>Measurements ({len(pages)} images)</h1><p>All columns: "
                            f"<a href='measurements.csv'>measurements.csv</a>.</p><table>"
                            f"<tr>{head}</tr>{body}</table></body></html>")

"""Sharded and resumable batch prediction: which inputs a shard takes, which are already done,
and joining the shards' ``predictions-<i>.csv`` into one ``predictions.csv``.

- A shard is ``I/N``, counted **from 1** (``1/2`` and ``2/2``), or ``auto``: ``RANK`` /
  ``WORLD_SIZE`` (torchrun; rank 0 is shard 1) or else ``SLURM_PROCID`` / ``SLURM_NTASKS``.
- Shard ``I`` of ``N`` takes the inputs at positions ``I−1, I−1+N, I−1+2N, ...`` of the list
  ``predict`` makes (the inputs in the order given, a folder's files in natural order), so the
  split is the same on every machine and every run. Output names (``x``, ``x-2`` for two inputs
  with the same stem) are given over the whole list first, so a shard writes exactly the files
  a single process would.
- Each finished image leaves a record ``.predict-done/<stem>.json`` (its CSV row, its output
  files and a fingerprint of the input file and the settings). A later run with the same
  settings keeps that row and does not redo the image when every output file is still there.
- Each shard ends by writing ``predictions-<I>.csv`` and ``.predict-done/shard-<I>-of-<N>.json``
  (the list positions of its rows); :func:`merge_predictions` needs all ``N`` of them and
  writes the rows in list order, the same ``predictions.csv`` as one process.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from retinaseg.errors import RetinasegError
from retinaseg.utils.atomic import write_text_atomic

DONE_DIR = ".predict-done"
"""Folder (inside the output folder) of the per-image records and the shard manifests."""

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``, counted from 1."""

    index: int
    count: int

    @property
    def csv_name(self) -> str:
        """``predictions-<index>.csv``."""
        return f"predictions-{self.index}.csv"

    def take(self, n: int) -> list[int]:
        """The list positions (0-based) of ``n`` inputs this shard segments: every
        ``count``-th from ``index − 1``."""
        return list(range(self.index - 1, n, self.count))


def _env_shard(env: Mapping[str, str]) -> Shard:
    """The shard of this process from torchrun's or Slurm's environment variables."""
    for rank_key, size_key, who in (("RANK", "WORLD_SIZE", "torchrun"),
                                    ("SLURM_PROCID", "SLURM_NTASKS", "Slurm")):
        if rank_key in env and size_key in env:
            rank, size = env[rank_key].strip(), env[size_key].strip()
            if not (rank.isdigit() and size.isdigit()) or int(rank) >= int(size):
                raise RetinasegError(f"--shard auto: {who} gives {rank_key}={rank!r} and "
                                     f"{size_key}={size!r}, not a rank below the task count")
            return Shard(int(rank) + 1, int(size))
    raise RetinasegError("--shard auto needs RANK and WORLD_SIZE (torchrun) or SLURM_PROCID "
                         "and SLURM_NTASKS (Slurm) in the environment; outside them give "
                         "--shard I/N")


def parse_shard(text: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """``None`` → None (no sharding); ``"I/N"`` → ``Shard(I, N)`` with ``1 <= I <= N``;
    ``"auto"`` → from ``env`` (default ``os.environ``), see the module docstring."""
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return _env_shard(os.environ if env is None else env)
    m = _SPEC.match(text)
    if m is None or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise RetinasegError(f"--shard must be I/N with whole numbers 1 <= I <= N (shard I of "
                             f"N, counted from 1), or auto, not '{text}'")
    return Shard(int(m.group(1)), int(m.group(2)))


def fingerprint(path: Path, settings: Mapping[str, Any]) -> str:
    """SHA-256 hex of the input's path, size and modification time and of ``settings``."""
    try:
        st = path.stat()
        stamp = [str(path.resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        stamp = [str(path), None, None]
    text = json.dumps([stamp, settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DoneLedger:
    """Per-image records in ``<out>/.predict-done/`` that make a run resumable."""

    def __init__(self, out: Path, settings: Mapping[str, Any]) -> None:
        self.dir = out / DONE_DIR
        self.out = out
        self.settings = dict(settings)

    def _record(self, stem: str) -> Path:
        return self.dir / f"{stem}.json"

    def done_row(self, path: Path, stem: str) -> dict[str, Any] | None:
        """The CSV row of an image already done with these settings and whose output files
        are all present, else None (then it is segmented again)."""
        try:
            rec = json.loads(self._record(stem).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if rec.get("fingerprint") != fingerprint(path, self.settings):
            return None
        if not all((self.out / name).is_file() for name in rec.get("files", [])):
            return None
        return rec.get("row")

    def done_rows(self, todo: Sequence[int], items: Sequence[Any], stems: Sequence[str]
                  ) -> dict[int, dict[str, Any]]:
        """``{position: row}`` of the inputs of ``todo`` already done (``items[i].path``)."""
        rows = {pos: self.done_row(items[pos].path, stems[pos]) for pos in todo}
        return {pos: row for pos, row in rows.items() if row is not None}

    def record(self, path: Path, stem: str, row: Mapping[str, Any],
               files: Sequence[str]) -> None:
        """Note an image as done (after its outputs were written, atomically)."""
        rec = {"fingerprint": fingerprint(path, self.settings), "row": dict(row),
               "files": list(files)}
        write_text_atomic(self._record(stem), json.dumps(rec, indent=1, default=str))


def run_settings(model: Any, threshold: float | None, options: Any, volume: bool | None,
                 projection: str, measure: Callable[..., Any] | None,
                 segmenter: Callable[..., Any]) -> dict[str, Any]:
    """What decides a prediction's outputs (the fingerprint of :class:`DoneLedger`); the
    thread count and device do not (a shard may run with other threads)."""
    opts = asdict(options) if is_dataclass(options) else {"options": repr(options)}
    for key in ("threads", "device"):
        opts.pop(key, None)
    return {"model": None if model is None else str(model), "threshold": threshold,
            "options": opts, "volume": volume, "projection": projection,
            "measure": getattr(measure, "__qualname__", None if measure is None else "yes"),
            "segmenter": getattr(segmenter, "__qualname__", repr(segmenter))}


def progress(todo: Sequence[int], done: Mapping[int, Any], desc: str) -> Iterator[int]:
    """Yield ``todo`` under a tqdm bar (images/s) that starts at the ``done`` count and counts
    each other position once the caller has finished with it (so the rate is that of the
    images actually segmented)."""
    with tqdm(total=len(todo), initial=len(done), desc=desc, unit="img") as bar:
        for pos in todo:
            yield pos
            if pos not in done:
                bar.update(1)


def output_files(stem: str, classes: bool, volume: bool) -> list[str]:
    """The names of the files ``predict`` writes for ``stem``: ``_prob``, ``_mask`` and
    ``_overlay`` PNGs (a multi-class model: ``_classes`` and ``_classes_colour``), and
    ``_projection`` for a volume."""
    kinds = ["classes", "classes_colour"] if classes else ["prob", "mask", "overlay"]
    return [f"{stem}_{k}.png" for k in (["projection"] if volume else []) + kinds]


def write_manifest(out: Path, shard: Shard, positions: Sequence[int]) -> None:
    """Mark shard ``shard`` finished: the list positions of the rows of its CSV, in order."""
    path = out / DONE_DIR / f"shard-{shard.index}-of-{shard.count}.json"
    write_text_atomic(path, json.dumps({"shard": shard.index, "count": shard.count,
                                        "csv": shard.csv_name, "positions": list(positions)}))


def _manifests(out: Path) -> list[dict[str, Any]]:
    """The finished shards' manifests in ``out``; all must name one shard count and all its
    shards must be there."""
    found = [json.loads(p.read_text(encoding="utf-8"))
             for p in sorted((out / DONE_DIR).glob("shard-*-of-*.json"))]
    counts = {m["count"] for m in found}
    if not found:
        raise RetinasegError(f"no finished shard in '{out}': run 'retinaseg predict --shard "
                             "I/N' for every shard first")
    if len(counts) > 1:
        raise RetinasegError(f"'{out}' holds shards of runs split {sorted(counts)} ways; "
                             "remove the stale ones from .predict-done/")
    n = counts.pop()
    missing = sorted(set(range(1, n + 1)) - {m["shard"] for m in found})
    if missing:
        raise RetinasegError(f"shard(s) {', '.join(map(str, missing))} of {n} have not "
                             f"finished in '{out}'; run them, then merge again")
    return found


def merge_predictions(out: str | Path) -> Path:
    """Join the ``predictions-<I>.csv`` of every shard in ``out`` into ``predictions.csv``
    (rows in input-list order, the header of the first row's shard) and return its path."""
    out = Path(out)
    if not out.is_dir():
        raise RetinasegError(f"output folder '{out}' does not exist")
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    first = None
    for m in _manifests(out):
        if not m["positions"]:
            continue
        with open(out / m["csv"], newline="", encoding="utf-8") as fh:
            table = list(csv.reader(fh))
        if len(table) - 1 != len(m["positions"]):
            raise RetinasegError(f"{m['csv']} in '{out}' has {len(table) - 1} rows but its "
                                 f"shard finished {len(m['positions'])}; run that shard again")
        if first is None or min(m["positions"]) < first:
            first, header = min(m["positions"]), table[0]
        rows += list(zip(m["positions"], table[1:], strict=True))
    if header is None:
        raise RetinasegError(f"no shard in '{out}' segmented any input")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(r for _, r in sorted(rows, key=lambda pr: pr[0]))
    path = out / "predictions.csv"
    write_text_atomic(path, buf.getvalue())
    return path


__all__ = ["DONE_DIR", "DoneLedger", "Shard", "fingerprint", "merge_predictions",
           "output_files", "parse_shard", "progress", "run_settings", "write_manifest"]

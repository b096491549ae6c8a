"""Shared helpers for benchmark scripts: machine facts and result sections.

Each benchmark writes ``benchmarks/results/<name>.md`` (a self-contained section with date,
machine, threads and the command that produced it) and, where useful, a JSON file with the raw
numbers. ``benchmarks/run_all.py`` re-runs the scripts and joins the sections into RESULTS.md.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import date
from pathlib import Path

import torch

from retinaseg.utils.atomic import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("RETINASEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def machine() -> str:
    """One line describing the machine the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = float("nan")
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {ncpu} cores, {mem_gb:.0f} GB RAM, no GPU used; Python "
            f"{platform.python_version()}, torch {torch.__version__}, "
            f"torch threads {torch.get_num_threads()}")


def command() -> str:
    """The command line that ran this script, relative to the repo."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    return "PYTHONPATH=src .venv/bin/python " + " ".join(
        shlex.quote(a) for a in [str(script), *sys.argv[1:]])


def write_section(name: str, title: str, body: str) -> Path:
    """Write ``results/<name>.md`` with a header (date, machine, command) and ``body``."""
    text = (f"## {title}\n\n- date: {date.today().isoformat()}\n- machine: {machine()}\n"
            f"- command: `{command()}`\n\n{body.strip()}\n")
    path = RESULTS / f"{name}.md"
    write_text_atomic(path, text)
    return path


def publish(name: str, title: str, body: str, raw: object) -> None:
    """Write ``results/<name>.json`` (the raw figures) and the ``results/<name>.md`` section,
    both atomically, and print the section body."""
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(raw, indent=2, default=float))
    write_section(name, title, body)
    print(body)


def md_table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table; floats are printed with 4 significant decimals."""
    def fmt(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)

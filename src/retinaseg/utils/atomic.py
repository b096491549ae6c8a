"""Atomic file writes: write to a temporary file in the same folder, then rename.

A run killed mid-write leaves either the old file or no file, never half a file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from retinaseg.errors import RetinasegError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    The temporary file keeps the final suffix so that libraries choosing a format by
    extension (Pillow, tifffile, safetensors) behave the same.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}",
                               dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def make_out_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (and its parents) and return it.

    Raises :class:`RetinasegError` naming the folder when it is an existing file or cannot be
    created (permissions, read-only disk), so a run fails before any work is done.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise RetinasegError(f"output folder '{out}' is an existing file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RetinasegError(f"cannot create output folder '{out}': "
                             f"{err.strerror or err}") from None
    return out

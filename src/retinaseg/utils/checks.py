"""Range checks for numeric options, each ending in one sentence that names the option."""

from __future__ import annotations

import math
from typing import Any

from retinaseg.errors import OptionError


def check_number(name: str, value: Any, lo: float, hi: float = math.inf, *,
                 integer: bool = False, lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise :class:`~retinaseg.errors.OptionError` unless ``value`` is a finite number (a whole
    one with ``integer``) with ``lo <= value <= hi``; ``lo_open``/``hi_open`` exclude the ends.

    >>> check_number("tile", 64, 16, integer=True)
    >>> check_number("overlap", 1.0, 0, 1, hi_open=True)
    Traceback (most recent call last):
    ...
    retinaseg.errors.OptionError: overlap must be at least 0 and below 1, not 1
    """
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        kind = "a whole number" if integer else "a finite number"
        raise OptionError(f"{name} must be {kind}, not {value!r}")
    low_bad = value <= lo if lo_open else value < lo
    high_bad = value >= hi if hi_open else value > hi
    if low_bad or high_bad:
        lower = f"above {lo:g}" if lo_open else f"at least {lo:g}"
        upper = "" if hi == math.inf else (f" and below {hi:g}" if hi_open
                                           else f" and at most {hi:g}")
        raise OptionError(f"{name} must be {lower}{upper}, not {value:g}")

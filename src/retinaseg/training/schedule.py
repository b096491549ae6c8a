"""Learning-rate schedules as pure functions of training progress (epochs, fractional).

Being a function of progress alone, the schedule needs no state of its own to resume.
"""

from __future__ import annotations

import math

from retinaseg.training.config import ScheduleConfig


def lr_factor(cfg: ScheduleConfig, t: float, total: int) -> float:
    """Multiplier of the base lr at fractional epoch ``t`` of ``total`` epochs."""
    if cfg.warmup_epochs and t < cfg.warmup_epochs:
        return (t + 1e-3) / cfg.warmup_epochs
    frac = min(1.0, t / max(total, 1))
    if cfg.name == "step":
        return cfg.gamma ** int(t // cfg.step_size)
    if cfg.name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * frac))
    if cfg.name == "poly":
        f = cfg.poly_offset
        return (1 - (f + (1 - f) * frac)) ** cfg.power
    if cfg.name == "onecycle":
        peak = 0.3
        if frac < peak:
            return 0.04 + 0.96 * frac / peak
        return 0.5 * (1 + math.cos(math.pi * (frac - peak) / (1 - peak)))
    return 1.0


def learning_rate(cfg: ScheduleConfig, base_lr: float, t: float, total: int) -> float:
    """The lr at fractional epoch ``t``, never below ``cfg.min_lr``."""
    return max(cfg.min_lr, base_lr * lr_factor(cfg, t, total))

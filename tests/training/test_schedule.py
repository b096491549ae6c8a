"""Learning-rate schedules at known points."""

from __future__ import annotations

import pytest

from retinaseg.training.config import ScheduleConfig
from retinaseg.training.schedule import learning_rate


def test_cosine_endpoints_and_middle() -> None:
    c = ScheduleConfig(name="cosine")
    assert learning_rate(c, 1.0, 0, 10) == pytest.approx(1.0)
    assert learning_rate(c, 1.0, 5, 10) == pytest.approx(0.5)
    assert learning_rate(c, 1.0, 10, 10) == pytest.approx(0.0, abs=1e-12)


def test_step_poly_constant_warmup() -> None:
    assert learning_rate(ScheduleConfig(name="step", step_size=3, gamma=0.1), 1, 7, 10) == \
        pytest.approx(0.01)
    assert learning_rate(ScheduleConfig(name="poly", power=1.0), 2, 5, 10) == pytest.approx(1.0)
    assert learning_rate(ScheduleConfig(name="constant"), 3, 9, 10) == 3
    w = ScheduleConfig(name="constant", warmup_epochs=4)
    assert learning_rate(w, 1, 1, 10) == pytest.approx(0.25, abs=1e-3)


def test_onecycle_rises_then_falls() -> None:
    c = ScheduleConfig(name="onecycle")
    lrs = [learning_rate(c, 1.0, t, 10) for t in range(11)]
    peak = lrs.index(max(lrs))
    assert 0 < peak < 10 and lrs[0] < lrs[peak] and lrs[-1] < 1e-6


def test_poly_offset_reproduces_the_octanet_fine_stage_quirk() -> None:
    cfg = ScheduleConfig(name="poly", power=0.9, poly_offset=0.5)
    # the seed offsets the epoch by 300 of 600: lr starts at 0.5^0.9 ≈ 0.536·lr0, ends at 0
    assert learning_rate(cfg, 1.0, 0, 300) == pytest.approx(0.5 ** 0.9)
    assert learning_rate(cfg, 1.0, 150, 300) == pytest.approx(0.25 ** 0.9)
    assert learning_rate(cfg, 1.0, 300, 300) == pytest.approx(0.0)
    assert learning_rate(ScheduleConfig(name="poly", power=0.9), 1.0, 0, 300) == 1.0

"""Mixed-precision training: which mode each device gets (the bfloat16 run that learns is in
test_trainer.py, on its tiny config)."""

from __future__ import annotations

import pytest
import torch

from retinaseg.training import trainer


def test_cpu_default_is_float32() -> None:
    assert trainer._amp_mode(torch.device("cpu"), None) == (False, None)
    assert trainer._amp_mode(torch.device("cpu"), False) == (False, None)


def test_cuda_default_is_float16() -> None:
    assert trainer._amp_mode(torch.device("cuda"), None) == (True, torch.float16)
    assert trainer._amp_mode(torch.device("cuda"), False)[0] is False


def test_cpu_bf16_when_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: True)
    assert trainer._amp_mode(torch.device("cpu"), True) == (True, torch.bfloat16)


def test_cpu_without_bf16_warns_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert trainer._amp_mode(torch.device("cpu"), True) == (False, None)

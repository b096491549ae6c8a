"""Shared fixtures of the reliability tests: a tiny model file and a CLI runner.

The model is an *untrained* tiny U-Net: these tests check what the user sees for bad inputs
(exit codes, messages, which files are written), not segmentation quality.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from retinaseg.cli import main
from retinaseg.models import build_model
from retinaseg.models.persistence import ModelSpec, save_model


@dataclass
class CliResult:
    """Exit code and captured output of one ``retinaseg`` command."""

    code: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.startswith("error: ")]

    def assert_fatal(self, *needles: str) -> str:
        """Exit code 2, no traceback, exactly one ``error:`` line containing every needle."""
        assert self.code == 2, self.err
        assert "Traceback" not in self.err, self.err
        errors = self.error_lines()
        assert len(errors) == 1, self.err
        for needle in needles:
            assert needle in errors[0], errors[0]
        return errors[0]

    def assert_ok(self) -> None:
        assert self.code == 0, self.err
        assert "Traceback" not in self.err and not self.error_lines(), self.err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``retinaseg ARGS...`` in this process; returns a :class:`CliResult`."""

    def run(*argv: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def save_tiny(path: Path, preprocess: list[dict] | str, in_channels: int = 1) -> Path:
    """An untrained 2-level, width-4 U-Net saved as a retinaseg model file."""
    net = build_model("unet", in_channels, depth=2, width=4)
    spec = ModelSpec("unet", in_channels, {"depth": 2, "width": 4}, preprocess=preprocess)
    return save_model(path, net, spec)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Grey-input tiny model (preprocessing: grey)."""
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny.safetensors", [{"name": "grey"}])


@pytest.fixture(scope="module")
def fundus_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny model with the DRIVE preprocessing (green channel, CLAHE, standardise)."""
    steps = [{"name": "green"}, {"name": "clahe"}, {"name": "standardise"}]
    return save_tiny(tmp_path_factory.mktemp("model") / "fundus.safetensors", steps)

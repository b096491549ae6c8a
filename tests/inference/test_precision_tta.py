"""bfloat16 inference on CPUs with native bfloat16, and the flip TTA modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from retinaseg.errors import ConfigError, RetinasegError
from retinaseg.inference import predict_probability
from retinaseg.inference.predictor import tta_flips
from retinaseg.models import build_model
from retinaseg.models.persistence import ModelSpec, save_model
from retinaseg.utils.runtime import cpu_has_bf16, resolve_precision


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", 1, depth=2, width=4, norm="batch").eval()


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu sse2 avx2 avx512f avx512_bf16 amx_tile", True),
    ("fpu sse2 avx2 amx_bf16", True),
    ("fpu sse2 avx2 avx512f avx512bw", False),  # AVX-512 alone emulates bfloat16
])
def test_cpu_has_bf16_reads_the_cpu_flags(tmp_path: Path, flags: str, expected: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_bf16.__wrapped__(str(info)) is expected
    assert cpu_has_bf16.__wrapped__(str(tmp_path / "missing")) is False


def test_resolve_precision() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16", cpu)


def test_bf16_probabilities_stay_close_to_fp32() -> None:
    img = np.random.default_rng(0).random((1, 48, 40), dtype=np.float32)
    net = _net()
    ref = predict_probability(net, img)
    fast = predict_probability(net.to(memory_format=torch.channels_last), img, precision="bf16")
    assert fast.dtype == np.float32 and fast.shape == ref.shape
    assert np.abs(fast - ref).max() < 0.02  # bfloat16 keeps 8 bits of mantissa


def test_tta_modes_and_their_passes() -> None:
    assert tta_flips("none") == tta_flips(False) == tta_flips(None) == [()]
    assert tta_flips("hflip") == [(), (-1,)]
    assert tta_flips(True) == tta_flips("flips") == [(), (-1,), (-2,)]
    with pytest.raises(RetinasegError, match="tta must be one of none, hflip, flips"):
        tta_flips("rot90")


def test_hflip_tta_is_exactly_mirror_symmetric() -> None:
    """{identity, hflip} is a group: mirroring the input mirrors the output exactly."""
    img = np.random.default_rng(3).random((1, 32, 32), dtype=np.float32)
    net = _net()
    a = predict_probability(net, img, tta="hflip")
    b = predict_probability(net, img[:, :, ::-1].copy(), tta="hflip")[:, ::-1]
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, predict_probability(net, img))  # it did average something


def test_segmenter_uses_the_models_own_tta_unless_told(tmp_path: Path) -> None:
    from retinaseg.inference.segmenter import Segmenter

    spec = ModelSpec(name="unet", in_channels=1, params={"depth": 2, "width": 4},
                     preprocess=[{"name": "grey"}], info={"tta": "hflip"})
    path = save_model(tmp_path / "m.safetensors", _net(), spec)
    img = np.random.default_rng(4).random((32, 32)).astype(np.float32)
    seg = Segmenter(path, precision="fp32")
    assert seg.tta == "hflip" and Segmenter(path, tta="none").tta == "none"
    mirrored = seg(img[:, ::-1].copy())[:, ::-1]
    np.testing.assert_allclose(seg(img), mirrored, atol=1e-6)
    with pytest.raises(RetinasegError, match="tta must be one of"):
        Segmenter(path, tta="sideways")


def test_segmenter_bf16_converts_the_network_to_channels_last(tmp_path: Path) -> None:
    from retinaseg.inference.segmenter import Segmenter

    spec = ModelSpec(name="unet", in_channels=1, params={"depth": 2, "width": 4},
                     preprocess=[{"name": "grey"}])
    path = save_model(tmp_path / "m.safetensors", _net(), spec)
    img = np.random.default_rng(5).random((40, 40)).astype(np.float32)
    fast = Segmenter(path, precision="bf16", jit=False)  # the plain (eager) network
    ref = Segmenter(path, precision="fp32", jit=False)
    def layouts(seg: Segmenter) -> set[bool]:
        return {p.is_contiguous(memory_format=torch.channels_last)
                for p in seg.net.parameters() if p.dim() == 4 and min(p.shape[1:]) > 1}

    assert layouts(fast) == {True} and layouts(ref) == {False}
    assert np.abs(fast(img) - ref(img)).max() < 0.02


def test_batched_tta_equals_one_pass_per_flip() -> None:
    """Whole-image TTA batches the flipped copies; with too little room it runs them one by
    one (same whole-image path): both give the same map."""
    img = np.random.default_rng(6).random((1, 36, 44), dtype=np.float32)
    net = _net()
    batched = predict_probability(net, img, tta="flips")
    one_by_one = predict_probability(net, img, tta="flips", max_whole_pixels=36 * 44 * 2)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_tune_allocator_sets_glibc_thresholds_once_or_does_nothing(monkeypatch) -> None:
    import platform

    from retinaseg.utils.runtime import tune_allocator

    tune_allocator.cache_clear()
    monkeypatch.setenv("RETINASEG_NO_MALLOPT", "1")
    assert tune_allocator() is False
    tune_allocator.cache_clear()
    monkeypatch.delenv("RETINASEG_NO_MALLOPT")
    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")
    x = torch.randn(4, 8, 300, 300)  # 11 MB tensors still allocate and free normally
    assert float((x * 2).sum()) == pytest.approx(2 * float(x.sum()), rel=1e-4, abs=1e-2)

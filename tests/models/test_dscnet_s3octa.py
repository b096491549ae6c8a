"""DSCNet (reference §2.3) and S3-OCTA (§2.4): registry, odd sizes, gradients, channel wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaseg.errors import ConfigError
from retinaseg.inference import predict_probability
from retinaseg.models import build_model
from retinaseg.models.persistence import ModelSpec, load_model, save_model
from retinaseg.models.s3octa import ASPP, PRESETS, S3OCTA, EfficientSelfAttention, head_count
from retinaseg.models.snake import DSConv
from retinaseg.registry import MODELS

TINY = {
    "dscnet": {"width": 4, "kernel_size": 5},
    "s3octa_mit": {"width": 4, "kernel_size": 5, "depth": 3, "ga": "mit"},
    "s3octa_none": {"width": 4, "kernel_size": 5, "depth": 3, "ga": "none"},
}


def _build(key: str, in_channels: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(key.split("_")[0], in_channels, **TINY[key])


def test_registered_names() -> None:
    assert {"dscnet", "s3octa"} <= set(MODELS.names())
    assert build_model("dscnet", 1, width=4).size_multiple == 8
    assert build_model("s3octa", 1, width=4, depth=4).size_multiple == 8
    assert build_model("s3octa", 1, width=4, depth=3).size_multiple == 4


@pytest.mark.parametrize("key", sorted(TINY))
def test_predict_probability_on_odd_size(key: str) -> None:
    net = _build(key).eval()
    image = np.random.default_rng(0).random((2, 37, 53), dtype=np.float32)
    prob = predict_probability(net, image)
    assert prob.shape == (37, 53) and prob.dtype == np.float32
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1


@pytest.mark.parametrize("key", sorted(TINY))
def test_backward_reaches_every_offset_conv(key: str) -> None:
    net = _build(key).train()
    m = net.size_multiple
    x = torch.rand(1, 2, 37, 53)
    xp = torch.nn.functional.pad(x, (0, (-53) % m, 0, (-37) % m), mode="replicate")
    logits = net(xp)
    assert logits.shape == (1, 1, *xp.shape[-2:])
    logits[..., :37, :53].mean().backward()
    dsconvs = [mod for mod in net.modules() if isinstance(mod, DSConv)]
    assert len(dsconvs) == 2 * (7 if key == "dscnet" else 5)
    for mod in dsconvs:
        assert mod.offset_conv.weight.grad is not None
        assert mod.offset_conv.weight.grad.abs().sum() > 0
    if key == "s3octa_mit":
        assert net.ga_blocks["1"].attn.to_q.weight.grad.abs().sum() > 0


def _channels(net: S3OCTA, x: torch.Tensor) -> dict[str, tuple[int, int, int]]:
    """(in channels, out channels, out height) of every block, recorded by forward hooks."""
    seen: dict[str, tuple[int, int, int]] = {}

    def hook(name: str):
        def fn(_m, inputs, out):
            seen[name] = (inputs[0].shape[1], out.shape[1], out.shape[2])
        return fn

    named = {f"enc{i}": b for i, b in enumerate(net.encoder)}
    named |= {f"ga{k}": b for k, b in net.ga_blocks.items()}
    named |= {f"dec{len(net.decoder) - 1 - i}": b for i, b in enumerate(net.decoder)}
    named["head"] = net.head
    handles = [m.register_forward_hook(hook(n)) for n, m in named.items()]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return seen


def test_s3octa_channel_arithmetic_matches_reference_example() -> None:
    """§2.4 example (L 3, r 72, 304²) scaled to r 4 on 16²: every channel count / 18."""
    net = S3OCTA(3, 1, depth=3, width=4, kernel_size=3, ga="mit").eval()
    seen = _channels(net, torch.rand(1, 3, 16, 16))
    assert seen == {
        "enc0": (3, 4, 16),     # 3 → 72 @304²
        "enc1": (4, 8, 8),      # 72 → 144 @152²
        "ga1": (4, 8, 8),       # GA 72 → 144, skip 288
        "enc2": (8, 16, 4),     # bottleneck 144 → 288 @76²
        "dec1": (32, 8, 8),     # (288 + 288) → 144 @152²
        "dec0": (12, 4, 16),    # (144 + 72) → 72 @304²
        "head": (4, 1, 16),     # 72 → 1
    }


@pytest.mark.parametrize(("ga", "dec_in"), [("mit", [16, 8, 3]), ("aspp", [16, 8, 3]),
                                            ("none", [12, 6, 3])])
def test_s3octa_depth4_decoder_inputs(ga: str, dec_in: list[int]) -> None:
    r = 4
    net = S3OCTA(3, 1, depth=4, width=r, kernel_size=3, ga=ga)
    assert [b.conv[0].in_channels for b in net.decoder] == [d * r for d in dec_in]
    assert sorted(net.ga_blocks) == ([] if ga == "none" else ["1", "2"])


def test_presets_and_overrides() -> None:
    assert PRESETS["m"] == {"depth": 3, "width": 72, "kernel_size": 11, "extend_scope": 3.0,
                            "ga": "mit"}
    assert PRESETS["l"]["depth"] == 4 and PRESETS["l"]["width"] == 144
    net = build_model("s3octa", 3, preset="m")
    assert net.head.in_channels == 72 and net.encoder[0].dsconv_x.kernel_size == 11
    assert net.encoder[0].dsconv_x.extend_scope == 3.0 and net.size_multiple == 4
    small = build_model("s3octa", 1, preset="cpu", width=8)
    assert small.head.in_channels == 8 and small.encoder[0].dsconv_x.kernel_size == 9
    with pytest.raises(ConfigError, match="preset"):
        build_model("s3octa", 1, preset="xl")
    with pytest.raises(ConfigError, match="ga"):
        build_model("s3octa", 1, width=4, ga="swint")
    with pytest.raises(ConfigError, match="offset_norm|norm"):
        build_model("dscnet", 1, width=4, offset_norm="layer")


def test_ga_modules_edge_cases() -> None:
    assert [head_count(d) for d in (144, 32, 12, 7)] == [8, 8, 6, 7]
    attn = EfficientSelfAttention(12, heads=8)
    assert attn.heads == 6
    assert attn(torch.randn(1, 12, 2, 3)).shape == (1, 12, 2, 3)  # smaller than the 4×4 reduction
    aspp = ASPP(4, 8).train()
    assert aspp(torch.randn(1, 4, 6, 5)).shape == (1, 8, 6, 5)  # batch 1 in training mode


def test_safetensors_roundtrip_with_preset(tmp_path) -> None:
    params = {"preset": "cpu", "width": 4, "kernel_size": 3}
    net = build_model("s3octa", 1, **params).eval()
    path = save_model(tmp_path / "s3.safetensors", net, ModelSpec("s3octa", 1, params))
    net2, _ = load_model(path)
    x = torch.rand(1, 1, 12, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net2.eval()(x))

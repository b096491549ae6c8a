"""OCTA-Net (reference §5): coarse shapes and forward contract, reference widths, the fine
stage's frozen coarse nets and learned propagation, persistence and ImageNet weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from retinaseg.errors import ConfigError
from retinaseg.models import build_model
from retinaseg.models.octanet import (
    RCB,
    OctaNet,
    OctaNetFine,
    pad_to_multiple,
    propagate,
)
from retinaseg.models.persistence import ModelSpec, load_model, save_model


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def coarse() -> OctaNet:
    torch.manual_seed(0)
    return build_model("octanet", 3)


@pytest.fixture(scope="module")
def fine() -> OctaNetFine:
    torch.manual_seed(1)
    return build_model("octanet_fine", 3)


def test_resnest50_preset_matches_reference_widths():
    """The one full-size build: ResNeSt-50 trunk (timm resnest50d 27.48 M − fc 2.05 M) and the
    reference decoder widths (2048→1024 … RCB(64→32))."""
    net = build_model("octanet", 3, preset="resnest50")
    assert net.encoder.channels == [64, 256, 512, 1024, 2048]
    assert _count(net.encoder) == 25_434_240
    assert (net.up5_thick.in_channels, net.up5_thick.out_channels) == (2048, 1024)
    assert net.rcb5_thick.conv[0].in_channels == 2048
    assert net.rcb2_thick.conv[0].in_channels == 128 and net.rcb2_thick.conv[0].out_channels == 64
    assert (net.up2_thin.in_channels, net.up2_thin.out_channels) == (256, 64)
    assert net.rcb1_thin.conv[0].out_channels == 32 and net.head_thin.in_channels == 32
    assert _count(net) == 71_643_714


def test_cpu_preset_is_small(coarse):
    assert _count(coarse) <= 3_500_000
    assert coarse.encoder.channels == [32, 64, 128, 256, 384]


def test_eval_and_train_shapes_and_contract(coarse):
    x = torch.rand(2, 3, 64, 64)
    coarse.eval()
    with torch.no_grad():
        y = coarse(x)
        br = coarse.forward_branches(x)
    assert y.shape == (2, 1, 64, 64)
    assert set(br) == {"thick", "thin", "fused"}
    assert torch.equal(br["fused"], torch.maximum(br["thick"], br["thin"]))
    assert torch.equal(y, br["fused"])
    coarse.train()
    try:
        z = coarse(x)
    finally:
        coarse.eval()
    assert coarse.branches == ("fused", "thick", "thin") and z.shape == (2, 3, 64, 64)
    assert torch.equal(z[:, :1], torch.maximum(z[:, 1:2], z[:, 2:3]))


@pytest.mark.parametrize("size", [(67, 45), (31, 33), (5, 7)])
def test_any_input_size(coarse, size):
    coarse.eval()
    with torch.no_grad():
        assert coarse(torch.rand(1, 3, *size)).shape == (1, 1, *size)


def test_padding_modes():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert torch.equal(pad_to_multiple(x, 4), torch.nn.functional.pad(x, (0, 0, 0, 1), "reflect"))
    z = pad_to_multiple(x, 8, "zeros")
    assert z.shape == (1, 1, 8, 8) and z[..., 3:, :].abs().sum() == 0
    r = pad_to_multiple(x, 8)  # reflect cannot pad 5 rows on a 3-row image: replicate
    assert torch.equal(r[..., -1, :4], x[..., -1, :])
    assert pad_to_multiple(x, 1) is x
    net = build_model("octanet", 1, pad_mode="zeros", layers=[1, 1, 1, 1]).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 40, 33)).shape == (1, 1, 40, 33)


def test_rcb_is_relu_of_main_plus_shortcut():
    torch.manual_seed(3)
    rcb = RCB(6, 4).eval()
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad():
        ref = torch.relu(rcb.conv(x) + rcb.downsample(x))
        out = rcb(x)
    assert torch.equal(out, ref) and out.min() >= 0
    splat = rcb.conv[3]
    assert (splat.radix, splat.cardinality) == (2, 2) and rcb.conv[0].bias is None


def test_build_errors(tmp_path):
    with pytest.raises(ConfigError, match="one output map"):
        build_model("octanet", 3, out_channels=2)
    with pytest.raises(ConfigError, match="one output map"):
        build_model("octanet_fine", 3, out_channels=2)
    with pytest.raises(ConfigError, match="unknown preset"):
        build_model("octanet", 3, preset="resnest101")
    with pytest.raises(ConfigError, match="unknown parameter 'depth'"):
        build_model("octanet", 3, depth=4)
    with pytest.raises(ConfigError, match="pad_mode"):
        build_model("octanet", 3, pad_mode="circular")
    with pytest.raises(ConfigError, match="does not exist"):
        build_model("octanet", 3, imagenet_weights=str(tmp_path / "none.safetensors"))


def test_imagenet_weights_param(tmp_path):
    enc = build_model("octanet", 3, layers=[1, 1, 1, 1]).encoder
    torch.manual_seed(4)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in enc.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    net = build_model("octanet", 3, layers=[1, 1, 1, 1],
                      imagenet_weights=str(tmp_path / "w.safetensors"))
    assert all(torch.equal(v, state[k]) for k, v in net.encoder.state_dict().items())


def test_width_scale_override():
    net = build_model("octanet", 3, width_scale=0.125, layers=[1, 1, 1, 1])
    assert net.encoder.channels == [32, 32, 64, 128, 256]


def test_propagate_known_answers():
    s = torch.arange(1.0, 13.0).reshape(1, 1, 3, 4)
    onehot = torch.zeros(1, 9, 3, 4)
    onehot[:, 4] = 1  # centre
    assert torch.equal(propagate(s, onehot), s)
    right = torch.zeros(1, 9, 3, 4)
    right[:, 5] = 1  # δ = (0, +1): out(y, x) = S(y, x + 1), zero beyond the border
    expected = torch.zeros_like(s)
    expected[..., :, :-1] = s[..., :, 1:]
    assert torch.equal(propagate(s, right), expected)
    up = torch.zeros(1, 9, 3, 4)
    up[:, 1] = 1  # δ = (−1, 0)
    expected = torch.zeros_like(s)
    expected[..., 1:, :] = s[..., :-1, :]
    assert torch.equal(propagate(s, up), expected)
    mixed = torch.zeros(1, 9, 3, 4)
    mixed[:, 4], mixed[:, 3] = 0.25, 0.75  # 0.25·S(x) + 0.75·S(x − 1 column)
    assert propagate(s, mixed)[0, 0, 1, 2] == 0.25 * s[0, 0, 1, 2] + 0.75 * s[0, 0, 1, 1]


def test_fine_coarse_frozen_and_kept_in_eval(fine):
    fine.train()
    assert fine.training and fine.head.training
    assert not fine.coarse_thick.training
    assert all(not m.training for m in fine.coarse_thick.modules())
    assert all(not p.requires_grad for p in fine.coarse_thick.parameters())
    assert all(p.requires_grad for p in fine.head.parameters())
    assert fine.coarse_thin is None
    fine.eval()
    assert not fine.head.training


def test_fine_head_init(fine):
    head = fine.head
    assert [c.bias is None for c in (head.conv1, head.conv2)] == [True, True]
    assert torch.equal(head.conv3.bias, torch.eye(9)[4])
    assert (head.conv1.in_channels, head.conv1.out_channels, head.conv2.out_channels,
            head.conv3.out_channels) == (3, 64, 128, 9)
    assert abs(head.conv2.weight.std().item() - 0.1) < 0.005


def test_fine_weights_sum_to_one_and_shapes(fine):
    x = torch.rand(2, 3, 45, 38)
    fine.eval()
    with torch.no_grad():
        w = fine.head(torch.cat([x[:, :1], *fine.coarse_probabilities(x)], 1))
        y = fine(x)
    assert w.shape == (2, 9, 45, 38) and w.min() >= 0
    assert torch.allclose(w.sum(1), torch.ones(2, 45, 38), atol=1e-5)
    assert y.shape == (2, 1, 45, 38)
    fine.train()
    try:
        assert fine(x).shape == (2, 1, 45, 38)
    finally:
        fine.eval()


def test_fine_with_centre_weights_returns_s(fine, monkeypatch):
    """Weights forced one-hot at the centre tap: the output probability is S = max(P_thick,
    P_thin) (up to the 1e-6 clamp)."""
    def centre(inp: torch.Tensor) -> torch.Tensor:
        w = torch.zeros(inp.shape[0], 9, *inp.shape[2:])
        w[:, 4] = 1
        return w

    monkeypatch.setattr(fine.head, "forward", centre)
    x = torch.rand(1, 3, 40, 40)
    fine.eval()
    with torch.no_grad():
        p_thick, p_thin = fine.coarse_probabilities(x)
        y = fine(x)
    s = torch.maximum(p_thick, p_thin).clamp(1e-6, 1 - 1e-6)
    assert torch.allclose(torch.sigmoid(y), s, atol=1e-6)


def test_gradients_reach_the_head_only(fine):
    fine.train()
    try:
        fine.zero_grad(set_to_none=True)
        fine(torch.rand(2, 3, 32, 32)).mean().backward()
    finally:
        fine.eval()
    assert all(p.grad is None for p in fine.coarse_thick.parameters())
    grads = [p.grad for p in fine.head.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_load_coarse_and_two_coarse():
    torch.manual_seed(5)
    kw = {"layers": [1, 1, 1, 1]}
    a, b = build_model("octanet", 3, **kw), build_model("octanet", 3, **kw)
    fine = build_model("octanet_fine", 3, two_coarse=True, **kw)
    fine.load_coarse(a.state_dict(), b.state_dict())
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in fine.coarse_thick.state_dict().items())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in fine.coarse_thin.state_dict().items())
    assert not any(p.requires_grad for p in fine.coarse_thin.parameters())
    x = torch.rand(1, 3, 32, 32)
    a.eval(), b.eval()
    with torch.no_grad():
        p_thick, p_thin = fine.coarse_probabilities(x)
        assert torch.allclose(p_thick, torch.sigmoid(a.forward_branches(x)["thick"]))
        assert torch.allclose(p_thin, torch.sigmoid(b.forward_branches(x)["thin"]))
    other = build_model("octanet", 3)  # the cpu preset: another architecture
    with pytest.raises(ConfigError, match="another architecture"):
        fine.load_coarse(other.state_dict())
    one = build_model("octanet_fine", 3, **kw)
    with pytest.raises(ConfigError, match="one coarse net"):
        one.load_coarse(a.state_dict(), b.state_dict())


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(6)
    for name in ("octanet", "octanet_fine"):
        net = build_model(name, 1, layers=[1, 1, 1, 1]).eval()
        path = save_model(tmp_path / f"{name}.safetensors", net,
                          ModelSpec(name, 1, {"layers": [1, 1, 1, 1]}))
        loaded, _ = load_model(path)
        x = torch.rand(1, 1, 35, 29)
        with torch.no_grad():
            assert torch.equal(net(x), loaded(x))


def test_cpu_preset_file_size(tmp_path, coarse):
    path = save_model(tmp_path / "m.safetensors", coarse, ModelSpec("octanet", 3))
    assert path.stat().st_size <= 15 * 2**20

"""Folding eval-mode BatchNorm into the convolution before it keeps the maps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from retinaseg.inference.fuse import fold_batchnorm
from retinaseg.models import build_model


def _randomise_bn(net: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding has work to do."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return net.eval()


@pytest.mark.parametrize(("name", "params", "pairs"), [
    ("unet", {"depth": 2, "width": 4, "norm": "batch"}, 10),  # 5 DoubleConvs × 2
    ("monai_unet", {"channels": [8, 16, 32], "num_res_units": 1}, 6),
])
def test_folding_keeps_the_output_and_removes_every_batchnorm(name, params, pairs) -> None:
    torch.manual_seed(0)
    net = _randomise_bn(build_model(name, 1, **params))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = net(x)
        assert fold_batchnorm(net) == pairs
        out = net(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_only_conv_then_batchnorm_is_folded_and_training_mode_is_refused() -> None:
    seq = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))
    assert fold_batchnorm(_randomise_bn(seq)) == 0  # BN before conv; ReLU between conv and BN
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train())


@pytest.mark.parametrize("name, params", [
    ("unet", {"depth": 2, "width": 4}),
    ("monai_unet", {"channels": [4, 8, 16], "num_res_units": 1}),
    ("ensemble", {"member": "unet", "n_members": 2, "member_params": {"depth": 2, "width": 4}}),
])
def test_frozen_graph_matches_the_network_at_any_size(name, params) -> None:
    from retinaseg.inference.fuse import Frozen

    torch.manual_seed(0)
    net = build_model(name, 1, **params).eval()
    frozen = Frozen(net, 1, bf16=False)
    assert frozen.size_multiple == net.size_multiple
    for shape in [(1, 1, 32, 48), (2, 1, 64, 64)]:  # traced at another size
        x = torch.randn(*shape)
        with torch.no_grad():
            want = net(x)
            got = frozen(x)
        assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-5)


def test_segmenter_jit_gives_the_same_maps(tmp_path) -> None:
    import numpy as np

    from retinaseg.cli import main
    from retinaseg.data.synthetic import make_octa_sample
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.io import write_png

    img = make_octa_sample(96, seed=3)["image"]
    plain = Segmenter("octa-vessels", precision="fp32", jit=False)(img)
    frozen = Segmenter("octa-vessels", precision="fp32", jit=True)
    assert frozen.net.__class__.__name__ == "Frozen"
    np.testing.assert_allclose(frozen(img), plain, atol=1e-5)
    # bfloat16: the frozen graph holds bfloat16 weights instead of autocasting; same masks
    eager16 = Segmenter("octa-vessels", precision="bf16", jit=False)
    frozen16 = Segmenter("octa-vessels", precision="bf16", jit=True)
    assert not eager16.jit and frozen16.jit
    agree = ((eager16(img) > eager16.threshold) == (frozen16(img) > frozen16.threshold)).mean()
    assert agree > 0.999
    write_png(tmp_path / "in" / "o.png", img)
    assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--jit"]) == 0
    assert (tmp_path / "out" / "o_mask.png").is_file()


class _SizeBaked(nn.Module):
    """Upsamples to a size read with int(): tracing turns it into a constant."""

    size_multiple = 2

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        return nn.functional.interpolate(self.conv(x)[..., ::2, ::2], size=(h, w))


def test_frozen_refuses_a_graph_that_baked_in_the_traced_size() -> None:
    from retinaseg.errors import ModelLoadError
    from retinaseg.inference.fuse import Frozen

    with pytest.raises(ModelLoadError, match="another input size"):
        Frozen(_SizeBaked().eval(), 1, bf16=False)


def test_segmenter_freezes_by_default_and_falls_back_when_it_cannot(monkeypatch) -> None:
    import numpy as np

    from retinaseg.data.synthetic import make_octa_sample
    from retinaseg.errors import ModelLoadError
    from retinaseg.inference import fuse
    from retinaseg.inference.segmenter import Segmenter

    img = make_octa_sample(64, seed=1)["image"]
    auto = Segmenter("octa-vessels", device="cpu", precision="bf16")
    assert auto.jit and auto.net.__class__.__name__ == "Frozen"
    fp32 = Segmenter("octa-vessels", device="cpu", precision="fp32")  # no gain measured there
    assert not fp32.jit and "only for bfloat16" in fp32.jit_note
    plain = Segmenter("octa-vessels", device="cpu", precision="bf16", jit=False)
    assert not plain.jit and plain.jit_note == "not asked"

    def mismatch(*args, **kwargs):
        raise fuse._cannot("test")

    # the check fails after Frozen has already converted the network to bfloat16 in place:
    # the default keeps an untouched float32 copy of the plain network
    monkeypatch.setattr(fuse, "_verify", mismatch)
    fallback = Segmenter("octa-vessels", device="cpu", precision="bf16")
    assert not fallback.jit and "test" in fallback.jit_note
    assert {p.dtype for p in fallback.net.parameters()} == {torch.float32}
    np.testing.assert_array_equal(fallback(img), plain(img))
    with pytest.raises(ModelLoadError, match="cannot be frozen"):
        Segmenter("octa-vessels", device="cpu", precision="bf16", jit=True)  # the error stands

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

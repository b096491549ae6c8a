"""DSConv (reference §2.1) and the multi-view block (§2.2): offsets, sampling, aggregation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retinaseg.models.snake import (
    DSConv,
    MultiViewBlock,
    group_count,
    snake_cumulate,
    snake_sample,
)


def _zero_offsets(m: DSConv) -> DSConv:
    with torch.no_grad():
        m.offset_conv.weight.zero_()
        m.offset_conv.bias.zero_()
    return m


def _cumulate_by_recursion(o: torch.Tensor) -> torch.Tensor:
    """Literal §2.1 step 2: Δ_c = 0, Δ_{c±m} = Δ_{c±m∓1} + o_{c±m}."""
    k = o.shape[1]
    c = k // 2
    d = [torch.zeros_like(o[:, 0]) for _ in range(k)]
    for m in range(1, c + 1):
        d[c + m] = d[c + m - 1] + o[:, c + m]
        d[c - m] = d[c - m + 1] + o[:, c - m]
    return torch.stack(d, dim=1)


@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("norm", ["group", "batch"])
def test_zero_offsets_equal_plain_conv_with_replicate_padding(morph: int, norm: str) -> None:
    torch.manual_seed(0)
    k, c = 7, 3
    m = _zero_offsets(DSConv(3, 8, kernel_size=k, extend_scope=2.5, morph=morph, norm=norm))
    x = torch.randn(2, 3, 11, 13)
    with torch.no_grad():
        got = m(x, return_prenorm=True)
        w, b = m.dsc_conv.weight, m.dsc_conv.bias
        if morph == 0:  # kernel along x: 1×K
            ref = F.conv2d(F.pad(x, (c, c, 0, 0), mode="replicate"), w.reshape(8, 3, 1, k), b)
        else:  # kernel along y: K×1
            ref = F.conv2d(F.pad(x, (0, 0, c, c), mode="replicate"), w.reshape(8, 3, k, 1), b)
        assert got.shape == (2, 8, 11, 13)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m.forward_reference(x), ref, atol=1e-5, rtol=1e-5)
        full = m(x)
    assert full.shape == (2, 8, 11, 13) and (full >= 0).all()


def test_snake_offsets_are_cumulative_from_the_centre() -> None:
    o = torch.rand(2, 9, 4, 5) * 2 - 1
    d = snake_cumulate(o)
    torch.testing.assert_close(d, _cumulate_by_recursion(o))
    assert torch.all(d[:, 4] == 0)
    # o_c is never used
    o2 = o.clone()
    o2[:, 4] = 5.0
    torch.testing.assert_close(snake_cumulate(o2), d)


def _ramps(h: int, w: int) -> torch.Tensor:
    """``[1, 2, H, W]``: channel 0 = row index y, channel 1 = column index x."""
    ys = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    xs = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    return torch.stack([ys, xs])[None]


@pytest.mark.parametrize("morph", [0, 1])
@pytest.mark.parametrize("layout", ["reference", "kmajor"])
def test_sampled_positions_follow_the_snake(morph: int, layout: str) -> None:
    """On coordinate ramps, bilinear samples reveal exactly where each tap looked."""
    torch.manual_seed(1)
    h, w, k, s = 12, 14, 7, 1.5
    c = k // 2
    offset = torch.rand(1, 2 * k, h, w) * 2 - 1
    sampled = snake_sample(_ramps(h, w), offset, morph, s, layout)
    taps = (torch.arange(k) - c).float()
    rows = torch.arange(h).float().view(1, h, 1)
    cols = torch.arange(w).float().view(1, 1, w)
    if layout == "kmajor":  # [1, 2, K·H, W] → [2, K, H, W]
        got = sampled[0].reshape(2, k, h, w)
    elif morph == 0:  # [1, 2, H·K, W] → [2, K, H, W]
        got = sampled[0].reshape(2, h, k, w).permute(0, 2, 1, 3)
    else:  # [1, 2, H, W·K] → [2, K, H, W]
        got = sampled[0].reshape(2, h, w, k).permute(0, 3, 1, 2)
    if morph == 0:
        want_y = rows + s * _cumulate_by_recursion(offset[:, :k])[0]
        want_x = (cols + taps.view(k, 1, 1)).expand(k, h, w)
    else:
        want_y = (rows + taps.view(k, 1, 1)).expand(k, h, w)
        want_x = cols + s * _cumulate_by_recursion(offset[:, k:])[0]
    torch.testing.assert_close(got[0], want_y.clamp(0, h - 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(got[1], want_x.clamp(0, w - 1), atol=1e-4, rtol=0)
    # the other half of the offsets is ignored by this morph
    other = offset.clone()
    half = slice(k, 2 * k) if morph == 0 else slice(0, k)
    other[:, half] = 0.3
    torch.testing.assert_close(snake_sample(_ramps(h, w), other, morph, s, layout), sampled)


@pytest.mark.parametrize("morph", [0, 1])
def test_fast_aggregation_equals_reference_strided_conv(morph: int) -> None:
    """k-major samples + 1×1 conv == §2.1 step 5 literally ((K,1)/(1,K) strided conv)."""
    torch.manual_seed(4)
    m = DSConv(3, 8, kernel_size=5, extend_scope=3.0, morph=morph)
    x = torch.randn(2, 3, 10, 9)
    with torch.no_grad():
        torch.testing.assert_close(m(x, return_prenorm=True), m.forward_reference(x),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("morph", [0, 1])
def test_sampling_gradients_are_correct(morph: int) -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 2, 5, 6, dtype=torch.double, requires_grad=True)
    o = (torch.rand(1, 10, 5, 6, dtype=torch.double) * 0.8 - 0.4).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: snake_sample(a, b, morph, 0.7), (x, o))


def test_gradients_reach_the_offset_conv() -> None:
    torch.manual_seed(3)
    m = DSConv(2, 4, kernel_size=5, extend_scope=1.0, morph=0)
    m(torch.randn(2, 2, 9, 10)).square().mean().backward()
    assert m.offset_conv.weight.grad is not None
    assert m.offset_conv.weight.grad.abs().sum() > 0


def test_multiview_block_shape_and_groups() -> None:
    blk = MultiViewBlock(3, 8, 5, 2.0)
    assert blk(torch.randn(1, 3, 9, 7)).shape == (1, 8, 9, 7)
    assert blk.fusion[0].in_channels == 24
    assert [group_count(c) for c in (3, 6, 8, 24, 72)] == [1, 1, 2, 6, 18]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="odd"):
        DSConv(1, 4, kernel_size=8)
    with pytest.raises(ValueError, match="morph"):
        DSConv(1, 4, morph=2)
    with pytest.raises(ValueError, match="norm"):
        DSConv(1, 4, norm="layer")

"""Each standard loss against hand-computed values (reference §4)."""

from __future__ import annotations

import math

import pytest
import torch

from retinaseg.losses import build_loss

LN2 = math.log(2.0)


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def test_bce_at_zero_logit_is_ln2() -> None:
    assert build_loss("bce")(_t([0, 0]), _t([1, 0])).item() == pytest.approx(LN2, rel=1e-6)


def test_bce_pos_weight_scales_positive_term() -> None:
    # pos_weight 3: positive pixel loss 3·ln2, negative ln2 → mean 2·ln2
    loss = build_loss("bce", pos_weight=3.0)(_t([0, 0]), _t([1, 0]))
    assert loss.item() == pytest.approx(2 * LN2, rel=1e-6)


def test_dice_half_probability() -> None:
    # p = 0.5 everywhere, g = [1, 0]: 1 - (2·0.5)/(1 + 1) = 0.5
    assert build_loss("dice", smooth=0.0)(_t([0, 0]), _t([1, 0])).item() == pytest.approx(0.5)


def test_iou_half_probability_and_known_overlap() -> None:
    # p = 0.5, g = [1, 0]: 1 - 0.5 / (1 + 1 - 0.5) = 2/3
    assert build_loss("iou", smooth=0.0)(_t([0, 0]), _t([1, 0])).item() == pytest.approx(2 / 3)
    # p ≈ [1, 1, 0], g = [1, 0, 0]: IoU = 1/2 → loss 0.5 (Dice would give 1/3)
    assert build_loss("iou", smooth=0.0)(_t([30, 30, -30]), _t([1, 0, 0])).item() \
        == pytest.approx(0.5, abs=1e-6)


def test_two_class_softmax_unet_is_two_class_cross_entropy() -> None:
    from retinaseg.models import build_model

    torch.manual_seed(0)
    net = build_model("unet", 1, depth=2, width=4, softmax_two_class=True).eval()
    x, y = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.6).float()
    d = net(x)
    z = net.head(net.ups[-1](net.ups[0](net.downs[1](torch.nn.functional.max_pool2d(
        net.downs[0](torch.nn.functional.max_pool2d(net.inc(x), 2)), 2)),
        net.downs[0](torch.nn.functional.max_pool2d(net.inc(x), 2))), net.inc(x)))
    assert d.shape == (2, 1, 16, 16) and z.shape == (2, 2, 16, 16)
    torch.testing.assert_close(torch.sigmoid(d), torch.softmax(z, 1)[:, 1:])
    ce = torch.nn.functional.cross_entropy(z, y[:, 0].long())
    torch.testing.assert_close(build_loss("bce")(d, y), ce)


def test_dice_sums_over_batch_not_per_sample() -> None:
    # sample 1 perfect (p≈1,g=1), sample 2 empty target and p≈0 -> whole-batch Dice = 1
    logits = torch.tensor([20.0, -20.0]).view(2, 1, 1, 1)
    target = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    assert build_loss("dice", smooth=0.0)(logits, target).item() == pytest.approx(0, abs=1e-6)


def test_bce_dice_is_weighted_sum() -> None:
    x, y = _t([0, 0]), _t([1, 0])
    loss = build_loss("bce_dice", bce_weight=2.0, dice_weight=0.5, smooth=0.0)(x, y)
    assert loss.item() == pytest.approx(2 * LN2 + 0.5 * 0.5, rel=1e-6)


def test_focal_hand_computed() -> None:
    # p = 0.5: positive term α·(1-p)^γ·ln2, negative term (1-α)·p^γ·ln2, α=0.25, γ=2
    expected = (0.25 * 0.25 * LN2 + 0.75 * 0.25 * LN2) / 2
    assert build_loss("focal")(_t([0, 0]), _t([1, 0])).item() == pytest.approx(expected, rel=1e-5)


def test_mse_on_probabilities() -> None:
    assert build_loss("mse")(_t([0, 0]), _t([1, 0])).item() == pytest.approx(0.25)


@pytest.mark.parametrize("name", ["bce", "dice", "bce_dice", "focal", "mse", "iou"])
def test_perfect_prediction_is_minimal(name: str) -> None:
    target = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    loss = build_loss(name)
    perfect = loss(target * 40 - 20, target).item()
    noisy = loss(torch.randn(2, 1, 16, 16), target).item()
    assert perfect < 1e-3 < noisy


def test_unknown_loss_parameter_is_config_error() -> None:
    from retinaseg.errors import ConfigError

    with pytest.raises(ConfigError, match="loss 'dice'"):
        build_loss("dice", gamma=3)


def test_octanet_joint_loss_known_values() -> None:
    # logits 0 everywhere: p = 0.5. Target label [1, 0], centerline [1, 0] on 2 pixels.
    # Per branch: MSE = 0.25, Dice = 1 - (2·0.5)/(1 + 1) = 0.5 → 0.7·0.25 + 0.3·0.5 = 0.325;
    # thick + thin = 0.65 (the fused branch has weight 0 by default).
    logits = torch.zeros(1, 3, 1, 2)
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 2, 1, 2)
    loss = build_loss("octanet")
    assert loss(logits, target).item() == pytest.approx(0.65, abs=1e-4)
    # the seed's MSE only, equal branch weights: 0.25 + 0.25
    assert build_loss("octanet", mse_weight=1.0, dice_weight=0.0)(logits, target).item() == \
        pytest.approx(0.5)
    # thin is scored on the centerline (channel 1), thick on the label (channel 0): a perfect
    # thick branch and a thin branch perfect on the centerline give ~0
    thick = torch.tensor([20.0, -20.0]).view(1, 1, 1, 2)
    line = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)  # label [1,0], line [0,1]
    thin = torch.tensor([-20.0, 20.0]).view(1, 1, 1, 2)
    good = torch.cat([torch.maximum(thick, thin), thick, thin], 1)
    assert build_loss("octanet")(good, line).item() < 1e-3
    swapped = torch.cat([torch.maximum(thick, thin), thin, thick], 1)
    assert build_loss("octanet")(swapped, line).item() > 1.0
    # one-channel logits (the fine stage) against channel 0 of the target
    assert build_loss("octanet")(torch.zeros(1, 1, 1, 2), target).item() == \
        pytest.approx(0.325, abs=1e-4)
    with pytest.raises(ValueError, match="octanet loss takes"):
        build_loss("octanet")(torch.zeros(1, 2, 1, 2), target)


def test_dice_ce_known_values() -> None:
    # uniform logits over 3 classes: cross-entropy is ln 3 at every pixel
    target = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).view(1, 1, 2, 2)
    ce_only = build_loss("dice_ce", dice_weight=0.0)
    assert ce_only(torch.zeros(1, 3, 2, 2), target).item() == pytest.approx(math.log(3), abs=1e-5)
    # one pixel: logits (2, 0, 0), class 0: CE = -log(e²/(e²+2))
    one = torch.tensor([2.0, 0.0, 0.0]).view(1, 3, 1, 1)
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert ce_only(one, torch.zeros(1, 1, 1, 1)).item() == pytest.approx(expected, abs=1e-5)
    # near one-hot logits of the right classes: CE and Dice near 0; the wrong classes: large
    onehot = torch.nn.functional.one_hot(target[:, 0].long(), 3).permute(0, 3, 1, 2).float()
    loss = build_loss("dice_ce")
    assert loss(20 * onehot, target).item() < 1e-3
    assert loss(20 * onehot.roll(1, dims=1), target).item() > 10
    assert getattr(type(loss), "multiclass", False)

"""Topology losses against hand-computed values (reference §4; skeletons of §3/§4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaseg.errors import ConfigError
from retinaseg.losses import build_loss
from retinaseg.losses.skeleton import ibp_skeleton
from retinaseg.losses.topology import cldice_loss, tubed_skeleton
from retinaseg.registry import LOSSES

TOPOLOGY = ["cldice", "dice_cldice", "ibp_cldice", "skeleton_recall", "combo"]
COMBO = {"terms": [{"name": "bce", "weight": 1},
                   {"name": "cldice", "weight": 0.5, "params": {"iters": 5}}]}


def _build(name: str, **params: object) -> torch.nn.Module:
    return build_loss(name, **(COMBO if name == "combo" else {}), **params)


def _logits(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A confident prediction: +20 on the mask, −20 elsewhere."""
    return torch.as_tensor(np.asarray(mask), dtype=torch.float32) * 40 - 20


def _line(length: int = 4, start: int = 2) -> torch.Tensor:
    """``[1, 1, 7, 10]`` horizontal 1-px line away from the border."""
    img = torch.zeros(1, 1, 7, 10)
    img[0, 0, 3, start:start + length] = 1
    return img


def _vessels(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """``[2, 1, *shape]`` targets made of a few axis-parallel 1–2 px lines."""
    rng = np.random.default_rng(seed)
    out = np.zeros((2, 1, *shape), dtype=np.float32)
    for b in range(2):
        for _ in range(3):
            axis = int(rng.integers(len(shape)))
            idx = [slice(int(rng.integers(1, s - 3)), None) for s in shape]
            idx = [sl if a == axis else slice(sl.start, sl.start + int(rng.integers(1, 3)))
                   for a, sl in enumerate(idx)]
            out[(b, 0, *idx)] = 1
    return torch.from_numpy(out)


# ------------------------------------------------------------------------------------------
# Hand-computed values
# ------------------------------------------------------------------------------------------


def test_all_topology_losses_are_registered() -> None:
    assert set(TOPOLOGY) <= set(LOSSES.names())


def test_cldice_perfect_line_is_zero() -> None:
    line = _line()
    assert build_loss("cldice")(_logits(line), line).item() == pytest.approx(0, abs=1e-6)


def test_cldice_half_line_by_hand() -> None:
    # S(p) = 2-px half line ⊂ g → Tprec = (2+1)/(2+1) = 1;
    # S(g) = 4-px line, Σ S(g)·p = 2 → Tsens = (2+1)/(4+1) = 0.6; L = 1 − 1.2/1.6 = 0.25
    line, half = _line(), _line(2)
    assert build_loss("cldice")(_logits(half), line).item() == pytest.approx(0.25, abs=1e-6)
    # prediction twice the line: Tprec = (4+1)/(8+1) = 5/9, Tsens = 1 → L = 1 − (10/9)/(14/9)
    long = _line(8, 1)
    assert build_loss("cldice")(_logits(long), line).item() == pytest.approx(2 / 7, abs=1e-6)


def test_dice_cldice_half_line_by_hand() -> None:
    # soft Dice (smooth 1): 1 − (2·2 + 1)/(2 + 4 + 1) = 2/7; L_cl = 0.25
    loss = build_loss("dice_cldice")(_logits(_line(2)), _line()).item()
    assert loss == pytest.approx(0.5 * 2 / 7 + 0.5 * 0.25, abs=1e-6)
    loss = build_loss("dice_cldice", alpha=0.2)(_logits(_line(2)), _line()).item()
    assert loss == pytest.approx(0.8 * 2 / 7 + 0.2 * 0.25, abs=1e-6)


def test_ibp_cldice_half_line_by_hand() -> None:
    # IBP keeps 1-px lines whole (end points stay): same skeletons as above;
    # Dice (ε 1e-6): 1 − 4/6 = 1/3
    loss = build_loss("ibp_cldice")(_logits(_line(2)), _line()).item()
    assert loss == pytest.approx(0.5 / 3 + 0.5 * 0.25, abs=1e-5)


def test_skeleton_recall_half_line_by_hand() -> None:
    line, half = _line(), _logits(_line(2))
    # tube = 3×3-dilated skeleton ∩ target = the line (4 px); p covers 2 → 1 − 2/4
    recall = build_loss("skeleton_recall", dice_weight=0, bce_weight=0)
    assert recall(half, line).item() == pytest.approx(0.5, abs=1e-5)
    # without clipping the tube is 3 × 6 = 18 px → 1 − 2/18
    loose = build_loss("skeleton_recall", dice_weight=0, bce_weight=0, clip_to_target=False)
    assert loose(half, line).item() == pytest.approx(1 - 2 / 18, abs=1e-5)
    full = build_loss("skeleton_recall")(half, line).item()
    dice, bce = build_loss("dice")(half, line).item(), build_loss("bce")(half, line).item()
    assert full == pytest.approx(0.5 + dice + bce, abs=1e-5)


def test_tubed_skeleton_of_thick_bar_is_inside_and_covers_the_centre_row() -> None:
    bar = torch.zeros(1, 1, 9, 14)
    bar[0, 0, 3:6, 2:12] = 1
    tube = tubed_skeleton(bar)
    assert torch.all(tube <= bar) and tube[0, 0, 4, 3:11].min() == 1


def test_combo_is_the_weighted_sum() -> None:
    logits = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    target = _vessels((12, 12), seed=1)
    expected = build_loss("bce")(logits, target) + 0.5 * build_loss("cldice", iters=5)(
        logits, target)
    assert build_loss("combo", **COMBO)(logits, target).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("terms", [[], "bce", [{"weight": 1}], [{"name": "nope"}],
                                   [{"name": "bce", "wieght": 1}], [{"name": "bce", "params": 3}],
                                   [{"name": "cldice", "params": {"bad": 1}}]])
def test_combo_bad_config_is_a_config_error(terms: object) -> None:
    with pytest.raises(ConfigError, match="loss '(combo|cldice)'"):
        build_loss("combo", terms=terms)


def test_cldice_matches_monai_soft_cldice_with_background_channel_included() -> None:
    # MONAI releases without ``include_background`` sliced off channel 0 and returned a constant 0
    # for a single sigmoid channel; 1.6 keeps it by default and then agrees for one sample
    from monai.losses import SoftclDiceLoss

    target = _vessels((16, 18), seed=10)[:1]
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(11))
    theirs = SoftclDiceLoss(iter_=10, sigmoid=True, smooth=1e-12)(logits, target)
    assert build_loss("cldice")(logits, target).item() == pytest.approx(theirs.item(), abs=1e-5)
    with pytest.warns(UserWarning, match="include_background"):
        SoftclDiceLoss(include_background=False)(logits, target)


# ------------------------------------------------------------------------------------------
# Properties of every topology loss
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOPOLOGY)
@pytest.mark.parametrize("shape", [(16, 18), (8, 10, 12)], ids=["2d", "3d"])
def test_perfect_prediction_is_minimal(name: str, shape: tuple[int, ...]) -> None:
    target = _vessels(shape, seed=2)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(3))
    loss = _build(name)
    perfect, noisy = loss(_logits(target), target), loss(_logits(target) * 0.1 + 3 * noise, target)
    assert perfect.ndim == 0 and perfect.item() == pytest.approx(0, abs=1e-5)
    assert noisy.item() > perfect.item() + 0.05


@pytest.mark.parametrize("name", TOPOLOGY)
@pytest.mark.parametrize("shape", [(16, 18), (6, 8, 10)], ids=["2d", "3d"])
def test_gradients_are_finite_and_non_zero(name: str, shape: tuple[int, ...]) -> None:
    target = _vessels(shape, seed=4)
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(5))
    logits.requires_grad_(True)
    _build(name)(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_ibp_cldice_skeleton_gradient_reaches_the_prediction() -> None:
    target = _vessels((16, 18), seed=6)
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(7))
    logits.requires_grad_(True)
    build_loss("ibp_cldice", alpha=1.0)(logits, target).backward()  # L_cl only
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_ibp_cldice_uses_per_sample_skeletons() -> None:
    target = _vessels((16, 18), seed=8)
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(9))
    p = torch.sigmoid(logits)
    skel_p = torch.cat([ibp_skeleton(x[None], stochastic=False) for x in p])
    skel_g = torch.cat([ibp_skeleton(g[None], stochastic=False) for g in target])
    expected = 0.5 * (1 - (2 * (p * target).sum() + 1e-6) / (p.sum() + target.sum() + 1e-6))
    expected = expected + 0.5 * cldice_loss(p, target, skel_p, skel_g)
    loss = build_loss("ibp_cldice", stochastic=False)(logits, target)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)

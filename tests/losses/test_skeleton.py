"""Differentiable skeletons (reference §3 IBP peeling, §4 clDice soft skeleton)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

import retinaseg.losses.skeleton as skeleton_module
from retinaseg.io import read_mask
from retinaseg.losses.skeleton import (
    _binarise,
    _peel_2d,
    _peel_euler,
    _simple_points,
    _subfield_mask,
    _tables_2d,
    ibp_skeleton,
    soft_erode,
    soft_skeleton,
)
from retinaseg.measure import centerline
from retinaseg.measure.centerline import is_simple_3d, simple_lut_2d

# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def _t(mask: np.ndarray) -> torch.Tensor:
    """``[H, W]`` / ``[D, H, W]`` array → float ``[1, 1, ...]`` tensor."""
    return torch.tensor(np.asarray(mask), dtype=torch.float32)[None, None]


def _ibp(mask: np.ndarray, iters: int, **kw: object) -> np.ndarray:
    """IBP skeleton of a binary array as a bool array."""
    return ibp_skeleton(_t(mask), iters=iters, **kw)[0, 0].numpy() > 0.5


def _random_shapes(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Thick random blobs plus salt: branches, holes, thin parts and isolated pixels."""
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_dilation(rng.random(shape) < 0.02, iterations=int(rng.integers(1, 3)))
    return mask | (rng.random(shape) < 0.05)


def _window_simple(cubes: np.ndarray, strict_3d: bool = True) -> np.ndarray:
    """IBP simple-point test of the centres of ``[N, 3, 3(, 3)]`` windows (centre foreground)."""
    x = torch.tensor(cubes, dtype=torch.float32)[:, None]
    centre = _subfield_mask(x.shape[2:], (1,) * (x.ndim - 2), x)  # the only odd-parity pixel
    simple = _simple_points(x, centre, strict_3d)
    return simple[(slice(None), 0) + (1,) * (x.ndim - 2)].numpy() > 0.5


def _n_components(mask: np.ndarray) -> int:
    return int(ndimage.label(mask, np.ones((3,) * mask.ndim))[1])


def _n_holes(mask: np.ndarray) -> int:
    return int(ndimage.label(~np.pad(mask, 1))[1]) - 1


LINE = np.zeros((7, 9), dtype=bool)
LINE[3, 1:8] = True
L_SHAPE = np.zeros((9, 9), dtype=bool)
L_SHAPE[1:8, 2] = True
L_SHAPE[7, 2:8] = True
THIN_RECT = np.zeros((9, 16), dtype=bool)
THIN_RECT[3:6, 2:14] = True
RING = np.zeros((11, 11), dtype=bool)
RING[2:9, 2:9] = True
RING[4:7, 4:7] = False

# ------------------------------------------------------------------------------------------
# Soft skeleton (§4)
# ------------------------------------------------------------------------------------------


def test_soft_skeleton_of_one_pixel_line_is_the_line() -> None:
    assert torch.equal(soft_skeleton(_t(LINE))[0, 0], _t(LINE)[0, 0])
    line3d = np.zeros((5, 5, 7), dtype=bool)
    line3d[2, 2, 1:6] = True
    assert torch.equal(soft_skeleton(_t(line3d)), _t(line3d))


def test_soft_erode_3d_is_the_six_neighbour_cross() -> None:
    cross = np.zeros((5, 5, 5), dtype=bool)
    cross[2, 2, 1:4] = cross[2, 1:4, 2] = cross[1:4, 2, 2] = True
    eroded = soft_erode(_t(cross))[0, 0].numpy()
    assert eroded[2, 2, 2] == 1 and eroded.sum() == 1  # a full 3×3×3 min would give 0


def test_soft_skeleton_thin_rectangle_is_inside_and_thin() -> None:
    skel = soft_skeleton(_t(THIN_RECT))[0, 0].numpy()
    assert np.all(skel[~THIN_RECT] == 0)
    assert skel[4, 3:13].min() == 1 and skel[3].sum() + skel[5].sum() < skel[4].sum()


def test_soft_skeleton_batch_equals_each_sample_alone() -> None:
    p = torch.rand(3, 1, 12, 13, generator=torch.Generator().manual_seed(0))
    alone = torch.cat([soft_skeleton(p[i:i + 1]) for i in range(3)])
    assert torch.equal(soft_skeleton(p), alone)


# ------------------------------------------------------------------------------------------
# IBP simple-point test
# ------------------------------------------------------------------------------------------


def _brute_force_simple_2d(window: np.ndarray) -> bool:
    """Deleting the centre keeps the 8-connected foreground and the 4-connected background
    component counts of the 3×3 window."""
    after = window.copy()
    after[1, 1] = False
    eight, four = np.ones((3, 3)), ndimage.generate_binary_structure(2, 1)

    def counts(w: np.ndarray) -> tuple[int, int]:
        return ndimage.label(w, eight)[1], ndimage.label(~w, four)[1]

    return counts(window) == counts(after)


def test_2d_euler_test_is_exactly_the_simple_point_test_for_all_256_neighbourhoods() -> None:
    codes = np.arange(256)
    rings = (codes[:, None] >> np.arange(8)) & 1
    windows = np.insert(rings, 4, 1, axis=1).reshape(256, 3, 3).astype(bool)
    euler = _window_simple(windows)
    brute = np.array([_brute_force_simple_2d(w) for w in windows])
    np.testing.assert_array_equal(euler, brute)
    np.testing.assert_array_equal(euler, simple_lut_2d()[256:])  # the exact peeling's table


def test_3d_euler_alone_is_not_a_simple_point_test() -> None:
    # a 26-loop of four neighbours around the centre plus a detached corner: deleting the centre
    # adds one component and one tunnel, so χ does not change
    cube = np.zeros((3, 3, 3), dtype=bool)
    for off in [(-1, -1, -1), (-1, 0, 1), (0, -1, 1), (0, 0, 0), (0, 1, 0), (1, 0, 0)]:
        cube[tuple(np.add(off, 1))] = True
    assert not is_simple_3d(cube)
    assert _window_simple(cube[None], strict_3d=False)[0]
    assert not _window_simple(cube[None], strict_3d=True)[0]


def test_3d_strict_test_matches_bertrand_malandain_on_random_neighbourhoods() -> None:
    rng = np.random.default_rng(0)
    cubes = rng.random((3000, 27)) < rng.uniform(0.1, 0.9, size=(3000, 1))
    cubes[:, 13] = True
    cubes = cubes.reshape(-1, 3, 3, 3)
    np.testing.assert_array_equal(_window_simple(cubes), is_simple_3d(cubes))


# ------------------------------------------------------------------------------------------
# IBP vs. the exact centerline
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [LINE, L_SHAPE, THIN_RECT, RING],
                         ids=["line", "L", "rect", "ring"])
def test_ibp_converges_to_exact_centerline_on_simple_shapes(mask: np.ndarray) -> None:
    exact = centerline(mask)
    np.testing.assert_array_equal(centerline(mask, max_iter=5), exact)  # thin: ≤ 5 sweeps
    np.testing.assert_array_equal(_ibp(mask, 5, stochastic=False), exact)
    gen = torch.Generator().manual_seed(3)
    np.testing.assert_array_equal(_ibp(mask, 5, stochastic=True, generator=gen), exact)


def test_ibp_keeps_lines_and_thins_rectangle_to_one_pixel() -> None:
    np.testing.assert_array_equal(_ibp(LINE, 5), LINE)
    skel = _ibp(THIN_RECT, 5)
    cols = np.flatnonzero(skel[4])
    assert skel.sum() == skel[4].sum() >= 8 and np.all(np.diff(cols) == 1)
    corner_cut = L_SHAPE.copy()
    corner_cut[7, 2] = False  # the 4-connected corner is simple for an 8-connected skeleton
    np.testing.assert_array_equal(_ibp(L_SHAPE, 5), corner_cut)


@pytest.mark.parametrize("seed", range(4))
def test_ibp_equals_exact_peeling_sweep_by_sweep_2d(seed: int) -> None:
    mask = _random_shapes((28, 33), seed)
    for iters in (1, 2, 25):
        np.testing.assert_array_equal(_ibp(mask, iters), centerline(mask, max_iter=iters))
    skel = _ibp(mask, 25)
    assert _n_components(skel) == _n_components(mask) and _n_holes(skel) == _n_holes(mask)


def test_ibp_equals_exact_peeling_3d() -> None:
    mask = _random_shapes((9, 10, 11), seed=7)
    for iters in (1, 12):
        np.testing.assert_array_equal(_ibp(mask, iters), centerline(mask, max_iter=iters))


def test_ibp_euler_only_3d_on_a_thick_tube_keeps_topology() -> None:
    tube = np.zeros((7, 7, 14), dtype=bool)
    tube[2:5, 2:5, 1:13] = True
    skel = _ibp(tube, 5, strict_3d=False)
    np.testing.assert_array_equal(skel, centerline(tube))
    assert _n_components(skel) == 1 and skel.sum() == skel[3, 3].sum()


# ------------------------------------------------------------------------------------------
# IBP: batches, channels, gradients
# ------------------------------------------------------------------------------------------


def test_ibp_batch_equals_each_sample_alone() -> None:
    masks = [_random_shapes((20, 24), s) for s in range(3)]
    batch = torch.cat([_t(m) for m in masks])
    out = ibp_skeleton(batch, iters=5, stochastic=False)
    for i, m in enumerate(masks):
        assert torch.equal(out[i:i + 1], ibp_skeleton(_t(m), iters=5, stochastic=False))
    two_channel = ibp_skeleton(batch.view(1, 3, 20, 24), iters=5, stochastic=False)
    assert torch.equal(two_channel.view_as(out), out)


def test_ibp_batch_equals_each_sample_alone_3d() -> None:
    masks = [_random_shapes((6, 7, 8), s) for s in range(2)]
    out = ibp_skeleton(torch.cat([_t(m) for m in masks]), iters=3, stochastic=False)
    for i, m in enumerate(masks):
        assert torch.equal(out[i:i + 1], ibp_skeleton(_t(m), iters=3, stochastic=False))


@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (1, 1, 6, 8, 8)], ids=["2d", "3d"])
def test_ibp_gradients_are_finite_and_non_zero(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(shape, generator=gen).requires_grad_(True)
    skel = ibp_skeleton(p, iters=3, generator=gen)
    assert set(skel.detach().unique().tolist()) <= {0.0, 1.0}
    (skel * torch.rand(shape, generator=gen)).sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_skeletons_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="expected"):
        ibp_skeleton(torch.zeros(4, 4, 4))


def test_ibp_low_precision_input_gives_the_float32_skeleton() -> None:
    mask = _random_shapes((16, 20), seed=5)
    half = ibp_skeleton(_t(mask).bfloat16(), iters=5, stochastic=False)
    assert half.dtype == torch.bfloat16
    assert torch.equal(half.float(), ibp_skeleton(_t(mask), iters=5, stochastic=False))


# ------------------------------------------------------------------------------------------
# IBP 2D fast path (lookup tables on parity phases) and early stopping
# ------------------------------------------------------------------------------------------


def test_2d_tables_are_the_exact_simple_point_table() -> None:
    hard, jac = _tables_2d(torch.device("cpu"))
    np.testing.assert_array_equal(hard[256:].numpy() > 0.5, simple_lut_2d()[256:])
    assert torch.equal(hard[:256], torch.ones(256))  # deleting a background centre: no change
    assert torch.equal(jac[:256], torch.zeros(256, 9))  # Δχ = 0 there: |·| has no slope
    # middle of a horizontal 1-px line (left, centre, right = bits 8, 256, 16), worked by hand
    # from §3's cell indicators: Δχ = V − E + F = −1 − (0 − 2) + 0 = 1 (not simple). Only the
    # centre's vertex (∂ = −1) and the "centre set to 0" vertical edges (relu((1 + s)/2),
    # s = 1 − 2x: ∂ = −1 each) have slope; left/right edges and all faces sit at or below
    # their relu kinks. soft = clamp(1 − |Δχ|, 0, 1) is at its lower bound (inclusive), so
    # ∂soft = −∂Δχ: a vertical bar of ones.
    assert hard[8 + 256 + 16] == 0
    expected = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.equal(jac[8 + 256 + 16].view(3, 3), expected)


@pytest.mark.parametrize("shape", [(3, 1, 16, 20), (2, 1, 17, 21), (1, 1, 9, 30)],
                         ids=["even", "odd", "strip"])
def test_fast_2d_peeling_has_the_euler_formulation_values_and_gradients(
        shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    p, weights = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    results = []
    for peel in (lambda x: _peel_2d(x, 5, early_stop=False),
                 lambda x: _peel_euler(x, 5, strict_3d=True, early_stop=False)):
        q = p.clone().requires_grad_(True)
        x = _binarise(q, 0.33, 1.0, True, torch.Generator().manual_seed(7))
        out = peel(x)
        (out * weights).sum().backward()
        results.append((out.detach(), q.grad))
    (fast, fast_grad), (euler, euler_grad) = results
    assert torch.equal(fast, euler)
    assert euler_grad.abs().sum() > 0
    torch.testing.assert_close(fast_grad, euler_grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_early_stop_gives_the_full_sweep_skeleton(seed: int) -> None:
    mask = _random_shapes((40, 37), seed)
    full = ibp_skeleton(_t(mask), iters=30, stochastic=False, early_stop=False)
    assert torch.equal(ibp_skeleton(_t(mask), iters=30, stochastic=False), full)
    np.testing.assert_array_equal(full[0, 0].numpy() > 0.5, centerline(mask))
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(2, 1, 24, 25, generator=gen)
    draws = [ibp_skeleton(p, iters=12, generator=torch.Generator().manual_seed(1),
                          early_stop=stop) for stop in (True, False)]
    assert torch.equal(*draws)
    mask3d = _random_shapes((7, 8, 9), seed)
    assert torch.equal(ibp_skeleton(_t(mask3d), iters=8, stochastic=False),
                       ibp_skeleton(_t(mask3d), iters=8, stochastic=False, early_stop=False))


def test_early_stop_runs_one_iteration_on_a_fixed_point(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = skeleton_module._keep_non_ends_2d
    monkeypatch.setattr(skeleton_module, "_keep_non_ends_2d",
                        lambda *a: calls.append(1) or real(*a))
    ibp_skeleton(_t(LINE), iters=5, stochastic=False)  # a 1-px line: nothing to delete
    assert len(calls) == 4  # one iteration: end points of its four subfields
    calls.clear()
    ibp_skeleton(_t(THIN_RECT), iters=5, stochastic=False)  # 3 px thick: 1 sweep + 1 idle
    assert len(calls) == 8
    calls.clear()
    ibp_skeleton(_t(LINE), iters=5, stochastic=False, early_stop=False)
    assert len(calls) == 20


def test_early_stop_gradient_is_the_one_iteration_gradient_on_a_fixed_point() -> None:
    grads = []
    for iters, stop in ((5, True), (1, False)):
        p = _t(LINE).requires_grad_(True)
        ibp_skeleton(p, iters=iters, stochastic=False, early_stop=stop).sum().backward()
        grads.append(p.grad)
    assert torch.equal(*grads) and grads[0].abs().sum() > 0


def test_ibp_equals_exact_peeling_on_a_real_octa500_label(shared_data: Path) -> None:
    path = shared_data / "OCTA-500" / "OCTA_6M" / "GT_LargeVessel" / "10001.bmp"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    label = read_mask(path)
    assert label.shape == (400, 400)
    for iters in (1, 5):
        np.testing.assert_array_equal(_ibp(label, iters, stochastic=False),
                                      centerline(label, max_iter=iters))
    skel = _ibp(label, 60, stochastic=False)  # converges long before: early stop
    np.testing.assert_array_equal(skel, centerline(label))
    assert _n_components(skel) == _n_components(label) and _n_holes(skel) == _n_holes(label)


def test_ibp_gradient_of_a_noisy_prediction_is_finite_and_reaches_the_peeled_region() -> None:
    gen = torch.Generator().manual_seed(0)
    label = _t(_random_shapes((48, 48), seed=2))
    p = (0.8 * label + 0.1 + 0.1 * torch.rand(label.shape, generator=gen)).requires_grad_(True)
    skel = ibp_skeleton(p, iters=5, generator=gen)
    (skel * label).sum().backward()
    grad = p.grad[0, 0]
    assert torch.isfinite(grad).all()
    peeled = (label[0, 0] > 0) & (skel.detach()[0, 0] == 0)  # deleted by the peeling
    assert grad[peeled].abs().sum() > 0


@pytest.mark.parametrize("shape", [(2, 1, 16, 20), (1, 1, 17, 21)], ids=["even", "odd"])
def test_product_deletion_has_the_same_values_and_fast_equals_euler(
        shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    p, weights = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    results = []
    for peel in (lambda x: _peel_2d(x, 5, early_stop=False, deletion="product"),
                 lambda x: _peel_euler(x, 5, strict_3d=True, early_stop=False,
                                       deletion="product"),
                 lambda x: _peel_2d(x, 5, early_stop=False)):
        q = p.clone().requires_grad_(True)
        out = peel(_binarise(q, 0.33, 1.0, True, torch.Generator().manual_seed(7)))
        (out * weights).sum().backward()
        results.append((out.detach(), q.grad))
    (fast, fast_grad), (euler, euler_grad), (ref, _) = results
    assert torch.equal(fast, euler) and torch.equal(fast, ref)
    torch.testing.assert_close(fast_grad, euler_grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize("early_stop, passes", [(True, 4), (False, 20)])
def test_min_deletion_halves_a_kept_pixels_gradient_in_every_pass(
        early_stop: bool, passes: int) -> None:
    """An isolated pixel is an end point, so it is kept: ∂S/∂p = 1 with product deletion and
    2^−passes with the reference's min (each pass's tie min(1, 1) keeps half)."""
    for deletion, want in (("product", 1.0), ("min", 2.0 ** -passes)):
        p = torch.zeros(1, 1, 9, 9)
        p[0, 0, 4, 4] = 1.0
        p.requires_grad_(True)
        skel = ibp_skeleton(p, iters=5, stochastic=False, early_stop=early_stop,
                            deletion=deletion)
        assert skel[0, 0, 4, 4] == 1 and skel.sum() == 1
        skel.sum().backward()
        assert p.grad[0, 0, 4, 4].item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="deletion"):
        ibp_skeleton(p, deletion="max")

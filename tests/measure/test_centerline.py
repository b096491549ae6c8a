"""Tests of the exact centerline (reference §3, boundary peeling run to convergence)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from skimage.measure import euler_number, label

from retinaseg.errors import RetinasegError
from retinaseg.measure import MaskShapeError, centerline
from retinaseg.measure.centerline import is_simple_3d, simple_lut_2d

# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def n_components(mask: np.ndarray) -> int:
    """Foreground components, 8- (2D) / 26- (3D) connected."""
    return int(label(mask, connectivity=mask.ndim).max())


def n_holes(mask: np.ndarray) -> int:
    """Bounded background components, 4- (2D) / 6- (3D) connected (holes / cavities)."""
    return int(label(~np.pad(mask, 1), connectivity=1).max()) - 1


def euler(mask: np.ndarray) -> int:
    """Euler number with foreground 8 / 26 connectivity."""
    return int(euler_number(np.pad(mask, 1), connectivity=mask.ndim))


def neighbour_count(mask: np.ndarray) -> np.ndarray:
    """Number of 8- (26-) neighbours of every pixel."""
    kernel = np.ones((3,) * mask.ndim, dtype=int)
    kernel[(1,) * mask.ndim] = 0
    return ndimage.convolve(mask.astype(int), kernel, mode="constant")


def assert_topology_kept(mask: np.ndarray, skel: np.ndarray) -> None:
    """Subset, same components, same holes / cavities, same Euler number."""
    assert skel.dtype == bool and skel.shape == mask.shape
    assert not np.any(skel & ~mask)
    assert n_components(skel) == n_components(mask)
    assert n_holes(skel) == n_holes(mask)
    assert euler(skel) == euler(mask)


def ring_codes_2d(fg: np.ndarray) -> np.ndarray:
    """LUT index (8 neighbours in raster order as bits 0..7, centre as bit 8) of every pixel."""
    windows = sliding_window_view(np.pad(fg, 1), (3, 3)).reshape(*fg.shape, 9)
    weights = np.array([1, 2, 4, 8, 256, 16, 32, 64, 128])
    return windows.astype(int) @ weights


def is_fixed_point(skel: np.ndarray) -> bool:
    """No pixel is simple while having more than one neighbour (nothing left to peel)."""
    counts = neighbour_count(skel)
    if skel.ndim == 2:
        simple = simple_lut_2d()[ring_codes_2d(skel)]
    else:
        cubes = sliding_window_view(np.pad(skel, 1), (3, 3, 3))[skel]
        simple = np.zeros(skel.shape, dtype=bool)
        simple[skel] = is_simple_3d(cubes)
    return not np.any(skel & simple & (counts > 1))


def reference_thinning(mask: np.ndarray) -> np.ndarray:
    """Brute-force §3 peeling to convergence: every pixel of every subfield tested each pass."""
    fg = mask != 0
    ndim = fg.ndim
    coords = np.indices(fg.shape)
    subfield = sum((coords[a] % 2) << a for a in range(ndim))
    while True:
        start, deleted = fg.copy(), False
        for s in range(2**ndim):
            cand = fg & (subfield == s)
            if ndim == 2:
                simple = simple_lut_2d()[ring_codes_2d(fg)]
            else:
                cubes = sliding_window_view(np.pad(fg, 1), (3, 3, 3))
                simple = np.zeros(fg.shape, dtype=bool)
                if cand.any():
                    simple[cand] = is_simple_3d(cubes[cand])
            gone = cand & simple & (neighbour_count(start) > 1)
            fg &= ~gone
            deleted |= bool(gone.any())
        if not deleted:
            return fg


def blob_mask(seed: int, shape: tuple[int, ...], density: float, sigma: float) -> np.ndarray:
    """Random smooth blobs (sigma > 0) or salt noise (sigma = 0)."""
    rng = np.random.default_rng(seed)
    noise = rng.random(shape)
    if sigma > 0:
        noise = ndimage.gaussian_filter(noise, sigma)
    return noise > np.quantile(noise, 1 - density)


def show(mask: np.ndarray) -> str:
    """ASCII drawing, for assertion messages."""
    return "\n".join("".join("#" if v else "." for v in row) for row in mask)


# ------------------------------------------------------------------------------------------
# Simple-point tests
# ------------------------------------------------------------------------------------------


def background_euler_3x3(window: np.ndarray) -> int:
    """§3 χ = V − E + F of the background in a 3×3 window (4-adjacent pairs, 2×2 squares)."""
    bg = ~window
    vertices = bg.sum()
    edges = (bg[:, :-1] & bg[:, 1:]).sum() + (bg[:-1, :] & bg[1:, :]).sum()
    faces = (bg[:-1, :-1] & bg[1:, :-1] & bg[:-1, 1:] & bg[1:, 1:]).sum()
    return int(vertices - edges + faces)


def test_lut_2d_matches_euler_invariance_of_section_3() -> None:
    lut = simple_lut_2d()
    assert lut.shape == (512,) and not lut[:256].any()
    for code in range(256):
        bits = [(code >> k) & 1 for k in range(8)]
        window = np.array(bits[:4] + [1] + bits[4:], dtype=bool).reshape(3, 3)
        removed = window.copy()
        removed[1, 1] = False
        euler_kept = background_euler_3x3(window) == background_euler_3x3(removed)
        assert lut[256 + code] == euler_kept, show(window)


def test_lut_2d_known_entries() -> None:
    lut = simple_lut_2d()
    assert not lut[256]  # isolated pixel
    assert not lut[511]  # interior pixel
    assert lut[256 + 1]  # one neighbour (an end point; the end-point rule protects it)
    assert not lut[256 + (1 << 1) + (1 << 6)]  # N and S: a line pixel


def lee_simple(cube: np.ndarray) -> bool:
    """Independent oracle (Lee et al. 1994): Euler number and 26-object count of the 3×3×3
    cube are unchanged when the centre is removed."""
    removed = cube.copy()
    removed[1, 1, 1] = False
    same_euler = euler(cube) == euler(removed)
    return same_euler and n_components(removed) == 1


def random_cubes(n_per_density: int, seed: int = 0) -> np.ndarray:
    """``[N, 3, 3, 3]`` random neighbourhoods with a foreground centre."""
    rng = np.random.default_rng(seed)
    cubes = []
    for density in (0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 0.9):
        block = rng.random((n_per_density, 3, 3, 3)) < density
        block[:, 1, 1, 1] = True
        cubes.append(block)
    return np.concatenate(cubes)


def test_3d_simple_test_matches_euler_and_object_count_oracle() -> None:
    cubes = random_cubes(300)
    ours = is_simple_3d(cubes)
    oracle = np.array([lee_simple(c) for c in cubes])
    np.testing.assert_array_equal(ours, oracle)
    assert 100 < ours.sum() < len(cubes) - 100  # both outcomes well represented


def test_3d_simple_known_cases() -> None:
    full = np.ones((3, 3, 3), dtype=bool)
    assert not is_simple_3d(full)  # deleting would create a cavity
    lone = np.zeros((3, 3, 3), dtype=bool)
    lone[1, 1, 1] = True
    assert not is_simple_3d(lone)
    line = lone.copy()
    line[:, 1, 1] = True
    assert not is_simple_3d(line)  # deleting would split the line
    ring = np.zeros((3, 3, 3), dtype=bool)
    ring[1] = True
    assert not is_simple_3d(ring)  # a plate: deleting its centre punches a tunnel
    corner = lone.copy()
    corner[0, 0, 0] = True
    assert is_simple_3d(corner)


def test_euler_invariance_alone_is_not_enough_in_3d() -> None:
    # Some deletions keep χ (one more component, one more tunnel) yet change topology.
    cubes = random_cubes(300, seed=1)
    removed = cubes.copy()
    removed[:, 1, 1, 1] = False
    same_chi = np.array([euler(a) == euler(b) for a, b in zip(cubes, removed, strict=True)])
    split = np.array([n_components(b) != 1 for b in removed])
    assert np.any(same_chi & split)
    assert not np.any(is_simple_3d(cubes[same_chi & split]))


# ------------------------------------------------------------------------------------------
# Small known shapes, 2D
# ------------------------------------------------------------------------------------------


def test_single_pixel_stays() -> None:
    mask = np.zeros((5, 5), dtype=np.uint8)
    mask[2, 2] = 7
    np.testing.assert_array_equal(centerline(mask), mask > 0)


@pytest.mark.parametrize("kind", ["horizontal", "vertical", "diagonal", "staircase"])
def test_one_pixel_line_unchanged(kind: str) -> None:
    mask = np.zeros((12, 12), dtype=bool)
    if kind == "horizontal":
        mask[5, 1:11] = True
    elif kind == "vertical":
        mask[1:11, 5] = True
    elif kind == "diagonal":
        np.fill_diagonal(mask, True)
    else:
        for i in range(5):
            mask[1 + i, 1 + 2 * i : 3 + 2 * i] = True
    np.testing.assert_array_equal(centerline(mask), mask)


def test_rectangle_5x11_thins_to_centre_row() -> None:
    mask = np.zeros((9, 15), dtype=bool)
    mask[2:7, 2:13] = True
    expected = np.zeros_like(mask)
    expected[4, 4:11] = True  # the centre row, two pixels in from each short side
    got = centerline(mask)
    np.testing.assert_array_equal(got, expected, err_msg=show(got))


def test_annulus_thins_to_closed_loop() -> None:
    mask = np.zeros((15, 15), dtype=bool)
    mask[2:13, 2:13] = True
    mask[6:9, 6:9] = False
    got = centerline(mask)
    assert_topology_kept(mask, got)
    assert n_holes(got) == 1 and n_components(got) == 1
    assert np.all(neighbour_count(got)[got] == 2), show(got)  # a simple closed curve


def test_l_shape() -> None:
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:11, 1:4] = True
    mask[8:11, 1:11] = True
    got = centerline(mask)
    assert_topology_kept(mask, got)
    ends = got & (neighbour_count(got) == 1)
    assert ends.sum() == 2, show(got)
    rows, cols = np.nonzero(got)
    assert rows.min() <= 2 and cols.max() >= 8, show(got)  # both arms nearly full length
    assert not np.any(got[:-1, :-1] & got[1:, :-1] & got[:-1, 1:] & got[1:, 1:]), show(got)


@pytest.mark.parametrize("angle", [0.0, 0.3, 0.785, 1.2])
def test_thick_line_keeps_its_length(angle: float) -> None:
    yy, xx = np.mgrid[:80, :80] - 39.5
    along = xx * np.cos(angle) + yy * np.sin(angle)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    mask = (np.abs(along) <= 30) & (np.abs(across) <= 3)
    got = centerline(mask)
    assert_topology_kept(mask, got)
    span = np.ptp(xx[got] * np.cos(angle) + yy[got] * np.sin(angle))
    assert span >= 60 - 2 * 3 - 2, span
    assert 2 <= (got & (neighbour_count(got) == 1)).sum() <= 4  # corners may leave short spurs
    pruned = centerline(mask, prune=5)
    assert (pruned & (neighbour_count(pruned) == 1)).sum() == 2
    assert np.ptp(xx[pruned] * np.cos(angle) + yy[pruned] * np.sin(angle)) >= span - 5


def test_any_dtype_and_bad_shapes() -> None:
    mask = np.zeros((9, 15), dtype=np.float32)
    mask[2:7, 2:13] = 0.5
    np.testing.assert_array_equal(centerline(mask), centerline(mask > 0))
    with pytest.raises(MaskShapeError, match="2D"):
        centerline(np.ones(5))
    with pytest.raises(RetinasegError):
        centerline(np.ones((2, 2, 2, 2)))


def test_max_iter() -> None:
    mask = blob_mask(3, (40, 40), 0.5, 2.0)
    np.testing.assert_array_equal(centerline(mask, max_iter=0), mask)
    one = centerline(mask, max_iter=1)
    assert_topology_kept(mask, one)
    full = centerline(mask)
    assert one.sum() > full.sum()
    assert not np.any(full & ~one)
    np.testing.assert_array_equal(centerline(mask, max_iter=1000), full)


def test_empty_and_full() -> None:
    assert not centerline(np.zeros((6, 7))).any()
    full = centerline(np.ones((6, 7)))
    assert n_components(full) == 1 and is_fixed_point(full)


# ------------------------------------------------------------------------------------------
# Pruning
# ------------------------------------------------------------------------------------------


def t_shape() -> np.ndarray:
    mask = np.zeros((14, 24), dtype=bool)
    mask[5, 1:23] = True  # bar, two long arms
    mask[6:9, 9] = True  # short stem down
    mask[1:5, 16] = True  # stem up
    mask[9:13, 2:4] = True  # a separate short, thick line
    return mask


def test_prune_removes_short_spurs_only() -> None:
    mask = t_shape()
    plain = centerline(mask)
    pruned = centerline(mask, prune=3)
    assert_topology_kept(mask, pruned)
    assert not np.any(pruned & ~plain)
    assert not pruned[7:9, 9].any(), show(pruned)  # short stem gone
    assert pruned[1:4, 16].all(), show(pruned)  # long stem kept
    assert pruned[5, 1] and pruned[5, 22], show(pruned)  # arms untouched
    np.testing.assert_array_equal(pruned[9:], plain[9:])  # isolated line never removed


def test_prune_large_never_removes_components_or_loops() -> None:
    mask = t_shape()
    mask[10:13, 10:20] = True
    mask[11, 12:18] = False
    pruned = centerline(mask, prune=100)
    assert_topology_kept(mask, pruned)
    assert is_fixed_point(pruned)


def test_prune_zero_is_plain() -> None:
    mask = blob_mask(5, (30, 30), 0.5, 1.5)
    np.testing.assert_array_equal(centerline(mask, prune=0), centerline(mask))


# ------------------------------------------------------------------------------------------
# 3D shapes
# ------------------------------------------------------------------------------------------


def test_3d_bar_thins_to_axis_line() -> None:
    mask = np.zeros((5, 5, 13), dtype=bool)
    mask[1:4, 1:4, 2:11] = True
    got = centerline(mask)
    idx = np.argwhere(got)
    assert np.all(idx[:, 0] == 2) and np.all(idx[:, 1] == 2)
    np.testing.assert_array_equal(idx[:, 2], np.arange(4, 9))


def test_3d_single_voxel_and_line() -> None:
    mask = np.zeros((5, 6, 7), dtype=bool)
    mask[2, 3, 3] = True
    np.testing.assert_array_equal(centerline(mask), mask)
    mask[1:4, 1:5, 1:6] = False
    for i in range(5):
        mask[min(i, 3), 1 + i % 4, 1 + i] = True
    np.testing.assert_array_equal(centerline(mask), mask)


def test_3d_prune_removes_short_stub() -> None:
    mask = np.zeros((7, 9, 26), dtype=bool)
    mask[2:5, 2:5, 1:25] = True  # long bar along the last axis
    mask[2:5, 5:8, 11:14] = True  # a 3-voxel stub sticking out sideways
    plain, pruned = centerline(mask), centerline(mask, prune=4)
    for got in (plain, pruned):
        assert_topology_kept(mask, got)
        assert is_fixed_point(got)
    assert (pruned & (neighbour_count(pruned) == 1)).sum() == 2
    assert np.ptp(np.argwhere(pruned)[:, 2]) == np.ptp(np.argwhere(plain)[:, 2]) >= 18


def test_3d_hollow_cube_keeps_cavity() -> None:
    mask = np.zeros((11, 11, 11), dtype=bool)
    mask[1:10, 1:10, 1:10] = True
    mask[4:7, 4:7, 4:7] = False
    got = centerline(mask)
    assert_topology_kept(mask, got)
    assert n_holes(got) == 1
    assert got.sum() < mask.sum() // 3


def test_3d_torus_keeps_its_tunnel() -> None:
    z, y, x = np.indices((11, 21, 21)) - np.array([5, 10, 10])[:, None, None, None]
    mask = (np.hypot(y, x) - 6.0) ** 2 + z**2 <= 3.0**2
    got = centerline(mask)
    assert_topology_kept(mask, got)
    assert euler(got) == 0 and n_components(got) == 1  # b0 = 1, b2 = 0, so b1 = 1
    assert is_fixed_point(got)
    loop = centerline(mask, prune=4)  # without the short surface spurs: one closed curve
    assert_topology_kept(mask, loop)
    assert np.all(neighbour_count(loop)[loop] >= 2)


# ------------------------------------------------------------------------------------------
# Equivalence with brute force, random masks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_queue_equals_brute_force_2d(seed: int) -> None:
    mask = blob_mask(seed, (24, 31), 0.3 + 0.1 * seed, 1.0 + 0.3 * (seed % 3))
    np.testing.assert_array_equal(centerline(mask), reference_thinning(mask))


@pytest.mark.parametrize("seed", range(4))
def test_queue_equals_brute_force_3d(seed: int) -> None:
    mask = blob_mask(seed, (9, 10, 11), 0.3 + 0.1 * seed, 1.0)
    np.testing.assert_array_equal(centerline(mask), reference_thinning(mask))


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    density=st.floats(0.05, 0.95),
    sigma=st.sampled_from([0.0, 0.7, 1.5]),
)
def test_random_2d_topology(seed: int, density: float, sigma: float) -> None:
    mask = blob_mask(seed, (20, 20), density, sigma)
    got = centerline(mask)
    assert_topology_kept(mask, got)
    assert is_fixed_point(got)
    np.testing.assert_array_equal(centerline(got), got)  # idempotent: end points are kept


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    density=st.floats(0.1, 0.9),
    sigma=st.sampled_from([0.0, 0.8, 1.2]),
)
def test_random_3d_topology(seed: int, density: float, sigma: float) -> None:
    mask = blob_mask(seed, (8, 8, 8), density, sigma)
    got = centerline(mask)
    assert_topology_kept(mask, got)
    assert is_fixed_point(got)
    np.testing.assert_array_equal(centerline(got), got)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), length=st.integers(1, 12))
def test_random_2d_prune_topology(seed: int, length: int) -> None:
    mask = blob_mask(seed, (24, 24), 0.4, 1.0)
    got = centerline(mask, prune=length)
    assert_topology_kept(mask, got)
    assert not np.any(got & ~centerline(mask))


# ------------------------------------------------------------------------------------------
# Real DRIVE labels
# ------------------------------------------------------------------------------------------


def drive_labels(shared_data: Path) -> list[np.ndarray]:
    """The 20 DRIVE test manual labels as bool ``[584, 565]``; skips when absent."""
    from PIL import Image

    files = sorted((shared_data / "DRIVE" / "test" / "1st_manual").glob("*.gif"))
    if len(files) != 20:
        pytest.skip(f"expected 20 DRIVE test labels under {shared_data}, found {len(files)}")
    return [np.asarray(Image.open(f)) > 0 for f in files]


@pytest.mark.shared_data
def test_drive_labels_topology(shared_data: Path) -> None:
    for mask in drive_labels(shared_data):
        got = centerline(mask)
        assert_topology_kept(mask, got)
        assert is_fixed_point(got)
        blocks = got[:-1, :-1] & got[1:, :-1] & got[:-1, 1:] & got[1:, 1:]
        assert blocks.sum() <= 2  # 2×2 blocks only where topology forces them
        pruned = centerline(mask, prune=10)
        assert_topology_kept(mask, pruned)
        assert (neighbour_count(pruned)[pruned] == 1).sum() < (neighbour_count(got)[got] == 1).sum()

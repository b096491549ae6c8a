"""Prompt samplers (reference §7): known answers on small masks, reproducibility, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from retinaseg.errors import OptionError
from retinaseg.preprocessing.prompts import (
    Prompt,
    box_prompt,
    centroid_points,
    chebyshev_ring,
    check_prompt,
    faz_points,
    global_points,
    local_points,
    object_points,
    parse_box,
    parse_points,
    prompt_generation,
)

S = 64


def disc(cy: float, cx: float, r: float, size: int = S) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def two_discs() -> np.ndarray:
    return disc(16, 16, 6) | disc(46, 44, 7)


def chess_distance(mask: np.ndarray) -> np.ndarray:
    """Chebyshev distance of every pixel to ``mask`` (0 on it)."""
    return ndimage.distance_transform_cdt(~mask, metric="chessboard")


def at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Values of ``image`` at (x, y) pixel points."""
    xy = points.astype(int)
    return image[xy[:, 1], xy[:, 0]]


def component_of(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """8-connected component label under each point."""
    labels, _ = ndimage.label(mask, np.ones((3, 3)))
    return at(labels, points)


# ------------------------------------------------------------------------------------------
# SAM-OCTA2 PromptGeneration


def test_prompt_generation_two_discs_one_point_per_component() -> None:
    mask = two_discs()
    p = prompt_generation(mask, 2, 2, rng=0)
    assert p.labels.tolist() == [1, 1, 0, 0]
    assert sorted(component_of(mask, p.positives).tolist()) == [1, 2]
    d = at(chess_distance(mask), p.negatives)
    assert ((d > 3) & (d <= 9)).all(), d
    # each negative lies in the ring of a different disc
    near = [int(np.argmin([at(chess_distance(m), q[None])[0] for m in
                           (disc(16, 16, 6), disc(46, 44, 7))])) for q in p.negatives]
    assert sorted(near) == [0, 1]


def test_prompt_generation_remaining_budget_from_whole_mask_and_ring() -> None:
    mask = two_discs()
    p = prompt_generation(mask, 9, 12, rng=3)
    assert (p.labels == 1).sum() == 9 and (p.labels == 0).sum() == 12
    assert at(mask, p.positives).all()
    d = at(chess_distance(mask), p.negatives)
    assert ((d > 3) & (d <= 9)).all()
    assert len(np.unique(p.points, axis=0)) == len(p.points)  # no pixel twice


def test_prompt_generation_drops_small_components_and_caps_budget() -> None:
    mask = np.zeros((S, S), bool)
    mask[5, 5] = True  # 1 px: dropped for the per-component steps
    mask[30:36, 30:36] = True  # 36 px
    p = prompt_generation(mask, 1, 1, rng=1)
    assert component_of(mask, p.positives).tolist() == [component_of(mask, np.array([[30, 30]]))[0]]
    tiny = np.zeros((S, S), bool)
    tiny[10, 10:13] = True
    q = prompt_generation(tiny, 10, 0, rng=1)  # only 3 pixels: capped, labels match points
    assert len(q) == 3 and q.labels.tolist() == [1, 1, 1]


# ------------------------------------------------------------------------------------------
# SAM-OCTA global and local modes


def test_global_points_per_component_and_ring() -> None:
    mask = two_discs()
    p = global_points(mask, 3, 2, rng=0)
    assert p.labels.tolist() == [1] * 6 + [0] * 4
    assert sorted(component_of(mask, p.positives).tolist()) == [1, 1, 1, 2, 2, 2]
    d = at(chess_distance(mask), p.negatives)
    assert ((d >= 1) & (d <= 4)).all(), d
    assert len(global_points(mask, 1, -1, rng=0).negatives) == 30 - 2  # seed's neg = -1 mode


def test_global_points_gives_every_component_its_own_ring_beyond_255() -> None:
    mask = np.zeros((72, 72), bool)
    for r in range(1, 72, 4):
        for c in range(1, 72, 4):
            mask[r:r + 2, c:c + 2] = True  # 18 x 18 = 324 squares, 2 px apart
    p = global_points(mask, 1, 1, ring=1, rng=0)
    assert len(p.positives) == len(p.negatives) == 324
    assert not at(mask, p.negatives).any()
    labels, n = ndimage.label(mask, np.ones((3, 3)))
    owners = set()
    for q in p.negatives.astype(int):
        x, y = q
        owners |= set(np.unique(labels[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2])) - {0}
    assert n == 324 and len(owners) == 324


def test_local_points_targets_one_component() -> None:
    mask = two_discs()
    mask[2, 60] = True  # 1 px: never a target for 3 + 3 points
    for seed in range(5):
        p, target = local_points(mask, 3, 3, rng=seed)
        assert target.sum() in (disc(16, 16, 6).sum(), disc(46, 44, 7).sum())
        assert at(target, p.positives).all()
        d = at(chess_distance(target), p.negatives)
        assert ((d >= 1) & (d <= 4)).all()
    with pytest.raises(OptionError, match="largest has"):
        local_points(mask, 400, 400, rng=0)
    p, target = local_points(mask, 0, 0, rng=0)
    assert len(p) == 0 and not target.any()
    p, _ = local_points(mask, -1, -1, rng=4)
    assert 1 <= len(p) <= 8


def test_object_points_uniform_in_mask_and_ring() -> None:
    mask = disc(30, 30, 8)
    p = object_points(mask, 10, 6, rng=2)
    assert at(mask, p.positives).all()
    d = at(chess_distance(mask), p.negatives)
    assert len(p.negatives) == 6 and ((d > 3) & (d <= 9)).all()


def test_chebyshev_ring_of_a_pixel() -> None:
    mask = np.zeros((S, S), bool)
    mask[30, 30] = True
    assert chebyshev_ring(mask, 3, 9).sum() == 19**2 - 7**2


# ------------------------------------------------------------------------------------------
# reproducibility


@pytest.mark.parametrize("sample", [
    lambda m, rng: global_points(m, 2, 2, rng=rng),
    lambda m, rng: local_points(m, 2, 2, rng=rng)[0],
    lambda m, rng: prompt_generation(m, 4, 4, rng=rng),
    lambda m, rng: object_points(m, 4, 4, rng=rng),
    lambda m, rng: faz_points(m, 4, rng=rng),
])
def test_same_seed_same_points(sample) -> None:
    mask = two_discs()
    a, b = sample(mask, 7), sample(mask, np.random.default_rng(7))
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.labels, b.labels)
    others = [sample(mask, s).points for s in range(8, 12)]
    assert any(not np.array_equal(a.points, o) for o in others)


# ------------------------------------------------------------------------------------------
# en-face mode: centroids, FAZ, boxes


def test_centroid_inside_is_exact_and_annulus_is_snapped_to_itself() -> None:
    square = np.zeros((S, S), bool)
    square[10:20, 30:34] = True
    np.testing.assert_allclose(centroid_points(square).points, [[31.5, 14.5]])
    annulus = disc(32, 32, 12) & ~disc(32, 32, 8)
    core = disc(32, 32, 3)  # its own component, where the annulus centroid falls
    mask = annulus | core
    p = centroid_points(mask)
    assert len(p) == 2 and p.labels.tolist() == [1, 1]
    labels, _ = ndimage.label(mask)
    owners = at(labels, np.floor(p.points + 0.5))
    assert sorted(owners.tolist()) == [1, 2]
    snapped = p.points[owners == labels[20, 32]][0]
    radius = np.hypot(snapped[0] - 32, snapped[1] - 32)
    yy, xx = np.nonzero(annulus)
    assert radius == pytest.approx(np.hypot(yy - 32, xx - 32).min())


def test_faz_points_centroid_then_border() -> None:
    faz = disc(32, 30, 12)
    p = faz_points(faz, 5, rng=0)
    assert len(p) == 6 and (p.labels == 1).all()
    np.testing.assert_allclose(p.points[0], [30, 32], atol=0.01)
    border = p.points[1:]
    assert at(faz, border).all()
    inner = ndimage.binary_erosion(faz, np.ones((7, 7)), border_value=1)
    assert not at(inner, border).any()  # within 3 px of the FAZ edge
    small = np.zeros((S, S), bool)
    small[5, 5:7] = True
    assert len(faz_points(small, 5, rng=0)) == 1 + 2  # band smaller than asked: all of it
    assert len(faz_points(np.zeros((S, S)), 3, rng=0)) == 0


def test_box_of_a_rectangle_and_jitter() -> None:
    mask = np.zeros((40, 50), bool)
    mask[10:20, 5:25] = True
    assert box_prompt(mask).box == (5.0, 10.0, 24.0, 19.0)
    for seed in range(10):
        x0, y0, x1, y1 = box_prompt(mask, jitter=6, rng=seed).box
        assert abs(x0 - 5) <= 6 and abs(y1 - 19) <= 6 and x0 <= x1 and y0 <= y1
        assert 0 <= x0 and x1 <= 49 and 0 <= y0 and y1 <= 39
    with pytest.raises(OptionError, match="at least one foreground pixel"):
        box_prompt(np.zeros((4, 4)))


# ------------------------------------------------------------------------------------------
# validation and parsing


def test_check_prompt_accepts_good_and_rejects_bad_prompts() -> None:
    good = Prompt([[0, 0], [49.5, 39.5]], [1, 0], box=(0, 0, 50, 40))
    assert check_prompt(good, (40, 50)) is good
    with pytest.raises(OptionError, match=r"point 2 \(x=50, y=3\) lies outside the image of "
                                          r"width 50 and height 40"):
        check_prompt(Prompt([[1, 1], [50, 3]], [1, 1]), (40, 50))
    with pytest.raises(OptionError, match="at least one point or a box"):
        check_prompt(Prompt(), (40, 50))
    with pytest.raises(OptionError, match="box .* is not inside the image"):
        check_prompt(Prompt(box=(-1, 0, 10, 10)), (40, 50, 3))
    with pytest.raises(OptionError, match="outside"):
        check_prompt(Prompt([[np.nan, 1]], [1]), (40, 50))


def test_prompt_shapes_and_labels_are_checked() -> None:
    with pytest.raises(OptionError, match=r"\[N, 2\]"):
        Prompt([[1, 2, 3]], [1])
    with pytest.raises(OptionError, match="0 or 1"):
        Prompt([[1, 2]], [2])
    with pytest.raises(OptionError, match="0 or 1, one per point"):
        Prompt([[1, 2]], [1, 0])
    p = Prompt([[10, 20]], [1], box=(0, 0, 4, 8)).scaled(2.0)
    assert p.points.tolist() == [[20, 40]] and p.box == (0, 0, 8, 16)
    assert not p.points.flags.writeable


def test_parse_points_and_box() -> None:
    p = parse_points("10,20,1; 5.5,7,0;3,4")
    assert p.points.tolist() == [[10, 20], [5.5, 7], [3, 4]] and p.labels.tolist() == [1, 0, 1]
    assert parse_box(" 1, 2,30,40") == (1.0, 2.0, 30.0, 40.0)
    for text, msg in [("", "no prompt points"), ("1,2,1;a,b,0", "point 2 'a,b,0' is not"),
                      ("1,2,3", "label 1 .positive. or 0"), ("1,2,1,0", "point 1"),
                      ("1,inf,1", "point 1")]:
        with pytest.raises(OptionError, match=msg):
            parse_points(text)
    for text, msg in [("1,2,3", "four numbers"), ("1,2,x,4", "four numbers"),
                      ("5,5,1,1", "top-left corner")]:
        with pytest.raises(OptionError, match=msg):
            parse_box(text)

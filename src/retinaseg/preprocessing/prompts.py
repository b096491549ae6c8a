"""Point and box prompts for SAM-style models, sampled from label masks (reference §7).

SAM-OCTA (§7.1) and SAM-OCTA2 (§7.2) train promptable models with clicks drawn from the label:
positives inside the vessels, negatives in a ring of background around them. This module holds
those samplers as plain functions of a binary mask ``[H, W]`` and a random generator:

- :func:`global_points`: SAM-OCTA global mode, positives per component, negatives per ring;
- :func:`local_points`: SAM-OCTA local mode, one component is the target;
- :func:`prompt_generation`: SAM-OCTA2 ``PromptGeneration``, (3, 9] px rings;
- :func:`object_points`: SAM-OCTA2 RV objects, uniform in the mask and its (3, 9] ring;
- :func:`centroid_points`, :func:`faz_points`: SAM-OCTA2 en-face mode (centroids, FAZ border);
- :func:`box_prompt`: the mask's bounding box;
- :func:`check_prompt`, :func:`parse_points`, :func:`parse_box`: validation and CLI parsing.

Coordinates are SAM's: a point is ``(x, y)`` = (column, row) in pixels of the mask; a box is
``(x0, y0, x1, y1)`` with inclusive corner pixels. Sampled points are pixel indices. Distances
are Chebyshev (a square dilation of radius r reaches the pixels at distance <= r), as in the
seeds. Every sampler takes ``rng``: a :class:`numpy.random.Generator`, an int seed or None, so
that a fixed seed gives the same prompt. Where the seeds misbehave (reference **(bug)** marks
and a few more found in their code), the docstring says what is done instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from retinaseg.errors import OptionError

RngLike = np.random.Generator | int | None
Box = tuple[float, float, float, float]


def _no_points() -> np.ndarray:
    return np.zeros((0, 2), np.float32)


def _no_labels() -> np.ndarray:
    return np.zeros(0, np.int32)


@dataclass(frozen=True, eq=False)
class Prompt:
    """Prompt of one object: ``points`` float32 ``[N, 2]`` as (x, y) pixels, ``labels`` int32
    ``[N]`` (1 positive, 0 negative) and an optional ``box`` (x0, y0, x1, y1).

    The arrays are made read-only. Shapes and label values are checked on construction
    (:class:`~retinaseg.errors.OptionError`); whether the points lie in an image is
    :func:`check_prompt`'s job.
    """

    points: np.ndarray = field(default_factory=_no_points)
    labels: np.ndarray = field(default_factory=_no_labels)
    box: Box | None = None

    def __post_init__(self) -> None:
        points = np.array(self.points, dtype=np.float32)
        if points.size == 0:
            points = _no_points()
        if points.ndim != 2 or points.shape[1] != 2:
            raise OptionError(f"prompt points must be an array [N, 2] of (x, y); got shape "
                              f"{points.shape}")
        labels = np.array(self.labels, dtype=np.int32).reshape(-1)
        if labels.shape != (len(points),) or not np.isin(labels, (0, 1)).all():
            raise OptionError(f"prompt labels must be {len(points)} values of 0 or 1, one per "
                              f"point; got {labels.tolist()}")
        points.flags.writeable = labels.flags.writeable = False
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "labels", labels)
        if self.box is not None:
            box = tuple(float(v) for v in np.asarray(self.box, dtype=float).reshape(-1))
            if len(box) != 4:
                raise OptionError(f"a prompt box must be 4 numbers (x0, y0, x1, y1); got {box}")
            object.__setattr__(self, "box", box)

    def __len__(self) -> int:
        return len(self.points)

    @property
    def positives(self) -> np.ndarray:
        """The positive points ``[P, 2]``."""
        return self.points[self.labels == 1]

    @property
    def negatives(self) -> np.ndarray:
        """The negative points ``[Q, 2]``."""
        return self.points[self.labels == 0]

    def scaled(self, sx: float, sy: float | None = None) -> Prompt:
        """The prompt for the image resized by ``sx`` (width) and ``sy`` (height, default sx),
        e.g. 2.0 for a 512 px frame fed to SAM 2 at 1024 px."""
        sy = sx if sy is None else sy
        box = None if self.box is None else (self.box[0] * sx, self.box[1] * sy,
                                               self.box[2] * sx, self.box[3] * sy)
        return Prompt(self.points * np.float32([sx, sy]), self.labels, box)


# --------------------------------------------------------------------------------------------
# helpers


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _as_mask(mask: np.ndarray, what: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise OptionError(f"the {what} must be a 2-D array [H, W]; got shape {arr.shape}")
    return arr > 0


def _count(value: int, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise OptionError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _ring_bounds(ring: tuple[int, int]) -> tuple[int, int]:
    inner, outer = (int(v) for v in ring)
    if not 0 <= inner < outer:
        raise OptionError(f"ring must be (inner, outer) px with 0 <= inner < outer; got {ring}")
    return inner, outer


def _components(mask: np.ndarray, connectivity: int = 2) -> tuple[np.ndarray, int]:
    """Connected components (``connectivity`` 1: 4-connected, 2: 8-connected)."""
    structure = ndimage.generate_binary_structure(2, connectivity)
    labels, n = ndimage.label(mask, structure=structure)
    return labels, int(n)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within Chebyshev distance ``radius`` of ``mask`` (a (2r+1)² square dilation)."""
    if radius <= 0:
        return mask.copy()
    grown = ndimage.maximum_filter(mask.view(np.uint8), size=2 * radius + 1, mode="constant")
    return grown.astype(bool)


def chebyshev_ring(mask: np.ndarray, inner: int = 0, outer: int = 4) -> np.ndarray:
    """Background pixels at Chebyshev distance ``d`` from ``mask`` with ``inner < d <= outer``.

    ``chebyshev_ring(m, 3, 9)`` is SAM-OCTA2's negative region: the 19×19 dilation minus the
    7×7 one. With ``inner = 0`` the mask itself is excluded. Returns bool ``[H, W]``.
    """
    m = _as_mask(mask)
    inner, outer = _ring_bounds((inner, outer))
    return _dilate(m, outer) & ~_dilate(m, inner)


def _component_pixels(labels: np.ndarray, index: int,
                      box: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(labels[box] == index)
    return rows + box[0].start, cols + box[1].start


def _component_ring(labels: np.ndarray, index: int, box: tuple[slice, slice], inner: int,
                    outer: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (rows, cols) at distance (inner, outer] of component ``index``, not in ``exclude``.

    Computed on the component's bounding box grown by ``outer``, so each component gets its own
    ring however many components there are.
    """
    h, w = labels.shape
    r0, r1 = max(box[0].start - outer, 0), min(box[0].stop + outer, h)
    c0, c1 = max(box[1].start - outer, 0), min(box[1].stop + outer, w)
    comp = labels[r0:r1, c0:c1] == index
    ring = _dilate(comp, outer) & ~_dilate(comp, inner) & ~exclude[r0:r1, c0:c1]
    rows, cols = np.nonzero(ring)
    return rows + r0, cols + c0


def _pick(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, k: int) -> np.ndarray:
    """``min(k, n)`` distinct pixels drawn uniformly, as (x, y) float32 ``[k, 2]``."""
    k = min(k, len(rows))
    if k <= 0:
        return _no_points()
    idx = rng.choice(len(rows), size=k, replace=False)
    return np.stack([cols[idx], rows[idx]], axis=1).astype(np.float32)


def _prompt(pos: list[np.ndarray], neg: list[np.ndarray]) -> Prompt:
    p = np.concatenate([_no_points(), *pos])
    q = np.concatenate([_no_points(), *neg])
    return Prompt(np.concatenate([p, q]), np.r_[np.ones(len(p), np.int32),
                                                np.zeros(len(q), np.int32)])


# --------------------------------------------------------------------------------------------
# SAM-OCTA (§7.1)


def global_points(mask: np.ndarray, n_pos: int = 1, n_neg: int = 1, *, ring: int = 4,
                  rng: RngLike = None) -> Prompt:
    """SAM-OCTA global mode: the target is the whole mask (reference §7.1).

    For every 8-connected component with at least ``n_pos`` pixels, ``n_pos`` distinct positive
    pixels are drawn uniformly from it and ``n_neg`` negatives from its ring: the background
    pixels within Chebyshev distance ``ring`` (4 px) of that component. ``n_neg = -1`` is the
    seed's other mode: ``max(0, 30·n_pos - n_components·n_pos)`` negatives from the ring around
    the whole mask. Positives come first in the result. An empty mask gives an empty prompt.

    Differences from the seed, which dilates the label map (cast to uint8) by an 8×8 square:
    labels wrapped beyond 255 components and, where two rings meet, the larger label took the
    pixel, so every component now gets its own ring; the even 8×8 kernel reached 4 px up/left
    but 3 px down/right, the ring is now symmetric; the seed's ring also held pixels of
    neighbouring components (label differences), it now holds background only; a ring smaller
    than ``n_neg`` gives all its pixels instead of an error.

    >>> m = np.zeros((32, 32), bool); m[8:12, 8:12] = m[20:24, 20:24] = True
    >>> p = global_points(m, 2, 1, rng=0)
    >>> p.labels.tolist()
    [1, 1, 1, 1, 0, 0]
    """
    m = _as_mask(mask)
    n_pos = _count(n_pos, "n_pos")
    n_neg = _count(n_neg, "n_neg", minimum=-1)
    ring = _count(ring, "ring", minimum=1)
    g = _rng(rng)
    labels, n = _components(m)
    pos, neg = [], []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        rows, cols = _component_pixels(labels, index, box)
        if len(rows) < n_pos:
            continue
        pos.append(_pick(g, rows, cols, n_pos))
        if n_neg > 0:
            neg.append(_pick(g, *_component_ring(labels, index, box, 0, ring, m), n_neg))
    if n_neg == -1 and n:
        budget = max(0, 30 * n_pos - n * n_pos)
        neg.append(_pick(g, *np.nonzero(chebyshev_ring(m, 0, ring)), budget))
    return _prompt(pos, neg)


def local_points(mask: np.ndarray, n_pos: int = 1, n_neg: int = 1, *, ring: int = 4,
                 rng: RngLike = None) -> tuple[Prompt, np.ndarray]:
    """SAM-OCTA local mode: one vessel component is the target (reference §7.1).

    A component is chosen as the seed does, by a uniform foreground pixel (so with probability
    proportional to its size) among the 8-connected components of at least ``n_pos + n_neg``
    pixels; ``n_pos`` positives are drawn inside it and ``n_neg`` negatives in its ring (the
    pixels within Chebyshev distance ``ring`` of it, other vessels included: they are not the
    target). ``n_pos = -1`` draws n_pos from U{0..4}; ``n_neg = -1`` from U{1..4} when n_pos is
    0, else U{0..4}. Returns ``(prompt, target)`` with ``target`` bool ``[H, W]``; with no
    points at all (or an empty mask) the target is empty, as in the seed.

    Differences from the seed: its resampling loop never ends when no component is large
    enough; that is an :class:`~retinaseg.errors.OptionError` here. Its 8×8 ring kernel was
    asymmetric (4 px up/left, 3 px down/right); this ring is symmetric.
    """
    m = _as_mask(mask)
    g = _rng(rng)
    n_pos = int(g.integers(0, 5)) if n_pos == -1 else _count(n_pos, "n_pos")
    n_neg = int(g.integers(1 if n_pos == 0 else 0, 5)) if n_neg == -1 else _count(n_neg, "n_neg")
    ring = _count(ring, "ring", minimum=1)
    labels, n = _components(m)
    empty = np.zeros(m.shape, bool)
    if n == 0 or n_pos + n_neg == 0:
        return Prompt(), empty
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    weights = np.where(sizes >= n_pos + n_neg, sizes, 0).astype(float)
    if weights.sum() == 0:
        raise OptionError(f"local_points needs a component of at least n_pos + n_neg = "
                          f"{n_pos + n_neg} px; the largest has {sizes.max()} px")
    index = int(g.choice(n, p=weights / weights.sum())) + 1
    target = labels == index
    pos = _pick(g, *np.nonzero(target), n_pos)
    neg = _pick(g, *np.nonzero(_dilate(target, ring) & ~target), n_neg)
    return _prompt([pos], [neg]), target


# --------------------------------------------------------------------------------------------
# SAM-OCTA2 (§7.2)


def prompt_generation(mask: np.ndarray, n_pos: int, n_neg: int, *,
                      ring: tuple[int, int] = (3, 9), min_size: int = 20,
                      rng: RngLike = None) -> Prompt:
    """SAM-OCTA2 ``PromptGeneration`` (reference §7.2), used for the FAZ and for evaluation.

    1. 8-connected components smaller than ``min_size`` (20 px) are dropped.
    2. In a random order, each component gets one positive (a uniform pixel) until ``n_pos``
       are placed.
    3. In a new random order, each component gets one negative from its own ring: background
       pixels at Chebyshev distance (3, 9] px from it (``ring``), until ``n_neg`` are placed.
    4. Any remaining budget is drawn uniformly from the whole mask (positives) or the ring
       around the whole mask (negatives), never repeating a pixel already chosen.

    Positives come first. Fewer points than asked come back only where the regions run out.

    Differences from the seed: it seeded Python's global ``random`` and only for a non-zero
    seed (its training seed was 0, i.e. unseeded); here ``rng`` always decides. A component
    with an empty ring (the seed's ``random.choice`` raised) is skipped, and a remaining budget
    larger than its region (``random.sample`` raised) is capped, so labels always match points.
    """
    m = _as_mask(mask)
    n_pos, n_neg = _count(n_pos, "n_pos"), _count(n_neg, "n_neg")
    inner, outer = _ring_bounds(ring)
    min_size = _count(min_size, "min_size")
    g = _rng(rng)
    labels, n = _components(m)
    boxes = ndimage.find_objects(labels)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    kept = [i for i in range(1, n + 1) if sizes[i] >= min_size]
    pos = [_pick(g, *_component_pixels(labels, i, boxes[i - 1]), 1)
           for i in g.permutation(kept)[:n_pos]] if kept else []
    neg: list[np.ndarray] = []
    for i in g.permutation(kept) if kept else []:
        if len(neg) == n_neg:
            break
        rows, cols = _component_ring(labels, i, boxes[i - 1], inner, outer, m)
        if len(rows):
            neg.append(_pick(g, rows, cols, 1))
    pos.append(_pick_rest(g, m, pos, n_pos - len(pos)))
    neg.append(_pick_rest(g, _dilate(m, outer) & ~_dilate(m, inner), neg, n_neg - len(neg)))
    return _prompt(pos, neg)


def _pick_rest(g: np.random.Generator, region: np.ndarray, taken: list[np.ndarray],
               k: int) -> np.ndarray:
    """``k`` more uniform pixels of ``region`` that are not among the ``taken`` points."""
    if k <= 0:
        return _no_points()
    free = region.copy()
    for pts in taken:
        xy = pts.astype(np.intp)
        free[xy[:, 1], xy[:, 0]] = False
    return _pick(g, *np.nonzero(free), k)


def object_points(mask: np.ndarray, n_pos: int, n_neg: int, *, ring: tuple[int, int] = (3, 9),
                  rng: RngLike = None) -> Prompt:
    """Points for one SAM-OCTA2 RV object (reference §7.2): ``n_pos`` positives uniform in the
    object mask, ``n_neg`` negatives uniform in its (3, 9] px ring (``ring``).

    The seed's RV training calls a sampler that does not exist (**(bug)** in the reference);
    this is the intended behaviour. Fewer points come back only where a region runs out.
    """
    m = _as_mask(mask)
    n_pos, n_neg = _count(n_pos, "n_pos"), _count(n_neg, "n_neg")
    inner, outer = _ring_bounds(ring)
    g = _rng(rng)
    pos = _pick(g, *np.nonzero(m), n_pos)
    neg = _pick(g, *np.nonzero(_dilate(m, outer) & ~_dilate(m, inner)), n_neg)
    return _prompt([pos], [neg])


def centroid_points(mask: np.ndarray, *, connectivity: int = 1) -> Prompt:
    """One positive per connected component at its centroid: SAM-OCTA2's en-face projection
    mode (reference §7.2). Deterministic, so there is no ``rng``.

    Components are 4-connected (``connectivity=1``, as the seed's ``scipy.ndimage.label``
    default; 2 for 8-connected). The centroid is kept (as a float point) when the pixel it
    falls in belongs to the component; otherwise (an annulus, a C-shaped FAZ) it is replaced
    by the nearest pixel of that component. The seed snapped every centroid to the nearest
    pixel of the whole mask, which could lie in another component.

    >>> m = np.zeros((9, 9), bool); m[2:5, 2:5] = True
    >>> centroid_points(m).points.tolist()
    [[3.0, 3.0]]
    """
    m = _as_mask(mask)
    if connectivity not in (1, 2):
        raise OptionError(f"connectivity must be 1 (4-connected) or 2 (8-connected); got "
                          f"{connectivity!r}")
    labels, n = _components(m, connectivity)
    if n == 0:
        return Prompt()
    centres = ndimage.center_of_mass(m, labels, range(1, n + 1))
    points = []
    for index, (box, (r, c)) in enumerate(zip(ndimage.find_objects(labels), centres,
                                              strict=True), start=1):
        if labels[int(np.floor(r + 0.5)), int(np.floor(c + 0.5))] == index:
            points.append((c, r))
            continue
        rows, cols = _component_pixels(labels, index, box)
        j = int(np.argmin((rows - r) ** 2 + (cols - c) ** 2))
        points.append((float(cols[j]), float(rows[j])))
    return Prompt(np.array(points, np.float32), np.ones(n, np.int32))


def faz_points(faz_mask: np.ndarray, n_border: int = 3, *, band: int = 3,
               rng: RngLike = None) -> Prompt:
    """FAZ prompt of SAM-OCTA2's en-face mode (reference §7.2): the centroid of each component
    (:func:`centroid_points`; the FAZ is one object, normally one component) plus ``n_border``
    positives drawn uniformly from its border band, ``mask - erode(mask, 7×7)``: pixels of the
    FAZ within ``band`` (3) px of its edge. All points are positive.

    The image edge does not count as FAZ edge (the erosion pads with foreground, like the
    seed's OpenCV erosion). A band smaller than ``n_border`` gives all its pixels (the seed's
    ``random.sample`` raised). An empty mask gives an empty prompt.
    """
    m = _as_mask(faz_mask, "FAZ mask")
    n_border = _count(n_border, "n_border")
    band = _count(band, "band", minimum=1)
    g = _rng(rng)
    centres = centroid_points(m)
    inner = ndimage.binary_erosion(m, np.ones((2 * band + 1,) * 2, bool), border_value=1)
    border = _pick(g, *np.nonzero(m & ~inner), n_border)
    return _prompt([centres.points, border], [])


def box_prompt(mask: np.ndarray, jitter: int = 0, rng: RngLike = None) -> Prompt:
    """The bounding box (x0, y0, x1, y1) of the mask's foreground, inclusive corner pixels.

    ``jitter`` > 0 moves each of the four coordinates by a uniform integer in
    [-jitter, jitter] px (box-prompt augmentation), clipped to the image and kept ordered.
    An empty mask has no box: :class:`~retinaseg.errors.OptionError`.

    >>> m = np.zeros((10, 10), bool); m[2:5, 3:8] = True
    >>> box_prompt(m).box
    (3.0, 2.0, 7.0, 4.0)
    """
    m = _as_mask(mask)
    jitter = _count(jitter, "jitter")
    rows, cols = np.nonzero(m)
    if not len(rows):
        raise OptionError("box_prompt needs a mask with at least one foreground pixel")
    x = np.array([cols.min(), cols.max()])
    y = np.array([rows.min(), rows.max()])
    if jitter:
        g = _rng(rng)
        x = np.sort(np.clip(x + g.integers(-jitter, jitter + 1, 2), 0, m.shape[1] - 1))
        y = np.sort(np.clip(y + g.integers(-jitter, jitter + 1, 2), 0, m.shape[0] - 1))
    return Prompt(box=(float(x[0]), float(y[0]), float(x[1]), float(y[1])))


# --------------------------------------------------------------------------------------------
# validation and parsing


def check_prompt(prompt: Prompt, shape: tuple[int, ...]) -> Prompt:
    """Check that ``prompt`` fits an image of ``shape`` (``(H, W)`` or ``(H, W, C)``).

    Points need 0 <= x < W and 0 <= y < H; a box needs 0 <= x0 <= x1 <= W and
    0 <= y0 <= y1 <= H; there must be at least one point or a box. Raises
    :class:`~retinaseg.errors.OptionError` with one sentence; returns ``prompt``.
    """
    h, w = int(shape[0]), int(shape[1])
    if len(prompt) == 0 and prompt.box is None:
        raise OptionError("a prompt needs at least one point or a box; it has neither")
    for k, (x, y) in enumerate(prompt.points.tolist(), start=1):
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < w and 0 <= y < h):
            raise OptionError(f"prompt point {k} (x={x:g}, y={y:g}) lies outside the image "
                              f"of width {w} and height {h} px (need 0 <= x < {w}, "
                              f"0 <= y < {h})")
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        if not (np.isfinite(prompt.box).all() and 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h):
            raise OptionError(f"prompt box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is not inside the "
                              f"image of width {w} and height {h} px with x0 <= x1 and "
                              "y0 <= y1")
    return prompt


def _numbers(text: str) -> list[float] | None:
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        return None
    return values if all(np.isfinite(values)) else None


def parse_points(text: str) -> Prompt:
    """``"x,y,1;x,y,0"`` → a point :class:`Prompt` (label 1 positive, 0 negative; a point
    written ``x,y`` is positive). Raises :class:`~retinaseg.errors.OptionError` naming the item.

    >>> parse_points("10,20,1; 5.5,7,0").labels.tolist()
    [1, 0]
    """
    items = [t.strip() for t in str(text).split(";")]
    items = [t for t in items if t]
    if not items:
        raise OptionError("no prompt points given; expected 'x,y,label' items separated by "
                          "';' (label 1 positive, 0 negative)")
    points, labels = [], []
    for k, item in enumerate(items, start=1):
        parts = [p.strip() for p in item.split(",")]
        values = _numbers(",".join(parts[:2])) if len(parts) in (2, 3) else None
        label = parts[2] if len(parts) == 3 else "1"
        if values is None or label not in ("0", "1"):
            raise OptionError(f"prompt point {k} '{item}' is not 'x,y,label' with numbers x, y "
                              "and label 1 (positive) or 0 (negative)")
        points.append(values)
        labels.append(int(label))
    return Prompt(np.array(points, np.float32), np.array(labels, np.int32))


def parse_box(text: str) -> Box:
    """``"x0,y0,x1,y1"`` → a box tuple (top-left corner first). Raises
    :class:`~retinaseg.errors.OptionError`.

    >>> parse_box("1,2,30,40")
    (1.0, 2.0, 30.0, 40.0)
    """
    values = _numbers(str(text))
    if values is None or len(values) != 4:
        raise OptionError(f"prompt box '{text}' is not four numbers 'x0,y0,x1,y1'")
    x0, y0, x1, y1 = values
    if x1 < x0 or y1 < y0:
        raise OptionError(f"prompt box '{text}' has x1 < x0 or y1 < y0; give the top-left "
                          "corner (x0, y0) first")
    return (x0, y0, x1, y1)


__all__ = ["Box", "Prompt", "box_prompt", "centroid_points", "chebyshev_ring", "check_prompt",
           "faz_points", "global_points", "local_points", "object_points", "parse_box",
           "parse_points", "prompt_generation"]

"""Plain preprocessing functions on NumPy images (reference §8, retina-unet preprocessing).

Inputs are float32 images ``[H, W]`` (grey) or ``[H, W, C]`` (channels last, as read by
:mod:`retinaseg.io`), normally in [0, 1]; outputs are float32 with the same layout unless stated.
The retina-unet chain of ``../shared/docs/reference.md`` §8 is
``to_grey → standardise → rescale_minmax → clahe → gamma``; :mod:`.pipeline` composes it.

Differences from retina-unet, on purpose: every step works on one image (retina-unet standardises
with the mean/std of the whole training stack), and CLAHE / gamma run on floats instead of uint8
lookup tables, so results differ from the original by at most about one 8-bit grey level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from skimage import exposure, transform

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 weights for R, G, B (reference §8 step 1)."""


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an [H,W] or [H,W,C] image, got shape {img.shape}")
    return img


def _is_grey(img: np.ndarray, fn: str) -> bool:
    """True for ``[H, W]`` / ``[H, W, 1]``; False for RGB; ValueError for other channel counts."""
    if img.ndim == 2 or img.shape[-1] == 1:
        return True
    if img.shape[-1] != 3:
        raise ValueError(f"{fn} needs 1 or 3 channels, got {img.shape[-1]}")
    return False


def _squeeze_grey(img: np.ndarray) -> np.ndarray:
    """``[H, W]`` float32 view of a grey ``[H, W]`` or ``[H, W, 1]`` image."""
    return (img if img.ndim == 2 else img[..., 0]).astype(np.float32, copy=False)


def to_grey(img: np.ndarray) -> np.ndarray:
    """Grey ``[H, W]`` from RGB ``[H, W, 3]`` as 0.299 R + 0.587 G + 0.114 B.

    Grey ``[H, W]`` and single-channel ``[H, W, 1]`` inputs pass through (as ``[H, W]``).

    >>> to_grey(np.ones((2, 2, 3), np.float32))[0, 0]  # doctest: +ELLIPSIS
    1.0...
    """
    img = _check_image(img)
    if _is_grey(img, "to_grey"):
        return _squeeze_grey(img)
    return (img.astype(np.float32, copy=False) @ LUMA_WEIGHTS).astype(np.float32)


def green_channel(img: np.ndarray) -> np.ndarray:
    """The green channel ``[H, W]`` of an RGB ``[H, W, 3]`` image; grey passes through.

    The green channel has the best vessel contrast in colour fundus photographs.
    """
    img = _check_image(img)
    if _is_grey(img, "green_channel"):
        return _squeeze_grey(img)
    return img[..., 1].astype(np.float32)


def standardise(img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit standard deviation (reference §8 step 2, per image).

    ``mask`` (bool ``[H, W]``) restricts the pixels used for the statistics, e.g. the FOV; every
    pixel is still transformed. Statistics pool all channels. A constant image gives zeros.

    >>> out = standardise(np.array([[0.0, 1.0]], np.float32)); out.tolist()
    [[-1.0, 1.0]]
    """
    img = _check_image(img).astype(np.float32, copy=False)
    values = img
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != img.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image {img.shape[:2]}")
        if not mask.any():
            raise ValueError("standardise mask selects no pixels")
        values = img[mask]
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    out = img - np.float32(mean)
    if std > 0:
        out = out / np.float32(std)
    return out.astype(np.float32, copy=False)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    return ((x - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def rescale_minmax(img: np.ndarray, per_channel: bool = False) -> np.ndarray:
    """Linearly map the image minimum to 0 and maximum to 1 (reference §8 step 3, without ×255).

    Pooled over all channels unless ``per_channel``. A constant image gives zeros.

    >>> rescale_minmax(np.array([[2.0, 4.0, 3.0]], np.float32)).tolist()
    [[0.0, 1.0, 0.5]]
    """
    img = _check_image(img).astype(np.float32, copy=False)
    if per_channel and img.ndim == 3:
        return np.stack([_minmax(img[..., c]) for c in range(img.shape[-1])], axis=-1)
    return _minmax(img)


def per_channel(img: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` applied to a grey ``[H, W]`` image or to each channel of ``[H, W, C]``, float32.

    When ``fn`` hands back every channel of a float32 image unchanged (the same memory), the
    image itself comes back, so a step that decides to do nothing costs no copy.
    """
    img = np.asarray(img)
    if img.ndim == 2:
        out = fn(img)
        return out if out is img and img.dtype == np.float32 else out.astype(np.float32)
    chans = [fn(img[..., c]) for c in range(img.shape[-1])]
    if img.dtype == np.float32 and all(np.shares_memory(c, img) for c in chans):
        return img
    return np.stack(chans, axis=-1).astype(np.float32, copy=False)


def clahe(
    img: np.ndarray, clip_limit: float = 0.01, kernel_size: int | Sequence[int] | None = None
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (reference §8 step 4).

    Wraps :func:`skimage.exposure.equalize_adapthist` (256 bins), channel by channel for
    ``[H, W, C]``. Input is clipped to [0, 1]; skimage min-max stretches each channel before and
    after equalising, so the output spans [0, 1].

    ``clip_limit`` is skimage's normalised limit: a bin is clipped at ``clip_limit × tile
    pixels`` counts. OpenCV's ``clipLimit`` is relative to the mean bin count (``tile pixels /
    256``), so OpenCV ``c`` ≈ skimage ``c / 256``: retina-unet's clip 2.0 ≈ 0.0078, and the
    default 0.01 ≈ OpenCV 2.56. ``kernel_size=None`` means tiles of 1/8 of the height and width,
    i.e. OpenCV's 8×8 tile grid.
    """
    img = np.clip(_check_image(img).astype(np.float32, copy=False), 0.0, 1.0)
    if not 0 < clip_limit <= 1:
        raise ValueError(f"clip_limit must be in (0, 1], got {clip_limit}")

    def _one(channel: np.ndarray) -> np.ndarray:
        if channel.max() <= channel.min():
            return np.zeros(channel.shape, np.float32)
        return exposure.equalize_adapthist(channel, kernel_size=kernel_size, clip_limit=clip_limit)

    return per_channel(img, _one)


def gamma(img: np.ndarray, gamma: float = 1.2) -> np.ndarray:
    """Gamma adjustment ``out = in ** (1 / gamma)`` as in retina-unet (reference §8 step 5).

    ``gamma > 1`` brightens dark values. Negative inputs are clipped to 0 first. Element-wise,
    so any array shape is accepted.

    >>> float(gamma(np.array([0.25], np.float32), 2.0)[0])
    0.5
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    img = np.clip(np.asarray(img, dtype=np.float32), 0.0, None)
    return np.power(img, np.float32(1.0 / gamma)).astype(np.float32)


def negate(img: np.ndarray) -> np.ndarray:
    """``-img``: bright vessels become dark, float32, same shape.

    OCTA shows flow as bright vessels while the fundus green channel shows them dark; negating
    standardised OCTA lets a fundus model start fine-tuning on OCTA with the contrast it knows.

    >>> negate(np.array([[1.0, -2.0]], np.float32)).tolist()
    [[-1.0, 2.0]]
    """
    return np.negative(_check_image(img).astype(np.float32, copy=False))


def hist_equalise(img: np.ndarray) -> np.ndarray:
    """Global histogram equalisation (:func:`skimage.exposure.equalize_hist`), per channel.

    Output is in (0, 1]; a constant channel gives zeros.
    """
    img = _check_image(img).astype(np.float32, copy=False)

    def _one(channel: np.ndarray) -> np.ndarray:
        if channel.max() <= channel.min():
            return np.zeros(channel.shape, np.float32)
        return exposure.equalize_hist(channel)

    return per_channel(img, _one)


def resize(img: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resize ``[H, W]`` / ``[H, W, C]`` to ``shape = (H', W')``; channels are kept.

    ``order`` is the spline order: 1 = bilinear (with anti-aliasing when shrinking) for images,
    0 = nearest neighbour for masks (bool input stays bool, no anti-aliasing). Float output is
    float32.
    """
    img = _check_image(img)
    if len(shape) != 2 or min(int(s) for s in shape) < 1:
        raise ValueError(f"resize shape must be two positive ints (H, W), got {shape}")
    out_shape = (int(shape[0]), int(shape[1]), *img.shape[2:])
    out = transform.resize(
        img, out_shape, order=order, preserve_range=True, anti_aliasing=order > 0,
        mode="edge",
    )
    return out if out.dtype == bool else out.astype(np.float32)


def pad_to_multiple(
    arr: np.ndarray, multiple: int | Sequence[int], mode: str = "reflect"
) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the last two axes (``[..., H, W]``) at the bottom/right up to a multiple.

    Returns ``(padded, (pad_h, pad_w))``; undo with :func:`crop_to`. ``mode`` is any
    :func:`numpy.pad` mode ("reflect", "constant" for zeros, "edge", ...).

    >>> padded, pads = pad_to_multiple(np.zeros((1, 5, 7)), 4); padded.shape, pads
    ((1, 8, 8), (3, 1))
    """
    arr = np.asarray(arr)
    if arr.ndim < 2:
        raise ValueError(f"pad_to_multiple needs at least 2 axes, got shape {arr.shape}")
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else tuple(multiple)
    if mh < 1 or mw < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = arr.shape[-2:]
    pads = (-h % mh, -w % mw)
    if pads == (0, 0):
        return arr, pads
    width = [(0, 0)] * (arr.ndim - 2) + [(0, pads[0]), (0, pads[1])]
    return np.pad(arr, width, mode=mode), pads


def crop_to(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Crop the last two axes to ``shape = (H, W)``, keeping the top-left corner."""
    arr = np.asarray(arr)
    h, w = int(shape[0]), int(shape[1])
    if h > arr.shape[-2] or w > arr.shape[-1]:
        raise ValueError(f"cannot crop shape {arr.shape} to larger ({h}, {w})")
    return arr[..., :h, :w]


def to_chw(img: np.ndarray) -> np.ndarray:
    """Channel-first float32: ``[H, W]`` → ``[1, H, W]``, ``[H, W, C]`` → ``[C, H, W]``.

    >>> to_chw(np.zeros((4, 5, 3))).shape
    (3, 4, 5)
    """
    img = _check_image(img)
    chw = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
    return np.ascontiguousarray(chw, dtype=np.float32)

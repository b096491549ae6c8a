"""Adaptive restoration: undo heavy sensor noise or blur before a model sees an image.

Reference: no seed method has this; it answers the default-models issue's request for robustness
to other devices (docs/explanation/robustness.md). The bundled models lose most under
two acquisition changes: ``fundus-vessels`` under sensor noise (DRIVE test Dice 0.828 → 0.482
at noise std 0.04) and ``octa-vessels`` under blur (val Dice −0.04 to −0.07 at a 1-px Gaussian).
``fundus-vessels`` carries :func:`denoise`. :func:`sharpen` is not bundled: it helps blurred
OCTA maps, but maps upsampled by interpolation are just as smooth at the pixel scale and lose
to it (``tools/choose_restore.py``); use it for data known to be blurred.

Both steps measure the image first and change it only when it lies far outside the training
data, so images like the training images pass through untouched (the same array object) and
their predictions do not move at all:

- :func:`noise_std` is Immerkær's fast noise estimate (J. Immerkær, "Fast noise variance
  estimation", Computer Vision and Image Understanding 64(2):300-302, 1996): the mean absolute
  response to a 3×3 mask that cancels smooth structure (its weights sum to zero, as do its first
  and second moments), scaled to the standard deviation of white Gaussian noise. On clean DRIVE
  photographs (green channel, [0, 1]) it measures 0.0024-0.0044; on OCTA-500 and ROSSA en-face
  maps 0.042-0.100, because their speckle lives at the pixel scale. A 1-px Gaussian blur takes
  OCTA maps down to 0.0024-0.0054.
- :func:`denoise` (fundus): when the estimate exceeds ``trigger``, total-variation denoising
  (:func:`tv_chambolle`, Chambolle's projection algorithm) with a weight of
  ``strength × sqrt(std² − trigger²)``, which is 0 at the trigger, so the output changes
  continuously with the noise level.
- :func:`tv_chambolle` is our own Torch implementation of A. Chambolle, "An algorithm for total
  variation minimization and applications", J. Math. Imaging Vis. 20:89-97, 2004, with the same
  step, stopping rule and defaults as ``skimage.restoration.denoise_tv_chambolle`` (its output
  matches that function's to within 1e-5), but faster on a 584×565 image
  (``benchmarks/speed/denoise.py``, idle machine: 2.3-3.0× with 2 threads).
- :func:`sharpen` (OCTA): when the estimate falls below ``trigger``, an unsharp mask
  ``x + a (x − G_σ * x)`` with ``a = strength × ln(trigger / std)`` (0 at the trigger, larger
  for blurrier images, at most ``max_amount``), clipped to [0, 1] (or to the input's range where
  that is wider).

The parameters of both were chosen on validation data only (out-of-fold DRIVE training images
for fundus, the OCTA val splits for OCTA) by ``tools/choose_restore.py``; the figures
are in ``benchmarks/RESULTS.md``. Inputs are intensities in [0, 1] as :mod:`retinaseg.io`
reads them, ``[H, W]`` or ``[H, W, C]`` (each channel measured and restored on its own).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

import numpy as np
import torch
from scipy import ndimage

from retinaseg.preprocessing.functions import per_channel

log = logging.getLogger(__name__)

_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_SCALE = float(np.sqrt(np.pi / 2) / 6)  # mean |mask * noise| → noise std (Immerkær 1996)

DENOISE_TRIGGER = 0.01
"""Noise std above which :func:`denoise` acts: over twice the noisiest clean DRIVE image."""
SHARPEN_TRIGGER = 0.015
"""Noise std below which :func:`sharpen` acts: a third of the smoothest clean OCTA map."""


_RECORD: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("restorations",
                                                                          default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[str]]:
    """Collect a one-line description of every restoration applied inside the block.

    >>> with recording() as done:
    ...     _ = denoise(np.zeros((8, 8), np.float32))
    >>> done
    []
    """
    done: list[str] = []
    token = _RECORD.set(done)
    try:
        yield done
    finally:
        _RECORD.reset(token)


def _note(text: str) -> None:
    log.info(text)
    done = _RECORD.get()
    if done is not None:
        done.append(text)


def noise_std(img: np.ndarray) -> float:
    """Immerkær's estimate of the white-noise standard deviation of a grey image ``[H, W]``
    (intensity units; images smaller than 3×3 give 0.0)."""
    g = np.asarray(img, dtype=np.float32)
    if g.ndim != 2:
        raise ValueError(f"noise_std needs a grey [H,W] image, got shape {g.shape}")
    if min(g.shape) < 3:
        return 0.0
    response = ndimage.correlate(g, _MASK, mode="reflect")[1:-1, 1:-1]
    return _SCALE * float(np.abs(response).mean())


def tv_chambolle(img: np.ndarray, weight: float, eps: float = 2e-4,
                 max_iter: int = 200) -> np.ndarray:
    """Total-variation denoising of a grey image ``[H, W]`` (float, intensity units) by
    Chambolle's projection algorithm: the ``u`` minimising ``||u − f||² / (2·weight) + TV(u)``.

    Dual field ``p`` ``[2, H, W]``, step ``τ = 1/4``; each iteration forms ``u = f − div p``
    (scaled so that ``weight`` is in intensity units), its forward differences ``∇u`` (0 across
    the last row/column) and updates ``p ← (p − τ∇u) / (1 + (τ/weight)·|∇u|)``. It stops when
    the energy ``(||div p||² + weight·Σ|∇u|) / (H·W)`` changes by less than ``eps`` times its
    first value (at once when that is 0: a flat image), or after ``max_iter`` iterations.
    Buffers are allocated once and updated in place. A weight that is not > 0 returns a float32
    copy. Unlike scikit-image, integer images are refused rather than rescaled to [0, 1].

    Each iteration is about 14 small tensor operations on Torch's intra-op threads: on an
    idle CPU 2 threads halve the time of 1, but when other processes keep the cores busy the
    threads wait for each other and the time can grow several-fold, as it does for the network.
    """
    arr = np.asarray(img)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"tv_chambolle needs float intensities, got {arr.dtype}")
    f = torch.from_numpy(np.array(arr, dtype=np.float32, order="C", copy=True))
    if f.ndim != 2:
        raise ValueError(f"tv_chambolle needs a grey [H,W] image, got shape {tuple(f.shape)}")
    if not weight > 0 or f.numel() == 0:
        return f.numpy()
    p, grad = torch.zeros((2, *f.shape), dtype=f.dtype), torch.zeros((2, *f.shape), dtype=f.dtype)
    u, div, norm = f.clone(), torch.empty_like(f), torch.empty_like(f)
    tau, first, previous = 0.25, 0.0, 0.0
    with torch.no_grad():
        for i in range(max_iter):
            div_sq = _update_u(u, f, p, div) if i else 0.0
            torch.sub(u[1:, :], u[:-1, :], out=grad[0, :-1, :])
            torch.sub(u[:, 1:], u[:, :-1], out=grad[1, :, :-1])
            torch.hypot(grad[0], grad[1], out=norm)
            energy = (weight * float(norm.sum()) + div_sq) / f.numel()
            if i == 0:
                first = previous = energy
                if first == 0.0:
                    break
            elif abs(previous - energy) < eps * first:
                break
            previous = energy
            norm.mul_(tau / weight).add_(1.0)
            p.sub_(grad, alpha=tau).div_(norm)
    return u.numpy()


def _update_u(u: torch.Tensor, f: torch.Tensor, p: torch.Tensor, div: torch.Tensor) -> float:
    """``div ← −div p`` (backward differences, the adjoint of the forward gradient) and
    ``u ← f + div``, in place; returns ``||div||²``."""
    torch.add(p[0], p[1], out=div).neg_()
    div[1:, :] += p[0, :-1, :]
    div[:, 1:] += p[1, :, :-1]
    torch.add(f, div, out=u)
    flat = div.reshape(-1)
    return float(torch.dot(flat, flat))


def denoise(img: np.ndarray, trigger: float = DENOISE_TRIGGER, strength: float = 0.7,
            method: str = "tv") -> np.ndarray:
    """Denoise a noisy image; images at or below ``trigger`` come back unchanged (the same
    array, for float32 input). ``method``: ``"tv"`` (total variation, weight
    ``strength × excess``) or ``"nlm"`` (non-local means, 5×5 patches within 13×13,
    ``h = strength × excess``; about 8× slower), where ``excess = sqrt(std² − trigger²)``.
    ``[H, W]`` or ``[H, W, C]`` float32 in [0, 1] → the same."""
    if method not in {"tv", "nlm"}:
        raise ValueError(f"denoise method must be 'tv' or 'nlm', not {method!r}")

    def one(g: np.ndarray) -> np.ndarray:
        std = noise_std(g)
        if std <= trigger:
            return g
        excess = float(np.sqrt(std**2 - trigger**2))
        _note(f"denoised ({method}, strength {strength * excess:.4f}): noise std {std:.4f} "
              f"above {trigger}")
        if method == "nlm":
            from skimage.restoration import denoise_nl_means  # imported only when used

            out = denoise_nl_means(g, h=strength * excess, sigma=excess, fast_mode=True,
                                   patch_size=5, patch_distance=6)
        else:
            out = tv_chambolle(g, weight=strength * excess)
        return np.asarray(out, dtype=np.float32)

    return per_channel(np.asarray(img, dtype=np.float32), one)


def sharpen(img: np.ndarray, trigger: float = SHARPEN_TRIGGER, strength: float = 1.0,
            sigma: float = 1.0, max_amount: float = 8.0) -> np.ndarray:
    """Unsharp mask for a blurred image; images at or above ``trigger`` come back unchanged
    (the same array, for float32 input). Flat or smaller than 3×3 images have nothing to
    sharpen and come back unchanged too. ``sigma`` in pixels. ``[H, W]`` or ``[H, W, C]``
    float32 → the same."""

    def one(g: np.ndarray) -> np.ndarray:
        if min(g.shape) < 3 or float(g.max()) == float(g.min()):
            return g
        std = noise_std(g)
        if std >= trigger:
            return g
        amount = min(max_amount, strength * float(np.log(trigger / max(std, 1e-6))))
        _note(f"sharpened (unsharp mask, amount {amount:.2f}): noise std {std:.4f} below "
              f"{trigger}, a blurred image")
        out = g + amount * (g - ndimage.gaussian_filter(g, sigma))
        return np.clip(out, min(0.0, float(g.min())), max(1.0, float(g.max()))).astype(np.float32)

    return per_channel(np.asarray(img, dtype=np.float32), one)

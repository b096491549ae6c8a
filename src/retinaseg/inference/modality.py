"""Guessing the modality of an image so that ``predict`` can pick a default model.

Colour fundus photographs are RGB with clearly different channels (orange-red retina);
OCTA en-face images are grey, or RGB with (near-)identical channels.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MODELS = {"fundus": "fundus-vessels", "octa": "octa-vessels"}
"""Bundled model used for each modality when ``predict`` is given no ``--model``."""


def detect_modality(image: np.ndarray, tolerance: float = 0.02) -> str:
    """``"fundus"`` for colour images, ``"octa"`` for grey ones.

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` float in [0, 1].
        tolerance: mean absolute difference between channels (in [0, 1] units) below which an
            RGB image counts as grey.
    """
    if image.ndim == 2 or image.shape[-1] == 1:
        return "octa"
    rgb = image[..., :3].astype(np.float32)
    spread = np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean()
    return "fundus" if spread / 2 > tolerance else "octa"

"""Compose preprocessing steps from a config list (reference §8 for the ``retina_unet`` preset).

A step is a name (``"grey"``) or a mapping ``{"name": "clahe", "clip_limit": 0.01}``;
:func:`build_preprocess` checks the whole list up front (unknown names or bad parameters raise
:class:`~retinaseg.errors.ConfigError` naming the step) and returns a picklable, deterministic
callable ``[H, W] | [H, W, C] → [C, H, W]`` float32.

Steps: ``grey``, ``green``, ``standardise``, ``minmax`` (``per_channel``), ``clahe``
(``clip_limit``, ``kernel_size``), ``gamma`` (``gamma``), ``hist_equalise``, ``negate``, ``resize``
(``shape`` required, ``order``), and the adaptive restorations ``denoise`` and ``sharpen``
(``trigger``, ``strength``; ``sharpen`` also ``sigma``, ``max_amount``), which change only images
far noisier or blurrier than the training data. See :mod:`.functions` and :mod:`.restore` for
what each does.
"""

from __future__ import annotations

import inspect
import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from retinaseg.errors import ConfigError
from retinaseg.preprocessing import functions as F
from retinaseg.preprocessing import restore as R

StepSpec = str | Mapping[str, Any]
Steps = str | Sequence[StepSpec] | None


def _standardise(img: np.ndarray) -> np.ndarray:
    """Per-image standardisation without a mask (the pipeline sees only the image)."""
    return F.standardise(img)


STEPS: dict[str, Callable[..., np.ndarray]] = {
    "grey": F.to_grey,
    "green": F.green_channel,
    "standardise": _standardise,
    "minmax": F.rescale_minmax,
    "clahe": F.clahe,
    "gamma": F.gamma,
    "hist_equalise": F.hist_equalise,
    "negate": F.negate,
    "resize": F.resize,
    "denoise": R.denoise,
    "sharpen": R.sharpen,
}
"""Step name → function ``f(img, **params) -> img``."""

RETINA_UNET_CLAHE_CLIP = 2.0 / 256
"""OpenCV clipLimit 2.0 (retina-unet, reference §8) in skimage's normalised units (≈ 0.0078)."""

PRESETS: dict[str, list[dict[str, Any]]] = {
    # reference §8: grey → standardise → min-max → CLAHE (clip 2.0, 8×8 tiles) → gamma 1.2
    "retina_unet": [
        {"name": "grey"},
        {"name": "standardise"},
        {"name": "minmax"},
        {"name": "clahe", "clip_limit": RETINA_UNET_CLAHE_CLIP},
        {"name": "gamma", "gamma": 1.2},
    ],
    # colour fundus: the green channel carries the vessel contrast
    "fundus_green": [{"name": "green"}, {"name": "minmax"}, {"name": "clahe", "clip_limit": 0.01}],
    # OCTA en-face maps: keep every channel (e.g. FULL / ILM_OPL / OPL_BM), stretch each to [0, 1]
    "octa": [{"name": "minmax", "per_channel": True}],
    "none": [],
}
"""Named step lists; ``build_preprocess("retina_unet")`` is the same as passing the list."""


# --------------------------------------------------------------------------------------------
# parameter checks (return an error text, or None when the value is fine)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_clip(v: Any) -> str | None:
    return None if _is_number(v) and 0 < v <= 1 else "must be a number in (0, 1]"


def _check_positive(v: Any) -> str | None:
    return None if _is_number(v) and v > 0 else "must be a number > 0"


def _check_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _positive_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1


def _check_kernel(v: Any) -> str | None:
    ok = v is None or _positive_int(v) or (
        isinstance(v, Sequence) and len(v) == 2 and all(_positive_int(k) for k in v)
    )
    return None if ok else "must be null, a positive int or two positive ints"


def _check_shape(v: Any) -> str | None:
    ok = isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2 and all(
        _positive_int(k) for k in v
    )
    return None if ok else "must be two positive ints [H, W]"


def _check_order(v: Any) -> str | None:
    ok = isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 5
    return None if ok else "must be an int from 0 to 5"


_PARAM_CHECKS: dict[tuple[str, str], Callable[[Any], str | None]] = {
    ("clahe", "clip_limit"): _check_clip,
    ("clahe", "kernel_size"): _check_kernel,
    ("gamma", "gamma"): _check_positive,
    ("minmax", "per_channel"): _check_bool,
    ("resize", "shape"): _check_shape,
    ("resize", "order"): _check_order,
    ("denoise", "trigger"): _check_positive,
    ("denoise", "strength"): _check_positive,
    ("denoise", "method"): lambda v: None if v in {"tv", "nlm"} else "must be 'tv' or 'nlm'",
    ("sharpen", "trigger"): _check_positive,
    ("sharpen", "strength"): _check_positive,
    ("sharpen", "sigma"): _check_positive,
    ("sharpen", "max_amount"): _check_positive,
}

ADAPTIVE_STEPS = frozenset({"denoise", "sharpen"})
"""Steps that leave images like the training images unchanged; a bundled model may gain them
after training (see :func:`without_adaptive`)."""


# --------------------------------------------------------------------------------------------
# normalising a step list


def _split_spec(spec: Any, index: int) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    raise ConfigError(
        f"preprocessing step {index + 1} must be a step name or a mapping with a 'name' key, "
        f"got {spec!r}."
    )


def _bind(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the step's signature and value rules; return them with defaults."""
    fn = STEPS[name]
    try:
        bound = inspect.signature(fn).bind(None, **params)
    except TypeError as exc:
        raise ConfigError(f"preprocessing step '{name}': {exc}.") from exc
    bound.apply_defaults()
    full = dict(list(bound.arguments.items())[1:])
    for key, value in full.items():
        problem = _PARAM_CHECKS.get((name, key), lambda _v: None)(value)
        if problem:
            raise ConfigError(f"preprocessing step '{name}': '{key}' {problem}, got {value!r}.")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in full.items()}


def normalise_steps(steps: Steps) -> list[tuple[str, dict[str, Any]]]:
    """Expand a preset name and validate every step; returns ``[(name, params_with_defaults)]``."""
    if steps is None:
        steps = "none"
    if isinstance(steps, str):
        if steps not in PRESETS:
            raise ConfigError(
                f"unknown preprocessing preset '{steps}'; choose one of {sorted(PRESETS)}."
            )
        steps = PRESETS[steps]
    if isinstance(steps, Mapping) or not isinstance(steps, Sequence):
        raise ConfigError(f"preprocessing must be a preset name or a list of steps, got {steps!r}.")
    out = []
    for i, spec in enumerate(steps):
        name, params = _split_spec(spec, i)
        if name not in STEPS:
            raise ConfigError(
                f"unknown preprocessing step '{name}'; choose one of {sorted(STEPS)}."
            )
        out.append((name, _bind(name, params)))
    return out


# --------------------------------------------------------------------------------------------
# the callable


class Preprocess:
    """Apply validated steps in order, then return channel-first float32 ``[C, H, W]``.

    Picklable (it stores only step names and plain parameters), so it can be sent to DataLoader
    worker processes.
    """

    def __init__(self, steps: list[tuple[str, dict[str, Any]]]) -> None:
        self.steps = [(name, dict(params)) for name, params in steps]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img = np.asarray(img, dtype=np.float32)
        if img.ndim not in (2, 3):
            raise ValueError(f"expected an [H,W] or [H,W,C] image, got shape {img.shape}")
        for name, params in self.steps:
            img = STEPS[name](img, **params)
        return F.to_chw(img)

    def __repr__(self) -> str:
        return f"Preprocess({[name for name, _ in self.steps]})"


def build_preprocess(steps: Steps) -> Preprocess:
    """Build ``f(img) -> [C, H, W]`` float32 from a preset name or a list of steps.

    ``img`` is ``[H, W]`` or ``[H, W, C]`` float32 (as read by :mod:`retinaseg.io`); C = 1 for
    grey. ``None`` or ``"none"`` only converts to channel-first. Raises
    :class:`~retinaseg.errors.ConfigError` for unknown presets/steps or invalid parameters.

    >>> f = build_preprocess(["grey", {"name": "gamma", "gamma": 2.0}])
    >>> f(np.full((4, 4, 3), 0.25, np.float32)).shape
    (1, 4, 4)
    """
    return Preprocess(normalise_steps(steps))


def without_adaptive(steps: Steps) -> list[tuple[str, dict[str, Any]]]:
    """The validated steps with the adaptive restorations (:data:`ADAPTIVE_STEPS`) removed.

    For a model whose restorations were added after training, this is what training used (they
    leave clean training images unchanged); a model trained with them, on changed copies, did
    see them act."""
    return [(name, p) for name, p in normalise_steps(steps) if name not in ADAPTIVE_STEPS]


def preprocess_signature(steps: Steps) -> str:
    """Canonical JSON text of the steps with defaults filled in, for recording and comparing.

    Equivalent configurations give the same text: ``"retina_unet"`` and its expanded list, or
    ``"clahe"`` and ``{"name": "clahe", "clip_limit": 0.01}``.
    """
    canon = [{"name": name, **params} for name, params in normalise_steps(steps)]
    return json.dumps(canon, sort_keys=True, separators=(",", ":"))

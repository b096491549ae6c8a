"""Prompt one image with SAM 2 and write the answer (``retinaseg prompt``, reference §7).

:func:`prompt_image` checks everything first (the prompt's syntax, the image, the points and
box against the image's size, the model folder, the previous answer for ``refine``), so that a
bad input is one sentence and nothing is written; then it loads the model, prompts once and
writes, per image stem, into the output folder:

- ``<stem>_prob.png``: the probability map at the image's size (8-bit);
- ``<stem>_mask.png``: the map thresholded at 0.5;
- ``<stem>_prompt_overlay.png``: RGB, the mask in blue over the image, positive points green,
  negative points red, the box yellow;
- ``<stem>_logits.npy``: the 256×256 low-resolution logits, which ``refine`` passes back as
  ``mask_input`` to refine the mask with more points;
- ``<stem>_prompt.json``: the points, labels and box used, the image size and the score.

Weights come from the user's disk only (a folder of ``retinaseg sam2 convert`` or
``retinaseg sam2 init``); nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from retinaseg.errors import OptionError
from retinaseg.io import read_image, write_png
from retinaseg.preprocessing.prompts import Prompt, parse_box, parse_points
from retinaseg.utils.atomic import atomic_path, make_out_dir, write_text_atomic

THRESHOLD = 0.5
"""Probability above which a pixel is in the mask."""

MASK_COLOUR = (30, 144, 255)
POSITIVE_COLOUR = (0, 255, 0)
NEGATIVE_COLOUR = (255, 0, 0)
BOX_COLOUR = (255, 255, 0)
LOW_RES = 256  # the decoder's mask size (models.sam2.preprocess.LOW_RES; repeated: light import)


def prompt_points(points: object) -> tuple[np.ndarray, np.ndarray]:
    """``points`` as (``[N, 2]`` float32 (x, y), ``[N]`` labels): a ``"x,y,1;x,y,0"`` string,
    a :class:`Prompt`, or an array of (x, y) (all positive) or (x, y, label) rows."""
    if points is None:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    if isinstance(points, str):
        points = parse_points(points)
    if isinstance(points, Prompt):
        return np.asarray(points.points, np.float32), np.asarray(points.labels, np.int64)
    try:
        arr = np.asarray(points, np.float64)
    except (TypeError, ValueError):
        raise OptionError("points must be 'x,y,label' text or rows of (x, y) or "
                          "(x, y, label)") from None
    if arr.size == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    if arr.ndim != 2 or arr.shape[1] not in (2, 3) or not np.isfinite(arr).all():
        raise OptionError(f"points must be rows of finite (x, y) or (x, y, label), got an "
                          f"array of shape {list(arr.shape)}")
    labels = np.ones(len(arr)) if arr.shape[1] == 2 else arr[:, 2]
    if not np.isin(labels, (0, 1)).all():
        raise OptionError("point labels must be 1 (object) or 0 (background)")
    return arr[:, :2].astype(np.float32), labels.astype(np.int64)


def prompt_box(box: object) -> np.ndarray | None:
    """``box`` as float32 ``[4]`` (x0, y0, x1, y1) from ``"x0,y0,x1,y1"`` text or numbers."""
    if box is None:
        return None
    if isinstance(box, str):
        box = parse_box(box)
    try:
        arr = np.asarray(box, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise OptionError("a box is four numbers x0,y0,x1,y1") from None
    if arr.size != 4 or not np.isfinite(arr).all():
        raise OptionError(f"a box is four finite numbers x0,y0,x1,y1, got {arr.size}")
    return arr.astype(np.float32)


def _previous_logits(out: Path, stem: str, height: int, width: int) -> np.ndarray:
    """The low-res logits of the previous answer in ``out`` (for ``refine``), checked."""
    path = out / f"{stem}_logits.npy"
    if not path.is_file():
        raise OptionError(f"refine needs the previous answer '{path}'; prompt the image into "
                          f"'{out}' once without refine first")
    try:
        logits = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise OptionError(f"'{path}' is not a readable .npy file of logits ({err})") from None
    if logits.shape != (LOW_RES, LOW_RES) or not np.issubdtype(logits.dtype, np.floating):
        raise OptionError(f"'{path}' holds an array of shape {list(logits.shape)}, not the "
                          f"{LOW_RES}×{LOW_RES} logits of an earlier answer")
    record = out / f"{stem}_prompt.json"
    if record.is_file():
        try:
            size = json.loads(record.read_text(encoding="utf-8")).get("size")
        except (OSError, ValueError, AttributeError):
            size = None
        if size is not None and list(size) != [width, height]:
            raise OptionError(f"the previous answer in '{out}' is of a {size[0]}×{size[1]} "
                              f"image, not of this {width}×{height} one")
    return logits.astype(np.float32)


def _disc_radius(height: int, width: int) -> int:
    return max(2, round(min(height, width) / 80))


def draw_prompt(image: np.ndarray, mask: np.ndarray, points: np.ndarray, labels: np.ndarray,
                box: np.ndarray | None) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]``: ``mask`` blended over ``image``, the points as filled discs
    with a dark rim (green positive, red negative) and the box as a yellow outline."""
    from skimage.draw import disk

    from retinaseg.evaluation.figures import overlay

    rgb = overlay(image, mask, color=MASK_COLOUR, alpha=0.45)
    h, w = mask.shape
    if box is not None:
        x0, x1 = (min(max(round(float(v)), 0), w - 1) for v in (box[0], box[2]))
        y0, y1 = (min(max(round(float(v)), 0), h - 1) for v in (box[1], box[3]))
        for row in (y0, y1):  # the outline through the box's corner pixels
            rgb[row, x0:x1 + 1] = BOX_COLOUR
        for col in (x0, x1):
            rgb[y0:y1 + 1, col] = BOX_COLOUR
    r = _disc_radius(h, w)
    for (x, y), label in zip(points.tolist(), labels.tolist(), strict=True):
        centre = (float(y), float(x))
        rgb[disk(centre, r + 1, shape=(h, w))] = (0, 0, 0)
        rgb[disk(centre, r, shape=(h, w))] = POSITIVE_COLOUR if label == 1 else NEGATIVE_COLOUR
    return rgb


def prompt_image(image: str | Path, model: Any, points: object = None, box: object = None,
                 out: str | Path | None = None, refine: bool = False, *,
                 device: str = "auto") -> dict[str, Any]:
    """Segment the object that ``points`` and/or ``box`` mark in ``image`` with SAM 2.

    ``model``: a SAM 2 model folder (``retinaseg sam2 convert`` / ``sam2 init``), a LoRA file
    or run folder of a SAM 2 training (:func:`~retinaseg.models.sam2.lora.load_model`), or a
    :class:`~retinaseg.models.sam2.predictor.Sam2Prompter` to reuse; ``points``:
    ``"x,y,1;x,y,0"`` (1 on the object, 0 background; x = column, y = row in pixels), a
    :class:`~retinaseg.preprocessing.prompts.Prompt` or rows of (x, y[, label]); ``box``:
    ``"x0,y0,x1,y1"`` or four numbers. ``out``: the folder for the files (see the module);
    None writes nothing. ``refine``: pass the low-res logits of the previous answer in ``out``
    as ``mask_input``, so that a second call with more points refines the mask.

    Returns a dict: ``prob`` ``[H, W]`` float32, ``mask`` bool ``[H, W]``, ``low_res_logits``,
    ``score`` (the predicted IoU), ``points``, ``labels``, ``box``, ``refined`` and ``files``
    (paths written). Raises a RetinasegError (one sentence, nothing written) for an unreadable
    image, points or a box outside it, no point and no box, a bad model folder, or ``refine``
    without a previous answer.
    """
    pts, labels = prompt_points(points)
    bx = prompt_box(box)
    if refine and out is None:
        raise OptionError("refine reads the previous answer from the output folder; give out")
    from retinaseg.models.sam2.deps import require_sam_extras

    require_sam_extras()
    from retinaseg.models.sam2.predictor import Sam2Prompter, check_prompt
    from retinaseg.models.sam2.weights import read_config, weight_files
    from retinaseg.utils.runtime import select_device

    path = Path(image)
    img = read_image(path)
    height, width = img.shape[:2]
    prompt = check_prompt(pts, labels, bx, height, width)
    out_dir = None if out is None else Path(out)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise OptionError(f"output folder '{out_dir}' is an existing file, not a folder")
    previous = (_previous_logits(out_dir, path.stem, height, width)
                if refine and out_dir is not None else None)
    if isinstance(model, Sam2Prompter):
        prompter = model
    else:
        read_config(model)  # a clear sentence for a missing or invalid folder, before loading
        weight_files(model)
        prompter = Sam2Prompter(model, device=select_device(device))
    prompter.set_image(img)
    result = prompter.predict(prompt.points, prompt.labels, prompt.box, mask_input=previous)
    mask = result.prob > THRESHOLD
    summary: dict[str, Any] = {
        "prob": result.prob, "mask": mask, "low_res_logits": result.low_res_logits,
        "score": result.score, "points": prompt.points, "labels": prompt.labels,
        "box": prompt.box, "refined": previous is not None, "files": []}
    if out_dir is None:
        return summary
    folder = make_out_dir(out_dir)
    stem = path.stem
    files = [folder / f"{stem}_{k}" for k in ("prob.png", "mask.png", "prompt_overlay.png",
                                              "logits.npy", "prompt.json")]
    write_png(files[0], np.clip(result.prob, 0.0, 1.0))
    write_png(files[1], mask)
    write_png(files[2], draw_prompt(img, mask, prompt.points, prompt.labels, prompt.box))
    with atomic_path(files[3]) as tmp, tmp.open("wb") as handle:
        np.save(handle, result.low_res_logits.astype(np.float32))
    record = {
        "image": str(path), "size": [width, height],
        "model": str(model) if not isinstance(model, Sam2Prompter) else None,
        "points": [[float(x), float(y)] for x, y in prompt.points.tolist()],
        "labels": [int(v) for v in prompt.labels.tolist()],
        "box": None if prompt.box is None else [float(v) for v in prompt.box.tolist()],
        "refined": previous is not None, "threshold": THRESHOLD, "score": result.score}
    write_text_atomic(files[4], json.dumps(record, indent=2) + "\n")
    summary["files"] = files
    return summary


__all__ = ["draw_prompt", "prompt_image"]

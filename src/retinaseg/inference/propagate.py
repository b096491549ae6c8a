"""Propagate SAM 2 prompts through a stack of frames with its memory (reference §7.2).

SAM-OCTA2 treats the en-face layers of an OCTA volume as the frames of a video: prompts (points,
a box, or a mask) on one or a few frames, then SAM 2's memory carries each object forward and
backward through the whole stack. :func:`propagate` does this with transformers'
``Sam2VideoModel`` and a ``Sam2VideoInferenceSession``, driven directly: transformers' video
processor needs torchvision, so the frames go onto the 1024×1024 canvas with
:mod:`retinaseg.models.sam2.preprocess` (aspect kept, zero padding, ImageNet normalisation) and
the decoder's 256×256 logits come back to each frame's own size the same way.

How the session is driven (the steps of the official ``SAM2VideoPredictor``):

1. The whole stack is preprocessed into the session (``processed_frames``).
2. Prompted frames are visited in increasing order. On each, the objects prompted there get
   their inputs (points and box as canvas coordinates, box corners labelled 2 and 3 in front of
   the points; or the mask on the canvas), are marked as having new inputs, and one forward
   pass makes that frame a *conditioning frame* of those objects (a mask prompt is taken as the
   answer itself, as SAM 2 does).
3. ``propagate_in_video_iterator`` runs from the first prompted frame to the end (forward) and
   from it back to frame 0 (backward, ``reverse``); ``direction="backward"`` alone starts at the
   last prompted frame. Each step attends to the conditioning frames and the latest tracked
   frames (``num_maskmem`` = 7 memories).

Frames that no pass reaches stay empty (probability 0).

>>> out = propagate(stack, "sam2-tiny/", {4: {1: Prompt(np.array([[30., 40.]]),
...                                                    np.array([1]))}})   # doctest: +SKIP
>>> out["masks"].shape                                                        # doctest: +SKIP
(1, 9, 512, 512)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from retinaseg.errors import OptionError, VolumeError
from retinaseg.models.sam2.deps import require_sam_extras
from retinaseg.models.sam2.preprocess import (
    FrameGeometry,
    from_canvas,
    preprocess_image,
    scale_box,
    scale_points,
    to_canvas,
)

require_sam_extras()

from transformers import Sam2VideoInferenceSession, Sam2VideoModel  # noqa: E402

from retinaseg.models.sam2.lora import load_model  # noqa: E402
from retinaseg.models.sam2.predictor import Prompt, check_prompt  # noqa: E402

DIRECTIONS = ("both", "forward", "backward")

PromptLike = Prompt | np.ndarray
"""A prompt of one object on one frame: points/box (:class:`Prompt`) or a bool mask ``[H, W]``."""

__all__ = ["DIRECTIONS", "Prompt", "frame_dice", "propagate", "sparse_annotation"]


# ---------------------------------------------------------------- checks


def _check_frames(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """float32 ``[T, H, W]`` in [0, 1]; a VolumeError for anything else."""
    if isinstance(frames, np.ndarray | torch.Tensor):
        arr = np.asarray(frames)
    else:
        items = [np.asarray(f) for f in frames]
        if not items:
            raise VolumeError("propagation needs at least one frame, got none")
        shapes = {f.shape for f in items}
        if len(shapes) > 1:
            raise VolumeError(f"all frames of a stack must be the same size, got shapes "
                              f"{sorted(list(s) for s in shapes)}")
        arr = np.stack(items)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise VolumeError(f"frames must be a grey stack [T, H, W], got shape {list(arr.shape)}")
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise VolumeError("frames hold NaN or infinite values")
    return np.clip(arr, 0.0, 1.0)


def _check_prompts(prompts: Mapping[int, Mapping[int, Any]], frames: int, height: int,
                   width: int) -> dict[int, dict[int, Prompt | np.ndarray]]:
    """Prompts keyed by frame then object id, checked; an OptionError for a bad one."""
    if not isinstance(prompts, Mapping):
        raise OptionError("prompts must be a mapping {frame: {object_id: Prompt or mask}}, "
                          f"got {type(prompts).__name__}")
    checked: dict[int, dict[int, Prompt | np.ndarray]] = {}
    for frame, objects in prompts.items():
        t = int(frame)
        if not 0 <= t < frames:
            raise OptionError(f"prompt on frame {t}, but the stack has frames 0-{frames - 1}")
        if not isinstance(objects, Mapping):
            raise OptionError(f"the prompts of frame {t} must be a mapping {{object_id: Prompt "
                              f"or mask}}, got {type(objects).__name__}")
        for obj, prompt in objects.items():
            checked.setdefault(t, {})[int(obj)] = _check_one(prompt, t, int(obj), height, width)
    if not checked:
        raise OptionError("propagation needs a prompt (points, a box or a mask) on at least one "
                          "frame, got none")
    return dict(sorted(checked.items()))


def _check_one(prompt: object, frame: int, obj: int, height: int,
               width: int) -> Prompt | np.ndarray:
    if isinstance(prompt, Prompt):
        try:
            return check_prompt(prompt.points, prompt.labels, prompt.box, height, width)
        except OptionError as err:
            raise OptionError(f"object {obj} on frame {frame}: {err}") from None
    mask = np.asarray(prompt)
    if mask.shape != (height, width) or not (mask.dtype == bool or np.isin(mask, (0, 1)).all()):
        raise OptionError(f"object {obj} on frame {frame}: a prompt is a Prompt (points/box) or "
                          f"a binary mask of the frame's size {height}×{width}, got "
                          f"{type(prompt).__name__} of shape {list(mask.shape)}")
    return mask.astype(bool)


def _video_model(model: str | Path | nn.Module, device: torch.device) -> Sam2VideoModel:
    if not isinstance(model, nn.Module):
        model = load_model(model, video=True, device=device)
    if not isinstance(model, Sam2VideoModel):
        raise OptionError(f"propagation needs the SAM 2 video model (load_sam2(..., video=True)), "
                          f"got {type(model).__name__}")
    return model.to(device).eval()


# ---------------------------------------------------------------- the session


def _add_inputs(session: Sam2VideoInferenceSession, frame: int,
                objects: dict[int, Prompt | np.ndarray], geom: FrameGeometry) -> None:
    """Put the prompts of one frame into ``session`` (what the processor's
    ``add_inputs_to_inference_session`` does, with our canvas geometry)."""
    for obj, prompt in objects.items():
        idx = session.obj_id_to_idx(obj)
        if isinstance(prompt, Prompt):
            coords = [scale_points(prompt.points, geom)]
            labels = [prompt.labels.astype(np.int32)]
            if prompt.box is not None:  # box corners first, labelled 2 and 3
                coords.insert(0, scale_box(prompt.box, geom).reshape(2, 2))
                labels.insert(0, np.array([2, 3], np.int32))
            session.add_point_inputs(idx, frame, {
                "point_coords": torch.from_numpy(np.concatenate(coords))[None, None],
                "point_labels": torch.from_numpy(np.concatenate(labels))[None, None]})
            session.remove_mask_inputs(idx, frame)
        else:
            canvas = to_canvas(torch.from_numpy(prompt).float(), geom, mode="nearest")
            session.add_mask_inputs(idx, frame, (canvas > 0.5).float()[None, None])
            session.remove_point_inputs(idx, frame)
    session.obj_with_new_inputs = list(objects)


@torch.inference_mode()
def propagate(frames: np.ndarray | Sequence[np.ndarray], model: str | Path | nn.Module,
              prompts: Mapping[int, Mapping[int, PromptLike]], direction: str = "both",
              device: str | torch.device = "cpu", threshold: float = 0.5) -> dict[str, Any]:
    """Segment objects through a stack of frames from prompts on a few of them (SAM 2 memory).

    ``frames``: float ``[T, H, W]`` in [0, 1] (or a list of ``[H, W]`` frames of one size);
    ``model``: a SAM 2 model folder or a loaded ``Sam2VideoModel``; ``prompts``: ``{frame:
    {object_id: Prompt or bool mask [H, W]}}`` in the frames' pixel coordinates (x = column);
    ``direction``: ``both``, ``forward`` (frames before the first prompted one stay empty) or
    ``backward`` (from the last prompted frame down to frame 0).

    Returns ``masks`` bool ``[K, T, H, W]`` (probability > ``threshold``), ``probs`` float32
    ``[K, T, H, W]``, ``union`` bool ``[T, H, W]``, ``object_ids`` (sorted; row k of ``masks``)
    and ``visited`` bool ``[T]`` (frames a pass reached). Raises VolumeError for frames of
    different sizes or a bad stack, OptionError for a bad prompt, frame index or direction.
    """
    if direction not in DIRECTIONS:
        raise OptionError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if not 0.0 < threshold < 1.0:
        raise OptionError(f"threshold must lie in (0, 1), got {threshold}")
    stack = _check_frames(frames)
    n, height, width = stack.shape
    checked = _check_prompts(prompts, n, height, width)
    dev = torch.device(device)
    net = _video_model(model, dev)

    canvases = []
    for frame in stack:
        pixels, geom = preprocess_image(frame, size=net.config.image_size)
        canvases.append(pixels[0])
    session = Sam2VideoInferenceSession(
        video=torch.stack(canvases), video_height=height, video_width=width,
        inference_device=dev, inference_state_device=dev, video_storage_device="cpu",
        dtype=torch.float32, max_vision_features_cache_size=2)

    ids = sorted({obj for objects in checked.values() for obj in objects})
    logits: dict[int, torch.Tensor] = {}  # frame → [K, 256, 256] in sorted-id order

    def keep(output: Any) -> None:
        rows = {obj: k for k, obj in enumerate(output.object_ids)}
        low = output.pred_masks[:, 0].float().cpu()
        full = torch.full((len(ids), *low.shape[-2:]), -1e4)  # objects not tracked yet: empty
        for k, obj in enumerate(ids):
            if obj in rows:
                full[k] = low[rows[obj]]
        logits[int(output.frame_idx)] = full

    for frame, objects in checked.items():  # conditioning frames, in order
        _add_inputs(session, frame, objects, geom)
        keep(net(inference_session=session, frame_idx=frame))
    first, last = min(checked), max(checked)
    passes = {"forward": [(first, False)], "backward": [(last, True)],
              "both": [(first, False), (first, True)]}[direction]
    for start, reverse in passes:
        for output in net.propagate_in_video_iterator(session, start_frame_idx=start,
                                                      reverse=reverse):
            keep(output)

    probs = np.zeros((len(ids), n, height, width), np.float32)
    for t, low in logits.items():
        probs[:, t] = torch.sigmoid(from_canvas(low, geom)).numpy()
    masks = probs > threshold
    visited = np.zeros(n, bool)
    visited[list(logits)] = True
    return {"masks": masks, "probs": probs, "union": masks.any(axis=0),
            "object_ids": ids, "visited": visited}


def sparse_annotation(frames: np.ndarray | Sequence[np.ndarray], model: str | Path | nn.Module,
                      masks: Mapping[int, Mapping[int, np.ndarray]],
                      device: str | torch.device = "cpu") -> dict[str, Any]:
    """Masks of objects drawn on a few frames → their masks on every frame (reference §7.2,
    sparse annotation workflow): :func:`propagate` in both directions with mask prompts only.
    ``masks``: ``{frame: {object_id: bool [H, W]}}``; returns what :func:`propagate` does."""
    for frame, objects in masks.items():
        for obj, mask in (objects.items() if isinstance(objects, Mapping) else ()):
            if isinstance(mask, Prompt):
                raise OptionError(f"sparse annotation takes masks, got points/box for object "
                                  f"{obj} on frame {frame}")
    return propagate(frames, model, masks, direction="both", device=device)


def frame_dice(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """Dice of each frame of two bool stacks ``[T, H, W]``; 1.0 where both are empty."""
    p, g = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if p.shape != g.shape or p.ndim != 3:
        raise VolumeError(f"prediction and truth must be stacks [T, H, W] of one shape, got "
                          f"{list(p.shape)} and {list(g.shape)}")
    inter = (p & g).sum(axis=(1, 2))
    total = p.sum(axis=(1, 2)) + g.sum(axis=(1, 2))
    return [1.0 if s == 0 else float(2 * i / s) for i, s in zip(inter, total, strict=True)]

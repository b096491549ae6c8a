"""Prompt one layer frame with SAM 2 and carry the object through the stack
(``retinaseg propagate``, reference §7.2).

The frames come from a folder or a volume:

- a folder written by ``retinaseg layers`` (``frames.json`` lists the frames in order, with
  their depth ranges), or any folder of images of one size, taken in natural order
  (``frame_2.png`` before ``frame_10.png``); colour images become grey (mean of the channels);
- a volume file (``.npy``, ``.nii``/``.nii.gz``, multi-page ``.tif``), cut into en-face frames by
  :func:`~retinaseg.preprocessing.projection.layer_frames` (``step`` and ``thickness`` planes,
  default 1 and 1: every plane is a frame). A folder of B-scans counts as a folder of frames;
  run ``retinaseg layers`` on it first to propagate through its en-face layers.

The prompt is either points (``"x,y,1;x,y,0"``) and/or a box (``"x0,y0,x1,y1"``) on one frame
(``prompt_frame``), or binary masks on one or several frames (``prompt_masks``: ``FRAME:MASK``
items, one frame each). Either way there is **one object**, ``obj_id`` (default 1): several
masks are that object drawn on several frames (the sparse-annotation workflow), not several
objects. :func:`~retinaseg.inference.propagate.propagate` then carries it through the stack with
SAM 2's memory in ``direction`` ``both``, ``forward`` (frames before the first prompted one stay
empty) or ``backward`` (frames after the last prompted one stay empty).

Everything is checked before the model is loaded (one sentence, nothing written): the source,
frames of different sizes, a prompt frame past the end, no prompt, points or a box outside the
frames, a mask of another size, the model folder. Then ``out`` gets:

- ``masks/frame_<i>.png``: the union of the objects on frame ``i`` (every frame, frames' size);
- ``objects/<obj>/frame_<i>.png``: each object's mask;
- ``prompts/frame_<i>.png``: RGB, the answer in blue over each prompted frame, with its points
  (green positive, red negative) and box (yellow);
- ``propagation.json``: the source, model, frame size, direction, object ids, prompted frames
  and prompts, and per frame its source file (or depth range), whether a pass reached it and
  each object's area in px.

Weights come from the user's disk only (``retinaseg sam2 convert``, or ``sam2 init`` for random
weights that show the mechanics); nothing is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retinaseg.errors import OptionError, VolumeError
from retinaseg.io import list_images, read_image, read_mask, read_volume, write_png
from retinaseg.utils.atomic import make_out_dir, write_text_atomic

THRESHOLD = 0.5
"""Probability above which a pixel is in an object's mask."""

DIRECTIONS = ("both", "forward", "backward")
"""(:data:`retinaseg.inference.propagate.DIRECTIONS`; repeated here: light import.)"""


def _grey(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=-1) if image.ndim == 3 else image


def _folder_frames(folder: Path) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Frames of a folder (``frames.json`` order if present, else natural order) and per frame
    what it came from."""
    listing = folder / "frames.json"
    if listing.is_file():
        try:
            entries = json.loads(listing.read_text(encoding="utf-8"))["frames"]
            files = [folder / str(e["file"]) for e in entries]
        except (OSError, ValueError, KeyError, TypeError):
            raise VolumeError(f"'{listing}' is not a frames.json written by 'retinaseg layers' "
                              "(a list of frames with their files)") from None
        info = [{"file": f.name, **{k: e[k] for k in ("depth_start", "depth_stop") if k in e}}
                for f, e in zip(files, entries, strict=True)]
    else:
        files = list_images(folder)
        info = [{"file": f.name} for f in files]
    if not files:
        raise VolumeError(f"'{folder}' holds no frames (image files or a frames.json)")
    frames: list[np.ndarray] = []
    for path in files:
        frame = _grey(read_image(path))
        if frames and frame.shape != frames[0].shape:
            (h0, w0), (h, w) = frames[0].shape, frame.shape
            raise VolumeError(f"all frames must be the same size, but '{files[0].name}' is "
                              f"{w0}×{h0} px and '{path.name}' is {w}×{h} px")
        frames.append(frame)
    return np.stack(frames).astype(np.float32), info


def read_frames(source: str | Path, step: int | None = None,
                thickness: int | None = None) -> tuple[np.ndarray, list[dict[str, Any]], str]:
    """The frames of ``source`` (a folder of frames or a volume file, see the module) as float32
    ``[T, H, W]`` in [0, 1], per frame its origin, and the kind (``frames`` or ``volume``)."""
    path = Path(source)
    if not path.exists():
        raise VolumeError(f"'{path}' does not exist; give a folder of frames ('retinaseg "
                          "layers') or a volume file")
    if path.is_dir():
        if step is not None or thickness is not None:
            raise OptionError("step and thickness cut a volume into frames; a folder of frames "
                              "is used as it is")
        frames, info = _folder_frames(path)
        return frames, info, "frames"
    from retinaseg.preprocessing.projection import layer_frames

    frames, ranges = layer_frames(read_volume(path), step=1 if step is None else step,
                                  thickness=1 if thickness is None else thickness)
    info = [{"depth_start": int(s), "depth_stop": int(e)} for s, e in ranges]
    return frames, info, "volume"


def _frame_index(value: object, count: int, what: str) -> int:
    try:
        t = int(str(value).strip()) if not isinstance(value, int | np.integer) else int(value)
    except ValueError:
        raise OptionError(f"{what} must be a frame number, not '{value}'") from None
    if not 0 <= t < count:
        raise OptionError(f"{what} is frame {t}, but the stack has {count} frame(s), numbered "
                          f"0 to {count - 1}")
    return t


def _mask_prompts(items: Sequence[object], count: int, height: int,
                  width: int) -> dict[int, tuple[np.ndarray, str | None]]:
    """``FRAME:MASK`` items (or (frame, path or bool array) pairs) → {frame: (mask, file)}."""
    masks: dict[int, tuple[np.ndarray, str | None]] = {}
    for item in items:
        if isinstance(item, str):
            frame, sep, file = item.partition(":")
            if not sep or not file:
                raise OptionError(f"a mask prompt is FRAME:MASK.png (e.g. 3:vessels.png), not "
                                  f"'{item}'")
            value: object = file
        else:
            try:
                frame, value = item  # type: ignore[misc]
            except (TypeError, ValueError):
                raise OptionError("a mask prompt is 'FRAME:MASK.png' or a (frame, mask) "
                                  "pair") from None
        t = _frame_index(frame, count, "a mask prompt's frame")
        if t in masks:
            raise OptionError(f"two mask prompts on frame {t}; give one mask per frame")
        name = str(value) if isinstance(value, str | Path) else None
        mask = read_mask(Path(value)) if name is not None else np.asarray(value) > 0
        if mask.shape != (height, width):
            what = f"mask '{name}'" if name else "the mask"
            raise OptionError(f"{what} of frame {t} is {mask.shape[-1]}×{mask.shape[0]} px, "
                              f"not the frames' {width}×{height} px")
        if not mask.any():
            raise OptionError(f"the mask prompt of frame {t} is empty; draw the object in it")
        masks[t] = (mask, name)
    return masks


def _name(t: int, count: int) -> str:
    return f"frame_{t:0{max(3, len(str(count - 1)))}d}.png"


def propagate_layers(source: str | Path, model: Any, out: str | Path,
                     prompt_frame: int | None = None, points: object = None, box: object = None,
                     prompt_masks: Sequence[object] | None = None, direction: str = "both",
                     obj_id: int = 1, device: str = "auto", *, step: int | None = None,
                     thickness: int | None = None) -> dict[str, Any]:
    """Prompt one object on a frame (or a few) of a layer stack and propagate it through the
    stack with SAM 2's memory, writing masks per frame into ``out`` (see the module).

    ``source``: a folder of frames (``retinaseg layers``) or a volume file (cut with ``step`` and
    ``thickness``, default 1); ``model``: a SAM 2 model folder, LoRA file or run folder, or a
    loaded ``Sam2VideoModel``;
    ``prompt_frame`` with ``points`` (``"x,y,1;x,y,0"`` or rows of (x, y[, label])) and/or
    ``box`` (``"x0,y0,x1,y1"``), or ``prompt_masks`` (``["FRAME:MASK.png", ...]``, one frame
    each, all the same object); ``direction``: ``both``, ``forward`` or ``backward``.

    Returns a dict: ``masks`` bool ``[K, T, H, W]``, ``union`` bool ``[T, H, W]``,
    ``object_ids``, ``visited`` bool ``[T]``, ``prompted_frames``, ``direction``, ``kind``
    (``frames`` or ``volume``), ``out`` and ``files`` (the JSON record first). Raises a
    RetinasegError (one sentence, nothing written) for a bad source, frames of different sizes,
    a frame past the end, no prompt or two kinds, points outside the frames, or a bad model.
    """
    from retinaseg.inference.prompting import prompt_box, prompt_points

    pts, labels = prompt_points(points)
    bx = prompt_box(box)
    has_points = len(pts) > 0 or bx is not None
    if not has_points and not prompt_masks:
        raise OptionError("propagation needs a prompt: points and/or a box on prompt_frame, or "
                          "prompt_masks FRAME:MASK.png")
    if has_points and prompt_masks:
        raise OptionError("give either points/box on prompt_frame or prompt_masks, not both")
    if has_points and prompt_frame is None:
        raise OptionError("points and a box need prompt_frame: the frame they are on")
    if prompt_masks and prompt_frame is not None:
        raise OptionError("prompt_frame goes with points/box; a mask prompt names its own frame "
                          "(FRAME:MASK.png)")
    if isinstance(obj_id, bool) or not isinstance(obj_id, int | np.integer) or obj_id < 0:
        raise OptionError(f"obj_id must be a whole number >= 0, got {obj_id!r}")
    if direction not in DIRECTIONS:
        raise OptionError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OptionError(f"output folder '{out_dir}' is an existing file, not a folder")

    frames, info, kind = read_frames(source, step, thickness)
    count, height, width = frames.shape
    from retinaseg.models.sam2.deps import require_sam_extras

    require_sam_extras()
    from retinaseg.models.sam2.predictor import check_prompt

    prompts: dict[int, dict[int, Any]] = {}
    drawn: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
    record_prompts: list[dict[str, Any]] = []
    if has_points:
        t = _frame_index(prompt_frame, count, "the prompt frame")
        try:
            prompt = check_prompt(pts, labels, bx, height, width)
        except OptionError as err:
            raise OptionError(f"on frame {t}: {err}") from None
        prompts[t] = {int(obj_id): prompt}
        drawn[t] = (prompt.points, prompt.labels, prompt.box)
        record_prompts.append({
            "frame": t, "object": int(obj_id),
            "points": [[float(x), float(y)] for x, y in prompt.points.tolist()],
            "labels": [int(v) for v in prompt.labels.tolist()],
            "box": None if prompt.box is None else [float(v) for v in prompt.box.tolist()]})
    else:
        for t, (mask, name) in sorted(_mask_prompts(list(prompt_masks or ()), count, height,
                                                    width).items()):
            prompts[t] = {int(obj_id): mask}
            drawn[t] = (np.zeros((0, 2), np.float32), np.zeros(0, np.int64), None)
            record_prompts.append({"frame": t, "object": int(obj_id), "mask": name,
                                   "mask_px": int(mask.sum())})

    from torch import nn

    from retinaseg.utils.runtime import select_device

    dev = select_device(device)
    if not isinstance(model, nn.Module):
        from retinaseg.models.sam2.weights import read_config, weight_files

        read_config(model)  # a clear sentence for a missing or invalid folder, before loading
        weight_files(model)
    from retinaseg.inference.propagate import propagate

    result = propagate(frames, model, prompts, direction=direction, device=dev,
                       threshold=THRESHOLD)
    masks, ids, visited = result["masks"], result["object_ids"], result["visited"]

    folder = make_out_dir(out_dir)
    files: list[Path] = []
    for t in range(count):
        name = _name(t, count)
        write_png(folder / "masks" / name, result["union"][t])
        for k, obj in enumerate(ids):
            write_png(folder / "objects" / str(obj) / name, masks[k, t])
    from retinaseg.inference.prompting import draw_prompt

    for t, (p, lab, b) in drawn.items():
        path = folder / "prompts" / _name(t, count)
        write_png(path, draw_prompt(frames[t], result["union"][t], p, lab, b))
        files.append(path)
    record = {
        "source": str(source), "kind": kind,
        "model": str(model) if not isinstance(model, nn.Module) else None,
        "size": [width, height], "frames": count, "direction": direction,
        "object_ids": [int(o) for o in ids], "prompted_frames": sorted(prompts),
        "prompts": record_prompts, "threshold": THRESHOLD,
        "masks": "masks/frame_<i>.png", "objects": "objects/<object>/frame_<i>.png",
        "per_frame": [{"index": t, **info[t], "mask": f"masks/{_name(t, count)}",
                       "visited": bool(visited[t]),
                       "area_px": {str(o): int(masks[k, t].sum()) for k, o in enumerate(ids)}}
                      for t in range(count)]}
    json_path = folder / "propagation.json"
    write_text_atomic(json_path, json.dumps(record, indent=1) + "\n")
    return {"masks": masks, "union": result["union"], "object_ids": list(ids),
            "visited": visited, "prompted_frames": sorted(prompts), "direction": direction,
            "kind": kind, "out": folder, "files": [json_path, *files]}


__all__ = ["THRESHOLD", "propagate_layers", "read_frames"]

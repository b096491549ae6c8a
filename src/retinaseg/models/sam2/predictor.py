"""Interactive prompting of one image with SAM 2: points and a box in, a probability map out.

Reference §7: the image encoder runs once per image (its embeddings are cached by the image's
content), then each prompt costs one pass of the prompt encoder and the mask decoder. A prompt
is positive (label 1) and negative (label 0) points in the image's pixel coordinates (x =
column, y = row), an optional box (x0, y0, x1, y1), and optionally the 256×256 mask logits of
an earlier answer, which refines it (the official predictor's ``mask_input``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from retinaseg.errors import OptionError
from retinaseg.models.sam2.deps import require_sam_extras
from retinaseg.models.sam2.preprocess import (
    LOW_RES,
    FrameGeometry,
    from_canvas,
    preprocess_image,
    scale_box,
    scale_points,
)

require_sam_extras()

from transformers import Sam2Model  # noqa: E402

from retinaseg.models.sam2.lora import load_model  # noqa: E402


@dataclass(frozen=True)
class Prompt:
    """A checked prompt in image pixel coordinates."""

    points: np.ndarray
    """``[N, 2]`` float32 (x, y); N may be 0 when there is a box."""
    labels: np.ndarray
    """``[N]`` int64, 1 = on the object, 0 = background."""
    box: np.ndarray | None = None
    """``[4]`` float32 (x0, y0, x1, y1) or None."""


def check_prompt(points: object, labels: object, box: object, height: int,
                 width: int) -> Prompt:
    """Check a prompt against an ``height``×``width`` image; one clear OptionError for points
    outside the image, labels other than 0/1, a bad box, or neither points nor box."""
    pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32)
    if pts.size == 0:
        pts = np.zeros((0, 2), np.float32)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise OptionError(f"points must be (x, y) pairs, got an array of shape {list(pts.shape)}")
    lab = (np.ones(len(pts), np.int64) if labels is None
           else np.asarray(labels, np.int64).reshape(-1))
    if len(lab) != len(pts):
        raise OptionError(f"got {len(pts)} points but {len(lab)} labels")
    if not np.isin(lab, (0, 1)).all():
        raise OptionError("point labels must be 1 (object) or 0 (background)")
    for x, y in pts:
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise OptionError(f"point ({x:g}, {y:g}) lies outside the {width}×{height} image "
                              f"(x in 0..{width - 1}, y in 0..{height - 1})")
    bx = None if box is None else np.asarray(box, np.float32).reshape(-1)
    if bx is not None:
        if bx.size != 4:
            raise OptionError(f"a box is x0,y0,x1,y1, got {bx.size} numbers")
        x0, y0, x1, y1 = bx
        if not (0 <= x0 < x1 <= width - 1 and 0 <= y0 < y1 <= height - 1):
            raise OptionError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must have x0 < x1, y0 < y1 "
                              f"and lie inside the {width}×{height} image")
    if len(pts) == 0 and bx is None:
        raise OptionError("a SAM 2 prompt needs at least one point or a box")
    return Prompt(pts, lab, bx)


@dataclass(frozen=True)
class PromptResult:
    """One answer of the model."""

    prob: np.ndarray
    """``[H, W]`` float32 in [0, 1] at the image's size."""
    low_res_logits: np.ndarray
    """``[256, 256]`` float32 mask logits on the canvas; pass as ``mask_input`` to refine."""
    score: float
    """The model's predicted IoU of the mask."""


@dataclass
class _Frame:
    embeddings: list[torch.Tensor]
    geom: FrameGeometry


def image_key(image: np.ndarray) -> str:
    """A content hash of an image (shape, type and bytes)."""
    arr = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{arr.shape}{arr.dtype}".encode())
    digest.update(arr.data)
    return digest.hexdigest()


class Sam2Prompter:
    """Prompt SAM 2 on images; encoder outputs are cached per image (``cache_size`` images).

    ``model`` is a model folder (see :mod:`.weights`) or a loaded SAM 2 image model (e.g. with
    LoRA). ``multimask``: let the decoder propose three masks and keep the one with the best
    predicted IoU (the official default for a single click); off, one mask (SAM-OCTA2).

    >>> p = Sam2Prompter("sam2-tiny/")                                    # doctest: +SKIP
    >>> p.set_image(img)                                                  # doctest: +SKIP
    >>> first = p.predict([[120, 80]], [1])                               # doctest: +SKIP
    >>> better = p.predict([[120, 80], [60, 90]], [1, 0],
    ...                    mask_input=first.low_res_logits)               # doctest: +SKIP
    """

    def __init__(self, model: str | Path | nn.Module, device: str | torch.device = "cpu",
                 cache_size: int = 4, multimask: bool = False) -> None:
        if cache_size < 1:
            raise OptionError(f"cache_size must be at least 1, got {cache_size}")
        self.device = torch.device(device)
        if not isinstance(model, nn.Module):
            model = load_model(model)
        if not isinstance(model, Sam2Model):
            raise OptionError(f"Sam2Prompter needs the single-image SAM 2 model (load_sam2 or "
                              f"load_lora without video), got {type(model).__name__}")
        self.model = model.to(self.device)
        self.model.eval()
        self.cache_size = cache_size
        self.multimask = multimask
        self._cache: OrderedDict[str, _Frame] = OrderedDict()
        self._current: _Frame | None = None

    def set_image(self, image: np.ndarray) -> str:
        """Make ``image`` (grey or RGB) the one to prompt; encodes it unless it is cached.
        Returns its content key."""
        key = image_key(image)
        frame = self._cache.pop(key, None)
        if frame is None:
            pixels, geom = preprocess_image(image)
            with torch.inference_mode():
                emb = self.model.get_image_embeddings(pixels.to(self.device))
            frame = _Frame(list(emb), geom)
        self._cache[key] = frame
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self._current = frame
        return key

    def predict(self, points: object = None, labels: object = None, box: object = None,
                mask_input: np.ndarray | None = None) -> PromptResult:
        """The object's probability map for a prompt on the current image.

        ``points`` ``[N, 2]`` (x, y) and ``labels`` ``[N]`` (1/0; all 1 when None) in image
        pixels, ``box`` (x0, y0, x1, y1), ``mask_input`` the ``low_res_logits`` of an earlier
        answer. Raises OptionError for a bad prompt or when no image was set.
        """
        if self._current is None:
            raise OptionError("call set_image(image) before predict()")
        geom = self._current.geom
        prompt = check_prompt(points, labels, box, geom.height, geom.width)
        kwargs: dict[str, torch.Tensor] = {}
        if len(prompt.points):
            kwargs["input_points"] = torch.from_numpy(scale_points(prompt.points, geom))[None, None]
            kwargs["input_labels"] = torch.from_numpy(prompt.labels)[None, None]
        if prompt.box is not None:
            kwargs["input_boxes"] = torch.from_numpy(scale_box(prompt.box, geom))[None, None]
        if mask_input is not None:
            mask = np.asarray(mask_input, np.float32)
            if mask.shape[-2:] != (LOW_RES, LOW_RES):
                raise OptionError(f"mask_input must be the {LOW_RES}×{LOW_RES} low_res_logits "
                                  f"of an earlier answer, got shape {list(mask.shape)}")
            kwargs["input_masks"] = torch.from_numpy(mask.reshape(1, 1, LOW_RES, LOW_RES))
        with torch.inference_mode():
            out = self.model(image_embeddings=self._current.embeddings,
                             multimask_output=self.multimask,
                             **{k: v.to(self.device) for k, v in kwargs.items()})
        logits, scores = out.pred_masks[0, 0], out.iou_scores[0, 0]  # [M, 256, 256], [M]
        best = int(torch.argmax(scores))
        low = logits[best].float().cpu()
        prob = torch.sigmoid(from_canvas(low, geom))
        return PromptResult(prob.numpy().astype(np.float32), low.numpy().astype(np.float32),
                            float(scores[best]))

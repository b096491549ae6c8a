"""SAM 2 LoRA fine-tuning on layer sequences as video: SAM-OCTA2's sequence mode (reference §7.2).

``model: {name: sam2, params: {mode: layers}}`` with ``data.dataset: sam_octa2_layers`` trains
the SAM 2 *video* model (its memory attention, memory encoder and object pointers) through
clips of en-face layers, as SAM-OCTA2 does. One training unit is one subject's sequence; per
step (:class:`~retinaseg.training.sam2.SequenceSettings`, the seed's defaults):

1. T ~ U{4..8} frames; a random contiguous run of U{T..N} layers; T frames evenly spaced in it.
2. P ~ U{1..3} prompted frames at {0}, {0, T−1} or {0, ⌊T/2⌋, T−1}.
3. One object: RV, an id drawn from those present on the prompted frames (frames without it
   have an empty target); FAZ, object 0.
4. The same horizontal flip (p 0.5) and rotation (±10°, p 0.5) for every frame and mask.
5. On each prompted frame where the object is present, ``prompt_generation`` points
   (SAM-OCTA2's sampler: positives ~ U{1..10}, negatives ~ U{0..6} from the (3, 9] px ring).
6. The prompted frames are run first (as SAM 2 conditioning frames, in order), then the other
   frames in order, each attending to the conditioning frames and the latest memories.
7. The loss is the sum over the T frames of the config's loss on each frame's logits (at the
   frame's own size), the seed's Σ Dice with ``loss: dice``, plus the sum over frames of the
   BCE of SAM 2's object score against the object's presence in the frame. The seed has no
   such term; SAM 2's own training has it, and without it no gradient reaches a frame whose
   object the model calls absent: SAM 2 then replaces the mask logits by a constant (−1024).

Validation (reference §7.2, "Evaluation"): per validation subject and object, ``val_frames``
(4) layers evenly spaced over the whole sequence, a prompt on frame 0 only (the ``prompt``
settings: by default 1 positive, 0 negatives, from a fixed seed), binarised at
``train.threshold`` (0.5 = logit > 0). ``val_dice`` is the mean Dice over objects and frames
(the prompted frame included, as the seed), ``val_tracked`` over the frames after it only: what
the memory carried. Objects absent from frame 0 cannot be prompted and are left out.

Transformers' ``Sam2VideoModel.forward`` is an inference-mode function; training calls the
function it wraps (gradients flow through the image encoder's LoRA, the memory and the
decoder), with the model in eval mode and only the adapters' dropout in training mode
(:meth:`~retinaseg.training.sam2.Sam2Task.train_mode`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from retinaseg.data import build_dataset
from retinaseg.errors import ConfigError
from retinaseg.models.sam2.deps import require_sam_extras
from retinaseg.models.sam2.preprocess import from_canvas, preprocess_image, scale_points
from retinaseg.preprocessing import prompts as P
from retinaseg.training.config import RunConfig
from retinaseg.training.sam2 import (
    VAL_SEED,
    PromptSettings,
    Sam2Task,
    SequenceSettings,
    fit,
    setup_model,
)

CSV_FIELDS = ("epoch", "train_loss", "val_loss", "val_dice", "val_tracked", "lr", "skipped",
              "seconds")


def _unwrapped_forward() -> Any:
    """``Sam2VideoModel.forward`` without its ``torch.inference_mode`` decorator."""
    require_sam_extras()
    from transformers import Sam2VideoModel

    fn = Sam2VideoModel.forward
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


def draw_clip(n_layers: int, s: SequenceSettings,
              rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Layer positions of a training clip (increasing) and its prompted clip frames.

    >>> pos, prompted = draw_clip(10, SequenceSettings(), np.random.default_rng(0))
    >>> 4 <= len(pos) <= 8 and prompted[0] == 0 and sorted(set(pos)) == pos
    True
    """
    t = min(int(rng.integers(s.frames[0], s.frames[1] + 1)), n_layers)
    run = int(rng.integers(t, n_layers + 1))
    start = int(rng.integers(0, n_layers - run + 1))
    pos = sorted({int(v) for v in np.round(np.linspace(start, start + run - 1, t))})
    t = len(pos)
    p = int(rng.integers(s.prompt_frames[0], s.prompt_frames[1] + 1))
    prompted = {1: [0], 2: [0, t - 1], 3: [0, t // 2, t - 1]}[p]
    return pos, sorted(set(prompted))


def val_positions(n_layers: int, frames: int) -> list[int]:
    """``frames`` layer positions evenly spaced over the whole sequence (fewer if N < frames)."""
    return sorted({int(v) for v in np.round(np.linspace(0, n_layers - 1, min(frames, n_layers)))})


def augment_clip(frames: np.ndarray, masks: np.ndarray, s: SequenceSettings,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same flip and rotation for every frame ``[T, H, W]`` and mask ``[T, H, W]``."""
    if s.flip and rng.random() < 0.5:
        frames, masks = frames[:, :, ::-1], masks[:, :, ::-1]
    if s.rotate and rng.random() < 0.5:
        angle = float(rng.uniform(-s.rotate, s.rotate))
        frames = ndimage.rotate(frames, angle, axes=(2, 1), reshape=False, order=1,
                                mode="constant", cval=0.0)
        masks = ndimage.rotate(masks.astype(np.uint8), angle, axes=(2, 1), reshape=False,
                               order=0, mode="constant", cval=0).astype(bool)
    return np.ascontiguousarray(frames, np.float32), np.ascontiguousarray(masks)


class LayerTask(Sam2Task):
    """SAM-OCTA2 layer sequences (module docstring): one unit per training subject."""

    csv_fields = CSV_FIELDS

    def __init__(self, cfg: RunConfig, model: nn.Module, base: Path, settings: Any,
                 prompt: PromptSettings, device: torch.device,
                 sequence: SequenceSettings) -> None:
        super().__init__(cfg, model, base, settings, prompt, device)
        from transformers import Sam2VideoInferenceSession

        self._session_cls = Sam2VideoInferenceSession
        self._forward = _unwrapped_forward()
        self.sequence = sequence
        d = cfg.data
        options = {**d.options, "view": "sequence"}
        self.train_ds = build_dataset(d.dataset, d.root, d.train_split, **options)
        self.val_ds = build_dataset(d.dataset, d.root, d.val_split or "val", **options)
        if not self.train_ds.sequences or not self.val_ds.sequences:
            raise ConfigError("sam2 layer training needs training and validation sequences")
        self.validation = f"{d.dataset} split '{d.val_split or 'val'}' " \
                          f"({len(self.val_ds.sequences)} sequences)"

    def __len__(self) -> int:
        return len(self.train_ds.sequences)

    # ------------------------------------------------------------ one clip

    def clip_logits(self, frames: np.ndarray, prompts: dict[int, P.Prompt]
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Mask logits ``[1, 1, H, W]`` and object-score logits ``[1]`` of each frame of
        ``frames`` ``[T, H, W]`` for one object prompted on the frames ``prompts`` (keys),
        conditioning frames first."""
        net = self.model
        canvases = []
        for frame in frames:
            pixels, geom = preprocess_image(frame, size=net.config.image_size)
            canvases.append(pixels[0])
        n, height, width = frames.shape
        session = self._session_cls(
            video=torch.stack(canvases), video_height=height, video_width=width,
            inference_device=self.device, inference_state_device=self.device,
            video_storage_device=self.device, dtype=torch.float32,
            max_vision_features_cache_size=n)
        idx = session.obj_id_to_idx(1)
        order = sorted(prompts) + [t for t in range(n) if t not in prompts]
        out: dict[int, torch.Tensor] = {}
        scores: dict[int, torch.Tensor] = {}
        for t in order:
            if t in prompts:
                pts = scale_points(prompts[t].points, geom)
                session.add_point_inputs(idx, t, {
                    "point_coords": torch.from_numpy(pts)[None, None].to(self.device),
                    "point_labels": torch.from_numpy(
                        prompts[t].labels.astype(np.int32))[None, None].to(self.device)})
                session.obj_with_new_inputs = [1]
            res = self._forward(net, inference_session=session, frame_idx=t)
            out[t] = from_canvas(res.pred_masks[:1, :1].float(), geom)  # [1, 1, H, W]
            scores[t] = res.object_score_logits.reshape(-1)[:1].float()
        return [out[t] for t in range(n)], [scores[t] for t in range(n)]

    def train_loss(self, index: int, rng: np.random.Generator) -> torch.Tensor | None:
        files = self.train_ds.sequences[index]
        pos, prompted = draw_clip(len(files.layers), self.sequence, rng)
        present = sorted({i for t in prompted for i in files.objects[pos[t]]})
        if not present:
            return None
        obj = int(rng.choice(present))
        seq = self.train_ds.sequence(index, frames=pos, objects=[obj])
        frames, masks = augment_clip(seq.frames, seq.objects[0], self.sequence, rng)
        s = self.sequence
        prompts = {}
        for t in prompted:
            if masks[t].any():
                pt = P.prompt_generation(masks[t], int(rng.integers(s.n_pos[0], s.n_pos[1] + 1)),
                                         int(rng.integers(s.n_neg[0], s.n_neg[1] + 1)), rng=rng)
                if len(pt):
                    prompts[t] = pt
        if not prompts:
            return None
        logits, scores = self.clip_logits(frames, prompts)
        target = torch.from_numpy(masks.astype(np.float32)).to(self.device)
        present = target.flatten(1).amax(dim=1)  # [T] 1 where the object is in the frame
        loss = sum(self.loss_fn(lg, target[t][None, None]) for t, lg in enumerate(logits))
        score = nn.functional.binary_cross_entropy_with_logits(torch.cat(scores), present,
                                                               reduction="sum")
        return loss + score

    def validate(self) -> dict[str, float]:
        self.model.eval()
        rng = np.random.default_rng(self.cfg.seed + VAL_SEED)
        dice, tracked, losses = [], [], []
        with torch.no_grad():
            for k, files in enumerate(self.val_ds.sequences):
                pos = val_positions(len(files.layers), self.sequence.val_frames)
                seq = self.val_ds.sequence(k, frames=pos)
                for j, _ in enumerate(seq.object_ids):
                    masks = seq.objects[j]
                    prompt = self.prompt.sample(masks[0], rng) if masks[0].any() else None
                    if prompt is None or not len(prompt):
                        continue
                    logits, _ = self.clip_logits(seq.frames, {0: prompt})
                    for t, lg in enumerate(logits):
                        truth = torch.from_numpy(masks[t].astype(np.float32))[None, None]
                        losses.append(float(nn.functional.binary_cross_entropy_with_logits(
                            lg.cpu(), truth)))
                        pred = torch.sigmoid(lg)[0, 0].cpu().numpy() > self.cfg.train.threshold
                        d = _dice(pred, masks[t])
                        dice.append(d)
                        if t:
                            tracked.append(d)
        nan = float("nan")
        return {"val_dice": float(np.mean(dice)) if dice else 0.0,
                "val_tracked": float(np.mean(tracked)) if tracked else nan,
                "val_loss": float(np.mean(losses)) if losses else nan}


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two bool masks; 1.0 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def train_sam2_layers(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Fine-tune the SAM 2 video model with LoRA on the layer sequences of ``cfg`` into
    ``run_dir`` (module docstring); returns the summary (also in ``summary.json``)."""
    params, model, base, settings, device, threads = setup_model(cfg, run_dir, video=True)
    task = LayerTask(cfg, model, base, settings, params.prompt, device, params.sequence)
    return fit(task, cfg, run_dir, params, threads)

"""Standard segmentation losses by name (reference §4): bce, dice, bce_dice, focal, mse,
OCTA-Net's joint loss ``octanet`` (reference §5), and the multi-class ``dice_ce``.

Every binary loss takes **logits** ``[B, 1, ...]`` and a target ``[B, 1, ...]`` in {0, 1} and
returns a scalar; a multi-class loss (``multiclass = True``) takes logits ``[B, K, ...]`` and
a target ``[B, 1, ...]`` of class indices 0..K-1. Dice and focal come from MONAI; tests check
each against hand-computed values.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss, FocalLoss
from torch import nn

from retinaseg.registry import LOSSES


@LOSSES.register("bce")
class BCELoss(nn.Module):
    """Binary cross-entropy on logits, optional ``pos_weight`` for the vessel class."""

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        pw = None if pos_weight is None else torch.tensor([pos_weight])
        self.loss = nn.BCEWithLogitsLoss(pos_weight=pw)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target.float())


@LOSSES.register("dice")
class SoftDiceLoss(nn.Module):
    """1 − (2Σpg + ε)/(Σp + Σg + ε), Σ over the whole batch, p = sigmoid(logits)."""

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.loss = DiceLoss(sigmoid=True, batch=True, smooth_nr=smooth, smooth_dr=smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target.float())


@LOSSES.register("iou")
class SoftIoULoss(nn.Module):
    """1 − (Σpg + ε)/(Σp + Σg − Σpg + ε), the soft Jaccard (IoU) loss of the U-Net student
    project (seed 003), Σ over the whole batch, p = sigmoid(logits); MONAI's ``DiceLoss`` with
    ``jaccard=True``."""

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.loss = DiceLoss(sigmoid=True, batch=True, jaccard=True, smooth_nr=smooth,
                             smooth_dr=smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target.float())


@LOSSES.register("dice_ce")
class DiceCrossEntropyLoss(nn.Module):
    """Multi-class ``ce_weight``·cross-entropy + ``dice_weight``·soft Dice on softmax
    probabilities (MONAI ``DiceCELoss(softmax=True, to_onehot_y=True)``).

    Logits ``[B, K, H, W]``, target ``[B, 1, H, W]`` of class indices 0..K-1 (any dtype). Dice
    is averaged over the K classes (background included unless ``include_background`` is
    False), each summed over the batch.
    """

    multiclass = True
    """Trains ``model.classes`` (softmax over K outputs), not a binary vessel map."""

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0,
                 include_background: bool = True, smooth: float = 1e-5) -> None:
        super().__init__()
        self.loss = DiceCELoss(softmax=True, to_onehot_y=True, batch=True,
                               include_background=include_background, lambda_ce=ce_weight,
                               lambda_dice=dice_weight, smooth_nr=smooth, smooth_dr=smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target[:, :1].float())


@LOSSES.register("bce_dice")
class BCEDiceLoss(nn.Module):
    """``bce_weight``·BCE + ``dice_weight``·Dice."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0,
                 pos_weight: float | None = None, smooth: float = 1e-5) -> None:
        super().__init__()
        self.bce, self.dice = BCELoss(pos_weight), SoftDiceLoss(smooth)
        self.wb, self.wd = bce_weight, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.wb * self.bce(logits, target) + self.wd * self.dice(logits, target)


@LOSSES.register("focal")
class SigmoidFocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017), mean over pixels; MONAI ``FocalLoss``."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.25) -> None:
        super().__init__()
        self.loss = FocalLoss(gamma=gamma, alpha=alpha, use_softmax=False, reduction="mean")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target.float())


@LOSSES.register("mse")
class MSELoss(nn.Module):
    """Mean squared error between sigmoid probabilities and the target (OCTA-Net's loss)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(torch.sigmoid(logits), target.float())


@LOSSES.register("octanet")
class OctaNetLoss(nn.Module):
    """OCTA-Net's joint loss (reference §4, §5): per branch ``mse_weight``·MSE +
    ``dice_weight``·Dice on sigmoid probabilities, summed over the branches.

    Logits ``[B, 3, H, W]`` = (fused, thick, thin), what ``octanet`` returns in training mode,
    with a target ``[B, 2, H, W]`` = (pixel label, centerline label): thick is scored against the
    pixel label (weight ``thick_weight``), thin against the centerline label (``thin_weight``),
    the fused max against the pixel label (``fused_weight``, default 0 as the seed). Logits
    ``[B, 1, H, W]`` (the fine stage, ``octanet_fine``) are scored against the pixel label
    (channel 0 of the target). Defaults 0.7·MSE + 0.3·Dice; the seed's code trains with MSE
    alone (``dice_weight: 0, mse_weight: 1``).
    """

    def __init__(self, mse_weight: float = 0.7, dice_weight: float = 0.3,
                 thick_weight: float = 1.0, thin_weight: float = 1.0,
                 fused_weight: float = 0.0) -> None:
        super().__init__()
        self.mse_weight, self.dice_weight = mse_weight, dice_weight
        self.weights = (fused_weight, thick_weight, thin_weight)
        self.dice = SoftDiceLoss()

    def _term(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mse = nn.functional.mse_loss(torch.sigmoid(logits), target)
        return self.mse_weight * mse + self.dice_weight * self.dice(logits, target)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        if logits.shape[1] == 1:
            return self._term(logits, target[:, :1])
        if logits.shape[1] != 3 or target.shape[1] != 2:
            raise ValueError(f"octanet loss takes logits [B, 3, ...] (fused, thick, thin) and "
                             f"a target [B, 2, ...] (label, centerline), got "
                             f"{list(logits.shape)} and {list(target.shape)}")
        pixel, line = target[:, :1], target[:, 1:2]
        parts = [(logits[:, 0:1], pixel), (logits[:, 1:2], pixel), (logits[:, 2:3], line)]
        return sum(w * self._term(lg, t) for w, (lg, t) in zip(self.weights, parts) if w)

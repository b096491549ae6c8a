"""Standard segmentation losses by name (reference §4): bce, dice, bce_dice, focal, mse.

Every loss takes **logits** ``[B, 1, ...]`` and a target ``[B, 1, ...]`` in {0, 1} and returns a
scalar. Dice and focal come from MONAI; tests check each against hand-computed values.
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss, FocalLoss
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

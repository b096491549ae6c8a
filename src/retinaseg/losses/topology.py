"""Topology-aware losses (reference §4, with the skeletons of §3/§4 from ``losses.skeleton``).

Registered names: ``cldice``, ``dice_cldice``, ``ibp_cldice`` (S3-OCTA's default),
``skeleton_recall`` (Kirchhoff et al. 2024) and ``combo`` (a weighted sum of any registered
losses). Every loss takes **logits** ``[B, 1, H, W]`` or ``[B, 1, D, H, W]`` and a target of the
same shape in {0, 1}, applies the sigmoid itself and returns a scalar; Σ runs over the whole batch.

MONAI's ``SoftclDiceLoss`` is not used: older releases always dropped channel 0 (the background
of a softmax output), so a single sigmoid channel gave the constant 0; the installed 1.6 keeps it
by default but averages per sample instead of summing over the batch as §4 does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from skimage.morphology import skeletonize
from torch import nn

from retinaseg.errors import ConfigError
from retinaseg.losses.factory import build_loss
from retinaseg.losses.skeleton import ibp_skeleton, soft_dilate, soft_skeleton
from retinaseg.losses.standard import BCELoss, SoftDiceLoss
from retinaseg.registry import LOSSES

__all__ = ["ComboLoss", "DiceClDiceLoss", "IBPClDiceLoss", "SkeletonRecallLoss", "SoftClDiceLoss",
           "cldice_loss", "soft_dice_loss"]


# ----------------------------------------------------------------------------------------------
# Functional forms
# ----------------------------------------------------------------------------------------------


def soft_dice_loss(p: torch.Tensor, g: torch.Tensor, smooth: float) -> torch.Tensor:
    """1 − (2Σpg + smooth)/(Σp + Σg + smooth) over the whole batch.

    Args:
        p: probabilities ``[B, 1, ...]``.
        g: target in {0, 1}, same shape.
        smooth: ε added to numerator and denominator.
    """
    return 1 - (2 * (p * g).sum() + smooth) / (p.sum() + g.sum() + smooth)


def cldice_loss(p: torch.Tensor, g: torch.Tensor, skel_p: torch.Tensor, skel_g: torch.Tensor,
                smooth: float = 1.0) -> torch.Tensor:
    """clDice loss 1 − 2·Tprec·Tsens/(Tprec + Tsens) from given skeletons (§4).

    Tprec = (ΣS(p)·g + smooth)/(ΣS(p) + smooth), Tsens = (ΣS(g)·p + smooth)/(ΣS(g) + smooth).

    Args:
        p: probabilities ``[B, 1, ...]``; g: target, same shape.
        skel_p: skeleton of ``p``; skel_g: skeleton of ``g`` (same shape).
        smooth: ε of both ratios (1 in S3-OCTA).
    """
    tprec = ((skel_p * g).sum() + smooth) / (skel_p.sum() + smooth)
    tsens = ((skel_g * p).sum() + smooth) / (skel_g.sum() + smooth)
    return 1 - 2 * tprec * tsens / (tprec + tsens)


# ----------------------------------------------------------------------------------------------
# clDice family
# ----------------------------------------------------------------------------------------------


@LOSSES.register("cldice")
class SoftClDiceLoss(nn.Module):
    """Soft clDice loss L_cl with the clDice min/max-pool soft skeleton (§4).

    Args:
        iters: soft-skeleton iterations (10 in S3-OCTA).
        smooth: ε of Tprec and Tsens (1 in S3-OCTA).
    """

    def __init__(self, iters: int = 10, smooth: float = 1.0) -> None:
        super().__init__()
        self.iters, self.smooth = iters, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, g = torch.sigmoid(logits.float()), target.float()
        skel_p, skel_g = soft_skeleton(p, self.iters), soft_skeleton(g, self.iters)
        return cldice_loss(p, g, skel_p, skel_g, self.smooth)


@LOSSES.register("dice_cldice")
class DiceClDiceLoss(nn.Module):
    """S3-OCTA ``Soft_Dice_clDice``: (1 − alpha)·softDice + alpha·L_cl (alpha 0.5, smooth 1).

    Args:
        iters: soft-skeleton iterations.
        alpha: weight of L_cl; the Dice term gets 1 − alpha.
        smooth: ε of the Dice and of Tprec/Tsens.
    """

    def __init__(self, iters: int = 10, alpha: float = 0.5, smooth: float = 1.0) -> None:
        super().__init__()
        self.cl = SoftClDiceLoss(iters, smooth)
        self.alpha, self.smooth = alpha, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = soft_dice_loss(torch.sigmoid(logits.float()), target.float(), self.smooth)
        return (1 - self.alpha) * dice + self.alpha * self.cl(logits, target)


@LOSSES.register("ibp_cldice")
class IBPClDiceLoss(nn.Module):
    """S3-OCTA default "IBP_clDice": (1 − alpha)·Dice(ε=1e-6) + alpha·L_cl with IBP skeletons.

    Both skeletons come from :func:`~retinaseg.losses.skeleton.ibp_skeleton` (§3): the
    prediction's with stochastic binarisation (straight-through gradients), the label's
    deterministically and without gradient (a binary label gives the same skeleton either way).

    Args:
        iters: IBP peeling iterations (5 in S3-OCTA).
        alpha: weight of L_cl (0.5); the Dice term gets 1 − alpha.
        smooth: ε of Tprec and Tsens (1).
        dice_eps: ε of the Dice term (1e-6).
        beta, tau: noise scale and temperature of the stochastic binarisation.
        stochastic: False thresholds the prediction at 0.5 instead of drawing noise.
        strict_3d: exact simple-point test in 3D (see ``losses.skeleton``); False is the
            Euler-only S3-OCTA variant.
        early_stop: stop peeling after an iteration that deletes nothing (same skeletons;
            the prediction's gradient then lacks the idle iterations' terms, see
            :func:`~retinaseg.losses.skeleton.ibp_skeleton`); False runs all ``iters``.
        deletion: ``"product"`` (default: same skeletons as the reference, the gradient of a
            kept pixel passes whole) or ``"min"`` (the reference's, whose ties scale it by
            about 2^−passes; at α 0.5 from scratch it collapsed); see
            :func:`~retinaseg.losses.skeleton.ibp_skeleton`.
    """

    def __init__(self, iters: int = 5, alpha: float = 0.5, smooth: float = 1.0,
                 dice_eps: float = 1e-6, beta: float = 0.33, tau: float = 1.0,
                 stochastic: bool = True, strict_3d: bool = True,
                 early_stop: bool = True, deletion: str = "product") -> None:
        super().__init__()
        if deletion not in ("min", "product"):
            raise ConfigError(f"ibp_cldice: deletion must be 'min' or 'product', not "
                              f"{deletion!r}")
        self.iters, self.alpha, self.smooth, self.dice_eps = iters, alpha, smooth, dice_eps
        self.beta, self.tau, self.stochastic, self.strict_3d = beta, tau, stochastic, strict_3d
        self.early_stop, self.deletion = early_stop, deletion

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, g = torch.sigmoid(logits.float()), target.float()
        skel_p = ibp_skeleton(p, self.iters, self.beta, self.tau, self.stochastic,
                              strict_3d=self.strict_3d, early_stop=self.early_stop,
                              deletion=self.deletion)
        with torch.no_grad():  # no gradient: early stopping changes nothing here
            skel_g = ibp_skeleton(g, self.iters, stochastic=False, strict_3d=self.strict_3d)
        cl = cldice_loss(p, g, skel_p, skel_g, self.smooth)
        return (1 - self.alpha) * soft_dice_loss(p, g, self.dice_eps) + self.alpha * cl


# ----------------------------------------------------------------------------------------------
# Skeleton recall
# ----------------------------------------------------------------------------------------------


def tubed_skeleton(target: torch.Tensor, clip_to_target: bool = True) -> torch.Tensor:
    """Kirchhoff et al. (2024) "tubed" GT skeleton, computed per sample on the CPU.

    skimage ``skeletonize`` (2D, or Lee's 3D method) of each ``target[b, c]``, dilated by a
    3×3 (3×3×3) square element; with ``clip_to_target`` (as in the authors' code) the tube is
    intersected with the target so it never covers background.

    Args:
        target: ``[B, C, H, W]`` or ``[B, C, D, H, W]`` in {0, 1} (any device).

    Returns:
        Float tensor in {0, 1}, same shape and device as ``target``; no gradient.
    """
    mask = target.detach().cpu().numpy() > 0.5
    skel = np.zeros(mask.shape, dtype=np.float32)
    for idx in np.ndindex(*mask.shape[:2]):
        if mask[idx].any():
            skel[idx] = skeletonize(mask[idx])
    tube = soft_dilate(torch.from_numpy(skel)).to(target.device)
    return tube * (target > 0.5) if clip_to_target else tube


@LOSSES.register("skeleton_recall")
class SkeletonRecallLoss(nn.Module):
    """``dice_weight``·Dice + ``bce_weight``·BCE + ``weight``·L_SR, L_SR = 1 − Σ(p·T)/(ΣT + eps).

    T is :func:`tubed_skeleton` of the target (reference §4, "(inferred, Kirchhoff et al.
    2024)"); Dice and BCE are the registered ``dice`` and ``bce`` losses.

    Args:
        weight: weight of L_SR.
        dice_weight, bce_weight: weights of the Dice and BCE terms (0 disables).
        eps: ε of L_SR.
        smooth: ε of the Dice term.
        clip_to_target: intersect the tube with the target (see :func:`tubed_skeleton`).
    """

    def __init__(self, weight: float = 1.0, dice_weight: float = 1.0, bce_weight: float = 1.0,
                 eps: float = 1e-6, smooth: float = 1e-5, clip_to_target: bool = True) -> None:
        super().__init__()
        self.dice, self.bce = SoftDiceLoss(smooth), BCELoss()
        self.weight, self.dice_weight, self.bce_weight = weight, dice_weight, bce_weight
        self.eps, self.clip_to_target = eps, clip_to_target

    def recall_term(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L_SR alone (scalar)."""
        tube = tubed_skeleton(target, self.clip_to_target).float()
        return 1 - (torch.sigmoid(logits.float()) * tube).sum() / (tube.sum() + self.eps)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.weight * self.recall_term(logits, target)
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, target)
        if self.bce_weight:
            loss = loss + self.bce_weight * self.bce(logits, target)
        return loss


# ----------------------------------------------------------------------------------------------
# Combination of registered losses
# ----------------------------------------------------------------------------------------------


def _parse_term(i: int, term: Any) -> tuple[str, float, dict[str, Any]]:
    """Validate one ``{name, weight, params}`` entry of ``combo``; errors name the entry."""
    where = f"loss 'combo': terms[{i}]"
    if not isinstance(term, Mapping) or "name" not in term:
        raise ConfigError(f"{where} must be a mapping with a 'name' key, got {term!r}")
    extra = set(term) - {"name", "weight", "params"}
    if extra:
        raise ConfigError(f"{where} has unknown keys {sorted(extra)}; allowed: name, weight, "
                          "params")
    params = term.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}.params must be a mapping, got {params!r}")
    try:
        weight = float(term.get("weight", 1.0))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.weight must be a number, got {term['weight']!r}") from None
    if str(term["name"]) not in LOSSES:
        raise ConfigError(f"{where}: unknown loss '{term['name']}'; known: "
                          f"{', '.join(LOSSES.names())}")
    return str(term["name"]), weight, dict(params)


@LOSSES.register("combo")
class ComboLoss(nn.Module):
    """Σ weight_i · loss_i over registered losses, configured as a list of terms.

    Example config::

        loss: {name: combo, params: {terms: [{name: bce, weight: 1},
                                             {name: cldice, weight: 0.5, params: {iters: 10}}]}}

    Args:
        terms: non-empty sequence of mappings ``{name, weight=1, params={}}``.

    Raises:
        ConfigError: a malformed term, an unknown loss name or a bad parameter.
    """

    def __init__(self, terms: Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        if isinstance(terms, (str, Mapping)) or not isinstance(terms, Sequence) or not terms:
            raise ConfigError("loss 'combo': 'terms' must be a non-empty list of "
                              "{name, weight, params} mappings")
        parsed = [_parse_term(i, t) for i, t in enumerate(terms)]
        self.names = [name for name, _, _ in parsed]
        self.weights = [weight for _, weight, _ in parsed]
        self.losses = nn.ModuleList(build_loss(name, **params) for name, _, params in parsed)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        for weight, loss in zip(self.weights, self.losses):
            total = total + weight * loss(logits, target)
        return total


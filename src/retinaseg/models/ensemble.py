"""Ensemble: several trained networks of one architecture, averaged in probability space.

Reference: no seed method ships one; this is the cross-validated ensemble of the default fundus
model (``configs/fundus_vessels.yaml``, docs/models/selection-log.md). The members are usually the
``k`` models of a ``k``-fold cross-validation (:mod:`retinaseg.training.ensemble` builds the
file and chooses its threshold on out-of-fold predictions). The ensemble is an ordinary model:
it maps ``[B, C, H, W]`` to logits ``[B, K, H, W]`` and saves to one safetensors file, so the
whole toolkit (predict, evaluate, BatchNorm folding, bfloat16) uses it unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from retinaseg.errors import ConfigError
from retinaseg.models.factory import build_model
from retinaseg.registry import MODELS

EPS = 1e-6  # probabilities are clamped to [EPS, 1 - EPS] before the logit
FLIP_DIMS: dict[str, tuple[int, ...]] = {"none": (), "h": (-1,), "v": (-2,), "hv": (-2, -1)}
"""A member's input orientation: name → the tensor dims flipped (W for ``h``, H for ``v``)."""


def in_view(net: nn.Module, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``net`` on ``x`` flipped along ``dims``, its output flipped back (``dims=()``: plain)."""
    if not dims:
        return net(x)
    return torch.flip(net(torch.flip(x, dims)), dims)


class Flipped(nn.Module):
    """``net`` applied to a flipped input, its output flipped back: ``[B,C,H,W] → [B,K,H,W]``.

    With flips and rotations in training augmentation, a flipped view is as good as the
    original but not identical, so members that see different views disagree more, which an
    average can use (docs/models/selection-log.md).
    """

    def __init__(self, net: nn.Module, flip: str) -> None:
        super().__init__()
        if flip not in FLIP_DIMS:
            raise ValueError(f"member flip must be one of {sorted(FLIP_DIMS)}, not {flip!r}")
        self.net, self.dims = net, FLIP_DIMS[flip]
        self.size_multiple = int(getattr(net, "size_multiple", 1))  # inputs are padded to it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_view(self.net, x, self.dims)


@MODELS.register("ensemble")
class Ensemble(nn.Module):
    """Mean of the members' sigmoid probabilities, returned as a logit.

    Args:
        in_channels, out_channels: passed to every member (``member_params`` may hold
            ``out_channels`` instead, as a model with several heads stores it).
        member: registered name of the members' architecture.
        n_members: number of members (≥ 2).
        member_params: the members' parameters (as in ``model.params`` of their config).
        member_flips: per member, the view of the input it sees (``none``, ``h``, ``v``,
            ``hv``; :class:`Flipped`); None: all ``none``. Free diversity: the same number of
            passes as without.

    ``forward``: ``[B, C, H, W]`` → ``logit(mean_i sigmoid(member_i(x)))``, ``[B, K, H, W]``,
    float32 (also under bfloat16 autocast, so the average is not rounded).
    """

    def __init__(self, in_channels: int, out_channels: int = 1, member: str = "unet",
                 n_members: int = 2, member_params: dict[str, Any] | None = None,
                 member_flips: list[str] | None = None) -> None:
        super().__init__()
        if member == "ensemble":
            raise ConfigError("an ensemble's members cannot themselves be ensembles")
        if n_members < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, not {n_members}")
        params = {"out_channels": out_channels, **(member_params or {})}
        flips = list(member_flips or ["none"] * n_members)
        if len(flips) != n_members or any(f not in FLIP_DIMS for f in flips):
            raise ConfigError(f"member_flips needs one of {sorted(FLIP_DIMS)} per member "
                              f"({n_members}), got {member_flips}")
        self.members = nn.ModuleList(build_model(member, in_channels, **params)
                                     for _ in range(n_members))
        self.views = [FLIP_DIMS[f] for f in flips]
        self.size_multiple = int(getattr(self.members[0], "size_multiple", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob = torch.stack([torch.sigmoid(in_view(m, x, dims).float())
                            for m, dims in zip(self.members, self.views)]).mean(0)
        return torch.logit(prob.clamp(EPS, 1 - EPS))

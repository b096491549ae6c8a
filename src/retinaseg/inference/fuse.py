"""Inference-time graph work: BatchNorm folded into the convolution before it, and
TorchScript freezing (:class:`Frozen`, opt-in).

In eval mode a BatchNorm is a per-channel affine map, so ``BN(conv(x))`` equals one convolution
with rescaled weights and a shifted bias. On CPU the separate BatchNorm pass costs about a fifth
of a small U-Net's time (measured on ``fundus-vessels``: convolutions 1.7 s, BatchNorm 0.7 s of
3.9 s over 5 images, cProfile), so :class:`~retinaseg.inference.pipeline.Segmenter` folds them.

Folded pairs: a ``Conv2d``/``ConvTranspose2d`` directly followed by a ``BatchNorm2d`` inside an
``nn.Sequential`` (our ``unet``), or followed by an ``nn.Sequential`` whose first module is the
``BatchNorm2d`` (MONAI's ``Convolution`` = conv + ``ADN`` with the norm first). Anything else is
left as it is. Training is never affected: only a network in eval mode is folded.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _norm_slot(seq: nn.Sequential, name: str) -> tuple[nn.Module, str] | None:
    """(container, key) of the BatchNorm at ``seq[name]``, or first inside it; else None."""
    nxt = seq._modules[name]
    if isinstance(nxt, nn.BatchNorm2d):
        return seq, name
    if isinstance(nxt, nn.Sequential) and len(nxt) and isinstance(nxt[0], nn.BatchNorm2d):
        return nxt, next(iter(nxt._modules))
    return None


def _fusable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, CONVS) and isinstance(bn, nn.BatchNorm2d)
            and bn.track_running_stats and bn.running_mean is not None
            and conv.out_channels == bn.num_features)


def fold_batchnorm(net: nn.Module) -> int:
    """Fold every eligible BatchNorm of eval-mode ``net`` into its convolution, in place.

    Returns the number of folded pairs. Raises ``ValueError`` for a network in training mode.
    """
    if net.training:
        raise ValueError("fold_batchnorm needs a network in eval mode")
    count = 0
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, slot = seq._modules[a], _norm_slot(seq, b)
            if slot is None:
                continue
            holder, key = slot
            bn = holder._modules[key]
            if not _fusable(conv, bn):
                continue
            seq._modules[a] = fuse_conv_bn_eval(conv, bn,
                                                transpose=isinstance(conv, nn.ConvTranspose2d))
            holder._modules[key] = nn.Identity()
            count += 1
    return count


class Frozen(nn.Module):
    """A network traced and frozen with TorchScript, in float32 or bfloat16 weights.

    Freezing lets oneDNN fuse each convolution with the ReLU after it and drop the Python
    overhead between layers. ``bench_default_models`` (584×565 fundus, 2 threads, bfloat16):
    ``fundus-vessels`` 0.12-0.13 → 0.08-0.09 s per image, ``octa-vessels`` (400², hflip)
    0.021 → 0.018-0.020 s; in float32 it does not help. Tracing costs 0.5-3 s once, so
    it pays off over a batch of images, not for one.
    ``net`` itself is converted in place (dtype, and channels-last for bfloat16); tracing
    failures raise :class:`~retinaseg.errors.ModelLoadError`.

    ``forward``: ``[B, C, H, W]`` float32 (any size the network accepts) → float32 logits; the
    input is cast to the frozen dtype inside.
    """

    def __init__(self, net: nn.Module, in_channels: int, bf16: bool) -> None:
        import warnings

        super().__init__()
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.size_multiple = int(getattr(net, "size_multiple", 1))
        from retinaseg.errors import ModelLoadError

        side = max(self.size_multiple, 16) * 2
        device = next(net.parameters()).device
        example = torch.zeros(1, in_channels, side, side, dtype=self.dtype, device=device)
        if bf16:
            net = net.to(memory_format=torch.channels_last)
            example = example.contiguous(memory_format=torch.channels_last)
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python
                self.graph = torch.jit.freeze(torch.jit.trace(net.to(self.dtype).eval(),
                                                              example))
        except (RuntimeError, TypeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelLoadError(f"this model cannot be frozen with TorchScript (--jit): "
                                 f"{first}") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.graph(x.to(self.dtype)).float()

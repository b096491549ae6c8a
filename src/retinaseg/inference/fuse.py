"""Inference-time graph work: BatchNorm folded into the convolution before it, and
TorchScript freezing (:class:`Frozen`).

In eval mode a BatchNorm is a per-channel affine map, so ``BN(conv(x))`` equals one convolution
with rescaled weights and a shifted bias. On CPU the separate BatchNorm pass costs about a fifth
of a small U-Net's time (measured on ``fundus-vessels``: convolutions 1.7 s, BatchNorm 0.7 s of
3.9 s over 5 images, cProfile), so :class:`~retinaseg.inference.segmenter.Segmenter` folds them.

Folded pairs: a ``Conv2d``/``ConvTranspose2d`` directly followed by a ``BatchNorm2d`` inside an
``nn.Sequential`` (our ``unet``), or followed by an ``nn.Sequential`` whose first module is the
``BatchNorm2d`` (MONAI's ``Convolution`` = conv + ``ADN`` with the norm first). Anything else is
left as it is. Training is never affected: only a network in eval mode is folded.
"""

from __future__ import annotations

import copy

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
    overhead between layers. Per image, ``fundus-vessels`` in bfloat16 ran 1.1-1.3x faster on
    a 2-core AMD EPYC and 1.4-1.6x on an Intel Xeon with AMX; in float32 the gain was within
    run-to-run noise, and the smaller ``octa-vessels`` is about the same either way
    (``benchmarks/speed/inference.py``, ``benchmarks/RESULTS.md``). Tracing costs 0.5-3 s once
    per model.

    Tracing records one run, so a network whose Python code turns the input's size into
    constants would be wrong at other sizes. The frozen graph is therefore checked once against
    the network on a non-square input of another size than the traced one; a mismatch raises
    :class:`~retinaseg.errors.ModelLoadError`, as does a tracing failure. ``net`` itself is
    left as it was (a copy is converted and traced), so a caller can fall back to it.

    ``forward``: ``[B, C, H, W]`` float32 (any size the network accepts) → float32 logits; the
    input is cast to the frozen dtype inside.
    """

    def __init__(self, net: nn.Module, in_channels: int, bf16: bool) -> None:
        super().__init__()
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.size_multiple = int(getattr(net, "size_multiple", 1))
        side = max(self.size_multiple, 16) * 2
        device = next(net.parameters()).device
        example = torch.zeros(1, in_channels, side, side, dtype=self.dtype, device=device)
        net = copy.deepcopy(net).to(self.dtype).eval()
        if bf16:
            net = net.to(memory_format=torch.channels_last)
            example = example.contiguous(memory_format=torch.channels_last)
        self.graph = _trace(net, example)
        _verify(net, self, (in_channels, side, side + max(self.size_multiple, 8)), device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.graph(x.to(self.dtype)).float()


def _cannot(reason: str) -> Exception:
    from retinaseg.errors import ModelLoadError

    return ModelLoadError(f"this model cannot be frozen with TorchScript: {reason}")


def _trace(net: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.freeze(torch.jit.trace(net, example))``, failures as ModelLoadError."""
    import warnings

    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python
            return torch.jit.freeze(torch.jit.trace(net, example))
    except (RuntimeError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _cannot(first) from None


def _verify(net: nn.Module, frozen: Frozen, chw: tuple[int, int, int],
            device: torch.device) -> None:
    """Raise unless ``frozen`` matches ``net`` on a seeded random batch of two ``chw`` inputs.

    Float32 must agree to 1e-4 in probability; bfloat16 (other rounding order after fusion)
    to 0.01 in mean and 0.25 at worst. A graph that baked in the traced size fails outright or
    gives another shape, so loose bfloat16 limits still catch it.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *chw, generator=gen).to(device)  # batch 2, as flip TTA runs
    try:
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            want = torch.sigmoid(net(x.to(frozen.dtype)).float())
            got = torch.sigmoid(frozen(x))
    except RuntimeError as err:
        raise _cannot(f"the traced graph fails at another input size "
                      f"({str(err).strip().splitlines()[0]})") from None
    diff = (got - want).abs() if got.shape == want.shape else None
    fp32 = frozen.dtype == torch.float32
    if diff is None or (diff.max() > 1e-4 if fp32 else
                        (diff.mean() > 0.01 or diff.max() > 0.25)):
        raise _cannot("the traced graph gives other maps than the network at another input "
                      "size (shape-dependent Python code)")

"""ResNeSt encoder (reference §5): split attention, feature shapes, ImageNet weight loading."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from retinaseg.errors import ModelLoadError
from retinaseg.models.resnest import (
    ResNeSt,
    SplitAttentionConv2d,
    build_resnest,
    load_imagenet_weights,
    radix_softmax,
)


def test_radix_softmax_sums_to_one_over_radix():
    torch.manual_seed(0)
    for radix, card in [(2, 1), (2, 2), (4, 2)]:
        a = radix_softmax(torch.randn(3, radix * 8) * 5, radix, card)
        assert a.shape == (3, radix, 8)
        assert torch.allclose(a.sum(1), torch.ones(3, 8), atol=1e-6)
    a = radix_softmax(torch.tensor([[0.0, 2.0]]), 1, 1)  # R = 1: a sigmoid gate
    assert torch.allclose(a, torch.sigmoid(torch.tensor([[[0.0, 2.0]]])))


def test_radix_softmax_channel_order_follows_grouped_fc2():
    """fc2 with G groups writes (G, R, C/G); the result is (R, C) with C in group order."""
    radix, card, per = 2, 2, 3
    logits = torch.zeros(1, card, radix, per)
    logits[0, 1, 0, 2] = 10.0  # group 1, radix 0, channel 2 of the group → channel 5
    a = radix_softmax(logits.reshape(1, -1), radix, card)
    assert a[0, 0, 5] > 0.99 and a[0, 1, 5] < 0.01
    others = torch.cat([a[0, :, :5], a[0, :, 6:]], 1)
    assert torch.allclose(others, torch.full_like(others, 0.5))


def test_splat_output_is_attention_weighted_sum_of_splits():
    torch.manual_seed(1)
    m = SplitAttentionConv2d(8, 8, groups=2, radix=2).eval()
    for bn in (m.bn0, m.bn1):  # non-trivial BN statistics
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 8, 6, 5)
    with torch.no_grad():
        u = torch.relu(m.bn0(m.conv(x)))
        splits = u.reshape(2, 2, 8, 6, 5)
        a = m.attention(splits.sum(1))
        ref = a[:, 0, :, None, None] * splits[:, 0] + a[:, 1, :, None, None] * splits[:, 1]
        out = m(x)
    assert m.fc1.out_channels == 32  # max(8·2/4, 32)
    assert torch.allclose(a.sum(1), torch.ones(2, 8), atol=1e-6)
    assert out.shape == (2, 8, 6, 5) and torch.allclose(out, ref, atol=1e-6)


def test_splat_fc1_width_follows_reference():
    assert SplitAttentionConv2d(256, 256, radix=2).fc1.out_channels == 128  # 256·2/4
    assert SplitAttentionConv2d(32, 32, radix=2).fc1.out_channels == 32  # floor at 32


def test_forward_features_shapes_cpu_preset():
    enc = build_resnest(3, "cpu").eval()
    with torch.no_grad():
        feats = enc.forward_features(torch.rand(1, 3, 64, 64))
    assert enc.channels == [32, 64, 128, 256, 384]
    assert [tuple(f.shape[1:]) for f in feats] == [
        (32, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4), (384, 2, 2)]


def test_strided_block_has_avd_after_splat_and_avg_down_shortcut():
    enc = build_resnest(3, "cpu")
    blk = enc.layer2[0]
    assert blk.conv2.conv.stride == (1, 1) and blk.avd_layer.stride == 2
    assert isinstance(blk.downsample[0], torch.nn.AvgPool2d)
    assert enc.layer1[0].avd_layer is None and isinstance(enc.layer1[0].downsample[0],
                                                          torch.nn.Identity)


def _official_state(enc: ResNeSt) -> dict[str, torch.Tensor]:
    """A checkpoint as the official ResNeSt / timm resnest50d would name it (our names are
    theirs), with a classifier and random values."""
    torch.manual_seed(2)
    state = {k: (torch.randn_like(v) if v.is_floating_point() else v.clone())
             for k, v in enc.state_dict().items()}
    state["fc.weight"] = torch.randn(10, enc.channels[-1])
    state["fc.bias"] = torch.randn(10)
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_load_imagenet_weights_roundtrip(tmp_path, suffix):
    src = build_resnest(3, "cpu")
    state = _official_state(src)
    path = tmp_path / f"resnest{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:  # a DataParallel-style prefix and a wrapping dict, as many .pth checkpoints have
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    enc = build_resnest(3, "cpu")
    n = load_imagenet_weights(enc, path)
    assert n == len(enc.state_dict())
    for k, v in enc.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_load_without_batch_counters(tmp_path):
    """timm-exported checkpoints may omit ``num_batches_tracked``."""
    enc = build_resnest(3, "cpu")
    state = {k: v for k, v in _official_state(enc).items() if "num_batches" not in k}
    save_file(state, str(tmp_path / "w.safetensors"))
    n = load_imagenet_weights(build_resnest(3, "cpu"), tmp_path / "w.safetensors")
    assert n == len(state) - 2  # fc.weight, fc.bias dropped


def test_one_channel_input_sums_first_conv(tmp_path):
    state = _official_state(build_resnest(3, "cpu"))
    save_file(state, str(tmp_path / "w.safetensors"))
    enc = build_resnest(1, "cpu")
    load_imagenet_weights(enc, tmp_path / "w.safetensors")
    w = enc.state_dict()["conv1.0.weight"]
    assert w.shape[1] == 1 and torch.allclose(w, state["conv1.0.weight"].sum(1, keepdim=True))


def test_wrong_shape_names_the_key(tmp_path):
    state = _official_state(build_resnest(3, "cpu"))
    state["layer2.0.conv2.fc1.weight"] = torch.zeros(3, 3, 1, 1)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelLoadError, match="wrong shape.*layer2.0.conv2.fc1.weight"):
        load_imagenet_weights(build_resnest(3, "cpu"), tmp_path / "w.safetensors")


def test_missing_or_extra_tensors_refused(tmp_path):
    enc = build_resnest(3, "cpu")
    state = _official_state(enc)
    del state["layer1.0.bn3.weight"]
    save_file(state, str(tmp_path / "a.safetensors"))
    with pytest.raises(ModelLoadError, match="lack tensor 'layer1.0.bn3.weight'"):
        load_imagenet_weights(enc, tmp_path / "a.safetensors")
    state = _official_state(enc)
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "b.safetensors"))
    with pytest.raises(ModelLoadError, match="layer5.0.conv1.weight"):
        load_imagenet_weights(enc, tmp_path / "b.safetensors")


class _NeedsCode:
    def __init__(self) -> None:
        self.w = torch.zeros(2)


def test_pickle_needing_code_and_other_files_refused(tmp_path):
    enc = build_resnest(3, "cpu")
    bad = tmp_path / "obj.pth"
    torch.save({"model": _NeedsCode()}, bad)
    with pytest.raises(ModelLoadError, match="needs code") as err:
        load_imagenet_weights(enc, bad)
    assert "\n" not in str(err.value)
    other = tmp_path / "w.pkl"
    other.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelLoadError, match=".safetensors, .pth or .pt"):
        load_imagenet_weights(enc, other)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_imagenet_weights(enc, tmp_path / "missing.safetensors")

"""Registered models build, run on odd sizes via padding, and round-trip through safetensors."""

from __future__ import annotations

import pytest
import torch

from retinaseg.errors import ModelLoadError
from retinaseg.models import build_model
from retinaseg.models.persistence import ModelSpec, load_model, read_spec, save_model
from retinaseg.registry import MODELS


@pytest.mark.parametrize("name", ["unet", "monai_unet", "basic_unet", "dynunet"])
def test_forward_shape(name: str) -> None:
    net = build_model(name, 3).eval()
    m = net.size_multiple
    with torch.no_grad():
        y = net(torch.zeros(2, 3, 2 * m, 3 * m))
    assert y.shape == (2, 1, 2 * m, 3 * m)


def test_unet_depth_width_and_up_modes() -> None:
    for up in ("transpose", "upsample", "bilinear"):
        net = build_model("unet", 1, depth=2, width=4, up=up, norm="none", dropout=0.2)
        assert net.size_multiple == 4
        assert net(torch.zeros(1, 1, 12, 20)).shape == (1, 1, 12, 20)
    assert sum(p.numel() for p in build_model("unet", 1, depth=2, width=8).parameters()) > \
        sum(p.numel() for p in build_model("unet", 1, depth=2, width=4).parameters())


def test_registry_lists_models() -> None:
    assert {"unet", "monai_unet", "basic_unet", "dynunet"} <= set(MODELS.names())


def test_safetensors_roundtrip(tmp_path) -> None:
    net = build_model("unet", 1, depth=2, width=4).eval()
    spec = ModelSpec("unet", 1, {"depth": 2, "width": 4}, preprocess="none", threshold=0.42)
    path = save_model(tmp_path / "m.safetensors", net, spec)
    assert read_spec(path).threshold == pytest.approx(0.42)
    net2, spec2 = load_model(path)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x), net2(x))
    assert spec2.params == {"depth": 2, "width": 4}


def test_pickle_files_are_refused(tmp_path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(bad)


def test_wrong_architecture_is_clear_error(tmp_path) -> None:
    net = build_model("unet", 1, depth=2, width=4)
    spec = ModelSpec("unet", 1, {"depth": 2, "width": 8})  # claims another width
    path = save_model(tmp_path / "m.safetensors", net, spec)
    with pytest.raises(ModelLoadError, match="do not fit model 'unet'"):
        load_model(path)


def test_not_a_safetensors_file(tmp_path) -> None:
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        load_model(p)


def test_inference_pooling_equals_max_pool2d_and_training_keeps_it(monkeypatch) -> None:
    import retinaseg.models.unet as unet

    x = torch.randn(2, 3, 10, 14)
    assert torch.equal(unet.max_pool2x2(x), torch.nn.functional.max_pool2d(x, 2))
    assert unet.max_pool2x2(torch.randn(1, 1, 7, 9)).shape == (1, 1, 3, 4)  # odd: floors
    net = build_model("unet", 1, depth=2, width=4)
    img = torch.randn(1, 1, 16, 16)
    calls: list[int] = []
    original = unet.max_pool2x2
    monkeypatch.setattr(unet, "max_pool2x2", lambda t, k=2: calls.append(1) or original(t, k))
    net.train()
    net(img)
    assert calls == []  # training: max_pool2d and its gradient
    net.eval()
    with torch.no_grad():
        fast = net(img)
        assert len(calls) == 2  # one per level
        monkeypatch.setattr(unet, "max_pool2x2", torch.nn.functional.max_pool2d)
        assert torch.equal(fast, net(img))

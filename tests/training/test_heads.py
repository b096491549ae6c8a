"""Models with several output heads, one per label convention (``model.heads``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from retinaseg.errors import ConfigError, ModelLoadError
from retinaseg.models import build_model
from retinaseg.models.persistence import ModelSpec, read_spec, save_model
from retinaseg.training.config import SamplingConfig, validate_config
from retinaseg.training.data import Item, PatchSampler
from retinaseg.training.trainer import expand_heads, select_heads

TWO_SOURCES = """
name: heads
seed: 1
runs_dir: {runs}
data:
  dataset: synthetic
  train_split: train
  val_split: val
  head: {head_a}
  options: {{kind: octa, n: 4, size: 64}}
  preprocess: [{{name: grey}}, {{name: standardise}}]
  extra:
    - {{dataset: synthetic, train_split: train, val_split: val, head: b,
       options: {{kind: octa, n: 3, size: 64}}}}
sampling: {{mode: patch, patch_size: 32, patches_per_image: 2, batch_size: 4}}
augment: {{prob: 0}}
model: {{name: unet, params: {{depth: 2, width: 4}}, heads: [a, b]{init}}}
optim: {{name: adamw, lr: 0.01}}
train: {{epochs: 2, val_every: 1, threads: 1}}
"""


def _raw(**changes) -> dict:
    raw = {"data": {"dataset": "synthetic", "head": "a",
                    "extra": [{"dataset": "synthetic", "head": "b"}]},
           "model": {"name": "unet", "heads": ["a", "b"]}}
    for key, value in changes.items():
        section, name = key.split("__")
        raw[section][name] = value
    return raw


def test_config_accepts_heads_and_names_each_dataset_head() -> None:
    cfg = validate_config(_raw())
    assert cfg.model.heads == ["a", "b"]
    assert [s.head for s in cfg.data.sources()] == ["a", "b"]


@pytest.mark.parametrize(("changes", "words"), [
    ({"data__head": "c"}, "data.head 'c' is not one of model.heads"),
    ({"model__heads": ["a", "a"]}, "distinct"),
    ({"model__params": {"out_channels": 2}}, "out_channels is set by model.heads"),
    ({"model__heads": None}, "needs model.heads"),
])
def test_config_rejects_inconsistent_heads(changes: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        validate_config(_raw(**changes))


def test_expand_heads_repeats_single_dims_and_keeps_square_heads_apart() -> None:
    w = torch.arange(6.0).view(6, 1, 1, 1)            # 6 features → 1 output
    assert torch.equal(expand_heads(w, (6, 2, 1, 1)), torch.cat([w, w], 1))
    b = torch.tensor([0.5])
    assert torch.equal(expand_heads(b, (3,)), torch.full((3,), 0.5))
    sq = torch.full((1, 1, 3, 3), 2.0)                # head → head convolution
    out = expand_heads(sq, (2, 2, 3, 3))
    assert torch.equal(out[0, 0], sq[0, 0]) and torch.equal(out[1, 1], sq[0, 0])
    assert not out[0, 1].any() and not out[1, 0].any()
    assert expand_heads(torch.zeros(2, 1), (3, 1)) is None  # a dim that is not 1 cannot grow
    assert expand_heads(torch.zeros(1, 1, 3), (2, 2, 3, 3)) is None


def test_select_heads_picks_each_samples_channel() -> None:
    logits = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    out = select_heads(logits, torch.tensor([2, 0]))
    assert out.shape == (2, 1, 2, 2)
    assert torch.equal(out[0, 0], logits[0, 2]) and torch.equal(out[1, 0], logits[1, 0])
    one = torch.zeros(2, 1, 2, 2)
    assert select_heads(one, torch.tensor([0, 0])) is one


def test_only_the_selected_head_gets_gradient() -> None:
    net = build_model("unet", 1, out_channels=2, depth=2, width=4)
    x, y = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        select_heads(net(x), torch.tensor([0, 0])), y)
    loss.backward()
    g = net.head.weight.grad
    assert g[0].abs().sum() > 0 and g[1].abs().sum() == 0


def test_sampler_yields_the_head_of_each_patch() -> None:
    items = [Item(f"i{k}", np.full((1, 32, 32), k, np.float32), np.zeros((32, 32), bool),
                  np.ones((32, 32), bool), head=k % 2) for k in range(4)]
    sampler = PatchSampler(items, SamplingConfig(patch_size=16, patches_per_image=3,
                                                 batch_size=5, inside_fov=True), None)
    for x, _y, _f, head in sampler.epoch(seed=0):
        assert head.dtype == torch.int64
        assert torch.equal(head, (x[:, 0, 8, 8].round().long() % 2))  # image k has head k % 2


@pytest.fixture(scope="module")
def two_head_run(tmp_path_factory) -> dict:
    from retinaseg.training import train

    tmp = tmp_path_factory.mktemp("heads")
    cfg = tmp / "heads.yaml"
    cfg.write_text(TWO_SOURCES.format(runs=tmp / "runs", head_a="a", init=""))
    return train(cfg)


def test_training_records_a_threshold_and_datasets_per_head(two_head_run: dict) -> None:
    spec = read_spec(Path(two_head_run["run_dir"]) / "best.safetensors")
    assert [h["name"] for h in spec.heads] == ["a", "b"]
    assert all(0 < h["threshold"] < 1 for h in spec.heads)
    assert spec.heads[0]["trained_on"] == ["synthetic"]
    assert spec.params["out_channels"] == 2 and spec.threshold == spec.heads[0]["threshold"]


def test_one_output_model_starts_every_head_as_its_copy(tmp_path: Path) -> None:
    """Fine-tuning a one-output model into two heads: before training both heads equal it."""
    from retinaseg.training.config import load_config
    from retinaseg.training.trainer import _init_weights

    src = build_model("unet", 1, depth=2, width=4).eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_model(tmp_path / "one.safetensors", src,
               ModelSpec(name="unet", in_channels=1, params={"depth": 2, "width": 4},
                         preprocess=[{"name": "grey"}, {"name": "standardise"}]))
    cfg_path = tmp_path / "heads.yaml"
    cfg_path.write_text(TWO_SOURCES.format(runs=tmp_path / "runs", head_a="a",
                                           init=f", init: {tmp_path / 'one.safetensors'}"))
    cfg = load_config(cfg_path)
    net = build_model("unet", 1, out_channels=2, depth=2, width=4)
    _init_weights(net, cfg)
    net.eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        ref, both = src(x), net(x)
    assert torch.allclose(both[:, :1], ref) and torch.allclose(both[:, 1:], ref)


def _two_head_file(path: Path) -> Path:
    """A two-head model whose head ``b`` is head ``a`` shifted by +4 logits."""
    net = build_model("unet", 1, out_channels=2, depth=2, width=4).eval()
    with torch.no_grad():
        net.head.weight[1] = net.head.weight[0]
        net.head.bias[1] = net.head.bias[0] + 4.0
    spec = ModelSpec(name="unet", in_channels=1, params={"depth": 2, "width": 4,
                                                         "out_channels": 2},
                     preprocess=[{"name": "grey"}, {"name": "standardise"}], threshold=0.3,
                     modality="octa",
                     heads=[{"name": "a", "threshold": 0.3, "trained_on": ["octa500"]},
                            {"name": "b", "threshold": 0.7, "trained_on": ["rossa"]}])
    return save_model(path, net, spec)


def test_segmenter_uses_the_named_head_and_its_threshold(tmp_path: Path) -> None:
    from retinaseg.inference.segmenter import Segmenter

    path = _two_head_file(tmp_path / "two.safetensors")
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    a, b = Segmenter(path, head="a"), Segmenter(path, head="b")
    pa, pb = a(img), b(img)
    assert (pb > pa).all()  # +4 logits everywhere
    assert (a.threshold, b.threshold) == (0.3, 0.7) and b.head_name == "b"
    assert Segmenter(path).head_name == "a"  # default: the first head
    np.testing.assert_allclose(Segmenter(path)(img), pa)


def test_unknown_head_is_one_clear_error(tmp_path: Path) -> None:
    from retinaseg.inference.segmenter import Segmenter

    path = _two_head_file(tmp_path / "two.safetensors")
    with pytest.raises(ModelLoadError, match="has no head 'c'; its heads: a, b"):
        Segmenter(path, head="c")
    with pytest.raises(ModelLoadError, match="none .the model has one output"):
        Segmenter("fundus-vessels", head="a")


def test_head_for_finds_the_head_trained_on_a_dataset(tmp_path: Path) -> None:
    spec = read_spec(_two_head_file(tmp_path / "two.safetensors"))
    assert spec.head_for("rossa") == "b" and spec.head_for("octa500") == "a"
    assert spec.head_for("drive") is None


def test_cli_predict_with_head_and_a_bad_head(tmp_path: Path) -> None:
    import csv

    from retinaseg.cli import main
    from retinaseg.io import write_png

    path = _two_head_file(tmp_path / "two.safetensors")
    write_png(tmp_path / "img.png", np.random.default_rng(1).random((32, 32)))
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "img.png"), "--model", str(path), "--out", str(out),
                 "--head", "b"]) in (0, None)
    row = next(csv.DictReader((out / "predictions.csv").open()))
    assert row["head"] == "b" and float(row["threshold"]) == 0.7
    assert main(["predict", str(tmp_path / "img.png"), "--model", str(path), "--out",
                 str(tmp_path / "o2"), "--head", "zzz"]) == 2


def test_evaluate_scores_a_dataset_with_the_head_trained_on_it(tmp_path: Path) -> None:
    import json

    from retinaseg.evaluation.evaluate import evaluate

    net = build_model("unet", 1, out_channels=2, depth=2, width=4).eval()
    spec = ModelSpec(name="unet", in_channels=1, params={"depth": 2, "width": 4,
                                                         "out_channels": 2},
                     preprocess=[{"name": "grey"}], modality="octa",
                     heads=[{"name": "a", "threshold": 0.5, "trained_on": ["octa500"]},
                            {"name": "b", "threshold": 0.6, "trained_on": ["synthetic"]}])
    path = save_model(tmp_path / "two.safetensors", net, spec)
    opts = {"kind": "octa", "n": 2, "size": 32}
    s = evaluate(path, "synthetic", None, "test", tmp_path / "ev", options=opts,
                 save_maps=False)
    assert s["head"] == "b" and s["threshold"] == 0.6
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["head"] == "b"
    forced = evaluate(path, "synthetic", None, "test", tmp_path / "ev2", options=opts,
                      save_maps=False, head="a")
    assert forced["head"] == "a" and forced["threshold"] == 0.5

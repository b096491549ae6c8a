"""k-fold validation folds, the ensemble model and the out-of-fold ensemble builder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from retinaseg.errors import ConfigError
from retinaseg.training import train
from retinaseg.training.data import Item, carve_validation
from tests.training.test_trainer import _config


def _items(n: int) -> list[Item]:
    z = np.zeros((1, 4, 4), np.float32)
    return [Item(f"im{i}", z, z[0] > 0, None) for i in range(n)]


def test_folds_cover_every_image_once() -> None:
    items = _items(20)
    vals = [carve_validation(items, 0.2, 0, folds=5, fold=k)[1] for k in range(5)]
    ids = [it.id for v in vals for it in v]
    assert sorted(ids) == sorted(it.id for it in items)  # each image held out exactly once
    assert [len(v) for v in vals] == [4] * 5
    train, val = carve_validation(items, 0.2, 0, folds=5, fold=2)
    assert not {it.id for it in train} & {it.id for it in val} and len(train) == 16
    # fold 0 of 5 is the 0.2 carve of the same seed (the bundle's validation images)
    assert [it.id for it in vals[0]] == [it.id for it in carve_validation(items, 0.2, 0)[1]]
    assert [len(carve_validation(_items(7), 0.2, 1, folds=3, fold=k)[1])
            for k in range(3)] == [3, 2, 2]


def test_fold_errors(tmp_path: Path) -> None:
    from retinaseg.training.config import load_config

    with pytest.raises(ConfigError, match="only 3 training images"):
        carve_validation(_items(3), 0.2, 0, folds=5, fold=0)
    with pytest.raises(ConfigError, match="fold must be below"):
        load_config(_config(tmp_path), overrides=["data.folds=3", "data.fold=3"])
    with pytest.raises(ConfigError, match="data.fold needs data.folds"):
        load_config(_config(tmp_path), overrides=["data.fold=1"])


def test_ensemble_averages_probabilities() -> None:
    from retinaseg.models import build_model

    torch.manual_seed(0)
    ens = build_model("ensemble", 1, member="unet", n_members=3,
                      member_params={"depth": 2, "width": 4}).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        want = torch.stack([torch.sigmoid(m(x)) for m in ens.members]).mean(0)
        got = torch.sigmoid(ens(x))
    assert got.shape == (2, 1, 16, 16) and ens.size_multiple == ens.members[0].size_multiple
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ConfigError, match="at least 2 members"):
        build_model("ensemble", 1, member="unet", n_members=1)


def test_member_flips_show_each_member_its_own_view() -> None:
    from retinaseg.models import build_model
    from retinaseg.models.ensemble import Flipped

    torch.manual_seed(1)
    ens = build_model("ensemble", 1, member="unet", n_members=4, member_flips=["none", "h", "v",
                      "hv"], member_params={"depth": 2, "width": 4}).eval()
    x = torch.randn(1, 1, 16, 20)
    with torch.no_grad():
        m = ens.members
        want = torch.stack([torch.sigmoid(m[0](x)),
                            torch.sigmoid(m[1](x.flip(-1)).flip(-1)),
                            torch.sigmoid(m[2](x.flip(-2)).flip(-2)),
                            torch.sigmoid(m[3](x.flip(-2, -1)).flip(-2, -1))]).mean(0)
        np.testing.assert_allclose(torch.sigmoid(ens(x)), want, atol=1e-6)
        np.testing.assert_allclose(Flipped(m[1], "h")(x), m[1](x.flip(-1)).flip(-1), atol=0)
        assert Flipped(m[1], "h").size_multiple == m[1].size_multiple == 4
        plain = torch.stack([torch.sigmoid(k(x)) for k in m]).mean(0)
        assert not torch.allclose(torch.sigmoid(ens(x)), plain, atol=1e-4)
    with pytest.raises(ConfigError, match="member_flips"):
        build_model("ensemble", 1, member="unet", n_members=2, member_flips=["none", "r90"])
    with pytest.raises(ConfigError, match="member_flips"):
        build_model("ensemble", 1, member="unet", n_members=2, member_flips=["h"])


@pytest.fixture(scope="module")
def folds(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("folds")
    cfg = _config(tmp, epochs=2)
    return [train(cfg, overrides=["data.folds=2", f"data.fold={k}", f"name=tiny_f{k}"])
            for k in range(2)]


def test_build_ensemble_out_of_fold(folds: list[dict], tmp_path: Path) -> None:
    from retinaseg.data.synthetic import make_octa_sample
    from retinaseg.inference import predict_probability
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.models.persistence import load_model, read_spec
    from retinaseg.training.ensemble import build_ensemble

    runs = [f["run_dir"] for f in folds]
    held = [read_spec(Path(r) / "best.safetensors") for r in runs]
    assert all("fold" in h.info["threshold_source"] for h in held)
    res = build_ensemble(runs, tmp_path / "ens.safetensors", progress=False)
    assert res["n_images"] == 6  # synthetic train split (n=6) cut into two folds of 3
    spec = read_spec(res["path"])
    assert spec.name == "ensemble" and spec.params["n_members"] == 2
    assert spec.threshold == pytest.approx(res["threshold"])
    assert "out-of-fold" in spec.info["threshold_source"]
    recs = spec.info["members"]
    assert [r["fold"] for r in recs] == [0, 1] and [r["folds"] for r in recs] == [2, 2]
    assert sum(r["n_val"] for r in recs) == 6
    image = make_octa_sample(64, seed=5)["image"]
    seg = Segmenter(res["path"], precision="fp32", fuse=False)
    x = seg.prepare(image)
    want = np.mean([predict_probability(load_model(r)[0], x) for r in runs], axis=0)
    np.testing.assert_allclose(seg(image), want, atol=1e-5)
    with pytest.raises(ConfigError, match="given twice"):
        build_ensemble([runs[0], runs[0]], tmp_path / "bad.safetensors", progress=False)


def _fake_member(run: str, ids: list[str]) -> SimpleNamespace:
    spec = SimpleNamespace(name="unet", in_channels=1, params={}, preprocess=[],
                           modality="octa")
    val = [SimpleNamespace(source="0:synthetic", id=i) for i in ids]
    return SimpleNamespace(run=run, spec=spec, val=val)


def test_members_validate_on_disjoint_or_identical_images() -> None:
    from retinaseg.training.ensemble import _check_compatible

    disjoint = [_fake_member("a", ["1", "2"]), _fake_member("b", ["3"])]
    same = [_fake_member("a", ["1", "2"]), _fake_member("b", ["2", "1"])]
    assert _check_compatible(disjoint) == "out_of_fold"  # type: ignore[arg-type]
    assert _check_compatible(same) == "shared"  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="both validate on '2'.*split_seed"):
        _check_compatible([_fake_member("a", ["1", "2"]),  # type: ignore[list-item]
                           _fake_member("b", ["2", "3"])])


SEEDS = ["data.val_split=train", "data.val_fraction=0.5", "data.split_seed=0"]


def test_split_seed_fixes_the_validation_carve(tmp_path: Path) -> None:
    from retinaseg.training.config import load_config
    from retinaseg.training.data import load_train_val

    cfg = _config(tmp_path, epochs=1)

    def held_out(seed: int, fixed: bool) -> list[str]:
        c = load_config(cfg, [f"seed={seed}", *(SEEDS if fixed else SEEDS[:2])])
        return sorted(it.id for it in load_train_val(c.data, c.seed)[1])

    assert held_out(1, fixed=False) != held_out(2, fixed=False)  # the seed moves the carve
    assert held_out(1, fixed=True) == held_out(2, fixed=True) == held_out(0, fixed=False)
    assert len(held_out(1, fixed=True)) == 3


def test_seed_ensemble_is_scored_on_the_images_no_member_saw(tmp_path: Path, capsys) -> None:
    from retinaseg.cli import main
    from retinaseg.evaluation.metrics import confusion_counts, threshold_metrics
    from retinaseg.inference import predict_probability
    from retinaseg.models.persistence import load_model, read_spec
    from retinaseg.training.config import load_config
    from retinaseg.training.data import load_train_val

    cfg = _config(tmp_path, epochs=2)
    runs = [train(cfg, overrides=[f"seed={s}", f"name=tiny_s{s}", *SEEDS])["run_dir"]
            for s in (1, 2)]
    out = tmp_path / "seeds.safetensors"
    main(["ensemble", *runs, "--out", str(out)])
    assert "validation images every member held out" in capsys.readouterr().out
    spec = read_spec(out)
    assert spec.info["validation_mode"] == "shared"
    assert "all 2 members held out" in spec.info["threshold_source"]
    c = load_config(cfg, ["seed=1", *SEEDS])
    val = load_train_val(c.data, c.seed)[1]
    nets = [load_model(Path(r) / "best.safetensors")[0] for r in runs]
    dice = []
    for it in val:  # the ensemble's probability is the mean of its members'
        p = np.mean([predict_probability(n, it.image) for n in nets], axis=0)
        dice.append(threshold_metrics(confusion_counts(p > spec.threshold, it.label,
                                                       it.fov))["dice"])
    assert spec.info["oof_dice_mean"] == pytest.approx(float(np.mean(dice)), abs=1e-5)
    _model_file_back_as_run(runs[0], cfg, tmp_path)


def _model_file_back_as_run(run: str, cfg: Path, tmp_path: Path) -> None:
    """tools/model_as_run.py: a model file becomes a run folder holding out the same images."""
    import sys

    from retinaseg.training.runs import load_member, run_finished

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from model_as_run import model_as_run

    model = Path(run) / "best.safetensors"
    out = model_as_run(str(model), cfg, tmp_path / "copied", ["seed=1", *SEEDS])
    assert run_finished(out)
    assert (out / "best.safetensors").read_bytes() == model.read_bytes()
    assert [it.id for it in load_member(out).val] == [it.id for it in load_member(run).val]
    with pytest.raises(ConfigError, match="holds out"):  # another carve than the model's
        model_as_run(str(model), cfg, tmp_path / "other", ["seed=1", *SEEDS[:2]])
    with pytest.raises(ConfigError, match="exists already"):
        model_as_run(str(model), cfg, out, ["seed=1", *SEEDS])


def test_ensemble_with_member_flips_keeps_them_in_file_and_threshold(
        folds: list[dict], tmp_path: Path, capsys) -> None:
    from retinaseg.cli import main
    from retinaseg.data.synthetic import make_octa_sample
    from retinaseg.inference import predict_probability
    from retinaseg.inference.segmenter import Segmenter
    from retinaseg.models.ensemble import Flipped
    from retinaseg.models.persistence import read_spec
    from retinaseg.training.ensemble import load_members, out_of_fold

    runs = [f["run_dir"] for f in folds]
    out = tmp_path / "flip.safetensors"
    assert main(["ensemble", *runs, "--out", str(out), "--member-flips", "none, hv"]) == 0
    spec = read_spec(out)
    assert spec.params["member_flips"] == ["none", "hv"]
    assert [m["flip"] for m in spec.info["members"]] == ["none", "hv"]
    # the out-of-fold maps that chose the threshold are each member in its own view
    members = load_members(runs)
    probs, items = out_of_fold(members, progress=False, member_flips=["none", "hv"])
    last = members[1]
    want = predict_probability(Flipped(last.net, "hv"), last.val[0].image)
    np.testing.assert_allclose(probs[len(members[0].val)], want, atol=1e-6)
    plain_probs, _ = out_of_fold(members, progress=False)
    assert not np.allclose(probs[-1], plain_probs[-1], atol=1e-4)
    with pytest.raises(ConfigError, match="views for 2 members"):
        out_of_fold(members, progress=False, member_flips=["h"])
    image = make_octa_sample(64, seed=6)["image"]
    flipped = Segmenter(out, precision="fp32", fuse=False)(image)
    plain = tmp_path / "plain.safetensors"
    assert main(["ensemble", *runs, "--out", str(plain)]) == 0
    assert "member_flips" not in read_spec(plain).params
    assert not np.allclose(flipped, Segmenter(plain, precision="fp32", fuse=False)(image),
                           atol=1e-4)
    capsys.readouterr()
    assert main(["ensemble", *runs, "--out", str(tmp_path / "x.safetensors"),
                 "--member-flips", "h"]) == 2
    assert "one per run" in capsys.readouterr().err


def test_ensemble_cli(folds: list[dict], tmp_path: Path, capsys) -> None:
    from retinaseg.cli import main

    out = tmp_path / "cli.safetensors"
    assert main(["ensemble", *[f["run_dir"] for f in folds], "--out", str(out),
                 "--tta", "hflip"]) == 0
    assert "ensemble of 2 models" in capsys.readouterr().out and out.is_file()
    from retinaseg.models.persistence import read_spec

    assert read_spec(out).info["tta"] == "hflip"
    for argv, msg in ([[folds[0]["run_dir"]], "at least two run folders"],
                      [[str(tmp_path), folds[0]["run_dir"]], "not a training run folder"]):
        assert main(["ensemble", *argv, "--out", str(tmp_path / "x.safetensors")]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_ensemble_model_card(folds: list[dict], tmp_path: Path) -> None:
    from retinaseg.models.cards import card_text
    from retinaseg.models.persistence import read_spec
    from retinaseg.training.ensemble import build_ensemble

    res = build_ensemble([f["run_dir"] for f in folds], tmp_path / "e.safetensors",
                         progress=False)
    card = card_text("e", Path(res["path"]), "data", "scores")
    epochs = ", ".join(str(m["epoch"]) for m in read_spec(res["path"]).info["members"])
    assert f"one per member, each chosen by Dice on the fold it held out: epochs {epochs}" in card
    assert "one pass by default" in card and "`ensemble`" in card


def test_train_folds_reuses_and_resumes(tmp_path: Path, capsys) -> None:
    import shutil

    from retinaseg.cli import main
    from retinaseg.training.ensemble import train_folds

    cfg = _config(tmp_path, epochs=1)
    over = ["data.folds=2", "name=kf"]
    first = train_folds(cfg, over, progress=False)
    runs = tmp_path / "runs"
    assert first["reused"] == [] and len(first["members"]) == 2
    assert (runs / "kf" / "ensemble.safetensors").is_file()
    # a killed fold (no summary.json) is resumed in place; a finished one is reused
    (Path(first["runs"][1]) / "summary.json").unlink()
    again = train_folds(cfg, over, progress=False)
    assert again["runs"] == first["runs"] and again["reused"] == [0]
    assert len(list((runs / "kf_f1").iterdir())) == 1
    assert (Path(first["runs"][1]) / "summary.json").is_file()
    # finished folds of another recipe are refused, not silently reused
    with pytest.raises(ConfigError, match=r"other settings \(train\)"):
        train_folds(cfg, [*over, "train.epochs=2"], progress=False)
    # a folder of another fold under a fold's name is refused, not silently reused
    shutil.copytree(first["runs"][0], runs / "kf_f1" / "99999999-999999")
    with pytest.raises(ConfigError, match="holds out fold 0 of 2, not fold 1"):
        train_folds(cfg, over, progress=False)
    assert main(["train", str(cfg), "--all-folds"]) == 2
    assert "needs data.folds" in capsys.readouterr().err


def test_top_level_api_exports_the_ensemble_functions() -> None:
    import retinaseg
    from retinaseg.training import ensemble

    assert retinaseg.train_folds is ensemble.train_folds
    assert retinaseg.build_ensemble is ensemble.build_ensemble


def test_members_read_the_shared_training_data_once(folds: list[dict], monkeypatch) -> None:
    from retinaseg.training import data
    from retinaseg.training.ensemble import load_members

    calls = []
    real = data._read_items
    monkeypatch.setattr(data, "_read_items", lambda *a: calls.append(a[1]) or real(*a))
    members = load_members([f["run_dir"] for f in folds])
    assert calls == ["train"]  # one read of the split both folds are carved from
    ids = [{it.id for it in m.val} for m in members]
    assert len(ids[0]) == 3 and not ids[0] & ids[1]  # still each run's own fold


def test_unpacked_members_rebuild_the_same_ensemble(folds: list[dict], tmp_path: Path) -> None:
    """Members written back as run folders give the same ensemble: weights, threshold and
    out-of-fold Dice; existing folders are refused."""
    import shutil

    import yaml
    from safetensors.torch import load_file

    from retinaseg.training.ensemble import build_ensemble, unpack_ensemble

    runs = [Path(f["run_dir"]) for f in folds]
    first = build_ensemble(runs, tmp_path / "a.safetensors", progress=False)
    with pytest.raises(ConfigError, match="exists already"):
        unpack_ensemble(first["path"], runs[0] / "config.yaml")
    saved = tmp_path / "saved"
    saved.mkdir()
    for i, r in enumerate(runs):  # the original folders go away, as on another machine
        shutil.move(r, saved / str(i))
    config = saved / "1" / "config.yaml"
    try:
        assert unpack_ensemble(first["path"], config) == runs
        assert all((r / "summary.json").is_file() for r in runs)  # finished: never retrained
        again = build_ensemble(runs, tmp_path / "b.safetensors", progress=False)
    finally:  # put the originals back for the other tests of the module
        for i, r in enumerate(runs):
            shutil.rmtree(r, ignore_errors=True)
            shutil.move(saved / str(i), r)
    assert again["threshold"] == pytest.approx(first["threshold"])
    assert again["oof_dice_mean"] == pytest.approx(first["oof_dice_mean"])
    a, b = load_file(first["path"]), load_file(again["path"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="not an ensemble"):
        unpack_ensemble(runs[0], runs[1] / "config.yaml")
    other = tmp_path / "seed1.yaml"  # another seed cuts other folds: refused before writing
    text = (runs[1] / "config.yaml").read_text()
    seed = yaml.safe_load(text)["seed"]
    other.write_text(text.replace(f"seed: {seed}", f"seed: {seed + 1}"))
    with pytest.raises(ConfigError, match="holds out other images"):
        unpack_ensemble(first["path"], other, root=tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_thread_span_names_mixed_member_thread_counts() -> None:
    """An ensemble whose members trained on different thread counts says so (the card reads
    it); one count stays a number, and members without the record are left out."""
    from types import SimpleNamespace

    from retinaseg.training.ensemble import _thread_span

    def member(threads: int | None) -> SimpleNamespace:
        return SimpleNamespace(spec=SimpleNamespace(info={"threads": threads}))

    assert _thread_span([member(1), member(1)]) == 1
    assert _thread_span([member(1), member(2), member(1)]) == "1-2"
    assert _thread_span([member(None), member(2)]) == 2
    assert _thread_span([member(None)]) is None

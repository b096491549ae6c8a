"""Knowledge distillation: soft targets from teacher runs, the leak check, pinning."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from retinaseg.errors import ConfigError
from retinaseg.training import load_config, train
from retinaseg.training.config import RunConfig, SamplingConfig
from retinaseg.training.data import Item, PatchSampler, load_train_val
from retinaseg.training.distill import attach_targets, teacher_runs
from tests.training.test_trainer import _config

FOLDS = ["data.folds=2"]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> tuple[Path, list[dict], dict]:
    """Two folds of one recipe, and a second fold-0 run of another learning rate."""
    tmp = tmp_path_factory.mktemp("teachers")
    cfg = _config(tmp, epochs=1)
    runs = [train(cfg, overrides=[*FOLDS, f"data.fold={k}", f"name=tiny_f{k}"])
            for k in range(2)]
    other = train(cfg, overrides=[*FOLDS, "data.fold=0", "name=tiny_b_f0", "optim.lr=0.003"])
    return cfg, runs, other


def _student(cfg: Path, *teacher: str, weight: float = 0.5, fold: int = 0) -> RunConfig:
    runs = Path(load_config(cfg).runs_dir)
    names = ", ".join(f"'{runs / t}'" for t in teacher)
    return load_config(cfg, [*FOLDS, f"data.fold={fold}", "name=student",
                             f"distill.teachers=[{names}]", f"distill.weight={weight}",
                             "distill.tta=hflip"])


def _prob(run: str, it: Item) -> np.ndarray:
    """One teacher's hflip probability, computed here without the distill module."""
    import torch

    from retinaseg.models.persistence import load_model

    net, _ = load_model(Path(run) / "best.safetensors")
    x = torch.from_numpy(it.image)[None]
    with torch.no_grad():
        p = torch.sigmoid(net(x)) + torch.sigmoid(net(x.flip(-1))).flip(-1)
    return (p / 2)[0, 0].numpy()


def test_target_mixes_label_and_the_teachers_mean(teachers) -> None:
    cfg_path, runs, other = teachers
    for w in (0.5, 1.0):
        cfg = _student(cfg_path, "tiny_f{fold}", "tiny_b_f{fold}", weight=w)
        train_items, val, _ = load_train_val(cfg.data, cfg.seed)
        used, seconds = attach_targets(cfg, train_items, val)
        assert used == [runs[0]["run_dir"], other["run_dir"]] and seconds > 0
        for it in train_items:
            soft = (_prob(used[0], it) + _prob(used[1], it)) / 2
            assert it.target.dtype == np.float32 and it.target.shape == it.label.shape
            np.testing.assert_allclose(it.target, (1 - w) * it.label + w * soft, atol=1e-5)


@pytest.mark.parametrize("weight", [None, 0.0])
def test_no_teachers_or_weight_zero_leaves_the_labels(teachers, weight) -> None:
    cfg = (load_config(teachers[0], FOLDS) if weight is None
           else _student(teachers[0], "tiny_f{fold}", weight=weight))
    train_items, val, _ = load_train_val(cfg.data, cfg.seed)
    assert attach_targets(cfg, train_items, val) == ([], 0.0)
    assert all(it.target is None for it in train_items)


def test_teacher_that_trained_on_a_validation_image_is_refused(teachers) -> None:
    cfg = _student(teachers[0], "tiny_f1")  # fold 1's run trained on fold 0's images
    train_items, val, _ = load_train_val(cfg.data, cfg.seed)
    with pytest.raises(ConfigError, match="trained on this run's validation images"):
        attach_targets(cfg, train_items, val)


def test_fine_tuned_teacher_is_refused(teachers) -> None:
    cfg_path, runs, _ = teachers
    train(cfg_path, overrides=[*FOLDS, "data.fold=0", "name=tiny_ft_f0",
                               f"model.init={runs[0]['run_dir']}"])
    cfg = _student(cfg_path, "tiny_ft_f{fold}")
    train_items, val, _ = load_train_val(cfg.data, cfg.seed)
    with pytest.raises(ConfigError, match="fine-tuned from"):
        attach_targets(cfg, train_items, val)


def test_missing_or_unfinished_teacher_is_one_clear_error(teachers, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere_f0.*not a finished training run"):
        teacher_runs(_student(teachers[0], "nowhere_f{fold}"))
    run = tmp_path / "killed"
    shutil.copytree(teachers[1][0]["run_dir"], run)
    (run / "summary.json").unlink()  # killed before the end: resume state, no summary
    cfg = _student(teachers[0], "tiny_f0")
    cfg.distill.teachers = [str(run)]
    with pytest.raises(ConfigError, match="not a finished training run"):
        teacher_runs(cfg)


def test_fold_placeholder_needs_folds(teachers) -> None:
    with pytest.raises(ConfigError, match="'{fold}' but data.folds is not set"):
        load_config(teachers[0], ["distill.teachers=['runs/x_f{fold}']"])


def test_student_pins_and_records_its_teachers(teachers) -> None:
    from retinaseg.models.persistence import read_spec

    cfg_path, runs, _ = teachers
    out = train(_student(cfg_path, "tiny_f{fold}"))
    assert out["teachers"] == [runs[0]["run_dir"]]
    saved = load_config(Path(out["run_dir"]) / "config.yaml")
    assert saved.distill.teachers == [str(Path(runs[0]["run_dir"]).resolve())]  # for a resume
    info = read_spec(Path(out["run_dir"]) / "best.safetensors").info
    assert info["distilled_from"] == {"teachers": [runs[0]["run_dir"]], "weight": 0.5,
                                      "tta": "hflip"}
    teacher = read_spec(Path(runs[0]["run_dir"]) / "best.safetensors").info
    both = info["train_seconds"] + teacher["train_seconds"]  # each rounded to 0.1 s
    assert both - 0.15 <= info["total_train_seconds"] < both + 30  # + the teacher targets


def test_sampler_trains_on_the_soft_target() -> None:
    label = np.zeros((32, 32), bool)
    label[10:20] = True
    it = Item("a", np.zeros((1, 32, 32), np.float32), label, np.ones((32, 32), bool),
              target=np.full((32, 32), 0.25, np.float32))
    cfg = SamplingConfig(mode="patch", patch_size=16, patches_per_image=4, batch_size=4)
    x, y, fov, _ = next(PatchSampler([it], cfg, None).epoch(0))
    inside = fov.bool()  # the zero padding around the image is outside
    assert y.shape == (4, 1, 16, 16) and inside.any()
    assert np.allclose(y[inside].numpy(), 0.25)


def test_ensemble_of_students_counts_their_teachers(teachers, tmp_path: Path) -> None:
    from retinaseg.models.persistence import read_spec
    from retinaseg.training.ensemble import build_ensemble, unpack_ensemble

    cfg_path, runs, _ = teachers
    students = [train(_student(cfg_path, "tiny_f{fold}", fold=k)) for k in range(2)]
    out = build_ensemble([s["run_dir"] for s in students], tmp_path / "ens.safetensors",
                         progress=False)
    info = read_spec(out["path"]).info
    own = [read_spec(Path(s["run_dir"]) / "best.safetensors").info for s in students]
    assert [m["distilled_from"]["teachers"] for m in info["members"]] == \
        [[r["run_dir"]] for r in runs]
    assert [m["train_seconds"] for m in info["members"]] == [o["train_seconds"] for o in own]
    assert info["train_seconds"] == pytest.approx(sum(o["total_train_seconds"] for o in own),
                                                  abs=0.11)
    for i, s in enumerate(students):  # another machine: the run folders are not there
        shutil.move(s["run_dir"], tmp_path / f"moved{i}")
    unpacked = unpack_ensemble(out["path"], _write_cfg(cfg_path, tmp_path), tmp_path)
    back = [read_spec(r / "best.safetensors").info for r in unpacked]
    assert [b["train_seconds"] for b in back] == [o["train_seconds"] for o in own]
    assert [b["distilled_from"] for b in back] == [o["distilled_from"] for o in own]
    assert sum(b["total_train_seconds"] for b in back) == pytest.approx(
        info["train_seconds"], abs=0.2)


def _write_cfg(cfg_path: Path, tmp_path: Path) -> Path:
    """The student recipe as a YAML file (unpack_ensemble reads a config file)."""
    from retinaseg.training.config import dump_config

    p = tmp_path / "student.yaml"
    p.write_text(dump_config(_student(cfg_path, "tiny_f{fold}")))
    return p


def test_all_folds_distils_each_fold_and_reuses_it(teachers, tmp_path: Path) -> None:
    from retinaseg.training.ensemble import train_folds

    cfg = _write_cfg(teachers[0], tmp_path)
    first = train_folds(cfg, progress=False)
    again = train_folds(cfg, progress=False)  # pinned teachers match the template's runs
    assert again["reused"] == [0, 1] and again["runs"] == first["runs"]
    pinned = [load_config(Path(r) / "config.yaml").distill.teachers for r in first["runs"]]
    assert pinned == [[str(Path(r["run_dir"]).resolve())] for r in teachers[1]]

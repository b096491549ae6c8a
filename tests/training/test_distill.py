"""Knowledge distillation: soft targets from teacher runs, and the leak check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retinaseg.errors import ConfigError
from retinaseg.training import load_config, train
from retinaseg.training.config import SamplingConfig
from retinaseg.training.data import Item, PatchSampler, load_train_val
from retinaseg.training.distill import attach_targets, teacher_probability, teacher_runs
from retinaseg.training.ensemble import load_member
from tests.training.test_trainer import _config


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> tuple[Path, list[dict]]:
    tmp = tmp_path_factory.mktemp("teachers")
    cfg = _config(tmp, epochs=1)
    runs = [train(cfg, overrides=["data.folds=2", f"data.fold={k}", f"name=tiny_f{k}"])
            for k in range(2)]
    return cfg, runs


def _student(cfg: Path, teacher: str, weight: float = 0.5, fold: int = 0):
    runs = Path(load_config(cfg).runs_dir)
    return load_config(cfg, ["data.folds=2", f"data.fold={fold}", "name=student",
                             f"distill.teachers=['{runs / teacher}']",
                             f"distill.weight={weight}", "distill.tta=hflip"])


def test_target_mixes_label_and_teacher(teachers) -> None:
    cfg_path, runs = teachers
    for w in (0.0, 0.5, 1.0):
        cfg = _student(cfg_path, "tiny_f{fold}", w)
        train_items, val, _ = load_train_val(cfg.data, cfg.seed)
        used = attach_targets(cfg, train_items, val)
        assert used == [runs[0]["run_dir"]]  # '{fold}' filled in, newest run of the folder
        teacher = load_member(used[0])
        for it in train_items:
            soft = teacher_probability([teacher], it, "hflip")
            assert it.target.dtype == np.float32 and it.target.shape == it.label.shape
            np.testing.assert_allclose(it.target, (1 - w) * it.label + w * soft, atol=1e-6)
        if w == 0.0:
            assert all(np.array_equal(it.target, it.label) for it in train_items)


def test_no_teachers_leaves_the_labels(teachers) -> None:
    cfg = load_config(teachers[0], ["data.folds=2"])
    train_items, val, _ = load_train_val(cfg.data, cfg.seed)
    assert attach_targets(cfg, train_items, val) == []
    assert all(it.target is None for it in train_items)


def test_teacher_that_saw_a_validation_image_is_refused(teachers) -> None:
    cfg = _student(teachers[0], "tiny_f1")  # fold 1's run trained on fold 0's images
    train_items, val, _ = load_train_val(cfg.data, cfg.seed)
    with pytest.raises(ConfigError, match="trained on this run's validation images"):
        attach_targets(cfg, train_items, val)


def test_missing_teacher_is_one_clear_error(teachers) -> None:
    cfg = _student(teachers[0], "nowhere_f{fold}")
    with pytest.raises(ConfigError, match="nowhere_f0.*not a finished training run"):
        teacher_runs(cfg)


def test_student_records_its_teachers(teachers) -> None:
    from retinaseg.models.persistence import read_spec

    cfg_path, runs = teachers
    out = train(_student(cfg_path, "tiny_f{fold}"))
    assert out["teachers"] == [runs[0]["run_dir"]]
    info = read_spec(Path(out["run_dir"]) / "best.safetensors").info
    assert info["distilled_from"] == {"teachers": [runs[0]["run_dir"]], "weight": 0.5,
                                      "tta": "hflip"}
    teacher = read_spec(Path(runs[0]["run_dir"]) / "best.safetensors").info
    assert info["total_train_seconds"] == pytest.approx(
        info["train_seconds"] + teacher["train_seconds"], abs=0.11)


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
    from retinaseg.training.ensemble import build_ensemble

    cfg_path, runs = teachers
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


def test_unfinished_teacher_is_refused(teachers, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "killed"
    shutil.copytree(teachers[1][0]["run_dir"], run)
    (run / "summary.json").unlink()  # killed before the end: resume state, no summary
    cfg = _student(teachers[0], "tiny_f0")
    cfg.distill.teachers = [str(run)]
    with pytest.raises(ConfigError, match="not a finished training run"):
        teacher_runs(cfg)

"""`ftkd distill` end to end on a tiny nuScenes-format dataset (the data tests' fixture writer) on the CPU."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from ftkd.cli import main
from ftkd.config import load_config
from ftkd.engine.checkpoint import config_to_json, load_checkpoint, load_model, save_checkpoint
from ftkd.models.build import build_model

ROOT = Path(__file__).resolve().parents[2]


def write_fake_dataset(root: Path) -> tuple[Path, str]:
    """The tiny fake nuScenes of the data tests (tests/data/fake_nuscenes.py, loaded by path)."""
    spec = importlib.util.spec_from_file_location("ftkd_distill_fake_nuscenes", ROOT / "tests/data/fake_nuscenes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_fake_nuscenes(root), module.VERSION


def test_distill_command_writes_a_baseline_student_checkpoint(tmp_path):
    dataroot, version = write_fake_dataset(tmp_path / "data")
    data = [
        f"data.dataroot={dataroot}",
        f"data.version={version}",
        "data.train_split=fake_train",
        "data.val_split=fake_val",
        "data.image_size=[64, 128]",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    config_path = ROOT / "configs/ftkd_sparsebev_tiny.yaml"
    student = load_config(config_path, data)
    teacher = dataclasses.replace(
        student,
        name="teacher_tiny",
        data=dataclasses.replace(student.data, num_future_frames=1),
        model=dataclasses.replace(student.model, offline=True, num_frames=3),
    )
    torch.manual_seed(0)
    teacher_path = tmp_path / "teacher.pt"
    save_checkpoint({"config": config_to_json(teacher), "model": build_model(teacher.model).state_dict()}, teacher_path)

    out_dir = tmp_path / "run"
    overrides = [*data, f"train.out_dir={out_dir}", "train.epochs=0.25", "train.final_eval=false"]
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", str(config_path), "--teacher", str(teacher_path), "--set", *overrides])
    assert exit_info.value.code == 0

    final = out_dir / "checkpoints" / "final.pt"
    state = load_checkpoint(final)
    baseline = build_model(student.model)
    assert {k: v.shape for k, v in state["model"].items()} == {k: v.shape for k, v in baseline.state_dict().items()}
    assert any(k.startswith("pv_ffr.") for k in state["objective_extra"])
    model, config = load_model(final)  # what `ftkd eval` does: a plain student, no distillation code
    assert config.data.num_future_frames == 0 and not config.model.offline
    assert config.distill.teacher == str(teacher_path)
    log = (out_dir / "log.jsonl").read_text()
    assert "loss_pv" in log and "loss_fld_cls" in log

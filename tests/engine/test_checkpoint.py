"""Checkpoints: atomic writes, weights_only loading, clear errors."""

import pytest
import torch

from ftkd.config import load_config
from ftkd.engine import checkpoint as ckpt
from ftkd.utils.configuration import dumps


def test_round_trip_with_weights_only(tmp_path):
    config = load_config(None, ["name=roundtrip", "train.lr=1e-3"])
    state = {"config": dumps(config), "model": {"w": torch.arange(6.0).reshape(2, 3)}, "progress": {"step": 3}}
    path = ckpt.save_checkpoint(state, tmp_path / "c" / "last.pt")
    loaded = ckpt.load_checkpoint(path)
    assert loaded["format"] == ckpt.FORMAT
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert ckpt.config_from_checkpoint(loaded) == config
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_a_crash_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    path = ckpt.save_checkpoint({"config": "{}", "model": {"w": torch.zeros(2)}}, tmp_path / "last.pt")

    def torch_save_that_dies(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", torch_save_that_dies)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint({"config": "{}", "model": {"w": torch.ones(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(path)["model"]["w"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_foreign_and_unsafe_files_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(ValueError, match=r"plain.pt: expected format 'ftkd-checkpoint-v1', got None"):
        ckpt.load_checkpoint(plain)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": ckpt.FORMAT, "config": "{}", "model": {}, "obj": torch.nn.Linear(1, 1)}, unsafe)
    with pytest.raises(ValueError, match="cannot be read with weights_only=True"):
        ckpt.load_checkpoint(unsafe)
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")

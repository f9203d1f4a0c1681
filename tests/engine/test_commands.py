"""`ftkd train` / `ftkd predict` command lines: overrides, default splits per version, the data check gate."""

import logging

import pytest

from ftkd.cli import build_parser
from ftkd.commands import train as train_command
from ftkd.config import load_config


def parse(argv):
    return build_parser().parse_args(argv)


def test_overrides_version_splits_and_precedence():
    args = parse(
        ["train", "configs/sparsebev_tiny.yaml", "train.lr=1e-3", "--set", "train.epochs=3", "data.batch_size=4",
         "--dataroot", "/data/nuscenes", "--version", "v1.0-trainval", "--set", "data.val_split=mini_val"]
    )  # fmt: skip
    overrides = train_command.override_list(args)
    config = load_config(args.config, overrides)
    assert config.data.dataroot == "/data/nuscenes" and config.data.version == "v1.0-trainval"
    assert config.data.train_split == "train"  # picked by --version
    assert config.data.val_split == "mini_val"  # an explicit key wins over the --version default
    assert config.train.lr == pytest.approx(1e-3) and config.train.epochs == 3.0 and config.data.batch_size == 4


def test_train_refuses_to_start_when_the_data_check_fails(monkeypatch, tmp_path, caplog):
    import ftkd.data.check

    calls = []

    def fake_quick_check(dataroot, version, split):
        calls.append((dataroot, version, split))
        return ["CAM_FRONT image samples/x.jpg cannot be opened"]

    monkeypatch.setattr(ftkd.data.check, "quick_check", fake_quick_check)
    args = parse(["train", "configs/sparsebev_tiny.yaml", "--dataroot", str(tmp_path), "--set", f"train.out_dir={tmp_path}/run"])
    with caplog.at_level(logging.ERROR):
        assert train_command.run(args) == 1
    assert calls == [(str(tmp_path), "v1.0-synth", "synth_train")]
    assert "samples/x.jpg cannot be opened" in caplog.text and "--skip-data-check" in caplog.text
    assert not (tmp_path / "run").exists()  # nothing was started


def test_predict_arguments():
    args = parse(["predict", "run/checkpoints/final.pt", "--split", "synth_val", "--out", "results.json"])
    assert (args.checkpoint, args.split, args.out, args.dataroot, args.device) == (
        "run/checkpoints/final.pt", "synth_val", "results.json", None, "auto",
    )  # fmt: skip

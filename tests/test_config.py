"""Typed YAML configs: defaults, overrides, unknown keys and wrong types are errors that name the key."""

import pytest

from ftkd.config import ExperimentConfig, load_config
from ftkd.models.streampetr.config import StreamPETRConfig
from ftkd.utils.configuration import ConfigError, from_dict, to_dict


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: exp\nmodel:\n  arch: streampetr\n  num_queries: 300\ntrain:\n  lr: 4e-4\n")
    config = load_config(path, ["data.image_size=[128, 352]", "train.epochs=2"])
    assert isinstance(config.model, StreamPETRConfig)
    assert config.model.num_queries == 300
    assert config.train.lr == pytest.approx(4e-4)
    assert config.data.image_size == (128, 352)
    assert config.train.epochs == 2.0
    # a resolved config survives a round trip through a plain dict (as saved in checkpoints)
    assert from_dict(ExperimentConfig, to_dict(config)) == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", r"config\.train: unknown key\(s\) \['lrr'\]"),
        ("train.lr=fast", r"config\.train\.lr: expected a number"),
        ("model.arch=petr", r"config\.model\.arch: expected one of"),
        ("data.image_size=[1, 2, 3]", r"config\.data\.image_size: expected 2 values"),
        ("train.compile=yes please", r"config\.train\.compile: expected true/false"),
        ("lr", "expected key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)

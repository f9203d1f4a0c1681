"""`--version` alone picks the split names that go with a dataset version."""

from ftkd.engine.inference import default_splits


def test_default_splits():
    assert default_splits("v1.0-trainval") == ("train", "val")
    assert default_splits("v1.0-mini") == ("mini_train", "mini_val")
    assert default_splits("v1.0-synth") == ("synth_train", "synth_val")
    assert default_splits("v1.0-custom") == ("custom_train", "custom_val")  # written by `ftkd convert`
    assert default_splits("v1.0-") is None
    assert default_splits("my-version") is None

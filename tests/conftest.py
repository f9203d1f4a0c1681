"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` synthetic nuScenes set (version v1.0-synth, splits synth_train/synth_val), generated once.

    Two worker processes where two cores exist: the output does not depend on the worker count.
    """
    from ftkd.data.synth import SynthConfig, generate

    config = SynthConfig.preset("tiny", workers=min(2, os.cpu_count() or 1))
    return generate(config, tmp_path_factory.mktemp("synth") / "tiny")

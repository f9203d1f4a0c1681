"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` synthetic nuScenes set (version v1.0-synth, splits synth_train/synth_val), generated once.

    Two worker processes where two cores exist: the output does not depend on the worker count.
    """
    from ftkd.data.synth import SynthConfig, generate

    config = SynthConfig.preset("tiny", workers=min(2, os.cpu_count() or 1))
    return generate(config, tmp_path_factory.mktemp("synth") / "tiny")


@pytest.fixture(scope="session")
def synth_nusc(synth_root: Path):
    """The devkit's NuScenes tables of `synth_root` (v1.0-synth), loaded once for every test that reads them."""
    from ftkd.engine.evaluation import load_nuscenes

    return load_nuscenes(synth_root, "v1.0-synth")


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Import a script of benchmarks/ (a folder of scripts, not a package) as the module `benchmarks_<name>`."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
        spec.loader.exec_module(module)
        return module

    return load

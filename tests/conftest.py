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
def annotation_records(synth_nusc) -> Callable[[str], dict[str, list[dict]]]:
    """`annotation_records(split)`: {sample token: results records} of a split of the tiny set, copied from the
    annotation table (independent of ftkd's loader): one per annotation the metric scores (detection class, with
    points), score 1, devkit velocity, first attribute."""
    return lambda split: scored_annotations(synth_nusc, split)


def scored_annotations(nusc, split: str) -> dict[str, list[dict]]:
    import numpy as np
    from nuscenes.eval.detection.utils import category_to_detection_name

    from ftkd.engine.evaluation import split_sample_tokens

    results = {}
    for token in split_sample_tokens(nusc, split):
        records = []
        for ann_token in nusc.get("sample", token)["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            name = category_to_detection_name(ann["category_name"])
            if name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
                continue  # the metric ignores these annotations: a prediction there would be a false positive
            velocity = np.nan_to_num(nusc.box_velocity(ann_token)[:2]).tolist()
            attributes = [nusc.get("attribute", a)["name"] for a in ann["attribute_tokens"]]
            records.append({"sample_token": token, "translation": ann["translation"], "size": ann["size"],
                            "rotation": ann["rotation"], "velocity": velocity, "detection_name": name,
                            "detection_score": 1.0, "attribute_name": (attributes or [""])[0]})
        results[token] = records
    return results


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

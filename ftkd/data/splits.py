"""Resolve a split name to scene names: a custom `<dataroot>/<version>/splits.json`, else the devkit's splits.

Custom split names must differ from the devkit's predefined ones ("train", "val", "mini_val", ...): those always
mean the real nuScenes scene lists, both here and in the official evaluation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ftkd.data.index import DataError

logger = logging.getLogger(__name__)


def custom_splits(dataroot: str | Path, version: str) -> dict[str, list[str]]:
    """The mapping in `<dataroot>/<version>/splits.json` ({} if the file does not exist)."""
    path = Path(dataroot) / version / "splits.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}); expected {{split name: [scene names]}}") from err
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()
    ):
        raise DataError(f"{path}: expected a mapping {{split name: [scene names]}}")
    return data


def resolve_split(dataroot: str | Path, version: str, split: str, scene_names: list[str] | None = None) -> list[str]:
    """Scene names of `split`, in the split's order.

    Args:
        dataroot, version: the dataset (for `splits.json`).
        split: a custom split of splits.json, or a devkit split (train/val/test/mini_train/mini_val/...).
        scene_names: scenes present in the dataset; if given, a split with none of them is an error, and scenes
            missing from the dataset are dropped (e.g. "train" on v1.0-mini keeps only the mini scenes).
    """
    custom = custom_splits(dataroot, version)
    if split in custom:
        names = custom[split]
    else:
        from nuscenes.utils.splits import create_splits_scenes  # imports the whole devkit (~2 s): only if needed

        predefined = create_splits_scenes()
        if split not in predefined:
            raise DataError(
                f"unknown split {split!r} for {Path(dataroot) / version}: expected one of {sorted(custom)} "
                f"(splits.json) or {sorted(predefined)} (nuscenes-devkit)"
            )
        names = predefined[split]
    if scene_names is None:
        return list(names)
    present = set(scene_names)
    kept = [name for name in names if name in present]
    if not kept:
        raise DataError(
            f"split {split!r} selects none of the {len(scene_names)} scenes of {Path(dataroot) / version} "
            f"(its first scenes: {list(names)[:3]}; dataset scenes: {scene_names[:3]}...)"
        )
    if split in custom and len(kept) < len(names):
        missing = [name for name in names if name not in present]
        logger.warning("%s/splits.json: split %r lists %d scenes not in the dataset, e.g. %s",
                       Path(dataroot) / version, split, len(missing), missing[:3])
    return kept

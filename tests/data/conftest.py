"""Fixtures of the data-layer tests: `fake_root`, a tiny hand-built nuScenes-format dataset (see fake_nuscenes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_nuscenes import write_fake_nuscenes


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_nuscenes(tmp_path_factory.mktemp("fake_nuscenes"))

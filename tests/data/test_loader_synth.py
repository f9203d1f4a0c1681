"""The loader on the synthetic dataset (`synth_root` fixture of tests/conftest.py): devkit geometry and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftkd.constants import CAMERA_NAMES
from ftkd.data.config import DataConfig
from ftkd.data.dataset import TemporalDataset
from ftkd.data.geometry import project_points
from ftkd.data.loader import build_dataloader, set_epoch
from ftkd.structures.boxes import box_corners


@pytest.fixture(scope="module")
def synth(request):
    try:
        return request.getfixturevalue("synth_root")
    except pytest.FixtureLookupError:
        pytest.skip("the synth_root fixture (tests/conftest.py) is not available")


def test_synth_projection_matches_devkit(synth):
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    config = DataConfig(dataroot=str(synth), version="v1.0-synth", num_past_frames=1, image_size=(64, 176))
    dataset = TemporalDataset(config, "synth_val", train=False)
    nusc = NuScenes(version="v1.0-synth", dataroot=str(synth), verbose=False)
    checked = 0
    for i in (0, len(dataset) - 1):
        sample = dataset[i]
        record = nusc.get("sample", sample.meta.sample_token)
        instances = {t: m for m, t in enumerate(sample.meta.extra["instance_tokens"])}
        corners = box_corners(sample.gt_boxes.double()).numpy()
        test_aug = sample.meta.extra["image_aug"]
        for n, channel in enumerate(CAMERA_NAMES):
            _, boxes, camera_matrix = nusc.get_sample_data(record["data"][channel], box_vis_level=BoxVisibility.NONE)
            for box in boxes:
                m = instances.get(nusc.get("sample_annotation", box.token)["instance_token"])
                if m is None:
                    continue
                front = box.corners()[2] > 0.5
                expected = view_points(box.corners(), camera_matrix, normalize=True)[:2].T
                expected = expected @ test_aug[:2, :2].T + test_aug[:2, 2]  # stored pixels -> network input pixels
                pixels, _ = project_points(sample.lidar2img[0, n].double().numpy(), corners[m])
                np.testing.assert_allclose(pixels[front], expected[front], atol=2e-2)
                checked += int(front.sum())
    assert checked > 0


def test_synth_training_batch(synth):
    config = DataConfig(dataroot=str(synth), version="v1.0-synth", num_past_frames=7, image_size=(64, 176))
    loader = build_dataloader(config, "synth_train", train=True, batch_size=2, num_workers=0, seed=0)
    set_epoch(loader, 0)
    batch = next(iter(loader))
    assert batch.images.shape == (2, 8, 6, 3, 64, 176) and batch.images.dtype == torch.uint8
    assert (batch.time_offsets[:, 1:] > 0).all()  # sweeps at 12 Hz: every past frame is older
    assert all(len(b) > 0 for b in batch.gt_boxes)
    assert (batch.images.float().mean(dim=(2, 3, 4, 5)) > 5).all()  # real pixels, not padding

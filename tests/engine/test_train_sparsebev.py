"""The trainer with the real tiny SparseBEV on random Batches: one step, the resumable state, and `load_model`
gives back the trained detector (same outputs)."""

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ftkd.config import load_config
from ftkd.engine.checkpoint import load_checkpoint, load_model
from ftkd.engine.objective import DetectionObjective
from ftkd.engine.trainer import Trainer
from ftkd.models.build import build_model
from ftkd.structures import Batch, SampleMeta
from ftkd.utils.seed import seed_everything

H, W, N = 32, 96, 6  # smaller than the config's 64x176: the model does not depend on it, the CPU does
CAMERA_YAWS = (0.0, -0.96, 0.96, math.pi, 1.92, -1.92)  # roughly the nuScenes rig


def camera_lidar2img() -> torch.Tensor:
    """[N, 4, 4]: ego frame -> pixels of six pinhole cameras at (1, 0, 1.5) m looking along CAMERA_YAWS."""
    K = torch.tensor([[30.0, 0, W / 2, 0], [0, 30.0, H / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    mats = []
    for yaw in CAMERA_YAWS:
        c, s = math.cos(yaw), math.sin(yaw)
        R = torch.tensor([[s, -c, 0.0], [0.0, 0.0, -1.0], [c, s, 0.0]])  # rows: camera x (right), y (down), z (fwd)
        ego_to_cam = torch.eye(4)
        ego_to_cam[:3, :3] = R
        ego_to_cam[:3, 3] = -R @ torch.tensor([1.0, 0.0, 1.5])
        mats.append(K @ ego_to_cam)
    return torch.stack(mats)


class RandomScenes(Dataset):
    def __init__(self, size: int, frames: int) -> None:
        self.size, self.frames = size, frames
        self.sample_tokens = [f"s{i}" for i in range(size)]

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(index)
        boxes = torch.cat(
            [torch.rand(3, 2, generator=g) * 40 - 20, torch.full((3, 1), 1.0), torch.rand(3, 3, generator=g) + 1,
             torch.rand(3, 1, generator=g) * 6 - 3, torch.randn(3, 2, generator=g)], dim=1,
        )  # fmt: skip
        return index, torch.randint(0, 256, (self.frames, N, 3, H, W), generator=g, dtype=torch.uint8), boxes


def collate(samples):
    B, T = len(samples), samples[0][1].shape[0]
    return Batch(
        images=torch.stack([s[1] for s in samples]),  # [B, T, N, 3, H, W]
        lidar2img=camera_lidar2img().expand(B, T, N, 4, 4).clone(),
        intrinsics=torch.tensor([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]]).expand(B, T, N, 3, 3).clone(),
        time_offsets=torch.arange(T, dtype=torch.float32).expand(B, T) * 0.5,
        frame_valid=torch.ones(B, T, dtype=torch.bool),
        ego_pose=torch.eye(4, dtype=torch.float64).expand(B, 4, 4).clone(),
        timestamp=torch.zeros(B, dtype=torch.float64),
        scene_start=torch.ones(B, dtype=torch.bool),
        gt_boxes=[s[2] for s in samples],
        gt_labels=[torch.tensor([0, 8, 5]) for _ in samples],
        meta=[SampleMeta(f"s{s[0]}", "scene", 0.0, np.eye(4)) for s in samples],
    )


def test_tiny_sparsebev_trains_resumes_and_reloads(tmp_path):
    config = load_config(
        "configs/sparsebev_tiny.yaml",
        [f"train.out_dir={tmp_path}", "train.device=cpu", "train.final_eval=false", "train.progress_bar=false",
         "train.epochs=1", "train.log_every=1"],
    )  # fmt: skip
    seed_everything(config.train.seed)
    dataset = RandomScenes(2, config.model.num_frames)  # one step: CPU time is scarce
    loader = DataLoader(dataset, batch_size=2, sampler=DistributedSampler(dataset, 1, 0, seed=0), collate_fn=collate)
    objective = DetectionObjective(build_model(config.model))
    trainer = Trainer(config, objective, train_loader=loader)
    trainer.fit()
    assert trainer.step == 1 and trainer.bad_steps == 0

    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["progress"] == {
        "step": 1, "epoch": 0, "batch_in_epoch": 1, "bad_steps": 0, "global_batch": 2, "grad_accum": 1,
    }  # fmt: skip
    assert {"optimizer", "scheduler", "scaler", "rank_states"} <= last.keys()
    model, loaded_config = load_model(tmp_path / "checkpoints" / "final.pt")
    assert loaded_config == config
    batch = collate([dataset[0]])
    objective.model.eval()
    with torch.no_grad():
        expected, got = objective.model(batch), model(batch)
    torch.testing.assert_close(got.pred_logits, expected.pred_logits)
    torch.testing.assert_close(got.pred_boxes, expected.pred_boxes)

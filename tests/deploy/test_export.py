"""ONNX export of both tiny students: ONNX Runtime vs the PyTorch model over a generated scene, state carried.

The reference is the model's own forward on the data layer's batches (SparseBEV: all T frames recomputed from the
loader's multi-frame sample; StreamPETR: its stateful `forward`), not the export wrapper, so the tests also check that
the graph's relative state (ego motion, time deltas, FIFO/memory) reproduces what the loader and the model compute
from absolute poses and times.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from spread_students import spread_student

from ftkd.data.loader import build_dataloader
from ftkd.deploy.export import affine_inverse, export_onnx
from ftkd.deploy.runtime import Frame, OnnxStep, compare_detections
from ftkd.structures import Detections

# ONNX Runtime's fp32 kernels (convolution, GridSample) round differently from PyTorch's; with the spread-out class
# logits of these tests (|logit| up to ~10) that reaches ~1e-4 in score and ~3e-4 in box values (docs/deploy.md).
SCORE_TOLERANCE = 5e-4  # sigmoid scores
BOX_TOLERANCE = 5e-3  # metres, m/s, radians
NUM_FRAMES = 5  # keyframes of the val scene streamed per test (the FIFO of SparseBEV is full from frame 2 on)


def tiny_student(arch: str, root: Path, out: Path):
    """A random tiny student whose class scores are spread out (`spread_student`), saved as a checkpoint and
    exported."""
    overrides = [
        f"data.dataroot={root}", "data.frame_source=keyframes", "data.image_size=[32,96]", "model.score_threshold=0.0",
    ]  # fmt: skip
    if arch == "sparsebev":
        overrides += ["data.num_past_frames=2", "model.num_frames=3"]  # FIFO of two past frames
    model, config, checkpoint = spread_student(f"configs/{arch}_tiny.yaml", overrides, out)
    return model, config, checkpoint, export_onnx(checkpoint, out / f"{arch}.onnx")


@pytest.fixture(scope="module")
def students(synth_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """arch -> (model, config, checkpoint, onnx path), exported once per test module."""
    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = tiny_student(arch, synth_root, tmp_path_factory.mktemp(arch))
        return cache[arch]

    return get


def frame_of(batch, timestamp: float) -> Frame:
    return Frame(
        images=batch.images[0, 0].numpy(),
        lidar2img=batch.lidar2img[0, 0].numpy(),
        intrinsics=batch.intrinsics[0, 0].numpy(),
        ego_pose=batch.ego_pose[0].numpy(),
        timestamp=timestamp,
    )


def run_scene(student):
    """(metas, reference detections, onnx detections) of the first NUM_FRAMES keyframes of the val scene."""
    model, config, _, onnx_path = student
    step = OnnxStep(onnx_path, threads=1)
    loader = build_dataloader(config.data, "synth_val", train=False, sequential=True, batch_size=1, num_workers=0)
    metas, reference, exported = [], [], []
    state, frame_time = None, 0.0
    for _, batch in zip(range(NUM_FRAMES), loader):
        with torch.no_grad():
            reference.append(model.postprocess(model(batch))[0])
        if batch.scene_start[0] or batch.num_frames == 1:
            # StreamPETR's clock is the keyframe timestamp
            frame_time = float(batch.timestamp[0])
        else:
            # SparseBEV's time offsets are between frames' mean camera times: step the frame clock by them
            frame_time += float(batch.time_offsets[0, 1])
        if batch.scene_start[0]:
            state = None
        detections, state = step(frame_of(batch, frame_time), state)
        exported.append(detections)
        metas.append(batch.meta[0])
    return metas, reference, exported


def official_nds(metas, detections: list[Detections], root: Path, out: Path, nusc) -> float:
    from ftkd.data.results import write_results
    from ftkd.engine.evaluation import evaluate, split_sample_tokens

    tokens = split_sample_tokens(nusc, "synth_val")  # frames not streamed get no boxes (both runs alike)
    results = write_results(list(zip(metas, detections)), out.with_suffix(".json"), sample_tokens=tokens)
    return evaluate(results, root, "v1.0-synth", "synth_val", out, nusc=nusc)["nd_score"]


def test_affine_inverse_matches_linalg():
    generator = torch.Generator().manual_seed(0)
    rotation = torch.linalg.qr(torch.randn(5, 3, 3, generator=generator, dtype=torch.float64))[0]
    camera = torch.tensor([[800.0, 0.0, 352.0], [0.0, 790.0, 128.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    matrix = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    matrix[:, :3, :3] = camera @ rotation  # a lidar2img: camera matrix x rigid transform
    matrix[:, :3, 3] = torch.randn(5, 3, generator=generator, dtype=torch.float64) * 100
    torch.testing.assert_close(affine_inverse(matrix), torch.linalg.inv(matrix), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("arch", ["sparsebev", "streampetr"])
def test_onnx_matches_pytorch_over_a_scene(arch: str, students, synth_root: Path, tmp_path: Path):
    metas, reference, exported = run_scene(students(arch))
    assert len(metas) == NUM_FRAMES and len({m.scene_token for m in metas}) == 1
    for t, (ref, onnx) in enumerate(zip(reference, exported)):
        assert len(ref.scores) > 0
        score_diff, box_diff = compare_detections(ref, onnx, SCORE_TOLERANCE)
        assert score_diff < SCORE_TOLERANCE and box_diff < BOX_TOLERANCE, f"frame {t}: {score_diff}, {box_diff}"
    from ftkd.engine.evaluation import load_nuscenes

    nusc = load_nuscenes(synth_root, "v1.0-synth")
    nds_reference = official_nds(metas, reference, synth_root, tmp_path / "reference", nusc)
    nds_onnx = official_nds(metas, exported, synth_root, tmp_path / "onnx", nusc)
    assert abs(nds_reference - nds_onnx) < 1e-3


def test_raw_images_api_matches_the_loader(students, synth_root: Path, tmp_path: Path):
    """Files + a calibration JSON built from the tables -> the loader's pixels and matrices, and the same boxes."""
    from nuscenes.nuscenes import NuScenes

    import ftkd
    from ftkd.cli import build_parser
    from ftkd.constants import CAMERA_NAMES, CLASS_NAMES
    from ftkd.data.geometry import pose_matrix
    from ftkd.deploy.predict import Calibration, make_frame

    model, config, checkpoint, onnx_path = students("sparsebev")
    nusc = NuScenes("v1.0-synth", str(synth_root), verbose=False)
    loader = build_dataloader(config.data, "synth_val", train=False, sequential=True, batch_size=1, num_workers=0)
    predictor = ftkd.Predictor(onnx_path)
    state, plain_state = predictor.start(), predictor.start()
    calib_path, poses, frames_dir = tmp_path / "calib.json", {}, tmp_path / "frames"
    for t, batch in zip(range(3), loader):
        sample = nusc.get("sample", batch.meta[0].sample_token)
        cameras = {name: nusc.get("sample_data", sample["data"][name]) for name in CAMERA_NAMES}
        calib = {}
        for name, data in cameras.items():
            sensor = nusc.get("calibrated_sensor", data["calibrated_sensor_token"])
            calib[name] = {k: sensor[k] for k in ("translation", "rotation")} | {"intrinsics": sensor["camera_intrinsic"]}
        calib_path.write_text(json.dumps(calib))
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        ego = nusc.get("ego_pose", lidar["ego_pose_token"])
        timestamp = np.mean([data["timestamp"] for data in cameras.values()]) * 1e-6  # the loader's frame time
        files = {name: synth_root / data["filename"] for name, data in cameras.items()}
        camera_poses = np.stack([
            pose_matrix(pose["translation"], pose["rotation"])
            for pose in (nusc.get("ego_pose", data["ego_pose_token"]) for data in cameras.values())
        ])  # fmt: skip
        ego_pose = pose_matrix(ego["translation"], ego["rotation"])
        frame = make_frame(files, Calibration.load(calib_path), ego_pose, timestamp, config.data.image_size, camera_poses)
        assert np.array_equal(frame.images, batch.images[0, 0].numpy())
        np.testing.assert_allclose(frame.lidar2img, batch.lidar2img[0, 0].numpy(), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(frame.intrinsics, batch.intrinsics[0, 0].numpy(), rtol=1e-6, atol=1e-4)
        detections, state = ftkd.predict(files, calib_path, ego_pose, timestamp, state, camera_poses)
        plain, plain_state = ftkd.predict(files, calib_path, ego_pose, timestamp, plain_state)  # what the CLI sees
        with torch.no_grad():
            reference = model.postprocess(model(batch))[0]
        score_diff, box_diff = compare_detections(reference, detections, SCORE_TOLERANCE)
        assert score_diff < SCORE_TOLERANCE and box_diff < BOX_TOLERANCE, f"frame {t}: {score_diff}, {box_diff}"
        (frames_dir / f"{t:02d}").mkdir(parents=True)
        for name, path in files.items():
            (frames_dir / f"{t:02d}" / f"{name}{path.suffix}").symlink_to(path)
        poses[f"{t:02d}"] = {"timestamp": timestamp, "translation": ego["translation"], "rotation": ego["rotation"]}
    # the command line: same frames from a folder, with a poses file
    (tmp_path / "poses.json").write_text(json.dumps(poses))
    args = build_parser().parse_args(
        ["predict-images", str(onnx_path), "--images", str(frames_dir), "--calib", str(calib_path),
         "--poses", str(tmp_path / "poses.json"), "--out", str(tmp_path / "detections.json")]
    )  # fmt: skip
    assert args.handler(args) == 0
    written = json.loads((tmp_path / "detections.json").read_text())["frames"]
    assert [f["frame"] for f in written] == ["00", "01", "02"]
    last = written[-1]["detections"]
    from_cli = Detections(
        boxes=torch.tensor([d["box"] for d in last]),
        scores=torch.tensor([d["score"] for d in last]),
        labels=torch.tensor([CLASS_NAMES.index(d["label"]) for d in last]),
    )
    score_diff, box_diff = compare_detections(plain, from_cli, SCORE_TOLERANCE)
    assert score_diff < 1e-5 and box_diff < 1e-3  # rounding of the JSON only

"""The synthetic world: a real nuScenes dataset (devkit load + official eval), deterministic, atomically written;
the rasteriser, lidar and box counting checked against independent references (brute-force ray casting and the
nuscenes-devkit)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from ftkd.constants import CAMERA_NAMES
from ftkd.data.synth import SynthConfig, generate
from ftkd.data.synth import sequence
from ftkd.data.synth.city import build_city
from ftkd.data.synth.generate import CITY_EXTENT
from ftkd.data.synth.lidar import points_in_boxes
from ftkd.data.synth.render import Camera, noise_buffer, render, shade_faces
from ftkd.data.synth.rig import build_rig, quaternion_to_matrix
from ftkd.data.synth.shapes import FACES, PLAIN, Primitive, cuboid

MICRO = dict(scenes=2, val_scenes=1, samples_per_scene=3, sweeps_per_sample=1, image_width=96, image_height=54,
             lidar_azimuth_steps=360)



def _file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file the generator wrote, by relative path; what may differ between runs is left out: the
    timing block of synth_stats.json and the worker count in synth_config.json (hidden folders, such as the
    loader's index cache, are not the generator's)."""
    digests = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.startswith("."):
            continue
        data = path.read_bytes()
        if rel in ("synth_stats.json", "synth_config.json"):
            content = json.loads(data)
            content.pop("generation" if rel == "synth_stats.json" else "workers")
            data = json.dumps(content, indent=2).encode()
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests



@pytest.fixture(scope="module")
def nusc(synth_root: Path):
    from nuscenes import NuScenes

    return NuScenes(version="v1.0-synth", dataroot=str(synth_root), verbose=False)


def test_devkit_loads_tiny(nusc, synth_root: Path) -> None:
    config = SynthConfig.preset("tiny")
    assert len(nusc.scene) == config.scenes
    assert len(nusc.sample) == config.scenes * config.samples_per_scene
    sample = nusc.sample[3]
    assert set(sample["data"]) == {*CAMERA_NAMES, "LIDAR_TOP"}
    # every sample_data has its own ego pose, files exist and follow nuScenes naming
    assert len(nusc.ego_pose) == len(nusc.sample_data)
    for sd in nusc.sample_data[::97]:
        folder = "samples" if sd["is_key_frame"] else "sweeps"
        assert sd["filename"].startswith(f"{folder}/{sd['channel']}/")
        assert f"__{sd['channel']}__{sd['timestamp']}" in sd["filename"]
        assert (synth_root / sd["filename"]).is_file()
    # 12 Hz camera chain with 5 sweeps between keyframes, 0.5 s between keyframes
    sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    chain = [sd]
    while chain[-1]["next"]:
        chain.append(nusc.get("sample_data", chain[-1]["next"]))
    steps = np.diff([s["timestamp"] for s in chain])
    assert np.all(np.abs(steps - 1e6 / 12) <= 1)
    assert [s["is_key_frame"] for s in chain[:7]] == [True, False, False, False, False, False, True]
    scene_times = [s["timestamp"] for s in nusc.sample if s["scene_token"] == sample["scene_token"]]
    assert np.all(np.diff(scene_times) == 500_000)
    # the camera fires after the lidar, within 50 ms; the ego has moved in between
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    assert lidar["timestamp"] == sample["timestamp"] and 0 < sd["timestamp"] - lidar["timestamp"] < 50_000
    # intrinsics are the real ones scaled to the stored size
    calib = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    assert calib["camera_intrinsic"][0][0] == pytest.approx(1266.417203046554 * config.image_width / 1600)
    assert (sd["width"], sd["height"]) == (config.image_width, config.image_height)
    # annotations: tracks linked both ways, one attribute for classes that have them, visibility 1-4
    for ann in nusc.sample_annotation[::7]:
        if ann["next"]:
            assert nusc.get("sample_annotation", ann["next"])["prev"] == ann["token"]
        assert ann["visibility_token"] in {"1", "2", "3", "4"}
        has_attribute = not ann["category_name"].startswith("movable_object")
        assert len(ann["attribute_tokens"]) == int(has_attribute)
    stats = json.loads((synth_root / "synth_stats.json").read_text())
    for split in ("synth_train", "synth_val"):
        assert len(stats["classes_with_points_per_split"][split]) == 10, stats["classes_with_points_per_split"]


def test_official_eval_of_ground_truth_is_perfect(nusc, tmp_path: Path) -> None:
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.eval.detection.utils import category_to_detection_name

    splits = json.loads((Path(nusc.dataroot) / "v1.0-synth" / "splits.json").read_text())
    val_scenes = {s["token"] for s in nusc.scene if s["name"] in splits["synth_val"]}
    results = {}
    for sample in nusc.sample:
        if sample["scene_token"] not in val_scenes:
            continue
        boxes = []
        for ann_token in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            if ann["num_lidar_pts"] == 0:  # the benchmark drops these from the ground truth
                continue
            attribute = nusc.get("attribute", ann["attribute_tokens"][0])["name"] if ann["attribute_tokens"] else ""
            boxes.append({"sample_token": sample["token"], "translation": ann["translation"], "size": ann["size"],
                          "rotation": ann["rotation"], "velocity": list(nusc.box_velocity(ann_token)[:2]),
                          "detection_name": category_to_detection_name(ann["category_name"]),
                          "detection_score": 1.0, "attribute_name": attribute})
        results[sample["token"]] = boxes
    meta = {"use_camera": True, "use_lidar": False, "use_radar": False, "use_map": False, "use_external": False}
    (tmp_path / "results.json").write_text(json.dumps({"meta": meta, "results": results}))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(tmp_path / "results.json"),
                                   "synth_val", str(tmp_path / "eval"), verbose=False)
        metrics = evaluation.main(plot_examples=0, render_curves=False)
    assert metrics["mean_ap"] == pytest.approx(1.0)
    assert metrics["nd_score"] == pytest.approx(1.0)


def test_devkit_velocities_agree_with_attributes(nusc) -> None:
    """Ground-truth velocities (the devkit's central differences) fit the behaviour the attributes claim."""
    speeds: dict[str, list[float]] = {}
    for ann in nusc.sample_annotation:
        name = nusc.get("attribute", ann["attribute_tokens"][0])["name"] if ann["attribute_tokens"] else "static"
        speed = float(np.hypot(*nusc.box_velocity(ann["token"])[:2]))
        if not np.isnan(speed):
            speeds.setdefault(name, []).append(speed)
    for name in ("vehicle.parked", "cycle.without_rider", "static"):
        assert max(speeds[name]) == 0.0, name
    assert 0.1 < min(speeds["vehicle.moving"]) and max(speeds["vehicle.moving"]) < 16.0
    assert 0.1 < min(speeds["pedestrian.moving"]) and max(speeds["pedestrian.moving"]) < 2.5
    assert max(speeds["vehicle.stopped"]) < 2.0 and max(speeds["pedestrian.standing"]) < 0.5


def test_the_future_carries_information(nusc, synth_root: Path) -> None:
    """Objects hidden now become visible later, and motion changes (braking, starting) within tracks."""
    stats = json.loads((synth_root / "synth_stats.json").read_text())
    assert stats["hidden_then_visible_share"] > 0.05
    changes = []
    for instance in nusc.instance:
        token, speeds = instance["first_annotation_token"], []
        while token:
            speeds.append(float(np.hypot(*nusc.box_velocity(token)[:2])))
            token = nusc.get("sample_annotation", token)["next"]
        changes.append(np.nanmax(speeds) - np.nanmin(speeds) if len(speeds) > 1 else 0.0)
    assert sum(change > 2.0 for change in changes) >= 3


def test_num_lidar_pts_matches_devkit(nusc) -> None:
    """Point files, calibration, ego poses and annotations agree: the devkit counts the same points per box."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    checked = 0
    for sample in nusc.sample[::5]:
        sd_token = sample["data"]["LIDAR_TOP"]
        path, boxes, _ = nusc.get_sample_data(sd_token)  # boxes in the lidar frame
        cloud = LidarPointCloud.from_file(path)
        raw = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
        assert raw[:, 4].min() >= 0 and raw[:, 4].max() <= 31  # ring index
        for box in boxes:
            expected = int(points_in_box(box, cloud.points[:3]).sum())
            assert nusc.get("sample_annotation", box.token)["num_lidar_pts"] == expected
            checked += 1
    assert checked > 20


def test_each_part_draws_where_one_pass_over_the_scene_would(tmp_path: Path) -> None:
    """The parts of a scene take the RNG stream of the one-process pass that made the benchmark sets: after the
    noise buffer, one draw per camera frame channel by channel, then the lidar. Integer RNG states, so the check
    holds on every platform (rendered bytes may differ in the last float bit between CPUs)."""
    config = SynthConfig(**MICRO)
    setup = sequence.prepare_scene(build_city(config.seed, CITY_EXTENT, config.occlusion), config, 0)
    one_pass = np.random.default_rng([config.seed, 0, 2])
    noise_buffer(one_pass, 4 * config.image_width * config.image_height * 3)
    size = config.image_width * config.image_height * 3
    for channel in CAMERA_NAMES:
        assert sequence._part_rng(setup, CAMERA_NAMES.index(channel) * len(setup.frames)).bit_generator.state == \
            one_pass.bit_generator.state, channel
        for _ in setup.frames:
            one_pass.integers(0, len(setup.noise) - size)  # what render() draws for one frame
    lidar = sequence._part_rng(setup, len(CAMERA_NAMES) * len(setup.frames))
    assert lidar.bit_generator.state == one_pass.bit_generator.state
    assert setup.rng.bit_generator.state != one_pass.bit_generator.state  # the parts draw from copies


def test_same_seed_same_bytes_and_worker_independent(tmp_path: Path) -> None:
    """The serial path and three workers (each scene's parts spread over processes) write the reference bytes."""
    serial = _file_digests(generate(SynthConfig(**MICRO), tmp_path / "a"))
    parallel = _file_digests(generate(SynthConfig(**MICRO, workers=3), tmp_path / "b"))
    other = generate(SynthConfig(**MICRO, seed=1), tmp_path / "c")
    assert len(serial) > 80 and "synth_stats.json" in serial
    assert parallel == serial
    table = "v1.0-synth/sample_annotation.json"
    assert (other / table).read_bytes() != (tmp_path / "a" / table).read_bytes()


def test_refuses_to_overwrite_and_leaves_no_partial_dataset(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "set"
    out.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        generate(SynthConfig(**MICRO), out)

    def crash(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(sequence, "build_scene", crash)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate(SynthConfig(**MICRO), tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def _brute_force_hits(camera: Camera, vertices: np.ndarray) -> np.ndarray:
    """[H, W] bool: does the ray through each pixel centre hit the convex hexahedron? (a slow per-pixel loop)"""
    quads = vertices[FACES]  # [6, 4, 3] world
    normals = np.cross(quads[:, 2] - quads[:, 0], quads[:, 3] - quads[:, 1])
    offsets = np.einsum("fi,fi->f", normals, quads[:, 0])
    inverse_k = np.linalg.inv(camera.intrinsic)
    hits = np.zeros((camera.height, camera.width), dtype=bool)
    for v in range(camera.height):
        for u in range(camera.width):
            direction = camera.rotation.T @ (inverse_k @ np.array([u + 0.5, v + 0.5, 1.0]))
            t_enter, t_exit = 0.0, np.inf
            for n, d in zip(normals, offsets):
                denom, gap = n @ direction, d - n @ camera.position
                if abs(denom) < 1e-12:
                    if gap < 0:
                        t_enter = np.inf
                elif denom < 0:
                    t_enter = max(t_enter, gap / denom)
                else:
                    t_exit = min(t_exit, gap / denom)
            hits[v, u] = t_enter < t_exit
    return hits


def test_rasteriser_matches_brute_force_ray_casting() -> None:
    city = build_city(0)
    rig = build_rig(64, 36)
    sensor = rig["CAM_FRONT"]
    ego = np.eye(4)
    ego[:3, 3] = [city.road_x[2] + 1.75, city.road_y[2] - 40.0, 0.0]
    ego[:3, :3] = quaternion_to_matrix([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])  # facing +y (north)
    cam_to_world = ego @ sensor.sensor_to_ego
    camera = Camera(cam_to_world[:3, :3].T, cam_to_world[:3, 3], sensor.intrinsic, 64, 36)
    # a tilted, tapered box ahead of the camera, partly crossing the image border
    local = cuboid(8.0, -4.0, 1.0, 3.0, 2.0, 1.6, taper=0.7, pitch=0.3)
    vertices = (local @ ego[:3, :3].T + ego[:3, 3]).astype(np.float32)
    primitives = Primitive(vertices[None], np.array([[1.0, 0.0, 0.0]], np.float32), np.array([PLAIN], np.int8),
                           np.array([0], np.int32))
    lighting = dict(sun=np.array([0.3, 0.3, 0.9], np.float32), ambient=np.float32(0.5), diffuse=np.float32(0.5),
                    sky_top=np.zeros(3, np.float32), sky_horizon=np.zeros(3, np.float32), fog_distance=np.float32(1e9),
                    fog_color=np.zeros(3, np.float32), exposure=np.float32(1.0), night=False, noise=np.float32(0.0),
                    tint=np.ones(3, np.float32))
    faces, colors = shade_faces(primitives, lighting)
    rng = np.random.default_rng(0)
    _, visible, silhouette = render(camera, primitives, faces, colors, city, lighting, rng, noise_buffer(rng, 10**5),
                                    count_visibility=True, num_objects=1)
    expected = _brute_force_hits(camera, vertices.astype(np.float64))
    assert expected.sum() > 100 and expected[:, -1].any()  # large and cut by the image border
    assert abs(int(silhouette[0]) - int(expected.sum())) <= 2
    assert visible[0] == silhouette[0]  # nothing occludes it


def test_points_in_boxes_matches_devkit() -> None:
    from nuscenes.utils.data_classes import Box
    from nuscenes.utils.geometry_utils import points_in_box
    from pyquaternion import Quaternion

    rng = np.random.default_rng(0)
    points = rng.uniform(-6, 6, size=(4000, 3))
    centres = rng.uniform(-3, 3, size=(5, 3))
    sizes = rng.uniform(0.5, 4, size=(5, 3))
    yaws = rng.uniform(-np.pi, np.pi, size=5)
    counts = points_in_boxes(points, centres, sizes, yaws)
    for m in range(5):
        box = Box(centres[m], sizes[m], Quaternion(axis=[0, 0, 1], angle=yaws[m]))
        assert counts[m] == points_in_box(box, points.T).sum()

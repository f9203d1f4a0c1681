"""Record one scene: render every camera frame (keyframes at 2 Hz, sweeps at 12 Hz), cast the lidar at each
keyframe, and build the scene's rows of the nuScenes tables (log, scene, sample, sample_data, ego_pose, instance,
sample_annotation). Everything comes from the scene's own RNG streams, so the result is independent of the order
in which scenes are generated and of the number of worker processes.

A scene is recorded in independent parts (SCENE_PARTS: one per camera, then the lidar with the other tables), so
that many processes can share the work of few scenes. The parts share one RNG stream in a fixed order (noise
buffer, one draw per camera frame channel by channel, then the lidar); each part starts from a copy advanced past
the draws of the parts before it, which is cheap because a camera frame always takes exactly one draw.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ftkd.constants import CAMERA_NAMES, LIDAR_NAME
from ftkd.data.synth.city import City
from ftkd.data.synth.config import SynthConfig
from ftkd.data.synth.lidar import cast, points_in_boxes
from ftkd.data.synth.render import FAR, Camera, noise_buffer, noise_start, render, shade_faces
from ftkd.data.synth.rig import TRIGGER_OFFSETS, Sensor, yaw_quaternion
from ftkd.data.synth.shapes import CATEGORY, Primitive
from ftkd.data.synth.world import Scene, build_scene
from ftkd.data.synth.writer import save_jpeg, token, visibility_token

FRAMES_PER_SAMPLE = 6  # 12 Hz cameras / 2 Hz keyframes
BASE_TIMESTAMP = 1533110400_000000  # 2018-08-01 08:00 UTC, microseconds
SCENE_SPACING = 300_000_000  # scenes start 5 minutes apart
STRIDE = 1.4  # metres walked per gait cycle (two steps)
SCENE_PARTS = (*CAMERA_NAMES, LIDAR_NAME)  # recorded independently; `finish_scene` takes them in this order
TABLES = ("log", "scene", "sample", "sample_data", "ego_pose", "instance", "sample_annotation")


def _pose_matrix(x: float, y: float, yaw: float) -> np.ndarray:
    matrix = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    matrix[:2, :2] = [[c, -s], [s, c]]
    matrix[0, 3], matrix[1, 3] = x, y
    return matrix


class _Poser:
    """Places every agent's primitives in the global frame at a given time."""

    def __init__(self, scene: Scene) -> None:
        self.agents = scene.agents
        parts = [agent.shape for agent in scene.agents]
        self.shapes = Primitive.concat(parts) if parts else None
        self.half_height = np.array([agent.size[2] / 2 for agent in scene.agents])

    def poses(self, times: np.ndarray) -> np.ndarray:
        """[A, T, 4] x, y, yaw and travelled distance of every agent at the given times."""
        return np.array([np.stack([*agent.trajectory.pose(times), agent.trajectory.distance(times)], axis=-1)
                         for agent in self.agents]).reshape(len(self.agents), len(times), 4)  # [A, T, 4] (also A = 0)

    def place(self, poses: np.ndarray, centre: np.ndarray, radius: float) -> Primitive | None:
        if self.shapes is None:
            return None
        near = np.hypot(poses[:, 0] - centre[0], poses[:, 1] - centre[1]) < radius
        selected = near[self.shapes.owner]
        shapes = self.shapes.take(np.flatnonzero(selected))
        pose = poses[shapes.owner]
        c, s = np.cos(pose[:, 2])[:, None], np.sin(pose[:, 2])[:, None]
        v = shapes.vertices
        if shapes.swing is not None:  # gait: limbs swing with the distance walked (a stride of STRIDE metres)
            v = v.copy()
            v[:, :4, 0] += (shapes.swing * np.sin(2 * np.pi / STRIDE * pose[:, 3]))[:, None]
        world = np.empty_like(v)
        world[..., 0] = v[..., 0] * c - v[..., 1] * s + pose[:, 0:1]
        world[..., 1] = v[..., 0] * s + v[..., 1] * c + pose[:, 1:2]
        world[..., 2] = v[..., 2] + self.half_height[shapes.owner][:, None]
        return Primitive(world, shapes.color, shapes.material, shapes.owner)


@dataclass
class SceneSetup:
    """What every part of one scene shares: the scene, its RNG right after the sensor noise buffer was drawn, the
    city corridor along the ego's path with its lit faces, and the timing of frames and keyframes."""

    city: City
    config: SynthConfig
    index: int
    scene: Scene
    rng: np.random.Generator  # never drawn from: each part draws from its own copy (`_part_rng`)
    noise: np.ndarray
    corridor: Primitive
    corridor_centres: np.ndarray  # [P, 2]
    static_faces: np.ndarray  # [P*6, 4, 3]
    static_colors: np.ndarray  # [P*6, 3]
    poser: _Poser
    frames: list[int]  # 12 Hz frame indices the cameras record: keyframes (every FRAMES_PER_SAMPLE-th) and sweeps
    log_name: str
    t0: int  # scene start (microseconds)
    sample_tokens: list[str]
    sample_times: list[int]
    key_times: np.ndarray  # [K] keyframe times (s from t0)


@dataclass
class ScenePart:
    """One part's result: its table rows; for a camera, the agents' visible and silhouette pixel counts [A, K] at
    each keyframe; for the lidar part, the (agent, keyframe) of each sample_annotation row, whose visibility token
    `finish_scene` fills in from the counts of all cameras."""

    tables: dict[str, list]
    visible: np.ndarray | None = None
    silhouette: np.ndarray | None = None
    annotated: list[tuple[int, int]] = field(default_factory=list)


def prepare_scene(city: City, config: SynthConfig, index: int) -> SceneSetup:
    """Build scene `index` and what its parts share (about 2% of a camera part's time at the benchmark size)."""
    scene = build_scene(city, config, index)
    rng = np.random.default_rng([config.seed, index, 2])
    noise = noise_buffer(rng, 4 * config.image_width * config.image_height * 3)
    num_samples = config.samples_per_scene
    ex, ey, _ = scene.ego.pose(np.arange(0, scene.duration + 0.51, 0.25))
    lo, hi = np.array([ex.min(), ey.min()]) - FAR, np.array([ex.max(), ey.max()]) + FAR
    centres = city.primitives.vertices.mean(axis=1)[:, :2]
    corridor = city.primitives.take(np.flatnonzero(((centres > lo) & (centres < hi)).all(axis=1)))
    static_faces, static_colors = shade_faces(corridor, scene.lighting)
    last_frame = (num_samples - 1) * FRAMES_PER_SAMPLE
    t0 = BASE_TIMESTAMP + index * SCENE_SPACING
    return SceneSetup(
        city=city, config=config, index=index, scene=scene, rng=rng, noise=noise, corridor=corridor,
        corridor_centres=corridor.vertices.mean(axis=1)[:, :2], static_faces=static_faces,
        static_colors=static_colors, poser=_Poser(scene),
        frames=[j for j in range(last_frame + 1) if j % FRAMES_PER_SAMPLE <= config.sweeps_per_sample],
        log_name=f"synth{config.seed}-{index:04d}", t0=t0,
        sample_tokens=[token(config.seed, "sample", index, k) for k in range(num_samples)],
        sample_times=[t0 + k * 500_000 for k in range(num_samples)], key_times=np.arange(num_samples) * 0.5)


def _part_rng(setup: SceneSetup, frames_before: int) -> np.random.Generator:
    """A copy of the scene's RNG advanced past the noise draws of the `frames_before` camera frames recorded before
    a part: the state that recording all parts in SCENE_PARTS order would leave it in."""
    rng = copy.deepcopy(setup.rng)
    image_size = setup.config.image_width * setup.config.image_height * 3
    for _ in range(frames_before):
        noise_start(rng, setup.noise, image_size)
    return rng


def _frame_geometry(setup: SceneSetup, ego: np.ndarray, poses: np.ndarray, radius: float
                    ) -> tuple[Primitive, np.ndarray, np.ndarray, np.ndarray]:
    """Primitives within `radius` of the ego (pose x, y, yaw), agents at `poses` [A, 3]; faces; ego pose."""
    x, y, yaw = (float(v) for v in ego)
    centres = setup.corridor_centres
    near = np.flatnonzero(np.hypot(centres[:, 0] - x, centres[:, 1] - y) < radius)
    face_index = (near[:, None] * 6 + np.arange(6)).reshape(-1)  # [P', 6] -> [P'*6]
    prims, faces, colors = setup.corridor.take(near), setup.static_faces[face_index], setup.static_colors[face_index]
    agents = setup.poser.place(poses, np.array([x, y]), radius)
    if agents is not None and len(agents):
        agent_faces, agent_colors = shade_faces(agents, setup.scene.lighting)
        prims = Primitive.concat([prims, agents])
        faces, colors = np.concatenate([faces, agent_faces]), np.concatenate([colors, agent_colors])
    return prims, faces, colors, _pose_matrix(x, y, yaw)


def _ego_pose_row(setup: SceneSetup, key: tuple, timestamp: int, pose: np.ndarray) -> dict:
    return {"token": token(setup.config.seed, "ego_pose", setup.index, *key), "timestamp": timestamp,
            "rotation": yaw_quaternion(float(np.arctan2(pose[1, 0], pose[0, 0]))),
            "translation": [float(pose[0, 3]), float(pose[1, 3]), 0.0]}


def record_camera(setup: SceneSetup, channel: str, sensor: Sensor, root: Path) -> ScenePart:
    """Render and save every frame of camera `channel` under `root`; its sample_data and ego_pose rows."""
    config, scene, seed, index = setup.config, setup.scene, setup.config.seed, setup.index
    rng = _part_rng(setup, CAMERA_NAMES.index(channel) * len(setup.frames))
    visible = np.zeros((len(scene.agents), config.samples_per_scene), dtype=np.int64)
    silhouette = np.zeros_like(visible)
    previous = ""
    records, ego_rows = [], []
    timestamps = [setup.t0 + round(j * 1e6 / 12) + round(TRIGGER_OFFSETS[channel] * 1e6) for j in setup.frames]
    times = (np.array(timestamps) - setup.t0) * 1e-6
    frame_poses = setup.poser.poses(times)  # [A, frames, 3]
    ego_poses = np.stack(scene.ego.pose(times), axis=-1)  # [frames, 3]
    for f, j in enumerate(setup.frames):
        key = j % FRAMES_PER_SAMPLE == 0
        k = -(-j // FRAMES_PER_SAMPLE)  # the keyframe at or after this frame
        timestamp = timestamps[f]
        prims, faces, colors, ego_pose = _frame_geometry(setup, ego_poses[f], frame_poses[:, f], FAR)
        cam_to_world = ego_pose @ sensor.sensor_to_ego
        camera = Camera(cam_to_world[:3, :3].T, cam_to_world[:3, 3], sensor.intrinsic, config.image_width,
                        config.image_height)
        image, vis, sil = render(camera, prims, faces, colors, setup.city, scene.lighting, rng, setup.noise,
                                 count_visibility=key, num_objects=len(scene.agents))
        if key:
            visible[:, k], silhouette[:, k] = vis, sil
        folder = "samples" if key else "sweeps"
        filename = f"{folder}/{channel}/{setup.log_name}__{channel}__{timestamp}.jpg"
        save_jpeg(root / filename, image, config.jpeg_quality)
        tok = token(seed, "sample_data", index, channel, j)
        ego_rows.append(_ego_pose_row(setup, (channel, j), timestamp, ego_pose))
        records.append({
            "token": tok, "sample_token": setup.sample_tokens[k], "ego_pose_token": ego_rows[-1]["token"],
            "calibrated_sensor_token": token(seed, "calibrated_sensor", channel), "timestamp": timestamp,
            "fileformat": "jpg", "is_key_frame": key, "height": config.image_height, "width": config.image_width,
            "filename": filename, "prev": previous, "next": "",
        })
        if previous:
            records[-2]["next"] = tok
        previous = tok
    return ScenePart({"sample_data": records, "ego_pose": ego_rows}, visible, silhouette)


def _annotation_spans(setup: SceneSetup, agent_poses: np.ndarray) -> dict[int, tuple[int, int]]:
    """Which agents are annotated at which keyframes: the first and last keyframe within range (at least two)."""
    ego_x, ego_y, _ = setup.scene.ego.pose(setup.key_times)
    in_range = np.hypot(agent_poses[..., 0] - ego_x, agent_poses[..., 1] - ego_y) < setup.config.annotation_range
    spans = {}
    for a in range(len(setup.scene.agents)):
        ks = np.flatnonzero(in_range[a])  # in_range: [A, K]
        if len(ks) >= 2:
            spans[a] = (int(ks[0]), int(ks[-1]))
    return spans


def _cast_lidar(setup: SceneSetup, sensor: Sensor, root: Path, rng: np.random.Generator, agent_poses: np.ndarray,
                spans: dict[int, tuple[int, int]]) -> tuple[list[dict], list[dict], np.ndarray]:
    """Cast and save the lidar at each keyframe: its sample_data and ego_pose rows, and the points in each
    annotated agent's box [A, K]."""
    config, scene, seed, index = setup.config, setup.scene, setup.config.seed, setup.index
    lidar_points = np.zeros((len(scene.agents), config.samples_per_scene), dtype=np.int64)
    records, ego_rows = [], []
    ego_keyframes = np.stack(scene.ego.pose(setup.key_times), axis=-1)  # [K, 3]
    for k in range(config.samples_per_scene):
        prims, _, _, ego_pose = _frame_geometry(setup, ego_keyframes[k], agent_poses[:, k], 100.0)
        lidar_to_world = ego_pose @ sensor.sensor_to_ego
        points = cast(lidar_to_world, prims, setup.city, config.lidar_azimuth_steps, rng, config.noise)
        timestamp = setup.sample_times[k]
        filename = f"samples/{LIDAR_NAME}/{setup.log_name}__{LIDAR_NAME}__{timestamp}.pcd.bin"
        points.tofile(root / filename)
        annotated = [a for a, (k0, k1) in spans.items() if k0 <= k <= k1]
        if annotated:
            world_points = points[:, :3].astype(np.float64) @ lidar_to_world[:3, :3].T + lidar_to_world[:3, 3]
            centres = np.array([[agent_poses[a, k, 0], agent_poses[a, k, 1], scene.agents[a].size[2] / 2]
                                for a in annotated])
            sizes = np.array([scene.agents[a].size for a in annotated])
            lidar_points[annotated, k] = points_in_boxes(world_points, centres, sizes, agent_poses[annotated, k, 2])
        tok = token(seed, "sample_data", index, LIDAR_NAME, k)
        ego_rows.append(_ego_pose_row(setup, (LIDAR_NAME, k), timestamp, ego_pose))
        records.append({
            "token": tok, "sample_token": setup.sample_tokens[k], "ego_pose_token": ego_rows[-1]["token"],
            "calibrated_sensor_token": token(seed, "calibrated_sensor", LIDAR_NAME), "timestamp": timestamp,
            "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0, "filename": filename,
            "prev": records[-1]["token"] if records else "", "next": "",
        })
        if len(records) > 1:
            records[-2]["next"] = tok
    return records, ego_rows, lidar_points


def _scene_rows(setup: SceneSetup) -> dict[str, list]:
    """The scene's log, scene and sample rows."""
    seed, index, sample_tokens, sample_times = setup.config.seed, setup.index, setup.sample_tokens, setup.sample_times
    log_token = token(seed, "log", index)
    scene_token = token(seed, "scene", index)
    num_samples = len(sample_tokens)
    samples = [{"token": sample_tokens[k], "timestamp": sample_times[k], "scene_token": scene_token,
                "prev": sample_tokens[k - 1] if k > 0 else "",
                "next": sample_tokens[k + 1] if k + 1 < num_samples else ""} for k in range(num_samples)]
    return {"log": [{"token": log_token, "logfile": setup.log_name, "vehicle": "synth-ego",
                     "date_captured": "2018-08-01", "location": "synth-city"}],
            "scene": [{"token": scene_token, "name": f"scene-{index:04d}", "description": setup.scene.description,
                       "log_token": log_token, "nbr_samples": num_samples, "first_sample_token": sample_tokens[0],
                       "last_sample_token": sample_tokens[-1]}],
            "sample": samples}


def _annotation_rows(setup: SceneSetup, spans: dict[int, tuple[int, int]], agent_poses: np.ndarray,
                     lidar_points: np.ndarray) -> tuple[dict[str, list], list[tuple[int, int]]]:
    """The instance and sample_annotation rows (visibility token left empty) and each annotation's (agent,
    keyframe)."""
    seed, index, sample_tokens = setup.config.seed, setup.index, setup.sample_tokens
    instances, annotations, annotated = [], [], []
    for a, (k0, k1) in spans.items():
        agent = setup.scene.agents[a]
        speeds = agent.trajectory.speed(setup.key_times)
        ann_tokens = [token(seed, "sample_annotation", index, a, k) for k in range(k0, k1 + 1)]
        instance_token = token(seed, "instance", index, a)
        instances.append({"token": instance_token, "category_token": token(seed, "category", CATEGORY[agent.name]),
                          "nbr_annotations": len(ann_tokens), "first_annotation_token": ann_tokens[0],
                          "last_annotation_token": ann_tokens[-1]})
        for i, k in enumerate(range(k0, k1 + 1)):
            attribute = agent.attribute(float(speeds[k]))
            annotations.append({
                "token": ann_tokens[i], "sample_token": sample_tokens[k], "instance_token": instance_token,
                "visibility_token": "",
                "attribute_tokens": [token(seed, "attribute", attribute)] if attribute else [],
                "translation": [float(agent_poses[a, k, 0]), float(agent_poses[a, k, 1]), agent.size[2] / 2],
                "size": list(agent.size), "rotation": yaw_quaternion(float(agent_poses[a, k, 2])),
                "prev": ann_tokens[i - 1] if i > 0 else "",
                "next": ann_tokens[i + 1] if i + 1 < len(ann_tokens) else "",
                "num_lidar_pts": int(lidar_points[a, k]), "num_radar_pts": 0,
            })
            annotated.append((a, k))
    return {"instance": instances, "sample_annotation": annotations}, annotated


def record_lidar(setup: SceneSetup, sensor: Sensor, root: Path) -> ScenePart:
    """Cast and save the lidar keyframes under `root`, and build all other rows of the scene (log, scene, samples,
    instances, annotations): everything but the camera frames and the annotations' visibility."""
    rng = _part_rng(setup, len(CAMERA_NAMES) * len(setup.frames))
    agent_poses = setup.poser.poses(setup.key_times)  # [A, K, 4]
    spans = _annotation_spans(setup, agent_poses)
    records, ego_rows, lidar_points = _cast_lidar(setup, sensor, root, rng, agent_poses, spans)
    annotations, annotated = _annotation_rows(setup, spans, agent_poses, lidar_points)
    tables = {"sample_data": records, "ego_pose": ego_rows, **_scene_rows(setup), **annotations}
    tables["_scene_info"] = [{
        "index": setup.index, "description": setup.scene.description,
        "ego_speed": [float(v) for v in setup.scene.ego.speed(setup.key_times)],
        "images": len(setup.frames) * len(CAMERA_NAMES),
    }]
    return ScenePart(tables, annotated=annotated)


def record_part(setup: SceneSetup, part: str, rig: dict[str, Sensor], root: Path) -> ScenePart:
    """Record `part` (one of SCENE_PARTS) of the scene, writing its files under `root`."""
    if part == LIDAR_NAME:
        return record_lidar(setup, rig[LIDAR_NAME], root)
    return record_camera(setup, part, rig[part], root)


def finish_scene(parts: list[ScenePart]) -> dict[str, list]:
    """The scene's table rows from its parts in SCENE_PARTS order, each annotation's visibility from the pixel
    counts summed over the cameras in that order (as floats, the way they were always summed)."""
    *cameras, lidar = parts
    visible = np.zeros(cameras[0].visible.shape)
    silhouette = np.zeros(cameras[0].silhouette.shape)
    for camera in cameras:
        visible += camera.visible
        silhouette += camera.silhouette
    for row, (a, k) in zip(lidar.tables["sample_annotation"], lidar.annotated):
        row["visibility_token"] = visibility_token(visible[a, k] / silhouette[a, k] if silhouette[a, k] > 0 else 0.0)
    tables: dict[str, list] = {name: [] for name in (*TABLES, "_scene_info")}
    for part in parts:
        for name, rows in part.tables.items():
            tables[name] += rows
    return tables

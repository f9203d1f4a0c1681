"""Record one scene: render every camera frame (keyframes at 2 Hz, sweeps at 12 Hz), cast the lidar at each
keyframe, and build the scene's rows of the nuScenes tables (log, scene, sample, sample_data, ego_pose, instance,
sample_annotation). Everything comes from the scene's own RNG streams, so the result is independent of the order
in which scenes are generated and of the number of worker processes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ftkd.constants import CAMERA_NAMES, LIDAR_NAME
from ftkd.data.synth.city import City
from ftkd.data.synth.config import SynthConfig
from ftkd.data.synth.lidar import cast, points_in_boxes
from ftkd.data.synth.render import FAR, Camera, noise_buffer, render, shade_faces
from ftkd.data.synth.rig import TRIGGER_OFFSETS, Sensor, yaw_quaternion
from ftkd.data.synth.shapes import CATEGORY, Primitive
from ftkd.data.synth.world import Scene, build_scene
from ftkd.data.synth.writer import save_jpeg, token, visibility_token

FRAMES_PER_SAMPLE = 6  # 12 Hz cameras / 2 Hz keyframes
BASE_TIMESTAMP = 1533110400_000000  # 2018-08-01 08:00 UTC, microseconds
SCENE_SPACING = 300_000_000  # scenes start 5 minutes apart
STRIDE = 1.4  # metres walked per gait cycle (two steps)


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


def record_scene(city: City, config: SynthConfig, index: int, root: Path, rig: dict[str, Sensor]) -> dict[str, list]:
    """Generate scene `index`, write its images and point clouds under `root`, return its table rows."""
    scene = build_scene(city, config, index)
    seed = config.seed
    rng = np.random.default_rng([seed, index, 2])
    noise = noise_buffer(rng, 4 * config.image_width * config.image_height * 3)
    num_samples = config.samples_per_scene
    log_name = f"synth{seed}-{index:04d}"
    t0 = BASE_TIMESTAMP + index * SCENE_SPACING
    ex, ey, _ = scene.ego.pose(np.arange(0, scene.duration + 0.51, 0.25))
    lo, hi = np.array([ex.min(), ey.min()]) - FAR, np.array([ex.max(), ey.max()]) + FAR
    centres = city.primitives.vertices.mean(axis=1)[:, :2]
    corridor = city.primitives.take(np.flatnonzero(((centres > lo) & (centres < hi)).all(axis=1)))
    corridor_centres = corridor.vertices.mean(axis=1)[:, :2]
    static_faces, static_colors = shade_faces(corridor, scene.lighting)
    poser = _Poser(scene)
    tables: dict[str, list] = {k: [] for k in ("log", "scene", "sample", "sample_data", "ego_pose", "instance",
                                               "sample_annotation")}
    sample_tokens = [token(seed, "sample", index, k) for k in range(num_samples)]
    sample_times = [t0 + k * 500_000 for k in range(num_samples)]

    def frame_geometry(ego: np.ndarray, poses: np.ndarray, radius: float
                       ) -> tuple[Primitive, np.ndarray, np.ndarray, np.ndarray]:
        """Primitives within `radius` of the ego (pose x, y, yaw), agents at `poses` [A, 3]; faces; ego pose."""
        x, y, yaw = (float(v) for v in ego)
        near = np.flatnonzero(np.hypot(corridor_centres[:, 0] - x, corridor_centres[:, 1] - y) < radius)
        face_index = (near[:, None] * 6 + np.arange(6)).reshape(-1)  # [P', 6] -> [P'*6]
        prims, faces, colors = corridor.take(near), static_faces[face_index], static_colors[face_index]
        agents = poser.place(poses, np.array([x, y]), radius)
        if agents is not None and len(agents):
            agent_faces, agent_colors = shade_faces(agents, scene.lighting)
            prims = Primitive.concat([prims, agents])
            faces, colors = np.concatenate([faces, agent_faces]), np.concatenate([colors, agent_colors])
        return prims, faces, colors, _pose_matrix(x, y, yaw)

    def add_ego_pose(key: tuple, timestamp: int, pose: np.ndarray) -> str:
        tok = token(seed, "ego_pose", index, *key)
        tables["ego_pose"].append({"token": tok, "timestamp": timestamp,
                                   "rotation": yaw_quaternion(float(np.arctan2(pose[1, 0], pose[0, 0]))),
                                   "translation": [float(pose[0, 3]), float(pose[1, 3]), 0.0]})
        return tok

    # --- annotations: which agents are annotated at which keyframes (contiguous spans within range) ---
    key_times = np.arange(num_samples) * 0.5
    ego_x, ego_y, _ = scene.ego.pose(key_times)
    agent_poses = poser.poses(key_times)  # [A, K, 3]
    in_range = np.hypot(agent_poses[..., 0] - ego_x, agent_poses[..., 1] - ego_y) < config.annotation_range  # [A, K]
    spans = {}
    for a in range(len(scene.agents)):
        ks = np.flatnonzero(in_range[a])
        if len(ks) >= 2:
            spans[a] = (int(ks[0]), int(ks[-1]))
    visible = np.zeros((len(scene.agents), num_samples))
    silhouette = np.zeros((len(scene.agents), num_samples))
    lidar_points = np.zeros((len(scene.agents), num_samples), dtype=np.int64)

    # --- cameras: keyframes and sweeps ---
    last_frame = (num_samples - 1) * FRAMES_PER_SAMPLE
    frames = [j for j in range(last_frame + 1) if j % FRAMES_PER_SAMPLE <= config.sweeps_per_sample]
    for channel in CAMERA_NAMES:
        sensor = rig[channel]
        sensor_to_ego = sensor.sensor_to_ego
        previous = ""
        records = []
        timestamps = [t0 + round(j * 1e6 / 12) + round(TRIGGER_OFFSETS[channel] * 1e6) for j in frames]
        times = (np.array(timestamps) - t0) * 1e-6
        frame_poses = poser.poses(times)  # [A, frames, 3]
        ego_poses = np.stack(scene.ego.pose(times), axis=-1)  # [frames, 3]
        for f, j in enumerate(frames):
            key = j % FRAMES_PER_SAMPLE == 0
            k = -(-j // FRAMES_PER_SAMPLE)  # the keyframe at or after this frame
            timestamp = timestamps[f]
            prims, faces, colors, ego_pose = frame_geometry(ego_poses[f], frame_poses[:, f], FAR)
            cam_to_world = ego_pose @ sensor_to_ego
            camera = Camera(cam_to_world[:3, :3].T, cam_to_world[:3, 3], sensor.intrinsic, config.image_width,
                            config.image_height)
            image, vis, sil = render(camera, prims, faces, colors, city, scene.lighting, rng, noise,
                                     count_visibility=key, num_objects=len(scene.agents))
            if key:
                visible[:, k] += vis
                silhouette[:, k] += sil
            folder = "samples" if key else "sweeps"
            filename = f"{folder}/{channel}/{log_name}__{channel}__{timestamp}.jpg"
            save_jpeg(root / filename, image, config.jpeg_quality)
            tok = token(seed, "sample_data", index, channel, j)
            records.append({
                "token": tok, "sample_token": sample_tokens[k],
                "ego_pose_token": add_ego_pose((channel, j), timestamp, ego_pose),
                "calibrated_sensor_token": token(seed, "calibrated_sensor", channel), "timestamp": timestamp,
                "fileformat": "jpg", "is_key_frame": key, "height": config.image_height, "width": config.image_width,
                "filename": filename, "prev": previous, "next": "",
            })
            if previous:
                records[-2]["next"] = tok
            previous = tok
        tables["sample_data"] += records

    # --- lidar keyframes ---
    lidar = rig[LIDAR_NAME]
    records = []
    ego_keyframes = np.stack(scene.ego.pose(key_times), axis=-1)  # [K, 3]
    for k in range(num_samples):
        prims, _, _, ego_pose = frame_geometry(ego_keyframes[k], agent_poses[:, k], 100.0)
        lidar_to_world = ego_pose @ lidar.sensor_to_ego
        points = cast(lidar_to_world, prims, city, config.lidar_azimuth_steps, rng, config.noise)
        filename = f"samples/{LIDAR_NAME}/{log_name}__{LIDAR_NAME}__{sample_times[k]}.pcd.bin"
        points.tofile(root / filename)
        annotated = [a for a, (k0, k1) in spans.items() if k0 <= k <= k1]
        if annotated:
            world_points = points[:, :3].astype(np.float64) @ lidar_to_world[:3, :3].T + lidar_to_world[:3, 3]
            centres = np.array([[agent_poses[a, k, 0], agent_poses[a, k, 1], scene.agents[a].size[2] / 2]
                                for a in annotated])
            sizes = np.array([scene.agents[a].size for a in annotated])
            lidar_points[annotated, k] = points_in_boxes(world_points, centres, sizes, agent_poses[annotated, k, 2])
        tok = token(seed, "sample_data", index, LIDAR_NAME, k)
        records.append({
            "token": tok, "sample_token": sample_tokens[k],
            "ego_pose_token": add_ego_pose((LIDAR_NAME, k), sample_times[k], ego_pose),
            "calibrated_sensor_token": token(seed, "calibrated_sensor", LIDAR_NAME), "timestamp": sample_times[k],
            "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0, "filename": filename,
            "prev": records[-1]["token"] if records else "", "next": "",
        })
        if len(records) > 1:
            records[-2]["next"] = tok
    tables["sample_data"] += records

    # --- log, scene, samples ---
    log_token = token(seed, "log", index)
    scene_token = token(seed, "scene", index)
    tables["log"].append({"token": log_token, "logfile": log_name, "vehicle": "synth-ego",
                          "date_captured": "2018-08-01", "location": "synth-city"})
    tables["scene"].append({"token": scene_token, "name": f"scene-{index:04d}", "description": scene.description,
                            "log_token": log_token, "nbr_samples": num_samples, "first_sample_token": sample_tokens[0],
                            "last_sample_token": sample_tokens[-1]})
    for k in range(num_samples):
        tables["sample"].append({"token": sample_tokens[k], "timestamp": sample_times[k], "scene_token": scene_token,
                                 "prev": sample_tokens[k - 1] if k > 0 else "",
                                 "next": sample_tokens[k + 1] if k + 1 < num_samples else ""})

    # --- instances and annotations ---
    speeds = {}
    for a, (k0, k1) in spans.items():
        agent = scene.agents[a]
        speeds[a] = agent.trajectory.speed(key_times)
        ann_tokens = [token(seed, "sample_annotation", index, a, k) for k in range(k0, k1 + 1)]
        instance_token = token(seed, "instance", index, a)
        tables["instance"].append({"token": instance_token,
                                   "category_token": token(seed, "category", CATEGORY[agent.name]),
                                   "nbr_annotations": len(ann_tokens), "first_annotation_token": ann_tokens[0],
                                   "last_annotation_token": ann_tokens[-1]})
        for i, k in enumerate(range(k0, k1 + 1)):
            attribute = agent.attribute(float(speeds[a][k]))
            fraction = visible[a, k] / silhouette[a, k] if silhouette[a, k] > 0 else 0.0
            tables["sample_annotation"].append({
                "token": ann_tokens[i], "sample_token": sample_tokens[k], "instance_token": instance_token,
                "visibility_token": visibility_token(fraction),
                "attribute_tokens": [token(seed, "attribute", attribute)] if attribute else [],
                "translation": [float(agent_poses[a, k, 0]), float(agent_poses[a, k, 1]), agent.size[2] / 2],
                "size": list(agent.size), "rotation": yaw_quaternion(float(agent_poses[a, k, 2])),
                "prev": ann_tokens[i - 1] if i > 0 else "",
                "next": ann_tokens[i + 1] if i + 1 < len(ann_tokens) else "",
                "num_lidar_pts": int(lidar_points[a, k]), "num_radar_pts": 0,
            })
    tables["_scene_info"] = [{
        "index": index, "description": scene.description,
        "ego_speed": [float(v) for v in scene.ego.speed(key_times)],
        "images": len(frames) * len(CAMERA_NAMES),
    }]
    return tables

"""One scene: the ego route and the agents of the 10 classes around it, with behaviours and trajectories.

Agents are placed along the ego's route: parked rows (natural occluders), moving traffic in lanes (cruising,
braking to a stop at junctions, waiting, starting, turning), cyclists, pedestrians walking on sidewalks and
crossing the road (also between parked cars), people standing or sitting, parked bicycles and motorcycles, and
construction zones (barriers, cones, a construction vehicle, workers). Agents that would overlap the ego or
another agent at any time are rejected, so the world has no collisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftkd.data.synth.city import (CYCLE_OFFSET, LANE_OFFSETS, PARKING_OFFSET, ROAD_HALF_WIDTH, SIDEWALK_EDGE,
                                  WALK_OFFSETS, City)
from ftkd.data.synth.config import SynthConfig
from ftkd.data.synth.motion import Path, Trajectory, route, speed_profile, static_path
from ftkd.data.synth.shapes import Primitive, build_shape, sample_size

EGO_LENGTH, EGO_WIDTH, EGO_CENTRE = 4.1, 1.8, 1.3  # the ego car's footprint; its centre is ahead of the rear axle
CHECK_DT = 0.25  # collision checks every 0.25 s
# Expected number of placements per metre of road around the ego's route (x density or occlusion), tuned so that
# class shares, boxes per keyframe and attributes come close to nuScenes (see docs/synth.md).
RATES = {
    "parked_rows": 1 / 27, "traffic": 1 / 7, "cyclists": 1 / 70, "walkers": 1 / 28, "crossers": 1 / 80,
    "standing_groups": 1 / 80, "parked_two_wheelers": 1 / 300, "construction_zones": 1 / 140, "barrier_lines": 1 / 70,
}
ANCHOR_SPREAD = 40.0  # agents are placed within this many metres (per axis) of a random point of the ego's route


@dataclass
class Agent:
    name: str  # detection class
    size: tuple[float, float, float]  # w, l, h (m)
    trajectory: Trajectory
    behaviour: str  # parked, driving, walking, standing, sitting, static
    with_rider: bool
    shape: Primitive  # object frame (origin at the gravity centre)

    def attribute(self, speed: float) -> str:
        """The nuScenes attribute name at a keyframe where the agent moves at `speed` m/s ('' for static classes)."""
        if self.name in ("barrier", "traffic_cone"):
            return ""
        if self.name in ("bicycle", "motorcycle"):
            return "cycle.with_rider" if self.with_rider else "cycle.without_rider"
        if self.name == "pedestrian":
            if self.behaviour == "sitting":
                return "pedestrian.sitting_lying_down"
            return "pedestrian.moving" if speed > 0.3 else "pedestrian.standing"
        if self.behaviour == "parked":
            return "vehicle.parked"
        return "vehicle.moving" if speed > 0.5 else "vehicle.stopped"


@dataclass
class Scene:
    index: int
    ego: Trajectory
    agents: list[Agent]
    duration: float  # seconds from the first to the last keyframe
    lighting: dict  # sun direction, ambient, sky, fog, exposure, noise (see render.py)
    description: str


def _lane_point(city: City, rng: np.random.Generator, near: np.ndarray, radius: float, offset: float
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """A random point on the line `offset` m right of a road centre line, within `radius` of `near`, away from
    junctions; returns (point, driving direction) or None."""
    for _ in range(20):
        q = near + rng.uniform(-radius, radius, size=2)
        dx, dy, _, _ = city.nearest_road(np.array([q[0]]), np.array([q[1]]))
        along_x = abs(dy[0]) < abs(dx[0])  # closer to a road along x
        if along_x:
            d = np.array([1.0, 0.0]) if rng.random() < 0.5 else np.array([-1.0, 0.0])
            centre_line = q[1] - dy[0]
            point = np.array([q[0], centre_line - d[0] * offset])
            gap = np.min(np.abs(city.road_x - q[0]))
        else:
            d = np.array([0.0, 1.0]) if rng.random() < 0.5 else np.array([0.0, -1.0])
            centre_line = q[0] - dx[0]
            point = np.array([centre_line + d[1] * offset, q[1]])
            gap = np.min(np.abs(city.road_y - q[1]))
        if gap > SIDEWALK_EDGE + 3.0 and 20 < point.min() and point.max() < city.extent - 20:
            return point, d
    return None


class _Placer:
    """Accepts agents whose footprints (chains of circles) never overlap already accepted ones."""

    def __init__(self, times: np.ndarray, ego: Trajectory) -> None:
        self.times = times
        self.circles = np.zeros((len(times), 0, 2))
        self.radii = np.zeros(0)
        x, y, yaw = ego.pose(times)
        x, y = x + EGO_CENTRE * np.cos(yaw), y + EGO_CENTRE * np.sin(yaw)
        self._accept(*self._footprint(x, y, yaw, EGO_WIDTH + 0.6, EGO_LENGTH + 1.5))
        self.ego_circles = len(self.radii)

    @staticmethod
    def _footprint(x, y, yaw, width, length) -> tuple[np.ndarray, np.ndarray]:
        n = max(1, int(np.ceil(length / max(width, 0.5))))
        along = (np.arange(n) + 0.5) / n * length - length / 2  # [n]
        centres = np.stack([x[:, None] + along * np.cos(yaw)[:, None], y[:, None] + along * np.sin(yaw)[:, None]], -1)
        radius = np.hypot(width / 2, length / (2 * n))
        return centres, np.full(n, radius)  # [T, n, 2], [n]

    def _accept(self, centres: np.ndarray, radii: np.ndarray) -> None:
        self.circles = np.concatenate([self.circles, centres], axis=1)
        self.radii = np.concatenate([self.radii, radii])

    def try_add(self, trajectory: Trajectory, size: tuple[float, float, float], margin: float,
                seen_from: tuple[np.ndarray, int] | None = None) -> bool:
        """Accept the agent if it never overlaps an accepted one (and, with `seen_from` = (xy, time index), if
        the straight line from xy to it at that time crosses no accepted footprint other than the ego's)."""
        x, y, yaw = trajectory.pose(self.times)
        centres, radii = self._footprint(x, y, yaw, size[0] + margin, size[1] + margin)
        gaps = np.linalg.norm(centres[:, :, None] - self.circles[:, None], axis=-1)  # [T, n, M]
        if np.any(gaps < (radii[:, None] + self.radii[None, :]) * 0.82):
            return False
        if seen_from is not None:
            origin, k = seen_from
            target = np.array([x[k], y[k]])
            ray = target - origin
            others = self.circles[k, self.ego_circles:] - origin  # [M', 2]
            along = np.clip(others @ ray / max(ray @ ray, 1e-9), 0.0, 1.0)
            miss = np.linalg.norm(others - along[:, None] * ray, axis=1)
            if np.any(miss < self.radii[self.ego_circles:] * 0.8):
                return False
        self._accept(centres, radii)
        return True


def _lighting(rng: np.random.Generator, config: SynthConfig) -> tuple[dict, str]:
    night = rng.random() < config.night_fraction
    rain = rng.random() < config.rain_fraction
    dusk = not night and rng.random() < 0.15
    sun_elevation = rng.uniform(0.06, 0.2) if dusk else rng.uniform(0.35, 1.2)
    sun_azimuth = rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(sun_elevation) * np.cos(sun_azimuth), np.cos(sun_elevation) * np.sin(sun_azimuth),
                    np.sin(sun_elevation)])
    exposure = rng.uniform(0.9, 1.15)
    if night:
        ambient, diffuse, exposure = 0.45, 0.15, rng.uniform(0.32, 0.45)
        sky_top, sky_horizon = np.array([0.02, 0.03, 0.06]), np.array([0.12, 0.11, 0.12])
    elif dusk:
        ambient, diffuse = 0.45, 0.55
        sky_top, sky_horizon = np.array([0.25, 0.32, 0.55]), np.array([0.95, 0.62, 0.38])
    else:
        ambient, diffuse = rng.uniform(0.45, 0.6), rng.uniform(0.45, 0.7)
        sky_top, sky_horizon = np.array([0.28, 0.48, 0.85]), np.array([0.75, 0.84, 0.93])
    fog = rng.uniform(45, 90) if rain else rng.uniform(250, 600)
    if rain:
        ambient, diffuse = ambient + 0.15, diffuse * 0.4
        grey = sky_horizon.mean()
        sky_top = sky_horizon = np.full(3, 0.55 if not night else grey)
    f32 = np.float32
    lighting = dict(sun=sun.astype(f32), ambient=f32(ambient), diffuse=f32(diffuse), sky_top=sky_top.astype(f32),
                    sky_horizon=sky_horizon.astype(f32), fog_distance=f32(fog), fog_color=sky_horizon.astype(f32),
                    exposure=f32(exposure), night=night, noise=f32(config.noise * (0.025 if night else 0.012)),
                    tint=rng.uniform(0.94, 1.06, size=3).astype(f32))
    words = ["night" if night else ("dusk" if dusk else "day"), "rain" if rain else "dry"]
    return lighting, ", ".join(words)


def build_scene(city: City, config: SynthConfig, index: int) -> Scene:
    """Generate scene `index` (its own RNG stream from (seed, index), so it does not depend on other scenes)."""
    rng = np.random.default_rng([config.seed, index, 1])
    duration = 0.5 * (config.samples_per_scene - 1)
    horizon = duration + 1.0
    # --- ego: starts on a lane somewhere in the city's interior, drives the grid ---
    start = None
    while start is None:
        start = _lane_point(city, rng, np.full(2, city.extent / 2), city.extent * 0.3, LANE_OFFSETS[rng.integers(2)])
    point, direction = start
    cruise = rng.uniform(5.0, 13.0)
    ego_path = route(city, rng, point, direction, LANE_OFFSETS[0] if rng.random() < 0.6 else LANE_OFFSETS[1],
                     cruise * horizon + 30)
    starts_stopped = rng.random() < 0.2
    extra = [(0.0, rng.uniform(1.0, max(duration, 2.0)))] if starts_stopped else []
    if rng.random() < 0.15:  # stuck in traffic somewhere along the way
        extra.append((rng.uniform(5.0, max(cruise * horizon * 0.6, 6.0)), rng.uniform(3.0, 10.0)))
    ego = Trajectory(ego_path, speed_profile(ego_path, horizon, cruise, rng, v0=0.0 if starts_stopped else cruise,
                                             stop_prob=0.25, wait=(3.0, 12.0), extra_stops=extra))
    times = np.arange(0.0, horizon + 1e-9, CHECK_DT)
    ex, ey, _ = ego.pose(times)
    travelled = float(np.hypot(ex[-1] - ex[0], ey[-1] - ey[0]))
    corridor = travelled + 120.0  # metres of road around the route that agents are spread over
    placer = _Placer(times, ego)

    def anchor() -> np.ndarray:
        k = rng.integers(len(times))
        return np.array([ex[k], ey[k]])

    agents: list[Agent] = []

    def add(name, traj, behaviour, with_rider=False, sitting=False, size=None, margin=0.4, seen_from=None) -> bool:
        size = size or sample_size(name, rng, with_rider, sitting)
        if not placer.try_add(traj, size, margin, seen_from):
            return False
        shape = build_shape(name, size, rng, len(agents), with_rider=with_rider, sitting=sitting)
        agents.append(Agent(name, size, traj, behaviour, with_rider, shape))
        return True

    def static(point, yaw) -> Trajectory:
        return Trajectory(static_path(point[0], point[1], yaw), np.zeros(2))

    def count(rate: float) -> int:
        return int(rng.poisson(rate * corridor))

    # --- parked rows along the parking strips (and bus stops) ---
    for _ in range(count(config.occlusion * RATES["parked_rows"])):
        found = _lane_point(city, rng, anchor(), ANCHOR_SPREAD, PARKING_OFFSET)
        if found is None:
            continue
        point, d = found
        for _ in range(rng.integers(1, 7)):
            name = rng.choice(["car", "truck", "trailer", "construction_vehicle", "bus"],
                              p=[0.75, 0.15, 0.06, 0.02, 0.02])
            size = sample_size(str(name), rng)
            yaw = np.arctan2(d[1], d[0])
            add(str(name), static(point + d * size[1] / 2, yaw), "parked", size=size, margin=0.2)
            point = point + d * (size[1] + rng.uniform(0.8, 3.5))
    # --- moving traffic ---
    for _ in range(count(config.density * RATES["traffic"])):
        name = str(rng.choice(["car", "truck", "bus", "motorcycle", "construction_vehicle", "trailer"],
                              p=[0.69, 0.13, 0.1, 0.04, 0.01, 0.03]))
        lane = LANE_OFFSETS[rng.integers(2)]
        found = _lane_point(city, rng, anchor(), ANCHOR_SPREAD, lane)
        if found is None:
            continue
        cruise = {"car": (5, 14), "truck": (4, 11), "bus": (4, 10), "motorcycle": (5, 13),
                  "construction_vehicle": (2, 6), "trailer": (4, 10)}[name]
        v = rng.uniform(*cruise)
        path = route(city, rng, found[0], found[1], lane, v * horizon + 40)
        stopped_at_start = rng.random() < 0.12
        extra = [(0.0, rng.uniform(1.0, 8.0))] if stopped_at_start else []
        if name == "bus" and rng.random() < 0.5:
            extra.append((rng.uniform(10, 60), rng.uniform(4.0, 12.0)))
        profile = speed_profile(path, horizon, v, rng, v0=0.0 if stopped_at_start else v, extra_stops=extra,
                                stop_prob=0.45, wait=(3.0, 12.0))
        if name == "trailer":  # a moving trailer is pulled by a truck tractor
            truck_size = (sample_size("truck", rng)[0], 5.5, 3.0)
            trailer_size = sample_size("trailer", rng)
            gap = truck_size[1] / 2 + trailer_size[1] / 2 + 1.5  # coupling gap: clear of the truck's footprint
            traj = Trajectory(path, profile + gap)
            if add("truck", traj, "driving", size=truck_size):
                add("trailer", Trajectory(path, profile + gap, offset=gap), "driving", size=trailer_size)
        else:
            add(name, Trajectory(path, profile), "driving", with_rider=name == "motorcycle")
    # --- cyclists ---
    for _ in range(count(config.density * RATES["cyclists"])):
        found = _lane_point(city, rng, anchor(), ANCHOR_SPREAD, CYCLE_OFFSET)
        if found is None:
            continue
        v = rng.uniform(2.5, 6.0)
        path = route(city, rng, found[0], found[1], CYCLE_OFFSET, v * horizon + 20, turn_probs=(0.8, 0.0, 0.2))
        add("bicycle", Trajectory(path, speed_profile(path, horizon, v, rng, accel=1.0, turn_speed=3.0)), "driving",
            with_rider=True, margin=0.6)
    # --- pedestrians walking along sidewalks (crossing at junctions) ---
    for _ in range(count(config.density * RATES["walkers"])):
        offset = WALK_OFFSETS[rng.integers(2)] + rng.uniform(-0.25, 0.25)
        found = _lane_point(city, rng, anchor(), ANCHOR_SPREAD, offset)
        if found is None:
            continue
        v = rng.uniform(0.9, 1.8)
        path = route(city, rng, found[0], found[1], offset, v * horizon + 10, turn_probs=(0.5, 0.0, 0.5),
                     stop_distance=ROAD_HALF_WIDTH + 0.6)
        profile = speed_profile(path, horizon, v, rng, stop_prob=0.5, wait=(1.0, 8.0), accel=1.0, brake=1.5,
                                turn_speed=1.2)
        add("pedestrian", Trajectory(path, profile), "walking", margin=0.15)
    # --- pedestrians crossing mid-block (often stepping out between parked cars) ---
    for _ in range(count(config.density * RATES["crossers"])):
        found = _lane_point(city, rng, anchor(), ANCHOR_SPREAD, -WALK_OFFSETS[0])
        if found is None:
            continue
        point, d = found
        across = np.array([d[1], -d[0]])  # from this sidewalk to the other one
        pts = point[None] + across[None] * np.linspace(0, 2 * WALK_OFFSETS[0], 42)[:, None]
        yaw = float(np.arctan2(across[1], across[0]))
        path = Path(pts, np.full(len(pts), yaw), np.linspace(0, 2 * WALK_OFFSETS[0], 42))
        v = rng.uniform(1.0, 2.0)
        profile = speed_profile(path, horizon, v, rng, v0=0.0, extra_stops=[(0.5, rng.uniform(0.0, duration))],
                                accel=1.2, brake=1.5)
        add("pedestrian", Trajectory(path, profile), "walking", margin=0.15)
    # --- people standing (groups at corners / kerbs) or sitting ---
    for _ in range(count(config.density * RATES["standing_groups"])):
        found = _lane_point(city, rng, anchor(), ANCHOR_SPREAD, rng.uniform(9.8, 12.5))
        if found is None:
            continue
        point, d = found
        for _ in range(rng.integers(1, 4)):
            sitting = rng.random() < 0.2
            spot = point + rng.normal(0, 0.8, size=2)
            add("pedestrian", static(spot, rng.uniform(-np.pi, np.pi)), "sitting" if sitting else "standing",
                sitting=sitting, margin=0.1)
    # --- parked two-wheelers on the sidewalk ---
    for _ in range(count(config.density * RATES["parked_two_wheelers"])):
        found = _lane_point(city, rng, anchor(), ANCHOR_SPREAD, ROAD_HALF_WIDTH + 0.9)
        if found is None:
            continue
        point, d = found
        yaw = np.arctan2(d[1], d[0]) + np.pi / 2 + rng.normal(0, 0.15)
        name = "bicycle" if rng.random() < 0.35 else "motorcycle"
        for k in range(rng.integers(1, 5)):
            add(name, static(point + d * k * 0.9, yaw), "parked", with_rider=False, margin=0.05)
    # --- construction zones: a line of barriers, cones, a construction vehicle and workers ---
    for _ in range(count(config.occlusion * RATES["construction_zones"])):
        found = _lane_point(city, rng, anchor(), ANCHOR_SPREAD, PARKING_OFFSET - 0.5)
        if found is None:
            continue
        point, d = found
        yaw = float(np.arctan2(d[1], d[0]))
        inward = np.array([-d[1], d[0]])  # towards the centre line
        n_barriers = int(rng.integers(3, 10))
        size = sample_size("barrier", rng)
        for k in range(n_barriers):
            add("barrier", static(point + d * k * (size[0] + 0.1), yaw + np.pi / 2), "static", size=size, margin=0.0)
        end = point + d * n_barriers * (size[0] + 0.1)
        for k in range(int(rng.integers(2, 8))):
            add("traffic_cone", static(end + d * (k * 2.0 + 1.0) + inward * k * 0.45, 0.0), "static", margin=0.0)
        if rng.random() < 0.8:
            add("construction_vehicle", static(point + d * n_barriers * 0.6 - inward * 1.0, yaw + rng.normal(0, 0.3)),
                "parked", margin=0.0)
        for _ in range(int(rng.integers(0, 3))):
            add("pedestrian", static(point + d * rng.uniform(0, n_barriers * 2.5) - inward * 1.2,
                                     rng.uniform(-np.pi, np.pi)), "standing", margin=0.1)
    # --- loose barriers and cones (lane closures, kerbs) ---
    for _ in range(count(config.occlusion * RATES["barrier_lines"])):
        found = _lane_point(city, rng, anchor(), ANCHOR_SPREAD, rng.choice([PARKING_OFFSET, ROAD_HALF_WIDTH + 0.5]))
        if found is None:
            continue
        point, d = found
        name = "barrier" if rng.random() < 0.65 else "traffic_cone"
        size = sample_size(name, rng)
        yaw = float(np.arctan2(d[1], d[0])) + (np.pi / 2 if name == "barrier" else 0.0)
        step = size[0] + 0.15 if name == "barrier" else rng.uniform(1.5, 4.0)
        for k in range(int(rng.integers(1, 7))):
            add(name, static(point + d * k * step, yaw), "static", size=size, margin=0.0)
    _ensure_classes(city, config, rng, ego, times, add, static)
    lighting, description = _lighting(rng, config)
    return Scene(index, ego, agents, duration, lighting, description)


def _ensure_classes(city, config, rng, ego, times, add, static) -> None:
    """Add `config.min_instances_per_class` static instances of every class 6-25 m beside the ego's mid-scene
    position, in the lidar's line of sight then, so that even a one-scene split holds all 10 classes."""
    k = len(times) // 2
    x, y, _ = ego.pose(times[k])
    centre = np.array([float(x), float(y)])
    for name in ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
                 "pedestrian", "traffic_cone"):
        placed, tries = 0, 0
        while placed < config.min_instances_per_class and tries < 80:
            tries += 1
            offset = {"pedestrian": WALK_OFFSETS[0], "bicycle": ROAD_HALF_WIDTH + 0.9,
                      "motorcycle": ROAD_HALF_WIDTH + 0.9}.get(name, PARKING_OFFSET)
            found = _lane_point(city, rng, centre, 12.0 + tries * 0.2, offset)
            if found is None or np.linalg.norm(found[0] - centre) < 6.0:
                continue
            point, d = found
            heading = float(np.arctan2(d[1], d[0])) + (np.pi / 2 if name == "barrier" else 0.0)
            behaviour = {"pedestrian": "standing", "barrier": "static", "traffic_cone": "static"}.get(name, "parked")
            if add(name, static(point, heading), behaviour, margin=0.1, seen_from=(centre, k)):
                placed += 1

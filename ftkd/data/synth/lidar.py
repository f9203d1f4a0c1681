"""A ray-cast LIDAR_TOP sweep: a 32-beam spinning lidar (+10.67 .. -30.67 deg) against the ground and primitives.

Rays are cast in the lidar frame (x right of the ego, y forward, z up) from its origin; each primitive is tested
only against the rays of its azimuth/elevation window (ray-convex-polyhedron clipping, Cyrus-Beck). Points are
returned as nuScenes stores them: [N, 5] float32 x, y, z, intensity, ring index, in the LIDAR_TOP frame.
`points_in_boxes` counts points per annotated box (the definition of `num_lidar_pts`).
"""

from __future__ import annotations

import numpy as np

from ftkd.data.synth.city import City
from ftkd.data.synth.shapes import FACES, LIDAR_INTENSITY, SHADOW, Primitive

NUM_BEAMS = 32
ELEVATION_TOP, ELEVATION_BOTTOM = np.deg2rad(10.67), np.deg2rad(-30.67)
MAX_RANGE = 70.0  # metres
MIN_RANGE = 1.0


def beam_directions(azimuth_steps: int) -> np.ndarray:
    """[32, A, 3] unit ray directions in the lidar frame; row k is ring k (top beam first), column a azimuth a."""
    elevation = np.linspace(ELEVATION_TOP, ELEVATION_BOTTOM, NUM_BEAMS)
    azimuth = -np.pi + (np.arange(azimuth_steps) + 0.5) * (2 * np.pi / azimuth_steps)
    ce = np.cos(elevation)[:, None]
    return np.stack([ce * np.cos(azimuth), ce * np.sin(azimuth), np.broadcast_to(np.sin(elevation)[:, None],
                                                                                (NUM_BEAMS, azimuth_steps))], -1)


def cast(lidar_to_world: np.ndarray, primitives: Primitive, city: City, azimuth_steps: int,
         rng: np.random.Generator, noise: float) -> np.ndarray:
    """One sweep: [N, 5] float32 points (x, y, z, intensity 0..255, ring) in the lidar frame.

    Args:
        lidar_to_world: [4, 4] pose of the lidar at the sweep time (global frame, ground at z = 0).
        primitives: scenery and agents in the global frame (shadow decals are ignored).
        noise: range noise scale (1.0 = 2 cm standard deviation), also scales dropout.
    """
    directions = beam_directions(azimuth_steps).reshape(-1, 3)  # [32, A, 3] -> [32*A, 3]
    rotation, origin = lidar_to_world[:3, :3], lidar_to_world[:3, 3]
    num_rays = len(directions)
    best = np.full(num_rays, MAX_RANGE, dtype=np.float64)
    best_material = np.full(num_rays, -1, dtype=np.int64)
    # ground plane z_world = 0, expressed in the lidar frame
    up = rotation.T @ np.array([0.0, 0.0, 1.0])
    toward = directions @ up
    with np.errstate(divide="ignore"):
        t_ground = np.where(toward < -1e-6, -origin[2] / toward, np.inf)
    ground = t_ground < best
    best[ground] = t_ground[ground]
    best_material[ground] = -2
    solid = primitives.material != SHADOW
    local = (primitives.vertices[solid].astype(np.float64) - origin) @ rotation  # [P, 8, 3] lidar frame
    material = primitives.material[solid].astype(np.int64)
    centre = local.mean(axis=1)
    near = np.linalg.norm(centre, axis=1) < MAX_RANGE + 30
    local, material, centre = local[near], material[near], centre[near]
    if len(local):
        # azimuth / elevation window of every primitive
        az_centre = np.arctan2(centre[:, 1], centre[:, 0])
        az = np.arctan2(local[..., 1], local[..., 0])  # [P, 8]
        rel = np.mod(az - az_centre[:, None] + np.pi, 2 * np.pi) - np.pi
        step = 2 * np.pi / azimuth_steps
        col0 = np.floor((az_centre + rel.min(axis=1) + np.pi) / step).astype(np.int64)
        col1 = np.floor((az_centre + rel.max(axis=1) + np.pi) / step).astype(np.int64) + 1
        # elevation window from the nearest horizontal distance (extremes of a face lie between its vertices)
        half_diagonal = np.linalg.norm(local[..., :2] - centre[:, None, :2], axis=-1).max(axis=1)
        nearest = np.maximum(np.linalg.norm(centre[:, :2], axis=1) - half_diagonal, 0.3)
        el_top = np.arctan2(local[..., 2].max(axis=1), nearest)
        el_bottom = np.arctan2(local[..., 2].min(axis=1), nearest)
        beam_step = (ELEVATION_TOP - ELEVATION_BOTTOM) / (NUM_BEAMS - 1)
        ring0 = np.clip(np.floor((ELEVATION_TOP - el_top) / beam_step), 0, NUM_BEAMS)
        ring1 = np.clip(np.ceil((ELEVATION_TOP - el_bottom) / beam_step), -1, NUM_BEAMS - 1)
        # a primitive around the lidar (span >= pi) would need every column: clamp to a full turn
        cols = np.minimum(col1 - col0 + 1, azimuth_steps)
        rings = (ring1 - ring0 + 1).astype(np.int64)
        counts = np.where(rings > 0, cols * rings, 0)
        prim = np.repeat(np.arange(len(local)), counts)
        offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        col = np.mod(col0[prim] + offset % cols[prim], azimuth_steps)
        ring = ring0[prim].astype(np.int64) + offset // cols[prim]
        ray = ring * azimuth_steps + col
        # face planes (outward normals) of the primitives: n . p <= n . v0 inside
        quads = local[:, FACES]  # [P, 6, 4, 3]
        normals = np.cross(quads[:, :, 2] - quads[:, :, 0], quads[:, :, 3] - quads[:, :, 1])  # [P, 6, 3]
        offsets = np.einsum("pfi,pfi->pf", normals, quads[:, :, 0])  # [P, 6]
        denom = np.einsum("rfi,ri->rf", normals[prim], directions[ray])  # [pairs, 6]
        num = offsets[prim]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = num / denom
        t_enter = np.where(denom < 0, ratio, -np.inf).max(axis=1)
        t_exit = np.where(denom > 0, ratio, np.inf).min(axis=1)
        parallel_outside = ((denom == 0) & (num < 0)).any(axis=1)
        hit = (t_enter <= t_exit) & (t_enter > MIN_RANGE) & ~parallel_outside
        ray, t_hit, prim_hit = ray[hit], t_enter[hit], prim[hit]
        np.minimum.at(best, ray, t_hit)
        winner = t_hit == best[ray]
        best_material[ray[winner]] = material[prim_hit[winner]]
    returned = (best < MAX_RANGE) & (best > MIN_RANGE) & (rng.random(num_rays) > 0.02 * max(noise, 0.5))
    ray_index = np.flatnonzero(returned)
    distance = best[ray_index] + rng.normal(0.0, 0.02 * noise, size=len(ray_index))
    points = directions[ray_index] * distance[:, None]
    intensity = np.empty(len(ray_index), dtype=np.float64)
    hit_material = best_material[ray_index]
    on_ground = hit_material == -2
    world = points[on_ground] @ rotation.T + origin
    _, reflect = city.ground(world[:, 0], world[:, 1], np.zeros(len(world)))
    intensity[on_ground] = reflect
    intensity[~on_ground] = LIDAR_INTENSITY[hit_material[~on_ground]]
    intensity = np.clip(intensity * rng.uniform(0.7, 1.3, size=len(intensity)) / (1 + distance / 40.0), 0, 255)
    ring = ray_index // azimuth_steps
    return np.concatenate([points, intensity[:, None], ring[:, None]], axis=1).astype(np.float32)


def points_in_boxes(points: np.ndarray, centres: np.ndarray, sizes: np.ndarray, yaws: np.ndarray) -> np.ndarray:
    """Number of points inside each box (boundaries included, as nuscenes-devkit `points_in_box`).

    Args:
        points: [N, 3] in the same frame as the boxes; centres [M, 3], sizes [M, 3] as (w, l, h), yaws [M] rad.
    """
    counts = np.zeros(len(centres), dtype=np.int64)
    for m in range(len(centres)):
        offset = points - centres[m]
        reach = 0.5 * np.linalg.norm(sizes[m]) + 1e-6
        close = np.abs(offset[:, 0]) <= reach
        close &= np.abs(offset[:, 1]) <= reach
        o = offset[close]
        c, s = np.cos(yaws[m]), np.sin(yaws[m])
        along = o[:, 0] * c + o[:, 1] * s
        across = -o[:, 0] * s + o[:, 1] * c
        w, l, h = sizes[m]
        inside = (np.abs(along) <= l / 2) & (np.abs(across) <= w / 2) & (np.abs(o[:, 2]) <= h / 2)
        counts[m] = int(inside.sum())
    return counts

"""A numpy z-buffer rasteriser for one pinhole camera: ground, sky and flat-shaded convex primitives.

Primitives outside the frustum are culled; every front-facing face of the rest is scan-converted row by row:
in each row of its screen box, the span of pixels on the inner side of the face's four edge planes through the
camera centre (exact even for faces crossing the camera plane) becomes fragments, their depth comes from the
face's plane, and the nearest fragment per pixel wins (`np.maximum.at` on inverse depth). Pixels no face covers
show the textured ground or the sky. Besides the image it returns each object's visible and unoccluded
(silhouette) pixel counts, for the visibility annotation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ftkd.data.synth.city import City
from ftkd.data.synth.shapes import BUILDING, FACES, LIGHT, SHADOW, Primitive

NEAR = 0.1  # metres
FAR = 150.0  # metres


@dataclass
class Camera:
    """A pinhole camera in the global frame: p_cam = rotation @ (p_world - position)."""

    rotation: np.ndarray  # [3, 3] world -> camera
    position: np.ndarray  # [3] camera centre (global, m)
    intrinsic: np.ndarray  # [3, 3]
    width: int
    height: int


@functools.lru_cache(maxsize=16)
def _pixel_rays(fx: float, fy: float, cx: float, cy: float, width: int, height: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y [H*W] of the camera-frame rays (z = 1) through the pixel centres, and the rays' lengths [H*W]."""
    u = ((np.arange(width) + 0.5 - cx) / fx).astype(np.float32)
    v = ((np.arange(height) + 0.5 - cy) / fy).astype(np.float32)
    x = np.broadcast_to(u[None, :], (height, width)).reshape(-1)  # [H, W] -> [H*W]
    y = np.broadcast_to(v[:, None], (height, width)).reshape(-1)  # [H, W] -> [H*W]
    return x, y, np.sqrt(x * x + y * y + 1.0)


def noise_buffer(rng: np.random.Generator, size: int) -> np.ndarray:
    """Standard normal float32 samples; each image adds a random window of it as sensor noise (cheaper than
    drawing fresh normals per pixel, and still different in every frame)."""
    return rng.standard_normal(size, dtype=np.float32)


def noise_start(rng: np.random.Generator, noise: np.ndarray, image_size: int) -> int:
    """Where an image of `image_size` values takes its window of `noise` from: each image's one RNG draw."""
    return int(rng.integers(0, len(noise) - image_size))


def shade_faces(primitives: Primitive, lighting: dict) -> tuple[np.ndarray, np.ndarray]:
    """World vertices [F, 4, 3] and lit colours [F, 3] of all faces (Lambert: ambient + diffuse * max(0, n.sun))."""
    quads = primitives.vertices[:, FACES]  # [P, 6, 4, 3]
    normals = np.cross(quads[:, :, 2] - quads[:, :, 0], quads[:, :, 3] - quads[:, :, 1])  # [P, 6, 3]
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-9
    light = lighting["ambient"] + lighting["diffuse"] * np.clip(normals @ lighting["sun"], 0.0, None)  # [P, 6]
    light += 0.08 * normals[..., 2]  # sky light: tops brighter, bottoms darker
    colors = primitives.color[:, None, :] * light[..., None]  # [P, 6, 3]
    emissive = primitives.material == LIGHT
    colors[emissive] = primitives.color[emissive, None, :] * (1.0 / lighting["exposure"] if lighting["night"] else 1.1)
    return quads.reshape(-1, 4, 3), colors.reshape(-1, 3).astype(np.float32)  # [P*6, 4, 3], [P*6, 3]


def render(camera: Camera, primitives: Primitive, faces: np.ndarray, face_colors: np.ndarray, city: City,
           lighting: dict, rng: np.random.Generator, noise: np.ndarray, count_visibility: bool = False,
           num_objects: int = 0
           ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Render one image.

    Args:
        primitives: the P primitives (owner >= 0: the agent an object pixel belongs to).
        faces: [P*6, 4, 3] world vertices of their faces; face_colors: [P*6, 3] lit colours.
        noise: a `noise_buffer` longer than the image (H*W*3) to draw sensor noise from.
        count_visibility: also count, per agent (0..num_objects-1), visible pixels and unoccluded silhouette pixels.
    Returns:
        image [H, W, 3] uint8, visible [num_objects] int64 (or None), silhouette [num_objects] int64 (or None).
    """
    W, H = camera.width, camera.height
    R, C, K = camera.rotation.astype(np.float32), camera.position.astype(np.float32), camera.intrinsic
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    # frustum culling of whole primitives by their bounding spheres
    centre = primitives.vertices.mean(axis=1)  # [P, 3]
    radius = np.sqrt(((primitives.vertices - centre[:, None]) ** 2).sum(axis=-1).max(axis=1))
    p = (centre - C) @ R.T  # [P, 3] camera frame
    sides = np.array([[1.0, 0.0, cx / fx], [-1.0, 0.0, (W - cx) / fx], [0.0, 1.0, cy / fy], [0.0, -1.0, (H - cy) / fy]])
    sides /= np.linalg.norm(sides, axis=1, keepdims=True)
    inside = ((p @ sides.T.astype(np.float32)) >= -radius[:, None]).all(axis=1)
    inside &= (p[:, 2] > NEAR - radius) & (p[:, 2] < FAR + radius)
    face_index = (np.flatnonzero(inside)[:, None] * 6 + np.arange(6)).reshape(-1)  # [P', 6] -> [P'*6]
    faces, face_colors = faces[face_index], face_colors[face_index]
    owner = primitives.owner[face_index // 6]
    material = primitives.material[face_index // 6]
    cam = (faces - C) @ R.T  # [F, 4, 3] camera frame
    # cull: faces pointing away, entirely behind the near plane, or farther than FAR
    normal_cam = np.cross(cam[:, 2] - cam[:, 0], cam[:, 3] - cam[:, 1])  # [F, 3]
    facing = np.einsum("fi,fi->f", normal_cam, cam[:, 0]) < 0
    z = cam[..., 2]
    keep = facing & (z.max(axis=1) > NEAR) & (z.min(axis=1) < FAR)
    # screen bounding box of the face clipped to the near plane: vertices in front + edge/plane crossings
    nxt = np.roll(cam, -1, axis=1)  # [F, 4, 3] next vertex of each edge
    z0, z1 = cam[..., 2], nxt[..., 2]
    crossing = (z0 - NEAR) * (z1 - NEAR) < 0
    alpha = np.where(crossing, (NEAR - z0) / np.where(crossing, z1 - z0, 1.0), 0.0)
    cut = cam + alpha[..., None] * (nxt - cam)  # [F, 4, 3]
    points = np.concatenate([cam, cut], axis=1)  # [F, 8, 3]
    valid = np.concatenate([z0 >= NEAR, crossing], axis=1)  # [F, 8]
    pz = np.maximum(points[..., 2], NEAR)
    valid &= keep[:, None]
    pu = fx * points[..., 0] / pz + cx
    pv = fy * points[..., 1] / pz + cy
    big = np.float32(1e9)
    u0 = np.clip(np.floor(np.where(valid, pu, big).min(axis=1)), 0, W)
    u1 = np.clip(np.ceil(np.where(valid, pu, -big).max(axis=1)), -1, W - 1)
    v0 = np.clip(np.floor(np.where(valid, pv, big).min(axis=1)), 0, H)
    v1 = np.clip(np.ceil(np.where(valid, pv, -big).max(axis=1)), -1, H - 1)
    widths = (u1 - u0 + 1).astype(np.int64)
    heights = (v1 - v0 + 1).astype(np.int64)
    keep &= (widths > 0) & (heights > 0)
    index = np.flatnonzero(keep)
    # per-face screen-linear functions of the pixel offset (du, dv) from the face's box corner, a*du + b*dv + c:
    # the 4 edge functions (>= 0 inside) and the inverse depth
    e = np.cross(cam[index], nxt[index])  # [F', 4, 3] edge-plane normals
    centroid = cam[index].mean(axis=1)  # [F', 3]
    orientation = np.sign(np.einsum("fki,fi->f", e, centroid))  # inside = same side as the centroid
    e *= orientation[:, None, None]
    n = normal_cam[index]
    n_dot_v = np.einsum("fi,fi->f", n, cam[index, 0])
    planes = np.concatenate([e, (n / n_dot_v[:, None])[:, None]], axis=1)  # [F', 5, 3]: 1/z = n.r / n.v0
    a, b = planes[..., 0] / fx, planes[..., 1] / fy
    c = planes[..., 2] + planes[..., 0] * (0.5 - cx) / fx + planes[..., 1] * (0.5 - cy) / fy
    uo, vo = u0[index].astype(np.int64), v0[index].astype(np.int64)
    c = c + a * uo[:, None] + b * vo[:, None]  # [F', 5]
    # scanlines: per row of a face's box, the span of columns inside all four edges
    rows_per_face = heights[index]
    row_face = np.repeat(np.arange(len(index)), rows_per_face)  # [R]
    dv = np.arange(len(row_face)) - np.repeat(np.cumsum(rows_per_face) - rows_per_face, rows_per_face)
    a_row = a[row_face]  # [R, 5]
    k_row = b[row_face] * dv[:, None] + c[row_face]  # [R, 5]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = -k_row[:, :4] / a_row[:, :4]  # [R, 4] column where each edge function crosses 0
    lower = np.where(a_row[:, :4] > 0, np.ceil(bound), 0.0).max(axis=1)
    upper = np.where(a_row[:, :4] < 0, np.floor(bound), np.inf).min(axis=1)
    upper = np.minimum(upper, widths[index][row_face] - 1)
    empty = ((a_row[:, :4] == 0) & (k_row[:, :4] < 0)).any(axis=1)
    spans = np.where(empty, 0, np.maximum(upper - lower + 1, 0)).astype(np.int64)
    lower = lower.astype(np.int64)
    # fragment q of row r sits at pixel q + offset[r], with inverse depth slope[r] * q + intercept[r]
    first = np.cumsum(spans) - spans  # [R] index of each row's first fragment
    offset = (vo[row_face] + dv) * W + uo[row_face] + lower - first  # [R]
    slope = a_row[:, 4]
    intercept = k_row[:, 4] + slope * (lower - first)
    frag_row = np.repeat(np.arange(len(spans), dtype=np.int32), spans)  # [Q] fragments
    q = np.arange(len(frag_row), dtype=np.float64)
    inv_depth = (slope[frag_row] * q + intercept[frag_row]).astype(np.float32)
    in_range = np.flatnonzero((inv_depth > 1.0 / FAR) & (inv_depth < 1.0 / NEAR))
    frag_row = frag_row[in_range]
    pix = in_range + offset[frag_row]
    inv_depth = inv_depth[in_range]
    frag_face = index[row_face][frag_row]
    depth_buffer = np.zeros(H * W, dtype=np.float32)  # inverse depth, 0 = nothing
    np.maximum.at(depth_buffer, pix, inv_depth)
    winners = inv_depth == depth_buffer[pix]
    face_buffer = np.full(H * W, -1, dtype=np.int64)
    face_buffer[pix[winners]] = frag_face[winners]

    # --- objects, then ground and sky where no object is (or under a shadow decal) ---
    # Pixel arrays are planar ([3, H*W]): numpy broadcasts over a long last axis far faster than over RGB.
    ray_x, ray_y, ray_norm = _pixel_rays(fx, fy, cx, cy, W, H)  # [H*W] each (camera frame, z = 1)
    # world z of the pixel rays (rays @ R[:, 2]; separable in u and v)
    ray_u = (np.arange(W, dtype=np.float32) + 0.5 - cx) / fx
    ray_v = (np.arange(H, dtype=np.float32) + 0.5 - cy) / fy
    ray_z = ((ray_v * R[1, 2] + R[2, 2])[:, None] + (ray_u * R[0, 2])[None, :]).reshape(-1)  # [H, W] -> [H*W]
    image = np.empty((3, H * W), dtype=np.float32)
    distance = np.empty(H * W, dtype=np.float32)
    covered = np.flatnonzero(face_buffer >= 0)
    face_at = face_buffer[covered]
    shadow = material[face_at] == SHADOW
    solid, solid_face = covered[~shadow], face_at[~shadow]
    background = np.ones(H * W, dtype=bool)
    background[solid] = False
    ground_rays = ray_z < -1e-4
    down = background & ground_rays
    up = np.flatnonzero(background & ~down)
    down = np.flatnonzero(down)
    t_ground = -C[2] / ray_z[down]
    down_x, down_y = ray_x[down], ray_y[down]
    hit_x = C[0] + t_ground * (down_x * R[0, 0] + down_y * R[1, 0] + R[2, 0])
    hit_y = C[1] + t_ground * (down_x * R[0, 1] + down_y * R[1, 1] + R[2, 1])
    distance[down] = t_ground * ray_norm[down]
    albedo, _ = city.ground(hit_x, hit_y, distance[down])  # [3, n]
    sun = lighting["sun"]
    image[:, down] = albedo * np.float32(lighting["ambient"] + lighting["diffuse"] * max(sun[2], 0.0))
    image[:, covered[shadow]] *= 0.5
    image[:, solid] = np.ascontiguousarray(face_colors.T)[:, solid_face]  # [F, 3] -> [3, F] -> [3, n]
    depth = 1.0 / depth_buffer[solid]
    distance[solid] = depth * ray_norm[solid]
    building = np.flatnonzero(material[solid_face] == BUILDING)
    if len(building):
        pixels, fidx = solid[building], solid_face[building]
        along = faces[:, 1] - faces[:, 0]  # [F, 3] first edge of each face
        along /= np.linalg.norm(along, axis=1, keepdims=True) + 1e-9
        tangent = along[fidx]
        px, py, d = ray_x[pixels], ray_y[pixels], depth[building]
        point = [C[i] + d * (px * R[0, i] + py * R[1, i] + R[2, i]) for i in range(3)]  # world points on facades
        across = point[0] * tangent[:, 0] + point[1] * tangent[:, 1] + point[2] * tangent[:, 2]
        floor_z = np.mod(point[2], 3.2)
        column = np.mod(across, 2.6)
        window = (np.abs(tangent[:, 2]) < 0.5) & (floor_z > 1.0) & (floor_z < 2.4) & (column > 0.7) & (column < 2.0)
        window &= point[2] > 2.0
        glass = np.array([[0.16], [0.2], [0.26]], dtype=np.float32)
        if lighting["night"]:
            lit = np.mod(np.floor(across / 2.6) * 7 + np.floor(point[2] / 3.2) * 13, 5) < 2
            image[:, pixels[window & ~lit]] = glass
            image[:, pixels[window & lit]] = np.array([[0.72], [0.6], [0.33]], dtype=np.float32) / lighting["exposure"]
        else:
            image[:, pixels[window]] = glass
    # --- sky, atmosphere (haze towards the fog colour with distance), exposure and sensor noise ---
    elevation = np.minimum(ray_z[up] / ray_norm[up] * 3.0, 1.0)
    horizon, top = lighting["sky_horizon"][:, None], lighting["sky_top"][:, None]
    image[:, up] = horizon + (top - horizon) * elevation
    distance[up] = 0.0  # the sky colour already is what haze looks like
    haze = np.exp(distance * np.float32(-1.0 / lighting["fog_distance"]))
    fog = lighting["fog_color"][:, None]
    image -= fog
    image *= haze
    image += fog
    image *= (lighting["exposure"] * lighting["tint"] * 255.0)[:, None]
    start = noise_start(rng, noise, image.size)
    sensor_noise = noise[start:start + image.size].reshape(image.shape)  # [3*H*W] -> [3, H*W]
    image += sensor_noise * np.float32(lighting["noise"] * 255.0)
    image += 0.5
    np.clip(image, 0.0, 255.0, out=image)
    out = np.ascontiguousarray(image.astype(np.uint8).T).reshape(H, W, 3)  # [3, H*W] -> [H*W, 3] -> [H, W, 3]
    if not count_visibility:
        return out, None, None
    obj_owner = owner[frag_face]
    is_object = (obj_owner >= 0) & (material[frag_face] != SHADOW)
    visible = np.bincount(owner[solid_face][owner[solid_face] >= 0], minlength=num_objects)[:num_objects]
    keys = np.unique(obj_owner[is_object].astype(np.int64) * (H * W) + pix[is_object])
    silhouette = np.bincount(keys // (H * W), minlength=num_objects)[:num_objects]
    return out, visible, silhouette

"""Class-specific 3D shapes built from convex hexahedra ("primitives"), plus nuScenes class sizes.

A primitive has 8 vertices in the order (x, y, z signs): 0 ---, 1 +--, 2 ++-, 3 -+-, 4 --+, 5 +-+, 6 +++, 7 -++.
Object templates live in the object frame: x along the length (heading), y left, z up, origin at the box's
gravity centre, so the whole shape fits the annotated [w, l, h] box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Faces as vertex quads wound counter-clockwise seen from outside (outward normals).
FACES = np.array([[0, 3, 2, 1], [4, 5, 6, 7], [1, 2, 6, 5], [0, 4, 7, 3], [0, 1, 5, 4], [3, 7, 6, 2]])

# Materials: how a primitive is shaded and what the lidar sees of it.
PLAIN, BUILDING, SHADOW, LIGHT, GLASS, REFLECTOR = 0, 1, 2, 3, 4, 5
LIDAR_INTENSITY = np.array([25.0, 18.0, 0.0, 90.0, 6.0, 120.0], dtype=np.float32)  # per material

# nuScenes category name -> detection class, and the mean / 1-sigma [w, l, h] of the class (reference stats).
CATEGORY = {
    "car": "vehicle.car",
    "truck": "vehicle.truck",
    "construction_vehicle": "vehicle.construction",
    "bus": "vehicle.bus.rigid",
    "trailer": "vehicle.trailer",
    "barrier": "movable_object.barrier",
    "motorcycle": "vehicle.motorcycle",
    "bicycle": "vehicle.bicycle",
    "pedestrian": "human.pedestrian.adult",
    "traffic_cone": "movable_object.trafficcone",
}
SIZE_MEAN = {
    "car": (1.95, 4.61, 1.72), "truck": (2.46, 6.74, 2.73), "bus": (2.94, 11.19, 3.47),
    "trailer": (2.87, 12.01, 3.82), "construction_vehicle": (2.73, 6.38, 3.13), "pedestrian": (0.66, 0.73, 1.76),
    "motorcycle": (0.76, 2.10, 1.44), "bicycle": (0.60, 1.68, 1.27), "traffic_cone": (0.40, 0.40, 1.06),
    "barrier": (2.49, 0.49, 0.98),
}
SIZE_STD = {
    "car": (0.15, 0.45, 0.25), "truck": (0.35, 2.5, 0.6), "bus": (0.15, 1.5, 0.3), "trailer": (0.3, 3.5, 0.5),
    "construction_vehicle": (0.5, 2.0, 0.8), "pedestrian": (0.12, 0.15, 0.18), "motorcycle": (0.15, 0.25, 0.2),
    "bicycle": (0.1, 0.15, 0.15), "traffic_cone": (0.1, 0.1, 0.25), "barrier": (0.6, 0.1, 0.1),
}
CAR_PAINTS = np.array(
    [[0.92, 0.92, 0.92], [0.08, 0.08, 0.09], [0.62, 0.63, 0.65], [0.38, 0.39, 0.41], [0.62, 0.08, 0.07],
     [0.10, 0.20, 0.50], [0.12, 0.28, 0.18], [0.72, 0.66, 0.52], [0.85, 0.75, 0.20]], dtype=np.float32)
CAR_PAINT_SHARES = np.array([0.25, 0.18, 0.16, 0.12, 0.09, 0.09, 0.04, 0.04, 0.03])


@dataclass
class Primitive:
    """A set of P convex hexahedra."""

    vertices: np.ndarray  # [P, 8, 3] float32
    color: np.ndarray  # [P, 3] float32 albedo in [0, 1]
    material: np.ndarray  # [P] int8 (PLAIN, BUILDING, ...)
    owner: np.ndarray  # [P] int32 index of the agent the primitive belongs to (-1: static scenery)
    # [P] float32 or None: limbs swing while their agent moves; the bottom face shifts by swing * sin(gait phase)
    # metres along the object's x axis (legs and arms of walking people)
    swing: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.vertices)

    def take(self, index: np.ndarray) -> Primitive:
        swing = None if self.swing is None else self.swing[index]
        return Primitive(self.vertices[index], self.color[index], self.material[index], self.owner[index], swing)

    @staticmethod
    def concat(parts: list[Primitive]) -> Primitive:
        swing = None
        if any(p.swing is not None for p in parts):
            swing = np.concatenate([np.zeros(len(p), np.float32) if p.swing is None else p.swing for p in parts])
        return Primitive(
            np.concatenate([p.vertices for p in parts]), np.concatenate([p.color for p in parts]),
            np.concatenate([p.material for p in parts]), np.concatenate([p.owner for p in parts]), swing,
        )


def cuboid(cx: float, cy: float, cz: float, length: float, width: float, height: float,
           taper: float = 1.0, pitch: float = 0.0) -> np.ndarray:
    """[8, 3] vertices of a box of size (length along x, width along y, height) centred at (cx, cy, cz).

    `taper` scales the top face (a frustum, e.g. a cone); `pitch` tilts the box about y (radians, nose up > 0).
    """
    sx = np.array([-1, 1, 1, -1, -1, 1, 1, -1], dtype=np.float64)
    sy = np.array([-1, -1, 1, 1, -1, -1, 1, 1], dtype=np.float64)
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1], dtype=np.float64)
    scale = np.where(sz > 0, taper, 1.0)
    local = np.stack([sx * scale * length / 2, sy * scale * width / 2, sz * height / 2], axis=-1)
    if pitch:
        c, s = np.cos(pitch), np.sin(pitch)
        local = local @ np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]).T
    return local + np.array([cx, cy, cz])


class _Builder:
    """Collects primitives of one object; z arguments are heights above the object's bottom."""

    def __init__(self, height: float) -> None:
        self.bottom = -height / 2
        self.items: list[tuple[np.ndarray, np.ndarray, int]] = []
        self.swing: list[float] = []

    def add(self, cx, cy, z0, z1, length, width, color, material=PLAIN, taper=1.0, pitch=0.0, swing=0.0) -> None:
        verts = cuboid(cx, cy, self.bottom + (z0 + z1) / 2, length, width, z1 - z0, taper, pitch)
        self.items.append((verts, np.asarray(color, dtype=np.float32), material))
        self.swing.append(swing)

    def wheels(self, xs, half_track, diameter, tyre_width) -> None:
        for x in xs:
            for side in (-1, 1):
                self.add(x, side * half_track, 0.0, diameter, diameter, tyre_width, (0.05, 0.05, 0.05))

    def build(self, owner: int) -> Primitive:
        return Primitive(
            np.stack([v for v, _, _ in self.items]).astype(np.float32),
            np.stack([c for _, c, _ in self.items]),
            np.array([m for _, _, m in self.items], dtype=np.int8),
            np.full(len(self.items), owner, dtype=np.int32),
            np.array(self.swing, dtype=np.float32) if any(self.swing) else None,
        )


def _lights(b: _Builder, l: float, w: float, z: float) -> None:
    """Head lights at the front (+x) and red tail lights at the back: cues for the heading."""
    for side in (-1, 1):
        b.add(l / 2 - 0.02, side * (w / 2 - 0.25), z, z + 0.14, 0.04, 0.3, (1.0, 0.95, 0.8), LIGHT)
        b.add(-l / 2 + 0.02, side * (w / 2 - 0.2), z, z + 0.14, 0.04, 0.26, (0.9, 0.05, 0.05), LIGHT)


def _rider(b: _Builder, x: float, seat: float, h: float, rng: np.random.Generator) -> None:
    jacket = rng.uniform(0.05, 0.8, size=3)
    b.add(x, 0.0, seat, seat + 0.62 * (h - seat), 0.3, 0.4, jacket)
    head = h - seat
    helmet = (0.15, 0.15, 0.18) if rng.random() < 0.7 else (0.8, 0.7, 0.55)
    b.add(x + 0.05, 0.0, seat + 0.72 * head, h, 0.24, 0.22, helmet)


def build_shape(name: str, size: tuple[float, float, float], rng: np.random.Generator, owner: int,
                with_rider: bool = False, sitting: bool = False) -> Primitive:
    """Primitives of one object of detection class `name` with box size (w, l, h), in the object frame."""
    w, l, h = size
    b = _Builder(h)
    if name != "traffic_cone":
        b.add(0.0, 0.0, 0.0, 0.02, l * 1.08, w * 1.15, (0.0, 0.0, 0.0), SHADOW)
    if name == "car":
        paint = CAR_PAINTS[rng.choice(len(CAR_PAINTS), p=CAR_PAINT_SHARES)] * rng.uniform(0.9, 1.05)
        wheel = min(0.68, 0.4 * h)
        b.wheels((l / 2 - 0.18 * l, -l / 2 + 0.2 * l), w / 2 - 0.13, wheel, 0.24)
        b.add(0.0, 0.0, 0.28, 0.58 * h, l, w - 0.04, paint)
        b.add(-0.06 * l, 0.0, 0.58 * h, 0.95 * h, 0.56 * l, w * 0.86, (0.12, 0.14, 0.17), GLASS, taper=0.85)
        b.add(-0.06 * l, 0.0, 0.95 * h, h, 0.47 * l, w * 0.72, paint)
        _lights(b, l, w, 0.42 * h)
    elif name in ("truck", "bus", "trailer"):
        paint = rng.uniform(0.15, 0.95, size=3) if rng.random() < 0.6 else np.full(3, rng.uniform(0.7, 0.95))
        wheel = 1.0
        if name == "truck":
            cab = min(2.3, 0.35 * l)
            b.wheels((l / 2 - 0.8, -l / 2 + 1.0, -l / 2 + 2.2), w / 2 - 0.2, wheel, 0.35)
            b.add(l / 2 - cab / 2, 0.0, 0.6, 0.82 * h, cab, w - 0.1, rng.uniform(0.2, 0.9, size=3))
            b.add(l / 2 - 0.02, 0.0, 0.5 * h, 0.78 * h, 0.06, w - 0.3, (0.1, 0.12, 0.15), GLASS)
            b.add(-cab / 2 - 0.15, 0.0, 0.75, h, l - cab - 0.3, w, paint)
            _lights(b, l, w, 0.8)
        elif name == "bus":
            b.wheels((l / 2 - 2.2, -l / 2 + 2.8), w / 2 - 0.2, wheel, 0.35)
            b.add(0.0, 0.0, 0.35, h, l, w - 0.02, paint)
            b.add(0.0, 0.0, 0.45 * h, 0.82 * h, l - 0.8, w, (0.1, 0.12, 0.15), GLASS)
            b.add(l / 2 - 0.3, 0.0, 0.3 * h, 0.85 * h, 0.62, w + 0.0, (0.1, 0.12, 0.15), GLASS)
            _lights(b, l, w, 0.7)
        else:
            b.wheels((-l / 2 + 1.2, -l / 2 + 2.4), w / 2 - 0.25, wheel, 0.35)
            b.add(l / 2 - 1.5, 0.0, 0.0, 1.1, 0.2, 0.6, (0.2, 0.2, 0.2))
            b.add(0.0, 0.0, 1.1, h, l, w, paint)
            b.add(-l / 2 + 0.05, 0.0, 1.15, h - 0.1, 0.1, w - 0.2, np.clip(paint * 0.6, 0, 1))
    elif name == "construction_vehicle":
        paint = np.array([0.9, 0.65, 0.08]) * rng.uniform(0.8, 1.1) if rng.random() < 0.7 else rng.uniform(0.3, 0.9, 3)
        b.add(-0.1 * l, 0.0, 0.0, 0.22 * h, 0.6 * l, w, (0.12, 0.12, 0.12))  # tracks / chassis
        b.add(-0.15 * l, 0.0, 0.22 * h, 0.5 * h, 0.55 * l, w * 0.95, paint)  # engine body
        b.add(-0.05 * l, w * 0.2, 0.5 * h, 0.85 * h, 0.25 * l, w * 0.5, (0.1, 0.12, 0.15), GLASS)  # cab
        b.add(-0.05 * l, w * 0.2, 0.85 * h, 0.9 * h, 0.27 * l, w * 0.52, paint)
        boom = 0.42 * l
        b.add(0.2 * l, -w * 0.15, 0.45 * h, 0.95 * h, boom * 0.98, 0.3, paint, pitch=0.55)  # arm
        b.add(0.42 * l, -w * 0.15, 0.1 * h, 0.8 * h, 0.18, 0.28, paint)  # stick
        b.add(l / 2 - 0.3, -w * 0.15, 0.0, 0.22 * h, 0.6, 0.9, (0.25, 0.25, 0.25), taper=0.7)  # bucket
    elif name in ("motorcycle", "bicycle"):
        moto = name == "motorcycle"
        frame_color = rng.uniform(0.05, 0.9, size=3)
        wheel = min(0.65 if moto else 0.68, 0.5 * h)
        tyre = 0.13 if moto else 0.05
        for x in (l / 2 - wheel / 2, -l / 2 + wheel / 2):
            b.add(x, 0.0, 0.0, wheel, wheel, tyre, (0.06, 0.06, 0.06))
        if moto:
            b.add(0.0, 0.0, 0.3 * wheel, 1.1 * wheel, 0.55 * l, 0.36, frame_color)
            b.add(-0.1 * l, 0.0, 1.1 * wheel, 1.25 * wheel, 0.35 * l, 0.28, (0.08, 0.08, 0.08))
        else:
            b.add(0.0, 0.0, 0.5 * wheel, 0.56 * wheel, 0.55 * l, 0.04, frame_color)
            b.add(0.05 * l, 0.0, 0.5 * wheel, 1.05 * wheel, 0.05, 0.04, frame_color, pitch=0.5)
            b.add(-0.1 * l, 0.0, 0.95 * wheel, 1.02 * wheel, 0.22, 0.1, (0.1, 0.1, 0.1))
        b.add(l / 2 - wheel * 0.55, 0.0, 1.05 * wheel, 1.12 * wheel, 0.05, min(w, 0.7), (0.2, 0.2, 0.2))
        if with_rider:
            _rider(b, -0.08 * l, 1.05 * wheel, h, rng)
    elif name == "pedestrian":
        clothes = rng.uniform(0.05, 0.75, size=3)
        trousers = rng.uniform(0.05, 0.45, size=3)
        skin = np.array([0.85, 0.67, 0.55]) * rng.uniform(0.45, 1.05)
        head = 0.13 * h
        if sitting:
            b.add(0.05, 0.0, 0.0, 0.45 * h, 0.4 * l, 0.6 * w, trousers)
            b.add(-0.1 * l, 0.0, 0.45 * h, h - head, 0.45 * l, 0.8 * w, clothes)
        else:  # legs and arms swing in opposite phase while walking
            for side in (-1, 1):
                b.add(0.0, side * 0.12 * w, 0.0, 0.48 * h, 0.26, 0.28 * w, trousers, swing=side * 0.22 * h / 1.76)
            b.add(0.0, 0.0, 0.48 * h, h - head, 0.45 * l, 0.8 * w, clothes)
            for side in (-1, 1):
                b.add(0.0, side * 0.45 * w, 0.5 * h, h - head - 0.04 * h, 0.16, 0.12, clothes,
                      swing=-side * 0.12 * h / 1.76)
        b.add(0.02, 0.0, h - head, h, 0.2, 0.18, skin)
    elif name == "traffic_cone":
        b.add(0.0, 0.0, 0.0, 0.04, l, w, (0.1, 0.1, 0.1))
        body = h - 0.04
        b.add(0.0, 0.0, 0.04, 0.04 + 0.45 * body, 0.8 * l, 0.8 * w, (0.95, 0.35, 0.05), REFLECTOR, taper=0.6)
        b.add(0.0, 0.0, 0.04 + 0.45 * body, 0.04 + 0.65 * body, 0.48 * l, 0.48 * w, (0.95, 0.95, 0.95),
              REFLECTOR, taper=0.7)
        b.add(0.0, 0.0, 0.04 + 0.65 * body, h, 0.34 * l, 0.34 * w, (0.95, 0.35, 0.05), REFLECTOR, taper=0.35)
    elif name == "barrier":
        if rng.random() < 0.5:  # concrete jersey barrier
            tone = rng.uniform(0.55, 0.8)
            b.add(0.0, 0.0, 0.0, h, l, w, (tone, tone, tone * 0.96), taper=0.45)
        else:  # plastic barrier: red/white segments along its width (y)
            segments = 4
            for k in range(segments):
                y = -w / 2 + (k + 0.5) * w / segments
                color = (0.85, 0.1, 0.08) if k % 2 == 0 else (0.95, 0.95, 0.95)
                b.add(0.0, y, 0.0, h, l, w / segments, color, REFLECTOR, taper=0.8)
    else:
        raise ValueError(f"unknown detection class {name!r}; expected one of {sorted(CATEGORY)}")
    return b.build(owner)


def sample_size(name: str, rng: np.random.Generator, with_rider: bool = False, sitting: bool = False
                ) -> tuple[float, float, float]:
    """[w, l, h] from the class mean and spread (clipped at 2 sigma); riders raise cycles, sitting lowers people."""
    mean, std = np.array(SIZE_MEAN[name]), np.array(SIZE_STD[name])
    w, l, h = mean + std * np.clip(rng.standard_normal(3), -2.0, 2.0)
    if name in ("motorcycle", "bicycle"):
        h = h + 0.38 if with_rider else h - 0.12
    if name == "pedestrian" and sitting:
        h = 0.72 * h
    if name in ("truck", "trailer", "bus", "construction_vehicle"):
        l = max(l, 4.5)
    return float(w), float(l), float(h)

"""The city: a road grid with lanes, sidewalks and blocks of buildings, walls and trees (static, not annotated).

Global frame = map frame: x east, y north, z up, metres, ground at z = 0, origin at the map's lower-left corner
(as nuScenes' map masks). Roads run along x (at y = `road_y`) and along y (at x = `road_x`); right-hand traffic.
Cross-section, by distance d from a road's centre line: two driving lanes per direction (centres 1.75 and 5.25 m),
a parking strip (centre 8.0 m), asphalt up to 9.25 m, sidewalk to 13 m, then the block (buildings set back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftkd.data.synth.shapes import LIGHT, Primitive, cuboid

LANE_OFFSETS = (1.75, 5.25)  # driving lane centres, right of the centre line (m)
PARKING_OFFSET = 8.0  # parking strip centre (m)
CYCLE_OFFSET = 6.6  # where cyclists ride (outer part of the outer lane)
ROAD_HALF_WIDTH = 9.25  # asphalt edge (m)
SIDEWALK_EDGE = 13.0  # outer edge of the sidewalk (m)
WALK_OFFSETS = (10.4, 12.4)  # pedestrian walking lines on the sidewalk (m)
POLE_OFFSET = 9.6  # street lights stand on the kerb side of the sidewalk (m)
CITY_MARGIN = 60.0  # first/last road this far from the map border (m)


def _hash01(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point (a cheap integer hash)."""
    h = ix.astype(np.int64) * 73856093 ^ iy.astype(np.int64) * 19349663 ^ salt * 83492791
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float32) / 65536.0


_TILE = 256  # noise tiles repeat every 256 cells
_lattice = np.arange(_TILE)
NOISE_TILES = np.stack([_hash01(_lattice[:, None], _lattice[None, :], salt) for salt in range(3)]) - 0.5  # [3, T, T]


def _smooth_tile(coarse: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of a periodic tile by an integer factor (so a nearest lookup of it looks smooth)."""
    size = coarse.shape[0]
    t = np.arange(size * factor) / factor
    i0 = np.floor(t).astype(np.int64)
    f = (t - i0).astype(np.float32)
    i1 = (i0 + 1) % size
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i1] * f[:, None]  # [S*factor, S]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]  # [S*factor, S*factor]


STAIN_CELL, STAIN_FACTOR = 3.0, 6  # stains vary over 3 m, looked up at 0.5 m
STAIN_TILE = _smooth_tile(NOISE_TILES[2, :64, :64], STAIN_FACTOR).astype(np.float32)  # [384, 384], period 192 m


def cell_noise(x: np.ndarray, y: np.ndarray, cell: float, salt: int) -> np.ndarray:
    """Piecewise-constant lattice noise in [-0.5, 0.5) (grain of asphalt and concrete)."""
    ix = np.floor(x * (1.0 / cell)).astype(np.int64) & (_TILE - 1)
    iy = np.floor(y * (1.0 / cell)).astype(np.int64) & (_TILE - 1)
    return NOISE_TILES[salt][ix, iy]


def stain_noise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth noise in [-0.5, 0.5) varying over about 3 m (stains on asphalt, patches of grass)."""
    scale = STAIN_FACTOR / STAIN_CELL
    size = STAIN_TILE.shape[0]
    return STAIN_TILE[(x * scale).astype(np.int64) % size, (y * scale).astype(np.int64) % size]


# ground kinds -> albedo (RGB) and lidar reflectivity
GRASS, PAVING, DIRT, SIDEWALK, ASPHALT, WHITE, YELLOW = range(7)
GROUND_ALBEDO = np.array([[0.30, 0.42, 0.22], [0.52, 0.50, 0.47], [0.50, 0.42, 0.32], [0.62, 0.61, 0.58],
                          [0.27, 0.27, 0.28], [0.86, 0.86, 0.84], [0.85, 0.70, 0.20]], dtype=np.float32)
GROUND_REFLECTIVITY = np.array([12.0, 15.0, 12.0, 20.0, 8.0, 70.0, 70.0], dtype=np.float32)


@dataclass
class City:
    """Road grid + static scenery. `primitives` are buildings, walls and trees (occluders, never annotated)."""

    extent: float  # the map covers [0, extent]^2 metres
    road_x: np.ndarray  # [Rx] x of the roads running along y
    road_y: np.ndarray  # [Ry] y of the roads running along x
    block_kind: np.ndarray  # [Rx + 1, Ry + 1] ground kind of each block (0 grass, 1 paving, 2 dirt)
    primitives: Primitive  # static scenery in the global frame

    def nearest_road(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Signed distances to the nearest road running along y (dx) and along x (dy), and the block indices
        (number of roads running along y west of x, and along x south of y)."""
        bx, by = np.searchsorted(self.road_x, x), np.searchsorted(self.road_y, y)
        ix, iy = np.clip(bx, 1, len(self.road_x) - 1), np.clip(by, 1, len(self.road_y) - 1)
        dx_left, dx_right = x - self.road_x[ix - 1], x - self.road_x[ix]
        dy_low, dy_high = y - self.road_y[iy - 1], y - self.road_y[iy]
        dx = np.where(dx_left < -dx_right, dx_left, dx_right)
        dy = np.where(dy_low < -dy_high, dy_low, dy_high)
        return dx, dy, bx, by

    def ground_kind(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """[N] int ground kind (GRASS .. YELLOW) at global (x, y): blocks, sidewalks, asphalt and markings."""
        dx, dy, bx, by = self.nearest_road(x, y)
        adx, ady = np.abs(dx), np.abs(dy)
        on_vertical, on_horizontal = adx < ROAD_HALF_WIDTH, ady < ROAD_HALF_WIDTH
        asphalt = on_vertical | on_horizontal
        kind = self.block_kind[bx, by].astype(np.int64)
        kind[~asphalt & ((adx < SIDEWALK_EDGE) | (ady < SIDEWALK_EDGE))] = SIDEWALK
        kind[asphalt] = ASPHALT
        # markings along the road the point lies on (none inside junctions), tested on those points only
        plain = np.flatnonzero(on_vertical ^ on_horizontal)
        vertical = on_vertical[plain]
        along = np.where(vertical, y[plain], x[plain])
        across = np.where(vertical, adx[plain], ady[plain])
        gap = np.where(vertical, ady[plain], adx[plain]) - ROAD_HALF_WIDTH  # beyond the crossing road's asphalt
        white = (np.abs(across - 3.5) < 0.08) & (np.mod(along, 9.0) < 3.0)  # dashed lane divider
        white |= np.abs(across - 7.0) < 0.1  # edge of the parking strip
        white |= (gap > 0.5) & (gap < 3.5) & (across < 8.8) & (np.mod(across, 1.2) < 0.6)  # zebra crossing
        white |= (np.abs(gap - 4.0) < 0.2) & (across < 7.0)  # stop line
        kind[plain[white]] = WHITE
        kind[plain[(across > 0.08) & (across < 0.24)]] = YELLOW
        return kind

    def ground(self, x: np.ndarray, y: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Albedo RGB [3, N] (planar) in [0, 1] and lidar reflectivity [N] of the ground at global (x, y).

        `distance` (metres from the viewer) fades fine texture out far away, where it would only alias.
        """
        kind = self.ground_kind(x, y)
        fine = np.clip(1.0 - distance * (1.0 / 35.0), 0.0, 1.0).astype(np.float32)
        grain = cell_noise(x, y, 0.33, 1) * fine
        tone = 1.0 + 0.35 * stain_noise(x, y) + 0.3 * grain
        sidewalk = np.flatnonzero(kind == SIDEWALK)
        sx, sy = x[sidewalk], y[sidewalk]
        joints = ((np.mod(sx, 1.5) < 0.06) | (np.mod(sy, 1.5) < 0.06)) & (fine[sidewalk] > 0.3)
        tone[sidewalk[joints]] -= 0.2
        paint = kind >= WHITE
        tone[paint] = 1.0 + 0.1 * grain[paint]
        return GROUND_ALBEDO.T[:, kind] * tone, GROUND_REFLECTIVITY[kind]  # [7, 3] -> [3, 7] -> [3, N]

    def map_mask(self, resolution: float = 0.1) -> np.ndarray:
        """The semantic prior as nuScenes stores it: uint8 [H, W], 255 on road and sidewalk, row 0 = north edge."""
        size = int(round(self.extent / resolution))
        centres = (np.arange(size) + 0.5) * resolution
        near_x = np.min(np.abs(centres[:, None] - self.road_x[None, :]), axis=1) < SIDEWALK_EDGE  # [W]
        near_y = np.min(np.abs(centres[::-1, None] - self.road_y[None, :]), axis=1) < SIDEWALK_EDGE  # [H], north first
        mask = np.empty((size, size), dtype=np.uint8)
        np.bitwise_or(near_y[:, None], near_x[None, :], out=mask, dtype=np.uint8)
        mask *= 255
        return mask


def _block_side_scenery(rng: np.random.Generator, start: float, end: float, edge: float, outward: float,
                        along_x: bool, occlusion: float) -> list[tuple[np.ndarray, tuple[float, float, float], int]]:
    """Buildings or a wall along one side of a block, and street lights and trees on its sidewalk.

    `edge` is the sidewalk's outer edge coordinate across the road, `outward` (+1/-1) points into the block.
    Returns (vertices [8, 3], colour, material) tuples.
    """
    items = []

    def place(a0: float, a1: float, c0: float, c1: float, z0: float, z1: float, color, material: int) -> None:
        along_c, across_c = (a0 + a1) / 2, (c0 + c1) / 2
        length, depth = a1 - a0, abs(c1 - c0)
        if along_x:
            verts = cuboid(along_c, across_c, (z0 + z1) / 2, length, depth, z1 - z0)
        else:
            verts = cuboid(across_c, along_c, (z0 + z1) / 2, depth, length, z1 - z0)
        items.append((verts, color, material))

    wall = rng.random() < 0.2
    a = start + rng.uniform(0, 6)
    while a < end - 6:
        if wall:
            length = min(rng.uniform(15, 40), end - a)
            c0 = edge + outward * 0.3
            tone = rng.uniform(0.45, 0.7)
            place(a, a + length, c0, c0 + outward * 0.35, 0.0, rng.uniform(1.8, 2.6),
                  (tone, tone * 0.95, tone * 0.9), 0)
            a += length + rng.uniform(2, 10)
        else:
            width = min(rng.uniform(10, 32), end - a)
            setback = rng.uniform(0.5, 4.0)
            depth = rng.uniform(10, 25)
            height = rng.uniform(5, 28) if rng.random() < 0.85 else rng.uniform(28, 50)
            c0 = edge + outward * setback
            hue = rng.uniform(0.45, 0.85, size=3) * rng.uniform(0.7, 1.0)
            place(a, a + width, c0, c0 + outward * depth, 0.0, height, tuple(hue), 1)
            a += width + (rng.uniform(0.5, 4) if rng.random() < 0.7 else rng.uniform(6, 14))
    # street lights on the kerb side (thin vertical structure: parallax cues, and lamps that glow at night)
    pole_c = edge - outward * (SIDEWALK_EDGE - POLE_OFFSET)
    toward_road = -outward
    a = start + rng.uniform(2, 20)
    while a < end - 2:
        height = rng.uniform(6.5, 8.0)
        place(a - 0.09, a + 0.09, pole_c - 0.09, pole_c + 0.09, 0.0, height, (0.35, 0.36, 0.38), 0)
        arm_end = pole_c + toward_road * 1.8
        place(a - 0.06, a + 0.06, min(pole_c, arm_end), max(pole_c, arm_end), height - 0.12, height,
              (0.35, 0.36, 0.38), 0)
        place(a - 0.25, a + 0.25, min(arm_end, arm_end - toward_road * 0.6), max(arm_end, arm_end - toward_road * 0.6),
              height - 0.28, height - 0.12, (1.0, 0.85, 0.55), LIGHT)
        a += rng.uniform(28, 40)
    # street trees on the sidewalk (inner side, near the curb)
    spacing = rng.uniform(9, 18) / max(occlusion, 1e-3)
    a = start + rng.uniform(0, spacing)
    tree_c = edge - outward * (SIDEWALK_EDGE - 11.6)
    while a < end and occlusion > 0 and rng.random() < 0.9:
        trunk, crown = rng.uniform(0.25, 0.4), rng.uniform(2.5, 4.5)
        crown_base = rng.uniform(2.2, 3.2)
        place(a - trunk / 2, a + trunk / 2, tree_c - trunk / 2, tree_c + trunk / 2, 0.0, crown_base + 0.5,
              (0.33, 0.25, 0.17), 0)
        g = rng.uniform(0.6, 1.0)
        place(a - crown / 2, a + crown / 2, tree_c - crown / 2, tree_c + crown / 2, crown_base,
              crown_base + crown * rng.uniform(0.8, 1.2), (0.18 * g, 0.36 * g, 0.14 * g), 0)
        a += spacing * rng.uniform(0.7, 1.3)
    return items


def build_city(seed: int, extent: float = 1000.0, occlusion: float = 1.0) -> City:
    """Lay out the road grid (irregular blocks of 70-140 m) and the static scenery, deterministically from `seed`."""
    rng = np.random.default_rng([seed, 7919])

    def road_positions() -> np.ndarray:
        positions = [CITY_MARGIN]
        while positions[-1] + 140 < extent - CITY_MARGIN:
            positions.append(positions[-1] + rng.uniform(70, 140))
        return np.array(positions)

    road_x, road_y = road_positions(), road_positions()
    bounds_x = np.concatenate([[0.0], road_x, [extent]])
    bounds_y = np.concatenate([[0.0], road_y, [extent]])
    block_kind = rng.choice(3, size=(len(bounds_x) - 1, len(bounds_y) - 1), p=[0.4, 0.45, 0.15])
    items = []
    for i in range(len(bounds_x) - 1):
        for j in range(len(bounds_y) - 1):
            x0 = bounds_x[i] + (SIDEWALK_EDGE if i > 0 else 0.0)
            x1 = bounds_x[i + 1] - (SIDEWALK_EDGE if i + 1 < len(bounds_x) - 1 else 0.0)
            y0 = bounds_y[j] + (SIDEWALK_EDGE if j > 0 else 0.0)
            y1 = bounds_y[j + 1] - (SIDEWALK_EDGE if j + 1 < len(bounds_y) - 1 else 0.0)
            if j > 0:  # south side faces the road at bounds_y[j]
                items += _block_side_scenery(rng, x0, x1, y0, 1.0, True, occlusion)
            if j + 1 < len(bounds_y) - 1:
                items += _block_side_scenery(rng, x0, x1, y1, -1.0, True, occlusion)
            if i > 0:
                items += _block_side_scenery(rng, y0 + 26, y1 - 26, x0, 1.0, False, occlusion)
            if i + 1 < len(bounds_x) - 1:
                items += _block_side_scenery(rng, y0 + 26, y1 - 26, x1, -1.0, False, occlusion)
    primitives = Primitive(
        vertices=np.stack([v for v, _, _ in items]).astype(np.float32),
        color=np.array([c for _, c, _ in items], dtype=np.float32),
        material=np.array([m for _, _, m in items], dtype=np.int8),
        owner=np.full(len(items), -1, dtype=np.int32),
    )
    return City(extent, road_x.astype(np.float32), road_y.astype(np.float32), block_kind, primitives)

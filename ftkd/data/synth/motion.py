"""Paths on the road grid and speed profiles (cruise, brake to a stop, wait, start, slow down for turns).

A `Path` is a dense polyline with headings and arc length; a `Trajectory` is a path plus arc length over time,
so every agent (and the ego) has a pose at any timestamp. Frames: global (x east, y north), metres, radians.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ftkd.data.synth.city import ROAD_HALF_WIDTH, City

STEP = 0.5  # polyline spacing (m)
SIM_DT = 0.05  # speed-profile integration step (s)


@dataclass
class Path:
    points: np.ndarray  # [n, 2] global xy (m)
    heading: np.ndarray  # [n] yaw (rad, unwrapped)
    s: np.ndarray  # [n] arc length (m)
    stops: list[float] = field(default_factory=list)  # arc lengths of stop lines before junctions (m)
    turns: list[tuple[float, float, float]] = field(default_factory=list)  # (s_start, s_end, radius) of turns

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def pose(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y, yaw at arc lengths `s` (clamped to the path)."""
        x = np.interp(s, self.s, self.points[:, 0])
        y = np.interp(s, self.s, self.points[:, 1])
        return x, y, np.interp(s, self.s, self.heading)


def static_path(x: float, y: float, yaw: float) -> Path:
    return Path(np.array([[x, y], [x, y]]), np.array([yaw, yaw]), np.array([0.0, 1e-6]))


def _right(d: np.ndarray) -> np.ndarray:
    return np.array([d[1], -d[0]])


def route(city: City, rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, offset: float,
          length: float, turn_probs: tuple[float, float, float] = (0.6, 0.2, 0.2),
          stop_distance: float = ROAD_HALF_WIDTH + 4.5) -> Path:
    """Drive `length` metres along the grid from `start` (on the lane `offset` m right of a centre line).

    `direction` is an axis-aligned unit vector; at each junction the route goes straight / left / right with
    `turn_probs` (forced to turn at the city's edge, towards the centre). Turns are circular fillets between lanes.
    Stop lines are recorded `stop_distance` metres before each junction centre.
    """
    points, headings = [start.astype(np.float64)], [float(np.arctan2(direction[1], direction[0]))]
    stops: list[float] = []
    turns: list[tuple[float, float, float]] = []
    p, d = start.astype(np.float64), direction.astype(np.float64)
    travelled = 0.0

    def straight_to(target: np.ndarray) -> None:
        nonlocal travelled
        dist = float(np.dot(target - points[-1], d))
        if dist <= 0:
            return
        n = max(1, int(np.ceil(dist / STEP)))
        for _ in range(n):
            points.append(points[-1] + d * (dist / n))
            headings.append(headings[-1])
        travelled += dist

    while travelled < length:
        along_x = abs(d[0]) > 0.5
        crossings = city.road_x if along_x else city.road_y
        u = p[0] if along_x else p[1]
        sign = d[0] if along_x else d[1]
        ahead = crossings[(crossings - u) * sign > stop_distance]
        if len(ahead) == 0:  # map edge: run out the remaining length straight
            straight_to(points[-1] + d * (length - travelled + STEP))
            break
        c_along = ahead[np.argmin(np.abs(ahead - u))]
        centre_cross = city.road_y if along_x else city.road_x
        c_perp = centre_cross[np.argmin(np.abs(centre_cross - (p[1] if along_x else p[0])))]
        centre = np.array([c_along, c_perp]) if along_x else np.array([c_perp, c_along])
        stops.append(travelled + float(np.dot(centre - points[-1], d)) - stop_distance)
        straight_choice, left_p, right_p = turn_probs
        more_ahead = len(ahead) > 1
        probs = np.array([straight_choice if more_ahead else 0.0, left_p, right_p])
        # keep routes inside the city: do not turn towards an edge that has no road beyond
        for k, turn in ((1, np.array([-d[1], d[0]])), (2, _right(d))):
            nxt = (city.road_y if along_x else city.road_x)
            pos = centre[1] if along_x else centre[0]
            tsign = turn[1] if along_x else turn[0]
            if not np.any((nxt - pos) * tsign > 20):
                probs[k] = 0.0
        if probs.sum() == 0:
            probs = np.array([1.0, 0.0, 0.0])
        choice = rng.choice(3, p=probs / probs.sum())
        if choice == 0:
            straight_to(centre + offset * _right(d) + d * (ROAD_HALF_WIDTH + 0.5))
        else:
            new_d = np.array([-d[1], d[0]]) if choice == 1 else _right(d)
            sign_corner = 1.0 if choice == 1 else -1.0
            corner = centre + offset * _right(d) + sign_corner * offset * d
            radius = max(ROAD_HALF_WIDTH + sign_corner * offset, 1.0)
            t1 = corner - radius * d
            straight_to(t1)
            arc_centre = t1 + (-radius if choice == 1 else radius) * _right(d)
            start_angle = np.arctan2(*(t1 - arc_centre)[::-1])
            sweep = np.pi / 2 * (1 if choice == 1 else -1)
            n = max(2, int(np.ceil(radius * np.pi / 2 / STEP)))
            s_start = travelled
            for k in range(1, n + 1):
                angle = start_angle + sweep * k / n
                points.append(arc_centre + radius * np.array([np.cos(angle), np.sin(angle)]))
                headings.append(headings[-1] + sweep / n)
            travelled += radius * np.pi / 2
            turns.append((s_start, travelled, radius))
            d = new_d
        p = points[-1]
    pts = np.array(points)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    return Path(pts, np.array(headings), np.concatenate([[0.0], np.cumsum(seg)]), stops, turns)


@dataclass
class Trajectory:
    """A path driven over time: arc length s(t) sampled every SIM_DT seconds from t = 0."""

    path: Path
    s_of_t: np.ndarray  # [T] metres
    offset: float = 0.0  # constant arc-length shift (followers such as trailers behind their truck)

    def pose(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y, yaw at times `t` (s since the scene start)."""
        times = np.arange(len(self.s_of_t)) * SIM_DT
        s = np.interp(t, times, self.s_of_t) - self.offset
        return self.path.pose(s)

    def distance(self, t: np.ndarray | float) -> np.ndarray:
        """Arc length travelled (m) at times `t` (s since the scene start)."""
        times = np.arange(len(self.s_of_t)) * SIM_DT
        return np.interp(t, times, self.s_of_t) - self.offset

    def speed(self, t: np.ndarray | float) -> np.ndarray:
        """|v| (m/s) at times `t` (s since the scene start), from the finite differences of s(t)."""
        times = np.arange(len(self.s_of_t)) * SIM_DT
        if len(times) < 2:
            return np.zeros_like(np.asarray(t, dtype=np.float64))
        return np.interp(t, times, np.gradient(self.s_of_t, SIM_DT))


def speed_profile(path: Path, duration: float, cruise: float, rng: np.random.Generator, *, v0: float | None = None,
                  stop_prob: float = 0.35, wait: tuple[float, float] = (2.0, 10.0), turn_speed: float = 5.0,
                  accel: float = 1.8, brake: float = 2.5,
                  extra_stops: list[tuple[float, float]] | None = None) -> np.ndarray:
    """Arc length over time for a driver that cruises, slows for turns and stops at some stop lines.

    Each stop line of `path` is a red light with probability `stop_prob` (waiting a uniform `wait` seconds);
    `extra_stops` are (arc length, wait seconds) stops at other places (e.g. a pedestrian at the kerb).
    Returns s(t) sampled every SIM_DT seconds over `duration` (plus one step).
    """
    stops = [(s, float(rng.uniform(*wait))) for s in path.stops if rng.random() < stop_prob]
    stops += list(extra_stops or [])
    stops.sort()
    steps = int(np.ceil(duration / SIM_DT)) + 1
    s_out = np.empty(steps)
    s, v = 0.0, cruise if v0 is None else v0
    stop_index, waited = 0, 0.0
    for k in range(steps):
        s_out[k] = s
        limit = cruise
        for t0, t1, radius in path.turns:
            if s < t1 and t0 - s < 60:
                v_turn = min(turn_speed * np.sqrt(max(radius, 1.0) / 6.0), cruise)
                limit = min(limit, v_turn if s >= t0 else np.sqrt(v_turn**2 + 2 * brake * (t0 - s)))
        if stop_index < len(stops):
            gap = stops[stop_index][0] - s
            limit = min(limit, np.sqrt(max(0.0, 2 * brake * 0.8 * (gap - 0.3))))
            if gap < 1.5 and v < 0.2:
                waited += SIM_DT
                if waited >= stops[stop_index][1]:
                    stop_index, waited = stop_index + 1, 0.0
            elif gap < -1.0:
                stop_index, waited = stop_index + 1, 0.0
        # speed up smoothly; slow down along the braking envelope itself, so stops land on the stop line
        a = min((limit - v) / 0.8, accel) if limit > v else max((limit - v) / SIM_DT, -brake * 2.0)
        v = max(0.0, v + a * SIM_DT)
        s = min(s + v * SIM_DT, path.length)
    return s_out

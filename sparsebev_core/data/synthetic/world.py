"""The simple world behind the synthetic nuScenes scenes: a curved road, lanes, moving boxes.

A scene is a road (a circular arc of curvature ``kappa``; nearly straight when ``kappa`` is
small) with four driving lanes, two parking strips and two sidewalks. The ego car drives in
the right lane; objects of the ten detection classes drive in lanes (one speed per lane, so
nothing ever collides), walk on the sidewalks or stand still at the road side. Every pose is
an exact function of time, so annotations, velocities and rendered pixels agree.

Road coordinates: ``s`` = arc length along the centre line, ``l`` = lateral offset to the
left of the driving direction (metres). World coordinates: x, y on the ground (z = 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...geometry import CLASS_NAMES, make_transform, rot_z

# nuScenes category name used for each detection class (the devkit maps it back).
CLASS_CATEGORY: dict[str, str] = {
    'car': 'vehicle.car',
    'truck': 'vehicle.truck',
    'construction_vehicle': 'vehicle.construction',
    'bus': 'vehicle.bus.rigid',
    'trailer': 'vehicle.trailer',
    'barrier': 'movable_object.barrier',
    'motorcycle': 'vehicle.motorcycle',
    'bicycle': 'vehicle.bicycle',
    'pedestrian': 'human.pedestrian.adult',
    'traffic_cone': 'movable_object.trafficcone',
}

# mean size (length dx, width dy, height dz) in metres, close to the nuScenes class means
CLASS_SIZE_LWH: dict[str, tuple[float, float, float]] = {
    'car': (4.6, 1.95, 1.7),
    'truck': (6.9, 2.5, 2.9),
    'construction_vehicle': (6.4, 2.8, 3.2),
    'bus': (11.0, 2.95, 3.5),
    'trailer': (12.0, 2.9, 3.8),
    'barrier': (0.5, 2.5, 1.0),
    'motorcycle': (2.1, 0.8, 1.5),
    'bicycle': (1.7, 0.6, 1.3),
    'pedestrian': (0.73, 0.67, 1.77),
    'traffic_cone': (0.41, 0.41, 1.07),
}

# RGB base colour per class (distinct, so that a small detector can learn the classes)
CLASS_COLOR: dict[str, tuple[int, int, int]] = {
    'car': (200, 40, 40),
    'truck': (40, 90, 200),
    'construction_vehicle': (235, 170, 20),
    'bus': (30, 170, 80),
    'trailer': (150, 80, 200),
    'barrier': (245, 245, 245),
    'motorcycle': (20, 200, 200),
    'bicycle': (230, 90, 200),
    'pedestrian': (250, 140, 60),
    'traffic_cone': (255, 90, 0),
}

# classes by evaluation range (devkit detection_cvpr_2019: 30 / 40 / 50 m): the guaranteed
# objects of the first ones stand nearest to the ego
NEAREST_FIRST = ('traffic_cone', 'barrier', 'pedestrian', 'bicycle', 'motorcycle', 'car', 'truck',
               'bus', 'trailer', 'construction_vehicle')

EGO_LANE = -1.75          # metres left of the centre line (right-hand traffic)
ROAD_HALF_WIDTH = 7.0     # four lanes of 3.5 m
PARKING_EDGE = 10.5       # parking strips 7.0 .. 10.5 m
SIDEWALK_EDGE = 15.0      # sidewalks 10.5 .. 15 m


@dataclass
class Lane:
    """Objects on one lateral offset ``l``: direction +1 (with the ego) or -1, one speed."""
    offset: float
    direction: int
    speed: float
    classes: tuple[str, ...]
    weights: tuple[float, ...]
    gap: tuple[float, float]      # free space between consecutive objects (min, max) in m


@dataclass
class Road:
    """A circular-arc road through ``origin`` with heading ``heading0`` at s = 0."""
    origin: np.ndarray            # (2,) world xy of the centre line at s = 0
    heading0: float               # rad, direction of increasing s at s = 0
    kappa: float                  # curvature 1/m (sign: + turns left); |kappa| >= 1e-4

    def heading(self, s: np.ndarray) -> np.ndarray:
        """Direction of the centre line at arc length ``s``."""
        return self.heading0 + self.kappa * np.asarray(s, np.float64)

    def point(self, s: np.ndarray, l: np.ndarray) -> np.ndarray:
        """World xy (..., 2) of road coordinates (s, l)."""
        s = np.asarray(s, np.float64)
        l = np.asarray(l, np.float64)
        th = self.heading(s)
        k = self.kappa
        bx = self.origin[0] + (np.sin(th) - math.sin(self.heading0)) / k
        by = self.origin[1] - (np.cos(th) - math.cos(self.heading0)) / k
        return np.stack([bx - l * np.sin(th), by + l * np.cos(th)], axis=-1)

    def road_coords(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`point`: (s, l) of world points xy (..., 2)."""
        k = self.kappa
        n0 = np.array([-math.sin(self.heading0), math.cos(self.heading0)])
        centre = self.origin + n0 / k
        d = np.asarray(xy, np.float64) - centre
        r = np.hypot(d[..., 0], d[..., 1])
        l = np.sign(k) * (1.0 / abs(k) - r)
        # n(s) = (P - C) / (l - 1/k) = (-sin th, cos th)
        scale = 1.0 / (l - 1.0 / k)
        nx, ny = d[..., 0] * scale, d[..., 1] * scale
        th = np.arctan2(-nx, ny)
        dth = (th - self.heading0 + np.pi) % (2 * np.pi) - np.pi
        return dth / k, l


@dataclass
class WorldObjects:
    """All objects of a scene as arrays (N = number of objects).

    Motion: ``s(t) = s0 + direction * speed * t`` on the lane offset ``l``; the box heading
    is the road heading (+ pi when driving against s) + ``yaw_jitter``.
    """
    labels: np.ndarray            # (N,) int index into CLASS_NAMES
    size_lwh: np.ndarray          # (N, 3) dx, dy, dz
    s0: np.ndarray                # (N,)
    l: np.ndarray                 # (N,)
    direction: np.ndarray         # (N,) +1 / -1
    speed: np.ndarray             # (N,) m/s along the lane (0 = static)
    yaw_jitter: np.ndarray        # (N,)
    shade: np.ndarray             # (N,) colour variation factor

    def __len__(self) -> int:
        return int(len(self.labels))


@dataclass
class SyntheticWorld:
    """Road, ego motion and objects of one scene; poses are functions of scene time t (s)."""
    road: Road
    ego_speed: float
    ego_s0: float
    objects: WorldObjects
    texture: np.ndarray           # (256, 256) float32 value noise in [0, 1] for the ground

    def T_world_ego(self, t: float) -> np.ndarray:
        """Ego pose (4, 4) at scene time t: on the ego lane, heading along the road."""
        s = self.ego_s0 + self.ego_speed * t
        xy = self.road.point(s, EGO_LANE)
        yaw = float(self.road.heading(s))
        return make_transform(rot_z(yaw), [xy[0], xy[1], 0.0])

    def boxes_world(self, t: float) -> np.ndarray:
        """Object boxes (N, 9) ``[x, y, z_bottom, dx, dy, dz, yaw, vx, vy]`` in world at t.

        Velocities are the exact time derivative of the centre.
        """
        o = self.objects
        s = o.s0 + o.direction * o.speed * t
        xy = self.road.point(s, o.l)
        th = self.road.heading(s)
        yaw = th + np.where(o.direction < 0, np.pi, 0.0) + o.yaw_jitter
        # d/dt P(s, l) = ds/dt * (1 - kappa l) * (cos th, sin th)
        v = o.direction * o.speed * (1.0 - self.road.kappa * o.l)
        vel = np.stack([v * np.cos(th), v * np.sin(th)], axis=-1)
        out = np.zeros((len(o), 9), dtype=np.float64)
        out[:, 0:2] = xy
        out[:, 3:6] = o.size_lwh
        out[:, 6] = (yaw + np.pi) % (2 * np.pi) - np.pi
        out[:, 7:9] = vel
        return out


def _lanes(rng: np.random.Generator, ego_speed: float) -> list[Lane]:
    """The lanes of a scene with their traffic; speeds differ per scene."""
    vehicles = ('car', 'truck', 'bus', 'construction_vehicle', 'trailer', 'motorcycle')
    vehicle_w = (0.55, 0.12, 0.08, 0.06, 0.06, 0.13)
    parked = ('car', 'truck', 'bus', 'construction_vehicle', 'trailer', 'motorcycle',
              'bicycle', 'barrier', 'traffic_cone')
    parked_w = (0.28, 0.07, 0.05, 0.07, 0.07, 0.08, 0.08, 0.15, 0.15)
    return [
        Lane(EGO_LANE, +1, ego_speed, ('car', 'truck', 'bus'), (0.75, 0.15, 0.1), (8.0, 25.0)),
        Lane(-5.25, +1, float(rng.uniform(3.0, 11.0)), vehicles, vehicle_w, (6.0, 22.0)),
        Lane(+1.75, -1, float(rng.uniform(4.0, 12.0)), vehicles, vehicle_w, (6.0, 22.0)),
        Lane(+5.25, -1, float(rng.uniform(2.0, 8.0)), ('car', 'motorcycle', 'bicycle', 'truck'),
             (0.5, 0.2, 0.2, 0.1), (6.0, 22.0)),
        Lane(-8.75, +1, 0.0, parked, parked_w, (2.0, 12.0)),
        Lane(+8.75, -1, 0.0, parked, parked_w, (2.0, 12.0)),
        Lane(-12.0, +1, float(rng.uniform(0.8, 1.6)), ('pedestrian', 'bicycle'), (0.8, 0.2),
             (1.5, 10.0)),
        Lane(+12.0, -1, float(rng.uniform(0.8, 1.6)), ('pedestrian',), (1.0,), (1.5, 10.0)),
        Lane(-13.8, +1, 0.0, ('pedestrian', 'bicycle', 'traffic_cone'), (0.7, 0.15, 0.15),
             (2.0, 12.0)),
        Lane(+13.8, +1, 0.0, ('pedestrian', 'barrier', 'traffic_cone'), (0.6, 0.2, 0.2),
             (2.0, 12.0)),
    ]


def _value_noise(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Smooth tileable noise (size, size) in [0, 1] from a few octaves of random grids."""
    out = np.zeros((size, size), dtype=np.float64)
    amp_total = 0.0
    for cells, amp in ((8, 1.0), (32, 0.6), (128, 0.35)):
        grid = rng.random((cells, cells))
        idx = np.arange(size) * cells / size
        i0 = np.floor(idx).astype(int)
        f = idx - i0
        f = f * f * (3 - 2 * f)
        i1 = (i0 + 1) % cells
        rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]             # (size, cells)
        layer = rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]       # (size, size)
        out += amp * layer
        amp_total += amp
    out /= amp_total
    out = (out - out.min()) / max(out.max() - out.min(), 1e-9)
    return out.astype(np.float32)


def make_world(rng: np.random.Generator, duration: float, min_per_class: int = 2
               ) -> SyntheticWorld:
    """Draw a scene: road shape, ego speed, lanes filled with objects along the drive.

    Besides the random traffic, ``min_per_class`` static objects of every class stand in the
    parking strips next to the ego's start (nearest the classes with the smallest evaluation
    range), so that every scene has visible ground truth of all ten classes.
    """
    kappa = float(rng.uniform(1.0 / 400.0, 1.0 / 120.0)) * float(rng.choice([-1.0, 1.0]))
    road = Road(origin=rng.uniform(-500.0, 500.0, size=2), heading0=float(rng.uniform(-np.pi, np.pi)),
                kappa=kappa)
    ego_speed = float(rng.uniform(4.0, 9.0))
    ego_s0 = 0.0
    s_lo, s_hi = ego_s0 - 70.0, ego_s0 + ego_speed * duration + 70.0

    cols: dict[str, list] = {k: [] for k in ('labels', 'size', 's0', 'l', 'dir', 'speed', 'jit')}

    def add(name: str, s_at_0: float, lane: Lane) -> float:
        mean = np.array(CLASS_SIZE_LWH[name])
        size = mean * rng.uniform(0.9, 1.1, size=3)
        if name in ('barrier',):
            # a barrier's long side is its width (dy): turn it to run along the road
            jit = np.pi / 2 + float(rng.uniform(-0.15, 0.15))
        elif name in ('traffic_cone',):
            jit = float(rng.uniform(-np.pi, np.pi))
        elif lane.speed == 0.0:
            # long vehicles stay nearly parallel so that they never reach into a driving lane
            turn = 0.25 if size[0] < 3.0 else 0.04
            jit = float(rng.uniform(-turn, turn)) + (np.pi if rng.random() < 0.3 else 0.0)
        else:
            jit = 0.0
        cols['labels'].append(CLASS_NAMES.index(name))
        cols['size'].append(size)
        cols['s0'].append(s_at_0)
        shift = (0.3 if size[0] < 3.0 else 0.1) if lane.speed == 0 else 0.0
        cols['l'].append(lane.offset + float(rng.uniform(-shift, shift)))
        cols['dir'].append(lane.direction)
        cols['speed'].append(lane.speed)
        cols['jit'].append(jit)
        return float(max(size[0], size[1]))

    lanes = _lanes(rng, ego_speed)
    for lane in lanes:
        # moving lanes: place objects along the stretch they will cover during the scene
        travel = lane.speed * duration
        lo = s_lo - (travel if lane.direction > 0 else 0.0)
        hi = s_hi + (travel if lane.direction < 0 else 0.0)
        s = lo + float(rng.uniform(0.0, lane.gap[1]))
        p = np.asarray(lane.weights) / np.sum(lane.weights)
        while s < hi:
            name = str(rng.choice(lane.classes, p=p))
            half = CLASS_SIZE_LWH[name][0] * 0.55
            if lane.offset == EGO_LANE and -10.0 - half < s + half - ego_s0 < 15.0 + half:
                s = ego_s0 + 15.0         # keep the ego's own spot (and some room) free
                continue
            length = add(name, s + half, lane)
            s += length * 1.1 + float(rng.uniform(*lane.gap))

    # guarantee every class near the ego's start, in view: static objects in the parking strips,
    # outward from the ego in four rows (two sides x ahead / behind), the classes with the
    # smallest evaluation range first; regular static objects in their way are dropped below
    n_regular = len(cols['labels'])
    needed = [name for name in CLASS_NAMES for _ in range(min_per_class)]
    needed.sort(key=lambda n: NEAREST_FIRST.index(n))
    rows = [(side, direction) for direction in (1.0, -1.0) for side in (-1.0, 1.0)]
    cursor = [ego_s0 + 3.0 * d for _, d in rows]
    for k, name in enumerate(needed):
        side, direction = rows[k % 4]
        length, width, _ = CLASS_SIZE_LWH[name]
        extent = width if name == 'barrier' else length          # along the road
        centre = cursor[k % 4] + direction * extent * 0.55
        cursor[k % 4] += direction * (extent * 1.1 + 2.0)
        add(name, centre, Lane(side * 8.75, +1, 0.0, (name,), (1.0,), (0.0, 0.0)))

    objects = WorldObjects(
        labels=np.array(cols['labels'], dtype=np.int64),
        size_lwh=np.array(cols['size'], dtype=np.float64).reshape(-1, 3),
        s0=np.array(cols['s0'], dtype=np.float64),
        l=np.array(cols['l'], dtype=np.float64),
        direction=np.array(cols['dir'], dtype=np.int64),
        speed=np.array(cols['speed'], dtype=np.float64),
        yaw_jitter=np.array(cols['jit'], dtype=np.float64),
        shade=rng.uniform(0.8, 1.15, size=len(cols['labels'])),
    )
    objects = _remove_overlaps(road, objects, first_kept=n_regular)
    return SyntheticWorld(road=road, ego_speed=ego_speed, ego_s0=ego_s0, objects=objects,
                          texture=_value_noise(rng))


def _remove_overlaps(road: Road, objects: WorldObjects, first_kept: int) -> WorldObjects:
    """Drop static objects whose footprint circle overlaps a static object placed with
    priority: the guaranteed ones (index >= ``first_kept``) first, then in order."""
    static = np.flatnonzero(objects.speed == 0.0)
    order = np.concatenate([static[static >= first_kept], static[static < first_kept]])
    xy = road.point(objects.s0, objects.l)
    radius = 0.5 * np.hypot(objects.size_lwh[:, 0], objects.size_lwh[:, 1])
    keep = np.ones(len(objects), dtype=bool)
    placed: list[int] = []
    for a in order:
        if any(np.hypot(*(xy[a] - xy[b])) < radius[a] + radius[b] for b in placed):
            keep[a] = False
        else:
            placed.append(int(a))
    return WorldObjects(objects.labels[keep], objects.size_lwh[keep], objects.s0[keep],
                        objects.l[keep], objects.direction[keep], objects.speed[keep],
                        objects.yaw_jitter[keep], objects.shade[keep])

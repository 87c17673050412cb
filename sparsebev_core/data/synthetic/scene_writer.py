"""One synthetic scene written into the nuScenes tables: :class:`SceneWriter` (log, calibration,
12 Hz camera sweeps with per-camera trigger offsets, 2 Hz keyframes, LIDAR_TOP sample_data,
annotations with visibility from the rendered id buffers), the JPEG / point-cloud files and the
static tables. ``scenes.make_synthetic`` drives it, one scene after another.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ...attributes import official_attribute
from ...geometry import (CAMERA_NAMES, CLASS_NAMES, NUSCENES_LIDAR_TOP_ROTATION_WXYZ,
                         NUSCENES_LIDAR_TOP_TRANSLATION, box_corners, invert_transform,
                         nuscenes_lidar_to_ego, rot_to_quat, transform_from_quat, yaw_to_quat)
from ...rig import NUSCENES_CAMERAS, Rig, RigCamera
from .render import CameraModel, box_pixel_area, render_camera
from .world import CLASS_CATEGORY, SyntheticWorld

# the nuScenes calibration (log n015) lives in sparsebev_core.rig (the default rig)

# camera trigger offsets (s) relative to the LIDAR_TOP keyframe stamp, CAMERA_NAMES order
CAMERA_TIME_OFFSETS = (0.0, 0.0085, -0.0085, 0.025, -0.017, 0.017)
OTHER_CAMERA_OFFSET_STEP = 0.006  # a camera of another rig fires this much after the previous


def camera_time_offset(name: str, index: int) -> float:
    """Trigger offset (s) of a rig camera: the nuScenes one for a nuScenes camera name,
    else ``index * OTHER_CAMERA_OFFSET_STEP``."""
    if name in CAMERA_NAMES:
        return CAMERA_TIME_OFFSETS[CAMERA_NAMES.index(name)]
    return index * OTHER_CAMERA_OFFSET_STEP
CAMERA_PERIOD_US = 83333          # 12 Hz
SWEEPS_PER_KEYFRAME = 6           # 12 Hz / 2 Hz
KEYFRAME_PERIOD_US = 500000
ANNOTATION_RANGE = 60.0           # m, BEV distance from the ego at which objects are annotated
FIRST_TIMESTAMP_US = 1532402927000000

NUSCENES_CATEGORIES = (
    'animal', 'human.pedestrian.adult', 'human.pedestrian.child',
    'human.pedestrian.construction_worker', 'human.pedestrian.personal_mobility',
    'human.pedestrian.police_officer', 'human.pedestrian.stroller',
    'human.pedestrian.wheelchair', 'movable_object.barrier', 'movable_object.debris',
    'movable_object.pushable_pullable', 'movable_object.trafficcone',
    'static_object.bicycle_rack', 'vehicle.bicycle', 'vehicle.bus.bendy', 'vehicle.bus.rigid',
    'vehicle.car', 'vehicle.construction', 'vehicle.emergency.ambulance',
    'vehicle.emergency.police', 'vehicle.motorcycle', 'vehicle.trailer', 'vehicle.truck',
)
NUSCENES_ATTRIBUTES = (
    'vehicle.moving', 'vehicle.stopped', 'vehicle.parked', 'cycle.with_rider',
    'cycle.without_rider', 'pedestrian.sitting_lying_down', 'pedestrian.standing',
    'pedestrian.moving',
)
VISIBILITY_LEVELS = (('1', 'v0-40'), ('2', 'v40-60'), ('3', 'v60-80'), ('4', 'v80-100'))


def visibility_token(fraction: float) -> str:
    """nuScenes visibility bin ('1'..'4') of the visible fraction of a box."""
    if fraction <= 0.4:
        return '1'
    if fraction <= 0.6:
        return '2'
    if fraction <= 0.8:
        return '3'
    return '4'


class Tokens:
    """Deterministic 32-hex-digit tokens from (seed, table, key)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, *key: object) -> str:
        text = '/'.join(str(k) for k in (self.seed,) + key)
        return hashlib.md5(text.encode('utf-8')).hexdigest()


def _pose_record(token: str, timestamp: int, T: np.ndarray) -> dict:
    return dict(token=token, timestamp=int(timestamp),
                rotation=[float(v) for v in rot_to_quat(T[:3, :3])],
                translation=[float(v) for v in T[:3, 3]])


def _link(records: list[dict]) -> None:
    """Fill prev/next of consecutive records."""
    for a, b in zip(records[:-1], records[1:]):
        a['next'] = b['token']
        b['prev'] = a['token']


class SceneWriter:
    """Builds the records and files of one scene."""

    def __init__(self, out: Path, tables: dict[str, list], token: Tokens, scene_index: int,
                 name: str, world: SyntheticWorld, rig: Rig, cameras: list[CameraModel],
                 num_keyframes: int, jpeg_quality: int, rng: np.random.Generator) -> None:
        self.out, self.tables, self.token = out, tables, token
        self.i, self.name, self.world, self.cameras = scene_index, name, world, cameras
        self.rig, self.channels = rig, rig.names
        self.num_keyframes, self.quality, self.rng = num_keyframes, jpeg_quality, rng
        self.logfile = f'n015-2018-07-24-11-22-45+0800-synthetic{scene_index:02d}'
        self.t0 = FIRST_TIMESTAMP_US + scene_index * 3600 * 1000000

    # ---------------------------------------------------------------- static records
    def write_log_and_calibration(self) -> None:
        tk = self.token
        self.log_token = tk('log', self.i)
        self.tables['log'].append(dict(token=self.log_token, logfile=self.logfile,
                                       vehicle='n015', date_captured='2018-07-24',
                                       location='singapore-onenorth'))
        self.calib_token = {}
        for channel in self.channels + ('LIDAR_TOP',):
            tok = tk('calibrated_sensor', self.i, channel)
            self.calib_token[channel] = tok
            if channel == 'LIDAR_TOP':
                rec = dict(translation=list(NUSCENES_LIDAR_TOP_TRANSLATION),
                           rotation=list(NUSCENES_LIDAR_TOP_ROTATION_WXYZ), camera_intrinsic=[])
            else:
                rec = _calibration(self.rig.camera(channel))
            self.tables['calibrated_sensor'].append(
                dict(token=tok, sensor_token=tk('sensor', channel), **rec))

    # ---------------------------------------------------------------- time line
    def keyframe_stamps(self) -> np.ndarray:
        jitter = self.rng.integers(-3000, 3001, size=self.num_keyframes)
        jitter[0] = 0
        return self.t0 + np.arange(self.num_keyframes) * KEYFRAME_PERIOD_US + jitter

    def camera_stamps(self, key_stamps: np.ndarray) -> list[list[tuple[int, int, bool]]]:
        """Per camera: (timestamp, keyframe index of the associated sample, is_key_frame)."""
        out = []
        for c, channel in enumerate(self.channels):
            offset = camera_time_offset(channel, c)
            chain = []
            for k, t_key in enumerate(key_stamps):
                sweeps = SWEEPS_PER_KEYFRAME if k + 1 < len(key_stamps) else 1
                for j in range(sweeps):
                    t = int(t_key + round(offset * 1e6) + j * CAMERA_PERIOD_US
                            + int(self.rng.integers(-500, 501)))
                    nearest = k if j <= SWEEPS_PER_KEYFRAME // 2 else k + 1
                    chain.append((t, nearest, j == 0))
            out.append(chain)
        return out

    def scene_time(self, stamp_us: int) -> float:
        return (stamp_us - self.t0) * 1e-6

    # ---------------------------------------------------------------- main
    def write(self, progress) -> None:
        tk, tables = self.token, self.tables
        key_stamps = self.keyframe_stamps()
        scene_token = tk('scene', self.i)
        samples = [dict(token=tk('sample', self.i, k), timestamp=int(t), prev='', next='',
                        scene_token=scene_token) for k, t in enumerate(key_stamps)]
        _link(samples)
        tables['sample'].extend(samples)
        tables['scene'].append(dict(
            token=scene_token, log_token=self.log_token, nbr_samples=len(samples),
            first_sample_token=samples[0]['token'], last_sample_token=samples[-1]['token'],
            name=self.name, description=f'synthetic scene {self.i}: curved road, '
                                        f'{len(self.world.objects)} objects'))

        # cameras: render every sweep; keep id buffers of the keyframes for visibility
        key_ids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._key_ids = key_ids
        for c, chain in enumerate(self.camera_stamps(key_stamps)):
            channel = self.channels[c]
            width, height = self.rig.cameras[c].image_wh
            records = []
            for n, (stamp, k, is_key) in enumerate(chain):
                t = self.scene_time(stamp)
                T_world_ego = self.world.T_world_ego(t)
                boxes = self.world.boxes_world(t)
                image, ids = render_camera(self.cameras[c], self.world, T_world_ego, boxes,
                                           with_ids=is_key)
                folder = 'samples' if is_key else 'sweeps'
                filename = f'{folder}/{channel}/{self.logfile}__{channel}__{stamp}.jpg'
                _write_jpeg(self.out / filename, image, self.quality)
                sd_token = tk('sample_data', self.i, channel, n)
                pose_token = tk('ego_pose', self.i, channel, n)
                tables['ego_pose'].append(_pose_record(pose_token, stamp, T_world_ego))
                records.append(dict(
                    token=sd_token, sample_token=samples[k]['token'], ego_pose_token=pose_token,
                    calibrated_sensor_token=self.calib_token[channel], timestamp=int(stamp),
                    fileformat='jpg', is_key_frame=bool(is_key), height=height,
                    width=width, filename=filename, prev='', next=''))
                if is_key:
                    key_ids[(k, c)] = (ids, T_world_ego, boxes)
                progress.update(1)
            _link(records)
            tables['sample_data'].extend(records)

        self.write_annotations_and_lidar(samples, key_stamps)

    def write_annotations_and_lidar(self, samples: list[dict], key_stamps: np.ndarray) -> None:
        tk, tables, world = self.token, self.tables, self.world
        n_obj = len(world.objects)
        T_ego_lidar = nuscenes_lidar_to_ego()
        lidar_records = []
        per_object: list[list[dict]] = [[] for _ in range(n_obj)]
        last_key: list[int] = [-2] * n_obj
        for k, stamp in enumerate(key_stamps):
            t = self.scene_time(int(stamp))
            T_world_ego = world.T_world_ego(t)
            boxes = world.boxes_world(t)                                     # (N, 9)
            ego_xy = T_world_ego[:2, 3]
            near = np.hypot(*(boxes[:, :2] - ego_xy).T) <= ANNOTATION_RANGE
            visible_px, full_px = self._pixel_counts(k, near)
            ann_boxes = []
            for i in np.flatnonzero(near):
                label = CLASS_NAMES[int(world.objects.labels[i])]
                speed = float(np.hypot(boxes[i, 7], boxes[i, 8]))
                attr = official_attribute(label, speed)
                fraction = visible_px[i] / full_px[i] if full_px[i] > 0 else 0.0
                rec = dict(
                    token=tk('sample_annotation', self.i, k, i), sample_token=samples[k]['token'],
                    instance_token='', visibility_token=visibility_token(fraction),
                    attribute_tokens=[tk('attribute', attr)] if attr else [],
                    translation=[float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 5] / 2)],
                    size=[float(boxes[i, 4]), float(boxes[i, 3]), float(boxes[i, 5])],
                    rotation=[float(v) for v in yaw_to_quat(float(boxes[i, 6]))],
                    prev='', next='', num_lidar_pts=int(visible_px[i]), num_radar_pts=0)
                if last_key[i] != k - 1 and per_object[i]:
                    self._write_instance(i, per_object[i])       # a gap ends the instance
                    per_object[i] = []
                per_object[i].append(rec)
                last_key[i] = k
                if visible_px[i] > 0:
                    ann_boxes.append(boxes[i])
            # LIDAR_TOP keyframe record with its own ego pose and a small valid point cloud
            sd_token = tk('sample_data', self.i, 'LIDAR_TOP', k)
            pose_token = tk('ego_pose', self.i, 'LIDAR_TOP', k)
            tables['ego_pose'].append(_pose_record(pose_token, int(stamp), T_world_ego))
            filename = f'samples/LIDAR_TOP/{self.logfile}__LIDAR_TOP__{int(stamp)}.pcd.bin'
            T_lidar_world = invert_transform(T_world_ego @ T_ego_lidar)
            _write_point_cloud(self.out / filename, T_lidar_world, np.array(ann_boxes))
            lidar_records.append(dict(
                token=sd_token, sample_token=samples[k]['token'], ego_pose_token=pose_token,
                calibrated_sensor_token=self.calib_token['LIDAR_TOP'], timestamp=int(stamp),
                fileformat='pcd', is_key_frame=True, height=0, width=0, filename=filename,
                prev='', next=''))
        _link(lidar_records)
        tables['sample_data'].extend(lidar_records)
        for i in range(n_obj):
            if per_object[i]:
                self._write_instance(i, per_object[i])

    def _pixel_counts(self, k: int, near: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Visible and unoccluded pixel counts of every object over the keyframe images."""
        n_obj = len(self.world.objects)
        visible = np.zeros(n_obj, dtype=np.int64)
        full = np.zeros(n_obj, dtype=np.int64)
        for c, cam in enumerate(self.cameras):
            ids, T_world_ego, boxes = self._key_ids[(k, c)]
            counts = np.bincount(ids.ravel(), minlength=n_obj + 1)[1:]
            visible += counts[:n_obj]
            T_cam_world = invert_transform(T_world_ego @ cam.T_ego_cam)
            for i in np.flatnonzero(near & (counts > 0)):
                corners = box_corners(boxes[i:i + 1, :7])[0]
                full[i] += box_pixel_area(cam, corners @ T_cam_world[:3, :3].T + T_cam_world[:3, 3])
        return visible, full

    def _write_instance(self, i: int, anns: list[dict]) -> None:
        label = CLASS_NAMES[int(self.world.objects.labels[i])]
        tok = self.token('instance', self.i, i, anns[0]['token'])
        for a in anns:
            a['instance_token'] = tok
        _link(anns)
        self.tables['sample_annotation'].extend(anns)
        self.tables['instance'].append(dict(
            token=tok, category_token=self.token('category', CLASS_CATEGORY[label]),
            nbr_annotations=len(anns), first_annotation_token=anns[0]['token'],
            last_annotation_token=anns[-1]['token']))


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import simplejpeg
        data = simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality,
                                      colorspace='RGB')
        path.write_bytes(data)
    except ImportError:                                   # pragma: no cover
        Image.fromarray(image).save(path, quality=quality)


def _write_point_cloud(path: Path, T_lidar_world: np.ndarray, boxes_world: np.ndarray) -> None:
    """A small nuScenes-format point cloud (float32 x, y, z, intensity, ring) in LIDAR_TOP."""
    ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    ground = np.stack([10 * np.cos(ang), 10 * np.sin(ang), np.full(64, -1.84)], axis=1)
    pts = [ground]
    if len(boxes_world):
        corners = box_corners(boxes_world[:, :7]).reshape(-1, 3)
        pts.append(corners @ T_lidar_world[:3, :3].T + T_lidar_world[:3, 3])
    xyz = np.concatenate(pts, axis=0)
    cloud = np.concatenate([xyz, np.full((len(xyz), 1), 100.0), np.zeros((len(xyz), 1))], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cloud.astype(np.float32).tobytes())


def _calibration(camera: RigCamera) -> dict:
    """The calibrated_sensor fields of a rig camera (the nuScenes numbers for the default rig)."""
    nominal = NUSCENES_CAMERAS.get(camera.name)
    if nominal is not None and np.array_equal(
            camera.T_base_cam, transform_from_quat(nominal['rotation'], nominal['translation'])):
        translation, rotation = nominal['translation'], nominal['rotation']
    else:
        translation = [float(v) for v in camera.T_base_cam[:3, 3]]
        rotation = [float(v) for v in rot_to_quat(camera.T_base_cam[:3, :3])]
    return dict(translation=translation, rotation=rotation, camera_intrinsic=camera.K.tolist())


def static_tables(tables: dict[str, list], token: Tokens, channels: Sequence[str]) -> None:
    for idx, name in enumerate(NUSCENES_CATEGORIES):
        tables['category'].append(dict(token=token('category', name), name=name,
                                       description=f'{name} (synthetic)', index=idx + 1))
    for name in NUSCENES_ATTRIBUTES:
        tables['attribute'].append(dict(token=token('attribute', name), name=name,
                                        description=name))
    for tok, level in VISIBILITY_LEVELS:
        tables['visibility'].append(dict(token=tok, level=level,
                                         description=f'visibility of whole object is {level}'))
    for channel in tuple(channels) + ('LIDAR_TOP',):
        tables['sensor'].append(dict(token=token('sensor', channel), channel=channel,
                                     modality='lidar' if channel == 'LIDAR_TOP' else 'camera'))


TABLE_NAMES = ('category', 'attribute', 'visibility', 'instance', 'sensor', 'calibrated_sensor',
               'ego_pose', 'log', 'scene', 'sample', 'sample_data', 'sample_annotation', 'map')

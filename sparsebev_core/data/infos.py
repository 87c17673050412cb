"""Info records built straight from the nuScenes tables (no mmdet3d converter).

One record per keyframe (sample), sorted by time as the official dataset sorts its infos:

* ``cams``: the keyframe cameras (:func:`camera_channels`: the six nuScenes ones in
  ``CAMERA_NAMES`` order, or the cameras of another rig in sensor-table order), each with its own capture
  stamp and the ego pose at that stamp (``T_world_ego``), extrinsics ``T_ego_cam``,
  intrinsics ``K`` and the image path relative to the dataset root;
* ``sweeps``: docs/official_model.md 5.1 / official ``gen_sweep_info.py``: empty at the first sample of a
  scene, otherwise exactly 5 entries, entry k holding for each camera the frame k steps back
  along that camera's 12 Hz ``prev`` chain (not stopping at the previous keyframe); when a
  camera's chain ends, the whole previous entry is repeated;
* the LIDAR_TOP keyframe: ``T_ego_model`` (= LIDAR_TOP calibration) and ``T_world_ego`` at
  the keyframe stamp ``timestamp``; the model frame is the LIDAR_TOP frame;
* annotations in that frame (mmdet3d >= 1.0 convention, ``sample['anns']`` order):
  ``gt_boxes (K, 9)`` = ``[x, y, z_center, dx, dy, dz, yaw, vx, vy]`` (dx = length along
  the heading, yaw from the box rotation expressed in the LIDAR_TOP frame, velocity from the
  devkit's ``box_velocity`` rotated into the LIDAR_TOP frame; NaN where the devkit cannot
  estimate it), ``gt_names`` (detection class, or the raw category when it has none),
  ``gt_labels`` (index into ``CLASS_NAMES`` or -1), ``num_lidar_pts``, ``num_radar_pts``
  ``valid_flag`` = lidar + radar points > 0, ``visibility`` (nuScenes level 1..4, 0 if
  unknown), ``ann_tokens`` and ``instance_tokens``.

Poses stay 4x4 float64 transforms ``T_<to>_<from>`` (geometry.py); stamps are float64
seconds (integer microseconds / 1e6). Files are pickles of ``{'metadata', 'infos'}``.
"""
from __future__ import annotations

import math
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..frame import CameraView, Frame
from ..geometry import CAMERA_NAMES, CLASS_NAMES, invert_transform, quat_to_rot, rot_to_quat, \
    transform_from_quat

INFO_FORMAT = 'sparsebev_infos/1'
NUM_SWEEPS = 5
# camera order in which the official gen_sweep_info.py walks the prev chains; it matters only
# for its quirk (cameras walked before one whose chain ended have already advanced)
SWEEP_WALK_ORDER = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_BACK_RIGHT', 'CAM_BACK',
                    'CAM_BACK_LEFT', 'CAM_FRONT_LEFT')

# split name per (version, split alias)
_SPLIT_ALIASES = {
    'v1.0-mini': {'train': 'mini_train', 'val': 'mini_val'},
    'v1.0-trainval': {},
    'v1.0-test': {},
}


def resolve_split(version: str, split: str) -> str:
    """Devkit split name: ``train``/``val`` map to ``mini_train``/``mini_val`` for v1.0-mini."""
    return _SPLIT_ALIASES.get(version, {}).get(split, split)


def info_path(root: str | Path, version: str, split: str) -> Path:
    """Where ``prepare-nuscenes`` writes the infos of one split."""
    return Path(root) / f'sparsebev_infos_{version}_{resolve_split(version, split)}.pkl'


def splits_of_version(version: str) -> tuple[str, ...]:
    """The evaluation splits a version contains."""
    if version.endswith('mini'):
        return ('mini_train', 'mini_val')
    if version.endswith('test'):
        return ('test',)
    return ('train', 'val')


class SceneNotFoundError(InputError):
    """A scene name that is not in the loaded nuScenes tables; the message lists the scenes."""


class TablesNotFoundError(InputError, FileNotFoundError):
    """A dataset root without the nuScenes tables asked for."""


class DataFileError(InputError, FileNotFoundError):
    """A dataset file that is missing or is not what it should be; the message names it and
    says how to make it."""


def table_version(root: str | Path) -> str:
    """The nuScenes table folder under ``root``: v1.0-trainval if present, else v1.0-mini."""
    root = Path(root)
    for version in ('v1.0-trainval', 'v1.0-mini'):
        if (root / version).is_dir():
            return version
    found = sorted(p.name for p in root.glob('v1.0-*')) if root.is_dir() else []
    raise TablesNotFoundError(f'{root} holds no v1.0-trainval or v1.0-mini tables'
                              + (f' (found {", ".join(found)}: pass --version)' if found else
                                 ': --nuscenes must be a nuScenes dataset root'))


def scene_by_name(nusc, scene_name: str) -> dict:
    """The ``scene`` record called ``scene_name`` (:class:`SceneNotFoundError` if none is)."""
    scene = next((s for s in nusc.scene if s['name'] == scene_name), None)
    if scene is None:
        raise SceneNotFoundError(f"scene '{scene_name}' is not in {nusc.version} at "
                                 f"{nusc.dataroot}; scenes: "
                                 f"{', '.join(sorted(s['name'] for s in nusc.scene))}")
    return scene


def detection_ground_truth(nusc, sample_token: str) -> tuple[np.ndarray, np.ndarray]:
    """Detection-class annotations of a sample with at least one lidar/radar point.

    Returns world-frame gravity-centre boxes (N, 9) ``[x, y, z, dx, dy, dz, yaw, vx, vy]``
    (dx = length; unknown velocity = 0) and class indices (N,), the boxes the devkit
    evaluates (the demo draws them).
    """
    from nuscenes.eval.detection.utils import category_to_detection_name
    boxes, labels = [], []
    for ann_token in nusc.get('sample', sample_token)['anns']:
        ann = nusc.get('sample_annotation', ann_token)
        name = category_to_detection_name(ann['category_name'])
        if name is None or ann['num_lidar_pts'] + ann['num_radar_pts'] == 0:
            continue
        R = transform_from_quat(ann['rotation'], [0, 0, 0])
        yaw = math.atan2(R[1, 0], R[0, 0])
        velocity = nusc.box_velocity(ann_token)[:2]
        velocity = np.where(np.isfinite(velocity), velocity, 0.0)
        w, l, h = ann['size']
        boxes.append([*ann['translation'], l, w, h, yaw, *velocity])
        labels.append(CLASS_NAMES.index(name))
    return np.asarray(boxes, np.float64).reshape(-1, 9), np.asarray(labels, np.int64)


def camera_channels(nusc, sample: dict) -> tuple[str, ...]:
    """The camera channels of a sample: ``CAMERA_NAMES`` (official order) when it has the six
    nuScenes cameras, else its camera channels in the order of the sensor table (the rig order
    of ``make-synthetic --rig``)."""
    if all(cam in sample['data'] for cam in CAMERA_NAMES):
        return tuple(CAMERA_NAMES)
    return tuple(s['channel'] for s in nusc.sensor
                 if s['modality'] == 'camera' and s['channel'] in sample['data'])


def _pose(record: dict) -> np.ndarray:
    return transform_from_quat(record['rotation'], record['translation'])


def camera_record(nusc, sample_data: dict) -> dict:
    """One camera frame: image path, stamp, K, extrinsics and the ego pose at its stamp."""
    cs = nusc.get('calibrated_sensor', sample_data['calibrated_sensor_token'])
    pose = nusc.get('ego_pose', sample_data['ego_pose_token'])
    return dict(
        name=sample_data['channel'],
        token=sample_data['token'],
        filename=sample_data['filename'],
        stamp=sample_data['timestamp'] / 1e6,
        K=np.asarray(cs['camera_intrinsic'], dtype=np.float64).reshape(3, 3),
        T_ego_cam=_pose(cs),
        T_world_ego=_pose(pose),
        width=int(sample_data.get('width', 0)),
        height=int(sample_data.get('height', 0)),
    )


def sweep_chain(nusc, sample: dict, num_sweeps: int = NUM_SWEEPS) -> list[list[dict]]:
    """The ``sweeps`` of one sample (docs/official_model.md 5.1), each entry one camera record per
    :func:`camera_channels` in that order, newest first."""
    if sample['prev'] == '':
        return []
    channels = camera_channels(nusc, sample)
    walk = SWEEP_WALK_ORDER if channels == tuple(CAMERA_NAMES) else channels
    current = {cam: nusc.get('sample_data', sample['data'][cam]) for cam in channels}
    entries: list[dict[str, dict]] = []
    for _ in range(num_sweeps):
        entry: dict[str, dict] = {}
        for cam in walk:
            if current[cam]['prev'] == '':
                if not entries:
                    warnings.warn(f'sample {sample["token"]}: {cam} has no previous frame although '
                                  f'the sample has a previous keyframe; using the keyframe images')
                    entry = {c: camera_record(nusc, nusc.get('sample_data', sample['data'][c]))
                             for c in channels}
                else:
                    entry = entries[-1]
                break
            current[cam] = nusc.get('sample_data', current[cam]['prev'])
            entry[cam] = camera_record(nusc, current[cam])
        entries.append(entry)
    return [[e[cam] for cam in channels] for e in entries]


def pyquaternion_yaw(q_wxyz: np.ndarray) -> float:
    """Yaw as mmdet3d's converter takes it (``Quaternion.yaw_pitch_roll[0]`` of pyquaternion):
    ``atan2(2 (w z - x y), 1 - 2 (y^2 + z^2))``. It equals the heading of the box's x axis in
    the xy plane for rotations about z only; the LIDAR_TOP frame is tilted by ~0.7 deg, which
    makes the two differ by ~1e-4 rad, and we keep the official number."""
    w, x, y, z = (float(v) for v in q_wxyz)
    return math.atan2(2.0 * (w * z - x * y), 1.0 - 2.0 * (y * y + z * z))


def annotations_in_model_frame(nusc, sample: dict, T_world_model: np.ndarray) -> dict:
    """Annotations of a sample as gravity-centre boxes in the model (LIDAR_TOP) frame."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    T_model_world = invert_transform(T_world_model)
    R_model_world = T_model_world[:3, :3]
    boxes, names, labels, n_lidar, n_radar, tokens, instances, visibility = \
        [], [], [], [], [], [], [], []
    for token in sample['anns']:
        ann = nusc.get('sample_annotation', token)
        centre = T_model_world @ np.append(np.asarray(ann['translation'], np.float64), 1.0)
        yaw = pyquaternion_yaw(rot_to_quat(R_model_world @ quat_to_rot(ann['rotation'])))
        w, l, h = ann['size']
        v_world = np.asarray(nusc.box_velocity(token), np.float64)
        v_world[2] = 0.0
        v = R_model_world @ v_world                       # NaN stays NaN
        boxes.append([centre[0], centre[1], centre[2], l, w, h, yaw, v[0], v[1]])
        det_name = category_to_detection_name(ann['category_name'])
        names.append(det_name if det_name is not None else ann['category_name'])
        labels.append(CLASS_NAMES.index(det_name) if det_name in CLASS_NAMES else -1)
        n_lidar.append(int(ann['num_lidar_pts']))
        n_radar.append(int(ann['num_radar_pts']))
        tokens.append(token)
        instances.append(ann['instance_token'])
        vis = str(ann.get('visibility_token', ''))
        visibility.append(int(vis) if vis.isdigit() else 0)
    n_lidar_a = np.asarray(n_lidar, dtype=np.int64)
    n_radar_a = np.asarray(n_radar, dtype=np.int64)
    return dict(
        gt_boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 9),
        gt_names=np.asarray(names, dtype=object),
        gt_labels=np.asarray(labels, dtype=np.int64),
        num_lidar_pts=n_lidar_a, num_radar_pts=n_radar_a,
        valid_flag=(n_lidar_a + n_radar_a) > 0,
        ann_tokens=tokens, instance_tokens=instances,
        visibility=np.asarray(visibility, dtype=np.int64))


def sample_info(nusc, sample: dict, with_annotations: bool = True) -> dict:
    """The info record of one keyframe (see the module docstring)."""
    scene = nusc.get('scene', sample['scene_token'])
    lidar_sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
    T_ego_model = _pose(nusc.get('calibrated_sensor', lidar_sd['calibrated_sensor_token']))
    T_world_ego = _pose(nusc.get('ego_pose', lidar_sd['ego_pose_token']))
    info = dict(
        token=sample['token'], scene_token=sample['scene_token'], scene_name=scene['name'],
        prev=sample['prev'], next=sample['next'],
        timestamp=sample['timestamp'] / 1e6,
        lidar_token=lidar_sd['token'], lidar_filename=lidar_sd['filename'],
        lidar_stamp=lidar_sd['timestamp'] / 1e6,
        T_world_ego=T_world_ego, T_ego_model=T_ego_model,
        cams=[camera_record(nusc, nusc.get('sample_data', sample['data'][cam]))
              for cam in camera_channels(nusc, sample)],
        sweeps=sweep_chain(nusc, sample),
    )
    if with_annotations:
        info.update(annotations_in_model_frame(nusc, sample, T_world_ego @ T_ego_model))
    return info


def build_infos(nusc, split: str | None = None, progress: bool = True) -> list[dict]:
    """Info records of every keyframe of ``split`` (devkit split name; None = all scenes),
    sorted by timestamp."""
    from tqdm import tqdm

    if split is not None:
        from nuscenes.utils.splits import create_splits_scenes
        scenes = create_splits_scenes()
        if split not in scenes:
            raise InputError(f'unknown split {split!r}; the devkit knows {", ".join(sorted(scenes))}')
        names = set(scenes[split])
        samples = [s for s in nusc.sample
                   if nusc.get('scene', s['scene_token'])['name'] in names]
    else:
        samples = list(nusc.sample)
    with_annotations = not nusc.version.endswith('test')
    infos = [sample_info(nusc, s, with_annotations)
             for s in tqdm(samples, desc=f'infos {split or "all"}', disable=not progress)]
    infos.sort(key=lambda r: r['timestamp'])
    return infos


def save_infos(path: str | Path, infos: list[dict], **metadata) -> Path:
    """Write ``{'metadata', 'infos'}`` as a pickle, under a temporary name of this process
    moved into place: processes building the same file at once (``torchrun`` ranks) never
    read or leave a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            pickle.dump(dict(metadata=dict(format=INFO_FORMAT, **metadata), infos=infos), f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_infos(path: str | Path) -> tuple[list[dict], dict]:
    """Read an info file written by :func:`save_infos`; returns (infos, metadata)."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f'info file {path} not found; create it with '
                                f'`sparsebev prepare-nuscenes --root <dataset root> --version <version>`')
    with open(path, 'rb') as f:
        data = pickle.load(f)
    if not isinstance(data, dict) or data.get('metadata', {}).get('format') != INFO_FORMAT:
        raise DataFileError(f'{path} is not a sparsebev info file (format {INFO_FORMAT}); the '
                         f'official mmdet3d *_sweep.pkl files are not read; regenerate with '
                         f'`sparsebev prepare-nuscenes`')
    return data['infos'], data['metadata']


def scenes_in_time_order(infos: Sequence[dict]) -> list[dict]:
    """The samples scene after scene (by each scene's first stamp), each scene in time order:
    what a stream sees, even where two scenes overlap in time."""
    start: dict[str, float] = {}
    for info in infos:
        start[info['scene_token']] = min(start.get(info['scene_token'], math.inf), info['timestamp'])
    return sorted(infos, key=lambda r: (start[r['scene_token']], r['scene_token'], r['timestamp']))


def stream_scenes(detector, infos: Sequence[dict], data_root: str | Path,
                  progress: Callable[[Iterable], Iterable] = iter) -> Iterator[tuple[dict, object]]:
    """``(info, detections)`` of each keyframe stepped through ``detector`` (anything with
    ``step(frame)`` and ``reset(reason)``, a ``StreamingDetector``) scene by scene, each in time
    order (:func:`scenes_in_time_order`), resetting it at each scene start."""
    from ..resets import EXPLICIT
    scene = None
    for info in progress(scenes_in_time_order(infos)):
        if info['scene_token'] != scene:
            detector.reset(EXPLICIT, 'scene start')
            scene = info['scene_token']
        yield info, detector.step(frame_from_info(info, data_root))


def frame_from_info(info: dict, data_root: str | Path, cams: Iterable[dict] | None = None,
                    stamp: float | None = None, key: str | None = None) -> Frame:
    """A core ``Frame`` of the keyframe (or of ``cams``, e.g. a sweep entry) with the encoded
    JPEG bytes as images; the model frame is the keyframe's LIDAR_TOP."""
    root = Path(data_root)
    cams = list(info['cams'] if cams is None else cams)
    views = [CameraView(image=(root / c['filename']).read_bytes(), K=c['K'],
                        T_ego_cam=c['T_ego_cam'], stamp=float(c['stamp']),
                        T_world_ego=c['T_world_ego'], name=c['name']) for c in cams]
    return Frame(cameras=views, stamp=float(info['timestamp'] if stamp is None else stamp),
                 T_world_ego=info['T_world_ego'], T_ego_model=info['T_ego_model'],
                 key=key or info['token'])

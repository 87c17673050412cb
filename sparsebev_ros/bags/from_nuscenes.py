"""``sparsebev nuscenes-to-bag``: one nuScenes (or synthetic) scene as a rosbag2 file.

The bag carries what the node subscribes to, under the default topic names of
:mod:`sparsebev_ros.params` (so ``ros2 bag play`` + ``ros2 launch`` work out of the box):

* ``/CAM_*/image_raw/compressed`` (``sensor_msgs/CompressedImage``, the original JPEG bytes)
  and ``/CAM_*/camera_info`` at every camera sample_data (12 Hz sweeps and keyframes), with
  the dataset timestamps (not the recording time) and ``frame_id`` = the camera channel;
* ``/tf``: ``odom -> base_link`` (the ego pose) at every camera and LIDAR_TOP sample_data stamp,
  written just before the images of that stamp;
* ``/tf_static``: ``base_link -> CAM_*`` and ``base_link -> LIDAR_TOP`` (calibrated_sensor),
  with TRANSIENT_LOCAL offered QoS so ``ros2 bag play`` re-latches it.

:class:`CameraBagWriter` is the small writer behind it; tests use it to write bags directly.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np


from ..codecs import matrix_to_translation_quat
from ..messages import RosbagsMessages, header, ros2_typestore
from ..params import PARAMS_BY_NAME, defaults, transport_topic, validate
from .files import BagWriteError, atomic_output_dir

STORAGES = ('sqlite3', 'mcap')

WORLD_FRAME = PARAMS_BY_NAME['world_frame'].default   # the node's default (REP 105 odom)


class BagExistsError(BagWriteError, FileExistsError):
    """The output bag folder exists already (nothing is overwritten)."""


def _qos(durability: str, depth: int) -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    zero = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL if durability == 'transient_local'
               else QosDurability.VOLATILE,
               deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)


def open_writer(path: str | Path, storage: str = 'sqlite3') -> Any:
    """An opened rosbags ``Writer`` (rosbag2 v9) for ``storage`` 'sqlite3' or 'mcap'."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    if storage not in STORAGES:
        raise ValueError(f"unknown storage '{storage}'; use one of {', '.join(STORAGES)}")
    path = Path(path)
    if path.exists():
        raise BagExistsError(f'output bag {path} already exists; remove it or choose another name')
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3 if storage == 'sqlite3'
                    else StoragePlugin.MCAP)
    writer.open()
    return writer


class CameraBagWriter:
    """Writes N cameras (compressed or raw), CameraInfo, /tf and /tf_static to a rosbag2
    (the six nuScenes ones unless ``camera_names`` names a rig: topics ``/<name>/...``).

    Use as a context manager. Times are integer nanoseconds; the log time of a message is its
    header stamp unless given.
    """

    def __init__(self, path: str | Path, storage: str = 'sqlite3', transport: str = 'compressed',
                 image_topics: Sequence[str] | None = None,
                 camera_info_topics: Sequence[str] | None = None, distro: str = 'humble',
                 camera_names: Sequence[str] | None = None):
        p = validate({'camera_names': list(camera_names)}) if camera_names else defaults()
        self.store = ros2_typestore(distro)
        self.factory = RosbagsMessages(self.store)
        self.writer = open_writer(path, storage)
        self.transport = transport
        image_topics = [transport_topic(t, transport) for t in (image_topics or p.image_topics)]
        info_topics = list(camera_info_topics or p.camera_info_topics)
        image_type = 'sensor_msgs/msg/CompressedImage' if transport == 'compressed' else 'sensor_msgs/msg/Image'
        add = self.writer.add_connection
        self.image_conns = [add(t, image_type, typestore=self.store) for t in image_topics]
        self.info_conns = [add(t, 'sensor_msgs/msg/CameraInfo', typestore=self.store) for t in info_topics]
        self.tf_conn = add('/tf', 'tf2_msgs/msg/TFMessage', typestore=self.store,
                           offered_qos_profiles=[_qos('volatile', 100)])
        self.tf_static_conn = add('/tf_static', 'tf2_msgs/msg/TFMessage', typestore=self.store,
                                  offered_qos_profiles=[_qos('transient_local', 1)])

    def __enter__(self) -> 'CameraBagWriter':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()

    def _write(self, conn: Any, msg: Any, log_ns: int) -> None:
        self.writer.write(conn, int(log_ns), self.store.serialize_cdr(msg, msg.__msgtype__))

    def transform_msg(self, parent: str, child: str, T: np.ndarray, stamp_ns: int) -> Any:
        t, q = matrix_to_translation_quat(T)
        f = self.factory
        return f.new('geometry_msgs/msg/TransformStamped', header=header(f, stamp_ns, parent),
                     child_frame_id=child,
                     transform=f.new('geometry_msgs/msg/Transform',
                                     translation=f.new('geometry_msgs/msg/Vector3', x=t[0], y=t[1], z=t[2]),
                                     rotation=f.new('geometry_msgs/msg/Quaternion', x=q[0], y=q[1], z=q[2], w=q[3])))

    def write_tf(self, transforms: Sequence[tuple[str, str, np.ndarray, int]], static: bool = False,
                 log_ns: int | None = None) -> None:
        """One TFMessage of ``(parent, child, T_parent_child, stamp_ns)`` entries."""
        msg = self.factory.new('tf2_msgs/msg/TFMessage',
                               transforms=[self.transform_msg(*tr) for tr in transforms])
        when = log_ns if log_ns is not None else max(tr[3] for tr in transforms)
        self._write(self.tf_static_conn if static else self.tf_conn, msg, when)

    def write_image(self, camera_index: int, data: bytes | np.ndarray, stamp_ns: int, frame_id: str,
                    log_ns: int | None = None, fmt: str = 'jpeg', encoding: str = 'rgb8') -> None:
        """Encoded bytes (compressed transport) or an (H, W, 3) RGB array (raw transport)."""
        f = self.factory
        hdr = header(f, stamp_ns, frame_id)
        if self.transport == 'compressed':
            msg = f.new('sensor_msgs/msg/CompressedImage', header=hdr, format=fmt,
                        data=np.frombuffer(bytes(data), np.uint8))
        else:
            from ..codecs import rgb_to_image_fields
            msg = f.new('sensor_msgs/msg/Image', header=hdr, **rgb_to_image_fields(np.asarray(data), encoding))
        self._write(self.image_conns[camera_index], msg, stamp_ns if log_ns is None else log_ns)

    def write_camera_info(self, camera_index: int, K: np.ndarray, width: int, height: int,
                          stamp_ns: int, frame_id: str, distortion: Sequence[float] = (0.0,) * 5,
                          log_ns: int | None = None) -> None:
        K = np.asarray(K, np.float64).reshape(3, 3)
        P = np.concatenate([K, np.zeros((3, 1))], axis=1)
        msg = self.factory.new('sensor_msgs/msg/CameraInfo', header=header(self.factory, stamp_ns, frame_id),
                               height=int(height), width=int(width), distortion_model='plumb_bob',
                               d=np.asarray(distortion, np.float64), k=K.reshape(-1),
                               r=np.eye(3).reshape(-1), p=P.reshape(-1))
        self._write(self.info_conns[camera_index], msg, stamp_ns if log_ns is None else log_ns)


# --------------------------------------------------------------------------------------------
# nuScenes scene -> bag
# --------------------------------------------------------------------------------------------
def _pose_matrix(record: dict) -> np.ndarray:
    from sparsebev_core.geometry import transform_from_quat
    return transform_from_quat(record['rotation'], record['translation'])


def scene_sample_data(nusc: Any, scene: dict, channel: str) -> list[dict]:
    """All sample_data records of ``channel`` in a scene (keyframes and sweeps), in time order."""
    first = nusc.get('sample', scene['first_sample_token'])
    sd = nusc.get('sample_data', first['data'][channel])
    while sd['prev']:                                     # sweeps before the first keyframe
        prev = nusc.get('sample_data', sd['prev'])
        if nusc.get('sample', prev['sample_token'])['scene_token'] != scene['token']:
            break
        sd = prev
    records = []
    while sd is not None:
        if nusc.get('sample', sd['sample_token'])['scene_token'] != scene['token']:
            break
        records.append(sd)
        sd = nusc.get('sample_data', sd['next']) if sd['next'] else None
    return records


def write_scene(nusc: Any, scene_name: str, out_bag: str | Path, storage: str = 'sqlite3',
                world_frame: str = WORLD_FRAME, base_frame: str = 'base_link', progress: bool = True,
                max_seconds: float | None = None) -> dict[str, int]:
    """Write one scene as a rosbag2 (see module docstring); returns message counts per kind.

    The bag appears at ``out_bag`` only when complete (:func:`~sparsebev_ros.bags.files.atomic_output_dir`);
    an existing ``out_bag`` raises ``BagWriteError`` before anything is read."""
    from tqdm import tqdm
    from sparsebev_core.data.infos import scene_by_name
    if Path(out_bag).exists():
        raise BagExistsError(f'output bag {out_bag} already exists; remove it or choose another name')
    scene = scene_by_name(nusc, scene_name)
    from sparsebev_core.data.infos import camera_channels
    cameras = list(camera_channels(nusc, nusc.get('sample', scene['first_sample_token'])))
    channels = cameras + ['LIDAR_TOP']
    per_channel = {ch: scene_sample_data(nusc, scene, ch) for ch in channels}
    start_ns = min(r[0]['timestamp'] for r in per_channel.values() if r) * 1000
    events = []                    # (stamp_ns, order, kind, channel, record)
    for ch, records in per_channel.items():
        for sd in records:
            stamp_ns = int(sd['timestamp']) * 1000
            if max_seconds is not None and stamp_ns - start_ns > max_seconds * 1e9:
                break
            events.append((stamp_ns, 0, 'tf', ch, sd))
            if ch != 'LIDAR_TOP':
                events.append((stamp_ns, 1, 'camera', ch, sd))
    events.sort(key=lambda e: (e[0], e[1], channels.index(e[3])))
    counts = {'images': 0, 'camera_info': 0, 'tf': 0, 'tf_static': 0}
    with atomic_output_dir(out_bag) as tmp_bag, \
            CameraBagWriter(tmp_bag, storage, camera_names=cameras) as bag:
        statics = []
        for ch in channels:
            if per_channel[ch]:
                cs = nusc.get('calibrated_sensor', per_channel[ch][0]['calibrated_sensor_token'])
                statics.append((base_frame, ch, _pose_matrix(cs), start_ns))
        bag.write_tf(statics, static=True, log_ns=start_ns)
        counts['tf_static'] += 1
        last_tf = None
        for stamp_ns, _, kind, ch, sd in tqdm(events, desc=f'{scene_name} -> bag', disable=not progress):
            if kind == 'tf':
                if stamp_ns != last_tf:
                    pose = nusc.get('ego_pose', sd['ego_pose_token'])
                    bag.write_tf([(world_frame, base_frame, _pose_matrix(pose), stamp_ns)])
                    counts['tf'] += 1
                    last_tf = stamp_ns
                continue
            i = cameras.index(ch)
            cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
            bag.write_camera_info(i, np.asarray(cs['camera_intrinsic']), sd['width'], sd['height'],
                                  stamp_ns, ch)
            data = (Path(nusc.dataroot) / sd['filename']).read_bytes()
            bag.write_image(i, data, stamp_ns, ch, fmt='jpeg' if sd['fileformat'] in ('jpg', 'jpeg') else 'png')
            counts['images'] += 1
            counts['camera_info'] += 1
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('out_bag', help='output rosbag2 folder (must not exist)')
    parser.add_argument('--root', required=True, help='nuScenes (or synthetic) dataset root')
    parser.add_argument('--scene', required=True, help="scene name, e.g. 'scene-0103'")
    parser.add_argument('--version', default='v1.0-mini', help='table version (default v1.0-mini)')
    parser.add_argument('--storage', choices=STORAGES, default='sqlite3')
    parser.add_argument('--world-frame', default=WORLD_FRAME, help="TF frame of the ego poses (the "
                        "node's default world_frame)")
    parser.add_argument('--base-frame', default='base_link', help='TF frame of the ego vehicle')
    parser.add_argument('--max-seconds', type=float, default=None, help='only the first N seconds')


def main(args: argparse.Namespace) -> int:
    from nuscenes.nuscenes import NuScenes
    from .files import BagWriteError
    if Path(args.out_bag).exists():           # before the (slow) table loading
        raise BagWriteError(f'output bag {args.out_bag} already exists; remove it or choose '
                            'another name')
    root = Path(args.root)
    if not (root / args.version).is_dir():
        from sparsebev_core.data.infos import TablesNotFoundError
        raise TablesNotFoundError(f'{root / args.version} does not exist: --root must hold the '
                                  f'{args.version} tables (make one with `sparsebev make-synthetic`)')
    nusc = NuScenes(version=args.version, dataroot=str(root), verbose=False)
    counts = write_scene(nusc, args.scene, args.out_bag, args.storage, args.world_frame,
                         args.base_frame, max_seconds=args.max_seconds)
    print(f'wrote {args.out_bag} ({args.storage}): ' + ', '.join(f'{v} {k}' for k, v in counts.items()))
    return 0

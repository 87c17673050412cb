"""Output messages: ``vision_msgs/Detection3DArray``, ``visualization_msgs/MarkerArray`` and
``autoware_perception_msgs/DetectedObjects``.

Builders take a *message factory* with ``new(msgtype, **fields)`` so the same code makes rclpy
messages in the node (:class:`ImportedMessages`) and rosbags dataclasses in replay and tests
(:class:`RosbagsMessages`). Boxes come in as ``[x, y, z_bottom, dx, dy, dz, yaw, vx, vy]`` in the
output frame; ``bbox.center`` is the gravity centre (README, "Parameters").
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from sparsebev_core.geometry import box_corners, yaw_to_quat

from .codecs import ns_to_sec_nanosec, seconds_to_ns

MSG_DIR = Path(__file__).with_name('msg')
VISION_MSGS = ('ObjectHypothesis', 'ObjectHypothesisWithPose', 'BoundingBox3D', 'Detection3D',
               'Detection3DArray')
AUTOWARE_MSG_DIR = MSG_DIR / 'autoware_perception_msgs'
AUTOWARE_MSGS = ('ObjectClassification', 'Shape', 'DetectedObjectKinematics', 'DetectedObject',
                 'DetectedObjects')

# nuScenes class -> autoware_perception_msgs/ObjectClassification label. Autoware has no
# construction vehicle, barrier or traffic cone: the first is a TRUCK, the static obstacles
# UNKNOWN (still obstacles to its planner).
AUTOWARE_LABELS: dict[str, int] = {
    'car': 1, 'truck': 2, 'construction_vehicle': 2, 'bus': 3, 'trailer': 4, 'motorcycle': 5,
    'bicycle': 6, 'pedestrian': 7, 'barrier': 0, 'traffic_cone': 0,
}
AUTOWARE_UNKNOWN = 0

# nuScenes devkit-like colours per class (RGB 0..1), CLASS_NAMES order.
CLASS_COLORS: dict[str, tuple[float, float, float]] = {
    'car': (1.0, 0.62, 0.0), 'truck': (1.0, 0.39, 0.28), 'construction_vehicle': (0.91, 0.59, 0.27),
    'bus': (1.0, 0.27, 0.0), 'trailer': (1.0, 0.55, 0.0), 'barrier': (0.44, 0.5, 0.56),
    'motorcycle': (1.0, 0.24, 0.59), 'bicycle': (0.86, 0.08, 0.24), 'pedestrian': (0.0, 0.0, 0.9),
    'traffic_cone': (0.18, 0.31, 0.31),
}
_EDGES = np.array([(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
                   (0, 4), (1, 5), (2, 6), (3, 7)])


class MessageFactory(Protocol):
    """Makes a message of ``msgtype`` (``pkg/msg/Name``) from keyword fields; others default."""

    def new(self, msgtype: str, **fields: Any) -> Any: ...


# --------------------------------------------------------------------------------------------
# factories
# --------------------------------------------------------------------------------------------
def vision_msgs_definitions() -> dict[str, str]:
    """``{'vision_msgs/msg/Detection3D': msg text, ...}`` from ``sparsebev_ros/msg``."""
    return {f'vision_msgs/msg/{n}': (MSG_DIR / f'{n}.msg').read_text() for n in VISION_MSGS}


def autoware_msgs_definitions() -> dict[str, str]:
    """``{'autoware_perception_msgs/msg/DetectedObjects': msg text, ...}``."""
    return {f'autoware_perception_msgs/msg/{n}': (AUTOWARE_MSG_DIR / f'{n}.msg').read_text()
            for n in AUTOWARE_MSGS}


def register_vision_msgs(store: Any) -> Any:
    """Register the five vision_msgs 4.x types and the five autoware_perception_msgs types
    into a rosbags typestore (returns the store)."""
    from rosbags.typesys import get_types_from_msg
    if 'vision_msgs/msg/Detection3DArray' in store.types:
        return store
    types: dict = {}
    for name, text in {**vision_msgs_definitions(), **autoware_msgs_definitions()}.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def ros2_typestore(distro: str = 'humble') -> Any:
    """A rosbags typestore for ``distro`` with vision_msgs registered."""
    from rosbags.typesys import Stores, get_typestore
    stores = {'humble': Stores.ROS2_HUMBLE, 'jazzy': Stores.ROS2_JAZZY}
    if distro not in stores:
        raise ValueError(f"unknown ROS 2 distro '{distro}'; use one of {', '.join(stores)}")
    return register_vision_msgs(get_typestore(stores[distro]))


class RosbagsMessages:
    """Factory of rosbags dataclasses; fields not given get ROS defaults (zeros, '', [])."""

    def __init__(self, store: Any):
        self.store = store

    def new(self, msgtype: str, **fields: Any) -> Any:
        cls = self.store.types[msgtype]
        _, field_defs = self.store.fielddefs[msgtype]
        for name, desc in field_defs:
            if name not in fields:
                fields[name] = self._default(desc)
        return cls(**fields)

    def _default(self, desc: Any) -> Any:
        kind, rest = desc
        kind = int(kind)
        if kind == 1:                                            # BASE
            base = rest[0]
            return '' if base == 'string' else False if base == 'bool' else \
                0.0 if base.startswith('float') else 0
        if kind == 2:                                            # NAME (nested message)
            return self.new(rest)
        if kind == 3:                                            # ARRAY (fixed length)
            sub, n = rest
            if int(sub[0]) == 1 and sub[1][0] != 'string':
                return np.zeros(n, dtype=_numpy_dtype(sub[1][0]))
            return [self._default(sub) for _ in range(n)]
        if kind == 4:                                            # SEQUENCE
            sub, _ = rest
            if int(sub[0]) == 1 and sub[1][0] != 'string':
                return np.zeros(0, dtype=_numpy_dtype(sub[1][0]))
            return []
        raise TypeError(f'unsupported field description {desc}')


def _numpy_dtype(base: str) -> Any:
    return {'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8, 'octet': np.uint8}.get(base, base)


class ImportedMessages:
    """Factory of generated ROS 2 Python message classes (``import vision_msgs.msg``)."""

    def __init__(self) -> None:
        self._classes: dict[str, Any] = {}

    def new(self, msgtype: str, **fields: Any) -> Any:
        cls = self._classes.get(msgtype)
        if cls is None:
            package, _, name = msgtype.split('/')
            cls = getattr(importlib.import_module(f'{package}.msg'), name)
            self._classes[msgtype] = cls
        return cls(**fields)


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------
def header(factory: MessageFactory, stamp_ns: int, frame_id: str) -> Any:
    sec, nanosec = ns_to_sec_nanosec(stamp_ns)
    return factory.new('std_msgs/msg/Header',
                       stamp=factory.new('builtin_interfaces/msg/Time', sec=sec, nanosec=nanosec),
                       frame_id=frame_id)


def _point(factory: MessageFactory, xyz: Sequence[float]) -> Any:
    return factory.new('geometry_msgs/msg/Point', x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def _pose(factory: MessageFactory, xyz: Sequence[float], yaw: float) -> Any:
    w, x, y, z = yaw_to_quat(float(yaw))
    return factory.new('geometry_msgs/msg/Pose', position=_point(factory, xyz),
                       orientation=factory.new('geometry_msgs/msg/Quaternion', x=x, y=y, z=z, w=w))


def _color(factory: MessageFactory, rgb: Sequence[float], a: float = 1.0) -> Any:
    return factory.new('std_msgs/msg/ColorRGBA', r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]), a=a)


def _vector3(factory: MessageFactory, xyz: Sequence[float]) -> Any:
    return factory.new('geometry_msgs/msg/Vector3', x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def detection_array(factory: MessageFactory, boxes: np.ndarray, scores: np.ndarray,
                    labels: np.ndarray, class_names: Sequence[str], stamp_ns: int,
                    frame_id: str, track_ids: np.ndarray | None = None) -> Any:
    """``vision_msgs/Detection3DArray``: one Detection3D per box, gravity-centre pose.

    Args:
        boxes: (N, >=7) ``[x, y, z_bottom, dx, dy, dz, yaw, ...]`` in ``frame_id``.
        scores, labels: (N,); ``class_names[label]`` goes into ``class_id``.
        track_ids: (N,) IDs that follow one object across messages (a model that tracks:
            ``Detections.track_ids``) -> ``Detection3D.id`` as decimal text; None: ``id``
            stays empty, as vision_msgs asks without tracking.
    """
    hdr = header(factory, stamp_ns, frame_id)
    detections = []
    ids = _id_texts(track_ids, len(scores))
    for box, score, label, track_id in zip(np.asarray(boxes, np.float64), scores, labels, ids):
        centre = (box[0], box[1], box[2] + box[5] / 2.0)
        pose = _pose(factory, centre, box[6])
        hypothesis = factory.new(
            'vision_msgs/msg/ObjectHypothesisWithPose',
            hypothesis=factory.new('vision_msgs/msg/ObjectHypothesis',
                                   class_id=str(class_names[int(label)]), score=float(score)),
            pose=factory.new('geometry_msgs/msg/PoseWithCovariance', pose=_pose(factory, centre, box[6])))
        bbox = factory.new('vision_msgs/msg/BoundingBox3D', center=pose,
                           size=_vector3(factory, box[3:6]))
        detections.append(factory.new('vision_msgs/msg/Detection3D', header=hdr, results=[hypothesis],
                                      bbox=bbox, id=track_id))
    return factory.new('vision_msgs/msg/Detection3DArray', header=hdr, detections=detections)


def marker_array(factory: MessageFactory, boxes: np.ndarray, scores: np.ndarray,
                 labels: np.ndarray, class_names: Sequence[str], stamp_ns: int, frame_id: str,
                 style: str = 'lines', lifetime: float = 0.0, min_speed: float = 0.2,
                 track_ids: np.ndarray | None = None) -> Any:
    """``visualization_msgs/MarkerArray``: DELETEALL first, then per box its outline (line list
    or cube), a text ``class score`` above it and a velocity arrow (1 s of motion) when moving.

    With ``track_ids`` (a model that tracks) each box takes its track's colour
    (:func:`track_color`) and the text starts with the ID: ``#12 car 0.83``; without, the
    colour is the class's. Namespaces: ``boxes``, ``labels``, ``velocity``; marker ids are the
    box index.
    """
    hdr = header(factory, stamp_ns, frame_id)
    sec, nanosec = ns_to_sec_nanosec(seconds_to_ns(lifetime))
    life = factory.new('builtin_interfaces/msg/Duration', sec=sec, nanosec=nanosec)
    DELETEALL, ADD = 3, 0
    ARROW, CUBE, LINE_LIST, TEXT = 0, 1, 5, 9
    markers = [factory.new('visualization_msgs/msg/Marker', header=hdr, ns='', id=0, action=DELETEALL)]
    boxes = np.asarray(boxes, np.float64).reshape(-1, np.asarray(boxes).shape[-1] if len(boxes) else 9)
    corners = box_corners(boxes) if len(boxes) else np.zeros((0, 8, 3))       # (N, 8, 3)
    identity = _pose(factory, (0.0, 0.0, 0.0), 0.0)
    ids = _id_texts(track_ids, len(scores))
    for i, (box, score, label, track_id) in enumerate(zip(boxes, scores, labels, ids)):
        name = str(class_names[int(label)])
        rgb = track_color(int(track_id)) if track_id else CLASS_COLORS.get(name, (1.0, 1.0, 1.0))
        centre = (box[0], box[1], box[2] + box[5] / 2.0)
        if style == 'cubes':
            markers.append(factory.new(
                'visualization_msgs/msg/Marker', header=hdr, ns='boxes', id=i, type=CUBE, action=ADD,
                pose=_pose(factory, centre, box[6]), scale=_vector3(factory, box[3:6]),
                color=_color(factory, rgb, 0.5), lifetime=life))
        else:
            points = [_point(factory, corners[i, k]) for edge in _EDGES for k in edge]
            markers.append(factory.new(
                'visualization_msgs/msg/Marker', header=hdr, ns='boxes', id=i, type=LINE_LIST,
                action=ADD, pose=identity, scale=_vector3(factory, (0.08, 0.0, 0.0)),
                color=_color(factory, rgb), lifetime=life, points=points))
        markers.append(factory.new(
            'visualization_msgs/msg/Marker', header=hdr, ns='labels', id=i, type=TEXT, action=ADD,
            pose=_pose(factory, (box[0], box[1], box[2] + box[5] + 0.5), 0.0),
            scale=_vector3(factory, (0.0, 0.0, 0.8)), color=_color(factory, rgb), lifetime=life,
            text=(f'#{track_id} ' if track_id else '') + f'{name} {float(score):.2f}'))
        if box.shape[0] >= 9 and float(np.hypot(box[7], box[8])) >= min_speed:
            tip = (centre[0] + box[7], centre[1] + box[8], centre[2])
            markers.append(factory.new(
                'visualization_msgs/msg/Marker', header=hdr, ns='velocity', id=i, type=ARROW,
                action=ADD, pose=identity, scale=_vector3(factory, (0.15, 0.3, 0.3)),
                color=_color(factory, rgb), lifetime=life,
                points=[_point(factory, centre), _point(factory, tip)]))
    return factory.new('visualization_msgs/msg/MarkerArray', markers=markers)


def track_color(track_id: int) -> tuple[float, float, float]:
    """A bright colour of its own for a track ID (RGB 0..1): hues a golden angle apart, so that
    consecutive IDs differ clearly."""
    import colorsys
    return colorsys.hsv_to_rgb((track_id * 0.618033988749895) % 1.0, 0.85, 1.0)


def _id_texts(track_ids: np.ndarray | None, count: int) -> list[str]:
    """``Detection3D.id`` of each box: the track ID as decimal text, '' without tracking."""
    if track_ids is None:
        return [''] * count
    return [str(int(i)) for i in np.asarray(track_ids).reshape(-1)]


def detected_objects(factory: MessageFactory, boxes: np.ndarray, scores: np.ndarray,
                     labels: np.ndarray, class_names: Sequence[str], stamp_ns: int,
                     frame_id: str) -> Any:
    """``autoware_perception_msgs/DetectedObjects`` for Autoware's tracking.

    Per box: ``existence_probability`` = score; one classification (:data:`AUTOWARE_LABELS`,
    probability = score); the gravity-centre pose with the full yaw (``AVAILABLE``: the model
    tells front from back); the velocity as a twist in the object's own frame (x along its
    heading, as Autoware expects), no covariances; a ``BOUNDING_BOX`` shape with
    ``dimensions`` = length, width, height.
    """
    boxes = np.asarray(boxes, np.float64).reshape(len(scores), -1) if len(scores) else \
        np.zeros((0, 9))
    objects = []
    for box, score, label in zip(boxes, scores, labels):
        centre = (box[0], box[1], box[2] + box[5] / 2.0)
        yaw = float(box[6])
        vx, vy = (float(box[7]), float(box[8])) if box.shape[0] >= 9 else (0.0, 0.0)
        c, s = np.cos(yaw), np.sin(yaw)
        twist = factory.new('geometry_msgs/msg/Twist',
                            linear=_vector3(factory, (c * vx + s * vy, -s * vx + c * vy, 0.0)),
                            angular=_vector3(factory, (0.0, 0.0, 0.0)))
        kinematics = factory.new(
            'autoware_perception_msgs/msg/DetectedObjectKinematics',
            pose_with_covariance=factory.new('geometry_msgs/msg/PoseWithCovariance',
                                             pose=_pose(factory, centre, yaw)),
            has_position_covariance=False, orientation_availability=2,       # AVAILABLE
            twist_with_covariance=factory.new('geometry_msgs/msg/TwistWithCovariance',
                                              twist=twist),
            has_twist=box.shape[0] >= 9, has_twist_covariance=False)
        name = str(class_names[int(label)])
        classification = factory.new('autoware_perception_msgs/msg/ObjectClassification',
                                     label=AUTOWARE_LABELS.get(name, AUTOWARE_UNKNOWN),
                                     probability=float(score))
        shape = factory.new('autoware_perception_msgs/msg/Shape', type=0,      # BOUNDING_BOX
                            dimensions=_vector3(factory, box[3:6]))
        objects.append(factory.new('autoware_perception_msgs/msg/DetectedObject',
                                   existence_probability=float(score),
                                   classification=[classification], kinematics=kinematics,
                                   shape=shape))
    return factory.new('autoware_perception_msgs/msg/DetectedObjects',
                       header=header(factory, stamp_ns, frame_id), objects=objects)

"""One parameter schema for the detector: node ``declare_parameter``, YAML check, README table.

Every parameter is one field of :class:`DetectorParams` (type, default, description,
validation, settable while running or not); :data:`PARAMS` is generated from those fields. The
rclpy node declares exactly these, ``config/detector.yaml``
(``/**: ros__parameters:`` layout) is validated against them, the replay tool reads the same
YAML, and :func:`markdown_table` writes the README table. Nothing here imports ROS.
"""
from __future__ import annotations

import math
import re
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sparsebev_core.errors import InputError
from sparsebev_core.geometry import (CAMERA_NAMES, CLASS_NAMES, NUSCENES_LIDAR_TOP_ROTATION_WXYZ,
                                     NUSCENES_LIDAR_TOP_TRANSLATION, quat_to_rot,
                                     quat_xyzw_to_wxyz, make_transform)
from sparsebev_core.recipe.presets import PRESET_NAMES      # the recipe: no torch
from sparsebev_core.yaml_file import read_yaml_file

NODE_NAME = 'sparsebev'
"""Default node name; outputs are ``~/detections`` and ``~/markers`` under it."""
DETECTIONS_TOPIC = f'/{NODE_NAME}/detections'
MARKERS_TOPIC = f'/{NODE_NAME}/markers'


class ParameterError(InputError):
    """A parameter value is invalid; the message names the parameter and what is allowed."""


def image_topic(camera: str) -> str:
    """Default raw image topic of a camera (``image_transport`` base topic)."""
    return f'/{camera}/image_raw'


def camera_info_topic(camera: str) -> str:
    """Default CameraInfo topic of a camera."""
    return f'/{camera}/camera_info'


def transport_topic(base_topic: str, transport: str) -> str:
    """The topic actually subscribed for ``image_transport`` (``<base>/compressed``)."""
    return base_topic if transport == 'raw' else f'{base_topic}/{transport}'


# --------------------------------------------------------------------------------------------
# validators: each returns None when fine, or a sentence saying what is allowed
# --------------------------------------------------------------------------------------------
Validator = Callable[[Any], 'str | None']


@dataclass(frozen=True)
class OneOf:
    """Validator: the value is one of ``choices`` (also the descriptor's constraint text)."""
    choices: tuple[str, ...]

    def __call__(self, value: Any) -> str | None:
        return None if value in self.choices else \
            f'must be one of {", ".join(map(repr, self.choices))}'


@dataclass(frozen=True)
class InRange:
    """Validator: a finite number in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``; None = no
    bound). ROS parameter descriptors carry the same range (``param_descriptors``)."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def __call__(self, value: Any) -> str | None:
        if not math.isfinite(value):
            return 'must be a finite number'
        lo, hi = self.lo, self.hi
        if lo is not None and (value <= lo if self.lo_open else value < lo):
            return f'must be {">" if self.lo_open else ">="} {lo}'
        if hi is not None and value > hi:
            return f'must be <= {hi}'
        return None


@dataclass(frozen=True)
class MapOf:
    """Validator of a map parameter: every key one of ``keys``, every value passing ``values``
    (each entry is one ROS parameter ``<name>.<key>``, with the range of ``values``)."""
    keys: tuple[str, ...]
    values: InRange

    def __call__(self, value: Mapping[str, Any]) -> str | None:
        unknown = [k for k in value if k not in self.keys]
        if unknown:
            return f'has unknown keys {unknown}; known: {", ".join(self.keys)}'
        for key, entry in value.items():
            problem = self.values(entry)
            if problem:
                return f'entry {key!r} {problem}'
        return None


def one_of(*choices: str) -> Validator:
    return OneOf(choices)


def in_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Validator:
    return InRange(lo, hi, lo_open)


def length(n: int) -> Validator:
    def check(value: Any) -> str | None:
        return None if len(value) == n else f'must have exactly {n} entries'
    return check


def _device(value: str) -> str | None:
    return None if re.fullmatch(r'auto|cpu|cuda(:\d+)?', value) else \
        "must be 'auto', 'cpu', 'cuda' or 'cuda:N'"


def _preset(value: str) -> str | None:
    return None if value in PRESET_NAMES else f'must be one of {", ".join(PRESET_NAMES)}'


def _classes(value: Sequence[str]) -> str | None:
    if list(value) == ['all']:
        return None
    if not value:
        return "must name at least one class, or be ['all']"
    unknown = [c for c in value if c not in CLASS_NAMES]
    return f'has unknown classes {unknown}; known: {", ".join(CLASS_NAMES)}' if unknown else None


def _topics(value: Sequence[str]) -> str | None:
    if not value:
        return 'must have one topic per camera of camera_names'
    bad = [t for t in value if not re.fullmatch(r'[~/]?[A-Za-z_][A-Za-z0-9_/{}~]*', t)]
    return f'has invalid topic names {bad}' if bad else None


def _camera_names(value: Sequence[str]) -> str | None:
    if not value:
        return 'must name at least one camera'
    bad = [n for n in value if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', n)]
    if bad:
        return f'has invalid camera names {bad} (letters, digits and _; they name the topics)'
    repeated = sorted({n for n in value if list(value).count(n) > 1})
    return f'repeats {repeated}: camera names must be unique' if repeated else None


def _frame_id(optional: bool) -> Validator:
    def check(value: str) -> str | None:
        if not value:
            return None if optional else 'must not be empty'
        if value.startswith('/'):       # ROS 1 habit; tf2 raises on it (buffer_core.cpp)
            return (f"must not start with '/' (tf2 refuses such frame ids and every lookup "
                    f"would fail): use {value.lstrip('/')!r}")
        return None if re.fullmatch(r'[A-Za-z0-9_./-]+', value) else 'is not a valid TF frame id'
    return check


def _providers(value: Sequence[str]) -> str | None:
    return None if value and all(re.fullmatch(r'[A-Za-z]+ExecutionProvider', v) for v in value) \
        else "must name at least one onnxruntime provider, e.g. ['CPUExecutionProvider']"


def _unit_quaternion(value: Sequence[float]) -> str | None:
    if len(value) != 4:
        return 'must have 4 entries (x, y, z, w)'
    n = float(np.linalg.norm(value))
    return None if abs(n - 1.0) < 1e-3 else f'must be a unit quaternion (x, y, z, w); norm is {n:.4f}'


# --------------------------------------------------------------------------------------------
# the schema
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One node parameter, derived from a :class:`DetectorParams` field. ``type`` is one of
    bool, int, float, str, list[str], list[float] or dict[str, float] (a map of optional
    entries checked by :class:`MapOf`: one ROS parameter ``<name>.<key>`` each); ``runtime``
    parameters may be set while the node runs, the others are read-only."""
    name: str
    type: str
    default: Any
    description: str
    check: Validator | None = None
    runtime: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys a map parameter may have (``MapOf``); () for the others."""
        return self.check.keys if isinstance(self.check, MapOf) else ()


def _copy_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    return list(value) if isinstance(value, (list, tuple)) else value


def param(default: Any, description: str, check: Validator | None = None,
          runtime: bool = False) -> Any:
    """A :class:`DetectorParams` field: default, description, check, settable while running."""
    metadata = {'description': description, 'check': check, 'runtime': runtime}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: _copy_default(default), metadata=metadata)
    return field(default=default, metadata=metadata)


SCORE_RANGE = InRange(0.0, 1.0)
_LIDAR_XYZW = [float(v) for v in (NUSCENES_LIDAR_TOP_ROTATION_WXYZ[1:] + NUSCENES_LIDAR_TOP_ROTATION_WXYZ[:1])]


@dataclass
class DetectorParams:
    """Every node parameter: one field each, with its type, default, description and check.

    This class is the one source of the schema: :data:`PARAMS` (node declarations, YAML check,
    README table) is generated from its fields. Make validated values with :func:`validate` /
    :func:`defaults` / :func:`load_yaml`.
    """
    # model
    preset: str = param('tiny', 'model preset (`sparsebev_core.recipe.presets`)', _preset)
    checkpoint: str = param('', "checkpoint file; '' = the bundled demo weights for `tiny` "
                            '(synthetic scenes only), required for the other presets')
    config_file: str = param('', 'official SparseBEV config file (mmcv style, '
                             "docs/official_config.md); when set it replaces `preset`")
    device: str = param('auto', "'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'", _device)
    precision: str = param('fp32', 'inference precision', one_of('fp32', 'fp16', 'bf16'))
    runtime: str = param('torch', "network runtime: 'torch' (PyTorch eager) or 'onnxruntime' "
                         '(the export in onnx_dir, docs/deploy.md)', one_of('torch', 'onnxruntime'))
    onnx_dir: str = param('', 'folder written by `sparsebev export-onnx` (encoder.onnx, head.onnx, '
                          "export.json); needed by runtime 'onnxruntime'")
    onnx_providers: list[str] = param(['CPUExecutionProvider'], 'onnxruntime execution providers '
                                      'in priority order (CPUExecutionProvider, '
                                      'CUDAExecutionProvider, TensorrtExecutionProvider)',
                                      _providers)
    score_threshold: float = param(0.3, 'drop boxes scoring below this', SCORE_RANGE,
                                   runtime=True)
    score_thresholds: dict[str, float] = param(
        {}, 'per-class score thresholds replacing score_threshold for the classes given '
        '(a map class -> threshold in [0, 1]; one ROS parameter score_thresholds.<class> each)',
        MapOf(CLASS_NAMES, SCORE_RANGE), runtime=True)
    max_detections: int = param(300, 'at most this many boxes per frame', in_range(1, 10000))
    classes: list[str] = param(['all'], "publish only these classes; ['all'] = all ten nuScenes "
                               'classes (ROS 2 parameter files cannot hold an empty list)',
                               _classes, runtime=True)
    # inputs
    camera_names: list[str] = param(
        list(CAMERA_NAMES), 'the rig: one name per camera, any number >= 1 (default: the six '
        'nuScenes cameras in the official order); the topics default to /<name>/image_raw and '
        '/<name>/camera_info', _camera_names)
    image_topics: list[str] = param(
        [image_topic(c) for c in CAMERA_NAMES], 'image base topics, one per camera of '
        "camera_names, same order (`/compressed` is appended for image_transport 'compressed')",
        _topics)
    camera_info_topics: list[str] = param([camera_info_topic(c) for c in CAMERA_NAMES],
                                          'CameraInfo topics, same order', _topics)
    image_transport: str = param('compressed', 'sensor_msgs/Image (raw) or CompressedImage '
                                 '(JPEG/PNG)', one_of('raw', 'compressed'))
    use_projection_matrix: bool = param(False, 'the images are rectified (image_proc '
                                        'image_rect): intrinsics from CameraInfo.p, distortion '
                                        'ignored; false: raw images, intrinsics from '
                                        'CameraInfo.k')
    distorted_images: str = param('undistort', 'raw images whose CameraInfo has non-zero '
                                  "distortion: 'undistort' (plumb_bob, rational_polynomial, "
                                  "equidistant; remap cached per camera) or 'refuse' (the camera "
                                  "is missing as 'distorted_image')",
                                  one_of('undistort', 'refuse'))
    max_image_pixels: int = param(8192 * 8192, 'largest image (width x height) decoded; a '
                                  'bigger declared size skips the frame before any decoding',
                                  in_range(1, 2**31))
    anchor_camera: str = param('CAM_FRONT', 'camera whose stamp is the frame reference stamp and '
                               'whose images open the camera sets (one of camera_names; the '
                               'first camera when CAM_FRONT is not in the rig and this is unset)')
    min_cameras: int = param(1, 'a camera set with fewer present cameras is skipped; with at '
                             'least this many the frame goes ahead degraded (the missing '
                             'cameras marked invalid and reported)', in_range(1, 1000))
    # frames
    world_frame: str = param('odom', 'fixed frame of the ego poses (world_frame <- base_frame) '
                             "that the temporal memory lives in: a continuous frame (REP 105 "
                             "'odom'); 'map' jumps on relocalisation (docs/ros2.md)",
                             _frame_id(False))
    base_frame: str = param('base_link', 'ego frame; camera extrinsics are base_frame <- camera',
                            _frame_id(False))
    model_frame: str = param('', "TF frame of the model (nuScenes LIDAR_TOP axes); '' = use "
                             'model_translation / model_rotation_xyzw relative to base_frame',
                             _frame_id(True))
    model_translation: list[float] = param(
        list(NUSCENES_LIDAR_TOP_TRANSLATION), 'base_frame <- model frame translation (m) when '
        'model_frame is empty; default = nuScenes LIDAR_TOP calibration', length(3))
    model_rotation_xyzw: list[float] = param(
        _LIDAR_XYZW, 'base_frame <- model frame rotation (x, y, z, w) when model_frame is empty',
        _unit_quaternion)
    output_frame: str = param('base_link', 'frame of the published boxes (base_frame, '
                              'world_frame or any TF frame)', _frame_id(False))
    tf_timeout: float = param(0.1, 'seconds to wait for TF before skipping a frame',
                              in_range(0.0, 10.0))
    # sync and temporal memory
    sync_window: float = param(0.06, 'camera sets: each camera contributes its image nearest '
                               'to the anchor image within this many seconds, and no set spans '
                               'more (keep it under half the camera period minus the rig spread)',
                               in_range(0.0, 10.0, lo_open=True))
    sync_max_wait: float = param(0.1, 'a camera set waits at most this long (s) for late '
                                 'cameras after its anchor image, then goes ahead without them',
                                 in_range(0.0, 10.0))
    queue_size: int = param(10, 'images kept per camera while sets are assembled',
                            in_range(1, 1000))
    max_camera_time_diff: float = param(0.15, 'skip the frame and reset memory when the present '
                                        'cameras\' stamps spread more than this (s)',
                                        in_range(0.0, 10.0, lo_open=True))
    history_spacing: float = param(0.5, 'time between the past frames fed to the model (s)',
                                   in_range(0.0, 10.0, lo_open=True))
    max_time_gap: float = param(2.0, 'reset temporal memory when frames are further apart (s)',
                                in_range(0.0, 3600.0, lo_open=True))
    # node behaviour and outputs
    qos_reliability: str = param('best_effort', 'reliability of the camera subscriptions',
                                 one_of('best_effort', 'reliable'))
    skip_when_no_subscribers: bool = param(True, 'do no inference while nobody subscribes')
    publish_markers: bool = param(True, 'publish ~/markers (visualization_msgs/MarkerArray)',
                                  runtime=True)
    marker_style: str = param('lines', 'box markers as line lists or cubes',
                              one_of('lines', 'cubes'), runtime=True)
    marker_lifetime: float = param(0.5, 'marker lifetime (s); 0 = forever', in_range(0.0, 3600.0))
    publish_autoware_objects: bool = param(False, 'also publish ~/objects '
                                           '(autoware_perception_msgs/DetectedObjects, in '
                                           'output_frame) for Autoware tracking')
    warn_throttle: float = param(5.0, 'seconds between repeats of the same warning',
                                 in_range(0.0, 3600.0))

    @property
    def anchor_index(self) -> int:
        """Index of ``anchor_camera`` in ``camera_names``."""
        return self.camera_names.index(self.anchor_camera)

    @property
    def subscribed_image_topics(self) -> list[str]:
        """Image topics as subscribed for the chosen ``image_transport``."""
        return [transport_topic(t, self.image_transport) for t in self.image_topics]

    @property
    def T_base_model(self) -> np.ndarray:
        """Default model frame -> base frame transform (used when ``model_frame`` is empty)."""
        R = quat_to_rot(quat_xyzw_to_wxyz(self.model_rotation_xyzw))
        return make_transform(R, self.model_translation)


def _param_of(f: Field) -> Param:
    default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[operator]
    return Param(f.name, str(f.type), default, f.metadata['description'], f.metadata['check'],
                 f.metadata['runtime'])


PARAMS: tuple[Param, ...] = tuple(_param_of(f) for f in fields(DetectorParams))
"""The schema in declaration order, generated from :class:`DetectorParams`."""
PARAMS_BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
RUNTIME_PARAMS: tuple[str, ...] = tuple(p.name for p in PARAMS if p.runtime)
"""Parameters the node accepts while running (validated; an invalid value changes nothing)."""


def _coerce(p: Param, value: Any) -> Any:
    """Value converted to the parameter's type, or ParameterError naming the parameter."""
    def fail(what: str) -> ParameterError:
        return ParameterError(f"parameter '{p.name}': {what} (got {value!r})")
    if p.type == 'bool':
        if isinstance(value, bool):
            return value
        raise fail('must be true or false')
    if p.type == 'int':
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise fail('must be an integer')
        return int(value)
    if p.type == 'float':
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise fail('must be a number')
        return float(value)
    if p.type == 'str':
        if not isinstance(value, str):
            raise fail('must be a string')
        return value
    if p.type in ('list[str]', 'list[float]'):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, np.ndarray)):
            raise fail('must be a list')
        if p.type == 'list[str]':
            if not all(isinstance(v, str) for v in value):
                raise fail('must be a list of strings')
            return [str(v) for v in value]
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                   for v in value):
            raise fail('must be a list of numbers')
        return [float(v) for v in value]
    if p.type == 'dict[str, float]':
        if not isinstance(value, Mapping):
            raise fail(f'must be a map {{key: number}} ({p.name}.<key> as ROS parameters)')
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                   for v in value.values()):
            raise fail('must map to numbers')
        return {str(k): float(v) for k, v in value.items()}
    raise AssertionError(f'unknown parameter type {p.type}')


def validate(values: Mapping[str, Any]) -> DetectorParams:
    """Defaults overridden by ``values``, each checked; raises ParameterError naming the first
    unknown or invalid parameter."""
    unknown = sorted(set(values) - set(PARAMS_BY_NAME))
    if unknown:
        raise ParameterError(f'unknown parameter(s) {", ".join(unknown)}; known: '
                             f'{", ".join(PARAMS_BY_NAME)}')
    out = {}
    for p in PARAMS:
        value = _coerce(p, values[p.name]) if p.name in values else _copy_default(p.default)
        if p.check is not None:
            problem = p.check(value)
            if problem:
                raise ParameterError(f"parameter '{p.name}' {problem} (got {value!r})")
        out[p.name] = value
    _fit_rig(out, values)
    return DetectorParams(**out)


def _fit_rig(out: dict[str, Any], given: Mapping[str, Any]) -> None:
    """The parameters that depend on ``camera_names``: topics default to the names, lengths
    must match, the anchor must be a camera of the rig, ``min_cameras`` at most N."""
    names = out['camera_names']
    for key, make in (('image_topics', image_topic), ('camera_info_topics', camera_info_topic)):
        if key not in given:
            out[key] = [make(n) for n in names]
        elif len(out[key]) != len(names):
            raise ParameterError(f"parameter '{key}' has {len(out[key])} topics but "
                                 f"camera_names has {len(names)} cameras ({', '.join(names)}); "
                                 'give one topic per camera, same order')
    if 'anchor_camera' not in given and out['anchor_camera'] not in names:
        out['anchor_camera'] = names[0]
    if out['anchor_camera'] not in names:
        raise ParameterError(f"parameter 'anchor_camera' must be one of camera_names "
                             f"({', '.join(names)}) (got {out['anchor_camera']!r})")
    if out['min_cameras'] > len(names):
        raise ParameterError(f"parameter 'min_cameras' is {out['min_cameras']} but the rig has "
                             f'only {len(names)} cameras')


def with_runtime_changes(params: DetectorParams, changes: Mapping[str, Any]) -> DetectorParams:
    """``params`` with ``changes`` applied, validated; raises ParameterError (naming the
    parameter) for a read-only parameter or an invalid value, and then nothing changes."""
    read_only = sorted(set(changes) & set(PARAMS_BY_NAME) - set(RUNTIME_PARAMS))
    if read_only:
        raise ParameterError(f'parameter(s) {", ".join(read_only)} cannot change while the node '
                             f'runs (only {", ".join(RUNTIME_PARAMS)} can); restart the node')
    return validate({**as_dict(params), **changes})


def undeclared_notice(names: Sequence[str], known: Sequence[str] = tuple(PARAMS_BY_NAME)) -> str:
    """The node's WARN about parameter overrides it does not declare. rclpy ignores them; they
    are usually meant for other nodes (a shared ``/**`` file), so they are not an error, but a
    typo would leave the default in place: a name close to a ``known`` one says which."""
    import difflib
    named = []
    for name in names:
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
        named.append(f'{name} (did you mean {close[0]!r}?)' if close else name)
    return (f'ignoring parameter(s) this node does not declare: {", ".join(named)}. Meant for '
            'other nodes (a shared /** parameter file)? If not, fix the name: this node '
            'keeps its default.')


def nested_name(p: Param, key: str) -> str:
    """The ROS parameter of one entry of a map parameter: ``<name>.<key>``."""
    return f'{p.name}.{key}'


def group_nested(values: Mapping[str, Any], base: DetectorParams | None = None
                 ) -> dict[str, Any]:
    """Schema values from ROS parameter names: ``<map>.<key>`` entries are gathered into
    their map parameter (on top of ``base``'s map when given); names the schema does not know
    are left out (rclpy's own, ``qos_overrides.*``)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        head, _, key = name.partition('.')
        p = PARAMS_BY_NAME.get(head)
        if key and p is not None and key in p.keys:
            out.setdefault(head, dict(getattr(base, head)) if base is not None else {})[key] = value
        elif name in PARAMS_BY_NAME:
            out[name] = value
    return out


def defaults() -> DetectorParams:
    """All parameters at their defaults."""
    return validate({})


def as_dict(params: DetectorParams) -> dict[str, Any]:
    """Parameter values by name (for ``ros__parameters`` YAML or logging)."""
    return {f.name: _copy_default(getattr(params, f.name)) for f in fields(params)}


# --------------------------------------------------------------------------------------------
# YAML (`/**: ros__parameters:` layout)
# --------------------------------------------------------------------------------------------
def parameters_from_yaml(data: Mapping[str, Any], node_name: str = NODE_NAME) -> dict[str, Any]:
    """The ``ros__parameters`` mapping for ``node_name`` from a ROS 2 params YAML document.

    Sections ``/**``, ``<node_name>`` and ``/<node_name>`` apply in that order (later wins), as
    ``ros2 run --params-file`` does for a node without a namespace.
    """
    if not isinstance(data, Mapping):
        raise ParameterError('a ROS 2 parameter file must be a mapping `/**: ros__parameters: ...`')
    merged: dict[str, Any] = {}
    found = False
    for key in ('/**', node_name, f'/{node_name}'):
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, Mapping) or 'ros__parameters' not in section:
            raise ParameterError(f"section '{key}' has no 'ros__parameters' mapping")
        params = section['ros__parameters'] or {}
        if not isinstance(params, Mapping):
            raise ParameterError(f"'{key}: ros__parameters' must be a mapping")
        merged.update(params)
        found = True
    if not found:
        raise ParameterError(f"no '/**' or '{node_name}' section with ros__parameters; "
                             f"sections found: {', '.join(map(str, data))}")
    return merged


def read_yaml_values(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The ``ros__parameters`` values of a YAML file, checked and validated on their own
    (ParameterError naming the file), as given (defaults not filled in)."""
    data = read_yaml_file(path, ParameterError, 'parameter file',
                          'give a ros__parameters file like config/detector.yaml')
    try:
        values = parameters_from_yaml(data, node_name)
        validate(values)
    except ParameterError as exc:
        raise ParameterError(f'{path}: {exc}') from None
    return values


def load_yaml(path: str | Path, node_name: str = NODE_NAME) -> DetectorParams:
    """Read and validate a ``ros__parameters`` YAML file."""
    return validate(read_yaml_values(path, node_name))


def to_yaml(params: DetectorParams | None = None) -> str:
    """A ``/**: ros__parameters:`` YAML document with every parameter and its description (an
    empty map as a comment: rcl's parameter-file parser refuses ``{}`` followed by more keys)."""
    params = params or defaults()
    values = as_dict(params)
    lines = ['/**:', '  ros__parameters:']
    for p in PARAMS:
        lines.append(f'    # {p.description}')
        if isinstance(values[p.name], Mapping) and not values[p.name]:
            lines.append(f'    # {p.name}: {{<key>: <value>, ...}}   (none set; a ROS 2 parameter '
                         'file cannot hold an empty map)')
            continue
        lines.append(f'    {p.name}: {_yaml_value(values[p.name])}')
    return '\n'.join(lines) + '\n'


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return '[' + ', '.join(_yaml_value(v) for v in value) + ']'
    if isinstance(value, Mapping):
        return '{' + ', '.join(f'{k}: {_yaml_value(v)}' for k, v in value.items()) + '}'
    return repr(value)


# --------------------------------------------------------------------------------------------
# README table and node declarations
# --------------------------------------------------------------------------------------------
def markdown_table() -> str:
    """The parameter table of the README, generated from :data:`PARAMS`."""
    rows = ['| parameter | type | default | description |', '|---|---|---|---|']
    for p in PARAMS:
        default = _yaml_value(_copy_default(p.default))
        if p.name.endswith('topics'):
            default = _yaml_value(p.default[0]).replace(CAMERA_NAMES[0], '<CAMERA>') + ' per camera'
        running = ' (settable while running)' if p.runtime else ''
        rows.append(f'| `{p.name}` | {p.type} | `{default}` | {p.description}{running} |')
    return '\n'.join(rows) + '\n'


def declarations() -> list[tuple[str, Any, str]]:
    """``(name, default, description)`` per parameter, for the node's ``declare_parameter``.

    No default is an empty list, so rclpy can infer every parameter's type from its default.
    """
    return [(p.name, _copy_default(p.default), p.description) for p in PARAMS]


# --------------------------------------------------------------------------------------------
# command line: `sparsebev params-table` / `python -m sparsebev_ros.params`
# --------------------------------------------------------------------------------------------
def add_arguments(parser: Any) -> None:
    """``sparsebev params-table`` has no options."""


def main(args: Any = None) -> int:
    """Print the README parameter table."""
    print(markdown_table(), end='')
    return 0


if __name__ == '__main__':  # python -m sparsebev_ros.params  -> the README table
    main()

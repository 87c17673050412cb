"""A camera rig: the cameras' names, image sizes, intrinsics and extrinsics to the base frame.

SparseBEV has no per-camera learned parameter (each sampling point reads whichever camera
sees it), so the same weights run on any rig. The rig is data: :func:`nuscenes_rig` is the
default (the six nuScenes cameras in the official order), :func:`load_rig` reads a YAML file::

    anchor: CAM_FRONT              # optional; default: the first camera
    cameras:
      - name: CAM_FRONT
        image_size: [640, 480]     # width, height (pixels)
        intrinsics: [fx, fy, cx, cy]          # or a 3x3 matrix K
        translation: [1.7, 0.0, 1.5]          # base <- camera (m)
        rotation_wxyz: [0.5, -0.5, 0.5, -0.5] # base <- camera, unit quaternion (w, x, y, z)

Camera axes are the usual optical ones (x right, y down, z forward). Every problem in the
file is an :class:`RigError` naming the file, the camera and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import InputError
from .geometry import CAMERA_NAMES, transform_from_quat
from .yaml_file import read_yaml_file

MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 8192

# nuScenes calibrated_sensor values of log n015-2018-07-24 (1600x900 cameras): rotation is a
# (w, x, y, z) quaternion sensor -> ego, translation sensor -> ego in metres. Same numbers as
# test/parity/inputs.py (a test checks that they agree). LIDAR_TOP's are in geometry.py.
NUSCENES_CAMERAS: dict[str, dict] = {
    'CAM_FRONT': dict(
        translation=[1.70079118954, 0.0159456324149, 1.51095763913],
        rotation=[0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755],
        intrinsic=[[1266.417203046554, 0.0, 816.2670197447984],
                   [0.0, 1266.417203046554, 491.50706579294757], [0.0, 0.0, 1.0]]),
    'CAM_FRONT_RIGHT': dict(
        translation=[1.5508477543, -0.493404796419, 1.49574800619],
        rotation=[0.2060347966337182, -0.2026940577919598, 0.6824507824531167, -0.6713610884174485],
        intrinsic=[[1260.8474446004698, 0.0, 807.968244525554],
                   [0.0, 1260.8474446004698, 495.3344268742088], [0.0, 0.0, 1.0]]),
    'CAM_FRONT_LEFT': dict(
        translation=[1.52387798135, 0.494631336551, 1.50932822144],
        rotation=[0.6757265034669446, -0.6736266522251881, 0.21214015046209478, -0.21122827103904068],
        intrinsic=[[1272.5979470598488, 0.0, 826.6154927353808],
                   [0.0, 1272.5979470598488, 479.75165386361925], [0.0, 0.0, 1.0]]),
    'CAM_BACK': dict(
        translation=[0.0283260309358, 0.00345136761476, 1.57910346144],
        rotation=[0.5037872666382278, -0.49740249788611096, -0.4941850223835201, 0.5045496097725578],
        intrinsic=[[809.2209905677063, 0.0, 829.2196003259838],
                   [0.0, 809.2209905677063, 481.77842384512485], [0.0, 0.0, 1.0]]),
    'CAM_BACK_LEFT': dict(
        translation=[1.03569100218, 0.484795032713, 1.59097014818],
        rotation=[0.6924185592174665, -0.7031619420114925, -0.11648342771943819, 0.11203317912370753],
        intrinsic=[[1256.7414812095406, 0.0, 792.1125740759628],
                   [0.0, 1256.7414812095406, 492.7757465151356], [0.0, 0.0, 1.0]]),
    'CAM_BACK_RIGHT': dict(
        translation=[1.0148780988, -0.480568219723, 1.56239545128],
        rotation=[0.12280980120078765, -0.132400842670559, -0.7004305821388234, 0.690496031265798],
        intrinsic=[[1259.5137405846733, 0.0, 807.2529053838625],
                   [0.0, 1259.5137405846733, 501.19579884916527], [0.0, 0.0, 1.0]]),
}
NUSCENES_IMAGE_WH = (1600, 900)


class RigError(InputError):
    """A rig description that cannot be used; the message names the file, camera and field."""


@dataclass(frozen=True)
class RigCamera:
    """One camera of a rig.

    Attributes:
        name: unique name (also its topic stem in ROS and its channel in synthetic tables).
        image_wh: image (width, height) in pixels.
        K: (3, 3) intrinsics for that image size.
        T_base_cam: (4, 4) camera -> base transform.
    """
    name: str
    image_wh: tuple[int, int]
    K: np.ndarray
    T_base_cam: np.ndarray


@dataclass(frozen=True)
class Rig:
    """N >= 1 cameras (in input order) and the anchor camera (the frame reference stamp)."""
    cameras: tuple[RigCamera, ...]
    anchor: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def camera(self, name: str) -> RigCamera:
        """The camera called ``name`` (RigError if the rig has none)."""
        for c in self.cameras:
            if c.name == name:
                return c
        raise RigError(f'the rig has no camera {name!r} (cameras: {", ".join(self.names)})')


def _scale_intrinsics(K: np.ndarray, scale_xy: tuple[float, float]) -> np.ndarray:
    """Intrinsics of an image resized by (sx, sy)."""
    out = np.array(K, dtype=np.float64)
    out[0] *= scale_xy[0]
    out[1] *= scale_xy[1]
    return out


def nuscenes_rig(image_wh: tuple[int, int] = NUSCENES_IMAGE_WH,
                 names: Sequence[str] = CAMERA_NAMES) -> Rig:
    """The nuScenes cameras (log n015 calibration, official order) at ``image_wh``, or the
    subset ``names`` of them in that order."""
    scale = (image_wh[0] / NUSCENES_IMAGE_WH[0], image_wh[1] / NUSCENES_IMAGE_WH[1])
    cameras = []
    for name in names:
        if name not in NUSCENES_CAMERAS:
            raise RigError(f'{name!r} is not a nuScenes camera ({", ".join(CAMERA_NAMES)})')
        c = NUSCENES_CAMERAS[name]
        cameras.append(RigCamera(name, (int(image_wh[0]), int(image_wh[1])),
                                 _scale_intrinsics(np.array(c['intrinsic']), scale),
                                 transform_from_quat(c['rotation'], c['translation'])))
    return make_rig(cameras)


def make_rig(cameras: Sequence[RigCamera], anchor: str | None = None, where: str = 'rig') -> Rig:
    """A validated :class:`Rig` (unique names, sane sizes, intrinsics and rigid extrinsics)."""
    if not cameras:
        raise RigError(f'{where}: a rig needs at least one camera')
    names = [c.name for c in cameras]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RigError(f'{where}: camera names must be unique; repeated: {", ".join(duplicates)}')
    for c in cameras:
        _check_camera(c, f'{where}: camera {c.name!r}')
    anchor = names[0] if anchor is None else anchor
    if anchor not in names:
        raise RigError(f'{where}: anchor {anchor!r} is not one of the cameras ({", ".join(names)})')
    return Rig(tuple(cameras), anchor)


def _check_camera(c: RigCamera, where: str) -> None:
    if not c.name or not c.name.replace('_', '').isalnum():
        raise RigError(f'{where}: name must be letters, digits and _ (it names topics and files)')
    w, h = c.image_wh
    if not (MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE):
        raise RigError(f'{where}: image_size {w}x{h} must be {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} '
                       'pixels per side')
    K = np.asarray(c.K)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise RigError(f'{where}: intrinsics must be finite with positive focal lengths')
    T = np.asarray(c.T_base_cam)
    R = T[:3, :3]
    if T.shape != (4, 4) or not np.isfinite(T).all() or \
            not np.allclose(R @ R.T, np.eye(3), atol=1e-6):
        raise RigError(f'{where}: extrinsics are not a rigid transform')


def rig_from_dict(data: Any, where: str = 'rig') -> Rig:
    """A :class:`Rig` from the parsed YAML mapping (see the module docstring)."""
    if not isinstance(data, Mapping) or not isinstance(data.get('cameras'), list):
        raise RigError(f'{where}: expected a mapping with a list `cameras:`')
    unknown = sorted(set(data) - {'cameras', 'anchor'})
    if unknown:
        raise RigError(f'{where}: unknown key(s) {", ".join(map(str, unknown))} '
                       '(known: cameras, anchor)')
    cameras = [_camera_from_dict(entry, f'{where}: cameras[{i}]')
               for i, entry in enumerate(data['cameras'])]
    anchor = data.get('anchor')
    return make_rig(cameras, None if anchor is None else str(anchor), where)


_CAMERA_KEYS = {'name', 'image_size', 'intrinsics', 'translation', 'rotation_wxyz'}


def _camera_from_dict(entry: Any, where: str) -> RigCamera:
    if not isinstance(entry, Mapping):
        raise RigError(f'{where}: expected a mapping with {", ".join(sorted(_CAMERA_KEYS))}')
    missing = sorted(_CAMERA_KEYS - set(entry))
    unknown = sorted(set(entry) - _CAMERA_KEYS)
    if missing or unknown:
        raise RigError(f'{where}: ' + '; '.join(
            ([f'missing {", ".join(missing)}'] if missing else []) +
            ([f'unknown {", ".join(map(str, unknown))}'] if unknown else [])))
    where = f'{where} ({entry["name"]})'
    size = _numbers(entry['image_size'], (2,), f'{where} image_size [width, height]')
    if not np.all(size == np.round(size)):
        raise RigError(f'{where}: image_size must be integers')
    intr = np.asarray(entry['intrinsics'], dtype=object)
    if intr.shape == (4,):
        fx, fy, cx, cy = _numbers(entry['intrinsics'], (4,), f'{where} intrinsics')
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    else:
        K = _numbers(entry['intrinsics'], (3, 3), f'{where} intrinsics [fx, fy, cx, cy] or 3x3')
    t = _numbers(entry['translation'], (3,), f'{where} translation')
    q = _numbers(entry['rotation_wxyz'], (4,), f'{where} rotation_wxyz')
    if abs(float(np.linalg.norm(q)) - 1.0) > 1e-3:
        raise RigError(f'{where}: rotation_wxyz must be a unit quaternion (norm '
                       f'{np.linalg.norm(q):.4f})')
    return RigCamera(str(entry['name']), (int(size[0]), int(size[1])), K,
                     transform_from_quat(q / np.linalg.norm(q), t))


def _numbers(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RigError(f'{what}: expected numbers, got {value!r}') from None
    if array.shape != shape or not np.isfinite(array).all():
        raise RigError(f'{what}: expected {"x".join(map(str, shape))} finite numbers, got {value!r}')
    return array


def load_rig(path: str | Path) -> Rig:
    """Read and validate a rig YAML file (RigError naming the file and field on a problem)."""
    return rig_from_dict(read_yaml_file(path, RigError, 'rig file'), str(path))


def rig_to_dict(rig: Rig) -> dict:
    """The YAML mapping of a rig (``load_rig`` of its dump gives the same rig)."""
    from .geometry import rot_to_quat
    return dict(anchor=rig.anchor, cameras=[dict(
        name=c.name, image_size=list(c.image_wh),
        intrinsics=[float(c.K[0, 0]), float(c.K[1, 1]), float(c.K[0, 2]), float(c.K[1, 2])],
        translation=[float(v) for v in c.T_base_cam[:3, 3]],
        rotation_wxyz=[float(v) for v in rot_to_quat(c.T_base_cam[:3, :3])]) for c in rig.cameras])

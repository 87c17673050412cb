"""Poses, quaternions, projection matrices and box conventions.

One place for every frame convention of the project (docs/design.md section 2):

* 4x4 homogeneous transforms are named ``T_<to>_<from>``: ``T_world_ego`` maps ego
  coordinates into the world frame, ``T_ego_cam`` camera coordinates into the ego frame.
* Quaternions are ``(w, x, y, z)`` (nuScenes / pyquaternion order). ROS messages carry
  ``(x, y, z, w)``; convert with :func:`quat_xyzw_to_wxyz`.
* The model frame is nuScenes ``LIDAR_TOP`` (x right, y forward, z up).
* ``lidar2img`` maps homogeneous model-frame points to ``(u*d, v*d, d, 1)`` in pixels of the
  network input image (the image-space transform ``ida`` already folded in).

All functions work in float64 numpy; callers cast to float32 at the model boundary.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CAMERA_NAMES: tuple[str, ...] = (
    'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT',
    'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT',
)
"""Camera order used everywhere (frame-major tensors index ``frame * 6 + camera``)."""

CLASS_NAMES: tuple[str, ...] = (
    'car', 'truck', 'construction_vehicle', 'bus', 'trailer',
    'barrier', 'motorcycle', 'bicycle', 'pedestrian', 'traffic_cone',
)
"""nuScenes detection classes in the official label order."""

POINT_CLOUD_RANGE: tuple[float, ...] = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)

# nuScenes LIDAR_TOP -> ego calibration (log n015, the value every nuScenes car carries up to
# millimetres). Default model frame when a robot publishes no model frame of its own.
NUSCENES_LIDAR_TOP_TRANSLATION: tuple[float, float, float] = (0.943713, 0.0, 1.84023)
NUSCENES_LIDAR_TOP_ROTATION_WXYZ: tuple[float, float, float, float] = (
    0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817)


# --------------------------------------------------------------------------------------------
# rotations and transforms
# --------------------------------------------------------------------------------------------
def quat_to_rot(q_wxyz: Sequence[float]) -> np.ndarray:
    """Rotation matrix (3, 3) of a (w, x, y, z) quaternion; the quaternion is normalised first."""
    w, x, y, z = (float(v) for v in q_wxyz)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if n < 1e-12:
        raise ValueError(f'zero quaternion {tuple(q_wxyz)} has no rotation')
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ], dtype=np.float64)


def rot_to_quat(R: np.ndarray) -> np.ndarray:
    """(w, x, y, z) quaternion with w >= 0 of a rotation matrix (3, 3) (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.asarray(q, dtype=np.float64)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quat_xyzw_to_wxyz(q_xyzw: Sequence[float]) -> np.ndarray:
    """ROS (x, y, z, w) order -> (w, x, y, z)."""
    x, y, z, w = (float(v) for v in q_xyzw)
    return np.array([w, x, y, z], dtype=np.float64)


def quat_wxyz_to_xyzw(q_wxyz: Sequence[float]) -> np.ndarray:
    """(w, x, y, z) -> ROS (x, y, z, w) order."""
    w, x, y, z = (float(v) for v in q_wxyz)
    return np.array([x, y, z, w], dtype=np.float64)


def yaw_to_quat(yaw: float) -> np.ndarray:
    """(w, x, y, z) quaternion of a counter-clockwise rotation by ``yaw`` about +z."""
    return np.array([math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)], dtype=np.float64)


def rot_z(theta: float) -> np.ndarray:
    """Counter-clockwise rotation (3, 3) by ``theta`` radians about +z."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def make_transform(R: np.ndarray, t: Sequence[float]) -> np.ndarray:
    """4x4 transform from a rotation (3, 3) and a translation (3,)."""
    T = np.eye(4, dtype=np.float64)
    T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def transform_from_quat(q_wxyz: Sequence[float], t: Sequence[float]) -> np.ndarray:
    """4x4 transform from a (w, x, y, z) quaternion and a translation."""
    return make_transform(quat_to_rot(q_wxyz), t)


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (R^T, -R^T t), exact for rotations."""
    T = np.asarray(T, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4, dtype=np.float64)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def nuscenes_lidar_to_ego() -> np.ndarray:
    """``T_ego_model`` default: the nuScenes LIDAR_TOP -> ego calibration."""
    return transform_from_quat(NUSCENES_LIDAR_TOP_ROTATION_WXYZ, NUSCENES_LIDAR_TOP_TRANSLATION)


# --------------------------------------------------------------------------------------------
# projection
# --------------------------------------------------------------------------------------------
def intrinsics_4x4(K: np.ndarray) -> np.ndarray:
    """3x3 intrinsics written into the top-left of a 4x4 identity (the official ``viewpad``)."""
    K4 = np.eye(4, dtype=np.float64)
    K4[:3, :3] = np.asarray(K, dtype=np.float64).reshape(3, 3)
    return K4


def test_time_image_transform(orig_hw: tuple[int, int], final_hw: tuple[int, int]
                              ) -> tuple[np.ndarray, dict]:
    """Official test-time ``RandomTransformImage``: resize, bottom crop, centred horizontally.

    Args:
        orig_hw: (H, W) of the camera image.
        final_hw: (fH, fW) of the network input.
    Returns:
        ``ida`` 4x4 (left-multiplies lidar2img) and a dict with ``resize`` (scale factor),
        ``resize_dims`` (newW, newH) and ``crop`` (left, top, right, bottom) in resized pixels.
    """
    H, W = orig_hw
    fH, fW = final_hw
    resize = max(fH / H, fW / W)
    new_w, new_h = int(W * resize), int(H * resize)
    crop_top = new_h - fH
    crop_left = int(max(0, new_w - fW) / 2)
    ida = image_transform_matrix(resize, (crop_left, crop_top), flip=False, final_width=fW)
    info = dict(resize=resize, resize_dims=(new_w, new_h),
                crop=(crop_left, crop_top, crop_left + fW, crop_top + fH))
    return ida, info


def image_transform_matrix(resize: float, crop_left_top: tuple[float, float], flip: bool = False,
                           final_width: int | None = None) -> np.ndarray:
    """4x4 ``ida`` of a resize -> crop -> optional horizontal flip (official convention).

    The 2x2 part scales pixel coordinates; the offset sits in the depth column so that it
    scales with ``d`` in homogeneous pixels ``(u*d, v*d, d)``.
    """
    A = np.eye(2) * resize
    b = -np.asarray(crop_left_top, dtype=np.float64)
    if flip:
        if final_width is None:
            raise ValueError('a flipped image transform needs the final width')
        F = np.array([[-1.0, 0.0], [0.0, 1.0]])
        A = F @ A
        b = F @ b + np.array([final_width, 0.0])
    ida = np.eye(4, dtype=np.float64)
    ida[:2, :2] = A
    ida[:2, 2] = b
    return ida


def compose_lidar2img(K: np.ndarray, T_ego_cam: np.ndarray, T_world_ego_cam: np.ndarray,
                      T_world_ego_ref: np.ndarray, T_ego_model: np.ndarray,
                      ida: np.ndarray | None = None) -> np.ndarray:
    """Projection from the *reference* model frame into one (possibly past) camera image.

    ``lidar2img = ida @ K4 @ (T_world_ego_cam @ T_ego_cam)^-1 @ T_world_ego_ref @ T_ego_model``

    Args:
        K: intrinsics (3, 3) of the camera at its original resolution.
        T_ego_cam: camera -> ego extrinsics.
        T_world_ego_cam: ego pose at the camera's own capture stamp.
        T_world_ego_ref: ego pose at the reference stamp (current frame).
        T_ego_model: model frame (nuScenes LIDAR_TOP axes) -> ego.
        ida: image-space transform of the network input (identity if None).
    Returns:
        (4, 4) float64. Ego motion between the two stamps lives here (docs/official_model.md 5.3).
    """
    T_world_cam = np.asarray(T_world_ego_cam, np.float64) @ np.asarray(T_ego_cam, np.float64)
    T_world_model = np.asarray(T_world_ego_ref, np.float64) @ np.asarray(T_ego_model, np.float64)
    M = intrinsics_4x4(K) @ invert_transform(T_world_cam) @ T_world_model
    if ida is not None:
        M = np.asarray(ida, np.float64) @ M
    return M


def project_points(lidar2img: np.ndarray, points: np.ndarray, eps: float = 1e-5
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Project points (N, 3) with a 4x4 lidar2img; returns pixels (N, 2) and depth (N,)."""
    pts = np.concatenate([np.asarray(points, np.float64), np.ones((len(points), 1))], axis=1)
    proj = pts @ np.asarray(lidar2img, np.float64).T                      # (N, 4)
    depth = proj[:, 2]
    uv = proj[:, :2] / np.maximum(depth, eps)[:, None]
    return uv, depth


# --------------------------------------------------------------------------------------------
# boxes (mmdet3d >= 1.0 LiDAR convention, docs/design.md section 2)
# --------------------------------------------------------------------------------------------
def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Eight corners (N, 8, 3) of boxes (N, >=7) ``[x, y, z_bottom, dx, dy, dz, yaw, ...]``.

    Corner order: bottom face counter-clockwise starting at (+dx/2, +dy/2), then the top face
    in the same order.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes.reshape(-1, boxes.shape[-1])
    x, y, z, dx, dy, dz, yaw = (boxes[:, i] for i in range(7))
    sx = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sz = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=np.float64)
    lx = dx[:, None] * sx                                                  # (N, 8)
    ly = dy[:, None] * sy
    lz = dz[:, None] * sz
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    cx = x[:, None] + c * lx - s * ly
    cy = y[:, None] + s * lx + c * ly
    cz = z[:, None] + lz
    return np.stack([cx, cy, cz], axis=-1)


def bottom_to_gravity_center(boxes: np.ndarray) -> np.ndarray:
    """Copy of boxes with z moved from the bottom face to the box centre (z + dz / 2)."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[..., 2] += out[..., 5] * 0.5
    return out


def gravity_to_bottom_center(boxes: np.ndarray) -> np.ndarray:
    """Copy of boxes with z moved from the box centre to the bottom face (z - dz / 2)."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[..., 2] -= out[..., 5] * 0.5
    return out


def transform_boxes(boxes: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a rigid 4x4 transform to boxes (N, 9): centres, yaw (about +z) and velocities.

    Valid for transforms whose rotation is (close to) a rotation about z, as between the
    model frame, ego and world. Sizes are unchanged.
    """
    boxes = np.array(boxes, dtype=np.float64, copy=True)
    T = np.asarray(T, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    boxes[:, 0:3] = boxes[:, 0:3] @ R.T + t
    yaw_offset = math.atan2(R[1, 0], R[0, 0])
    boxes[:, 6] = wrap_angle(boxes[:, 6] + yaw_offset)
    if boxes.shape[1] >= 9:
        v = np.concatenate([boxes[:, 7:9], np.zeros((len(boxes), 1))], axis=1)
        boxes[:, 7:9] = (v @ R.T)[:, :2]
    return boxes


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles into [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi

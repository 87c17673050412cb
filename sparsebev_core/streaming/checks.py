"""What a ``Frame`` must hold before the detector uses it: finite stamps, rigid poses, sane
intrinsics, unique camera names, at least one camera image. Every failure is an
``InvalidFrameError`` naming the frame, the camera and the field; a pose is never assumed."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..frame import Frame, InvalidFrameError


def camera_label(camera, index: int, names: Sequence[str]) -> str:
    return f'camera {index} ({names[index]})'


def check_pose(value, what: str, shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    """A finite float64 matrix of the given shape, a rigid transform when 4x4."""
    if value is None:
        raise InvalidFrameError(f'{what} is missing; a pose is never assumed to be identity')
    matrix = np.asarray(value, dtype=np.float64)
    if matrix.shape != shape or not np.isfinite(matrix).all():
        raise InvalidFrameError(f'{what} must be a finite {shape[0]}x{shape[1]} matrix, '
                                f'got shape {matrix.shape}' +
                                ('' if matrix.shape != shape else ' with non-finite values'))
    if shape == (4, 4):
        R = matrix[:3, :3]
        if not np.allclose(matrix[3], [0, 0, 0, 1]) or not np.allclose(R @ R.T, np.eye(3), atol=1e-4):
            raise InvalidFrameError(f'{what} is not a rigid transform (rotation not orthonormal '
                                    'or last row not [0, 0, 0, 1])')
    return matrix


def check_frame(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """Validate poses, intrinsics and stamps; returns (T_world_ego_ref, T_ego_model)."""
    if not math.isfinite(frame.stamp):
        raise InvalidFrameError(f'frame {frame.key!r} has a non-finite stamp {frame.stamp}')
    T_world_ego = check_pose(frame.T_world_ego, f'frame {frame.key!r} T_world_ego')
    T_ego_model = check_pose(frame.T_ego_model, f'frame {frame.key!r} T_ego_model')
    names = frame.camera_names
    if len(set(names)) != len(names):
        raise InvalidFrameError(f'frame {frame.key!r}: camera names must be unique, got '
                                f'{", ".join(names)}')
    if not any(c.valid for c in frame.cameras):
        raise InvalidFrameError(f'frame {frame.key!r} has no camera image at all (missing: '
                                + ', '.join(f'{n}: {r}' for n, r in frame.missing_cameras.items()) + ')')
    for index, camera in enumerate(frame.cameras):
        label = f'frame {frame.key!r} {camera_label(camera, index, names)}'
        if not camera.valid:
            for matrix, what, shape in ((camera.K, 'K', (3, 3)), (camera.T_ego_cam, 'T_ego_cam', (4, 4))):
                if matrix is not None:
                    check_pose(matrix, f'{label} (missing) nominal {what}', shape)
            continue
        K = check_pose(camera.K, f'{label} K', (3, 3))
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InvalidFrameError(f'{label} K has non-positive focal lengths {K[0, 0]}, {K[1, 1]}')
        check_pose(camera.T_ego_cam, f'{label} T_ego_cam')
        check_pose(camera.T_world_ego, f'{label} T_world_ego')
        if not math.isfinite(camera.stamp):
            raise InvalidFrameError(f'{label} has a non-finite stamp {camera.stamp}')
    return T_world_ego, T_ego_model

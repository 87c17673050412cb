"""Camera ``frame_id``s must be optical frames (REP 103): z forward, x right, y down.

SparseBEV projects with ``lidar2img = K @ inv(T_ego_cam) @ T_ego_model``, which takes the
camera frame to be the optical one. A TF frame in the body convention (x forward, y left, z up,
e.g. ``camera_link`` instead of ``camera_optical_frame``) gives a valid transform and a wrong
projection: every box lands in the wrong place, and nothing fails. The base frame is z up
(REP 103), so an optical camera's y axis points down in it, give or take the camera's tilt:
:func:`looks_optical` accepts y within 60 degrees of straight down (a camera pitched up to 60
degrees, rolled up to 60 degrees). :class:`OpticalFrameCheck` warns once per camera and frame
id; the camera is still used (a rig may really be mounted that way).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

MAX_TILT_DEG = 60.0
"""How far the camera's y axis may be from straight down in the base frame."""


def looks_optical(T_base_camera: np.ndarray) -> bool:
    """True when the camera frame's y axis points down in the base frame (z up), within
    :data:`MAX_TILT_DEG`: the optical convention (z forward, x right, y down)."""
    y_axis_in_base = np.asarray(T_base_camera, dtype=np.float64)[:3, 1]
    return bool(y_axis_in_base[2] <= -np.cos(np.radians(MAX_TILT_DEG)))


class OpticalFrameCheck:
    """Warns once per (camera, frame id) whose extrinsic does not look optical.

    Args:
        warn: ``warn(key, text)``; called at most once per camera and frame id.
        base_frame: the frame the extrinsics are given in (named in the warning).
    """

    def __init__(self, warn: Callable[[str, str], None], base_frame: str):
        self.warn = warn
        self.base_frame = base_frame
        self._checked: set[tuple[str, str]] = set()

    def __call__(self, camera: str, frame_id: str, T_base_camera: np.ndarray) -> None:
        if (camera, frame_id) in self._checked:
            return
        self._checked.add((camera, frame_id))
        if not looks_optical(T_base_camera):
            y = np.asarray(T_base_camera, dtype=np.float64)[:3, 1]
            self.warn(f'optical_frame/{camera}',
                      f"{camera}: frame_id '{frame_id}' does not look like an optical frame "
                      f'(its y axis is ({y[0]:.2f}, {y[1]:.2f}, {y[2]:.2f}) in '
                      f'{self.base_frame}, not down): image frame_ids must be optical frames '
                      '(z forward, x right, y down; REP 103, e.g. <camera>_optical_frame), '
                      'otherwise every box is projected wrongly')

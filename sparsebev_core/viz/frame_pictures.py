"""Pictures of one ``Frame`` with its detections (and ground truth), and an animation of them.

Used by ``sparsebev demo`` for one picture per keyframe; the layout is
:func:`~sparsebev_core.viz.draw.detections_figure` (the official figure: six cameras + BEV).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..frame import Frame
from ..geometry import compose_lidar2img


def frame_picture(frame: Frame, pred_boxes: np.ndarray, pred_labels: np.ndarray,
                  pred_scores: np.ndarray, gt_boxes: np.ndarray, class_names: Sequence[str],
                  title: str = '') -> np.ndarray:
    """Six cameras with predictions (class colours) and ground truth, plus a BEV panel, as an
    RGB array.

    Boxes are model-frame (bottom centre); each camera image is the original one, projected
    into with its own ``lidar2img`` (no resize), so boxes land on the pixels the camera saw.
    """
    import matplotlib.pyplot as plt

    from ..image import as_rgb_image
    from .draw import detections_figure

    images = [as_rgb_image(camera.image) for camera in frame.cameras]
    lidar2img = [compose_lidar2img(camera.K, camera.T_ego_cam, camera.T_world_ego,
                                   frame.T_world_ego, frame.T_ego_model)
                 for camera in frame.cameras]
    figure = detections_figure(images, lidar2img, pred_boxes, pred_labels, pred_scores,
                               gt_boxes=gt_boxes, class_names=class_names, title=title,
                               extent=55.0)
    try:
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()
    finally:
        plt.close(figure)


def save_picture(picture: np.ndarray, path: str | Path) -> Path:
    """An RGB array as an optimised PNG."""
    from PIL import Image
    Image.fromarray(picture).save(path, optimize=True)
    return Path(path)


def thumbnail(picture: np.ndarray) -> np.ndarray:
    """The picture at half size (an animation frame)."""
    from PIL import Image
    return np.asarray(Image.fromarray(picture).resize((picture.shape[1] // 2,
                                                       picture.shape[0] // 2)))


def save_animation(frames: Sequence[np.ndarray], path: str | Path,
                   frame_ms: int = 500) -> Path | None:
    """RGB arrays as a looping GIF (None, and no file, when there are none)."""
    from PIL import Image
    if not len(frames):
        return None
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return Path(path)

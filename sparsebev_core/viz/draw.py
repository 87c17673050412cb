"""Reusable drawing: 3-D boxes on camera images, the six-camera grid, a bird's-eye view.

Everything works on numpy images (H, W, 3) uint8 RGB and model-frame boxes
``[x, y, z_bottom, dx, dy, dz, yaw, ...]``; a camera is described by its ``lidar2img`` for the
image being drawn on (``geometry.compose_lidar2img``, with the image transform folded in if
the image was resized). Colours follow the nuscenes-devkit detection palette.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..geometry import CAMERA_NAMES, CLASS_NAMES, box_corners

# the devkit's DETECTION_COLORS (matplotlib C0..C9) as RGB
_TAB10 = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
_DEVKIT_INDEX = {'car': 0, 'truck': 1, 'bus': 2, 'trailer': 3, 'construction_vehicle': 4,
                 'pedestrian': 5, 'motorcycle': 6, 'bicycle': 7, 'traffic_cone': 8, 'barrier': 9}
CLASS_COLORS: dict[str, tuple[int, int, int]] = {n: _TAB10[i] for n, i in _DEVKIT_INDEX.items()}
GT_COLOR = (255, 255, 255)

# the official figure's camera layout: FRONT_LEFT FRONT FRONT_RIGHT / BACK_RIGHT BACK BACK_LEFT
GRID_ORDER: tuple[str, ...] = ('CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT',
                               'CAM_BACK_RIGHT', 'CAM_BACK', 'CAM_BACK_LEFT')
# 12 edges of geometry.box_corners' corner order (bottom 0-3, top 4-7), front face first
_EDGES = ((0, 3), (3, 7), (7, 4), (4, 0), (0, 1), (3, 2), (7, 6), (4, 5), (1, 2), (2, 6),
          (6, 5), (5, 1))
_NEAR = 0.1


def class_color(label: int, class_names: Sequence[str] = CLASS_NAMES) -> tuple[int, int, int]:
    """RGB colour of a class index."""
    return CLASS_COLORS.get(class_names[int(label)], (255, 255, 0))


def project_box_edges(boxes: np.ndarray, lidar2img: np.ndarray) -> list[list[tuple]]:
    """Image segments ``((u0, v0), (u1, v1))`` of each box's 12 edges, clipped to depth
    >= 0.1 m (edges entirely behind the camera are dropped)."""
    corners = box_corners(np.asarray(boxes, np.float64).reshape(-1, np.shape(boxes)[-1]))
    M = np.asarray(lidar2img, np.float64)
    out = []
    for c in corners:                                                        # (8, 3)
        hom = np.concatenate([c, np.ones((8, 1))], axis=1) @ M.T             # (8, 4)
        segs = []
        for a, b in _EDGES:
            pa, pb = hom[a, :3], hom[b, :3]
            if pa[2] < _NEAR and pb[2] < _NEAR:
                continue
            if pa[2] < _NEAR or pb[2] < _NEAR:                               # clip at the near plane
                t = (_NEAR - pa[2]) / (pb[2] - pa[2])
                clipped = pa + t * (pb - pa)
                pa, pb = (clipped, pb) if pa[2] < _NEAR else (pa, clipped)
            segs.append(((pa[0] / pa[2], pa[1] / pa[2]), (pb[0] / pb[2], pb[1] / pb[2])))
        out.append(segs)
    return out


def draw_boxes(image: np.ndarray, boxes: np.ndarray, lidar2img: np.ndarray,
               labels: Sequence[int] | None = None, color: tuple[int, int, int] | None = None,
               thickness: int = 1, class_names: Sequence[str] = CLASS_NAMES) -> np.ndarray:
    """Copy of ``image`` with the boxes' edges drawn (class colours unless ``color``)."""
    import cv2

    out = np.ascontiguousarray(np.array(image, dtype=np.uint8, copy=True))
    H, W = out.shape[:2]
    for i, segs in enumerate(project_box_edges(boxes, lidar2img)):
        col = color if color is not None else (
            class_color(labels[i], class_names) if labels is not None else (255, 255, 0))
        for e, ((u0, v0), (u1, v1)) in enumerate(segs):
            pts = np.clip([u0, v0, u1, v1], -4 * max(H, W), 4 * max(H, W))
            ok, p0, p1 = cv2.clipLine((0, 0, W, H), (int(round(pts[0])), int(round(pts[1]))),
                                      (int(round(pts[2])), int(round(pts[3]))))
            if ok:
                cv2.line(out, p0, p1, tuple(int(v) for v in col),
                         thickness + (1 if e < 4 else 0), cv2.LINE_AA)   # front face thicker
    return out


def camera_grid(images: Sequence[np.ndarray], camera_names: Sequence[str] = CAMERA_NAMES,
                order: Sequence[str] = GRID_ORDER) -> np.ndarray:
    """Six images (in ``camera_names`` order) tiled 2 x 3 in ``order``."""
    by_name = dict(zip(camera_names, images))
    missing = [n for n in order if n not in by_name]
    if missing:
        raise ValueError(f'camera_grid needs images of {", ".join(order)}; missing {missing}')
    tiles = [np.asarray(by_name[n]) for n in order]
    h = min(t.shape[0] for t in tiles)
    tiles = [t[:h] for t in tiles]
    return np.concatenate([np.concatenate(tiles[:3], axis=1), np.concatenate(tiles[3:], axis=1)],
                          axis=0)


def render_bev(ax, boxes: np.ndarray, labels: Sequence[int] | None = None,
               gt_boxes: np.ndarray | None = None, extent: float = 40.0,
               class_names: Sequence[str] = CLASS_NAMES, title: str = '') -> None:
    """Bird's-eye view of model-frame boxes on a matplotlib axis: footprints, a heading tick,
    velocity arrows (1 s of motion); ground truth in white under the predictions. The model
    frame's +y (forward for nuScenes LIDAR_TOP) points up."""
    from matplotlib.patches import Polygon

    ax.set_facecolor((0.12, 0.12, 0.14))
    for group, is_gt in ((gt_boxes, True), (boxes, False)):
        if group is None or len(group) == 0:
            continue
        group = np.asarray(group, np.float64).reshape(len(group), -1)
        corners = box_corners(group)[:, :4, :2]                             # (N, 4, 2)
        for i, c in enumerate(corners):
            col = np.array(GT_COLOR if is_gt else (
                class_color(labels[i], class_names) if labels is not None else (255, 255, 0))) / 255
            ax.add_patch(Polygon(c, closed=True, fill=False, edgecolor=col,
                                 linewidth=1.6 if is_gt else 1.0, linestyle='--' if is_gt else '-'))
            front = c[[0, 3]].mean(axis=0)
            ax.plot([group[i, 0], front[0]], [group[i, 1], front[1]], color=col, linewidth=1.0)
            if group.shape[1] >= 9 and np.hypot(group[i, 7], group[i, 8]) > 0.2:
                ax.arrow(group[i, 0], group[i, 1], group[i, 7], group[i, 8], color=col,
                         width=0.05, head_width=0.6, length_includes_head=True)
    ax.plot([0], [0], marker='^', color='w', markersize=6)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect('equal')
    ax.tick_params(labelsize=6, colors='0.6')
    if title:
        ax.set_title(title, fontsize=8)


def detections_figure(images: Sequence[np.ndarray], lidar2img: Sequence[np.ndarray],
                      boxes: np.ndarray, labels: Sequence[int], scores: Sequence[float] | None = None,
                      gt_boxes: np.ndarray | None = None, gt_labels: Sequence[int] | None = None,
                      class_names: Sequence[str] = CLASS_NAMES, title: str = '',
                      extent: float = 40.0):
    """The official ``viz_bbox_predictions`` layout: six cameras (2 x 3) with projected boxes
    and a BEV panel. ``images`` / ``lidar2img`` in ``CAMERA_NAMES`` order. Returns the
    matplotlib figure (caller saves / closes it)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    drawn = []
    for img, M in zip(images, lidar2img):
        if gt_boxes is not None and len(gt_boxes):
            img = draw_boxes(img, gt_boxes, M, color=GT_COLOR)
        drawn.append(draw_boxes(img, boxes, M, labels, class_names=class_names))
    by_name = dict(zip(CAMERA_NAMES, drawn))
    fig = plt.figure(figsize=(15.5, 5), dpi=100)
    grid = fig.add_gridspec(2, 4, width_ratios=(1, 1, 1, 1.1), wspace=0.02, hspace=0.04)
    for k, name in enumerate(GRID_ORDER):
        ax = fig.add_subplot(grid[k // 3, k % 3])
        ax.imshow(by_name[name])
        ax.set_axis_off()
        ax.set_title(name, fontsize=7, pad=2)
    ax = fig.add_subplot(grid[:, 3])
    render_bev(ax, boxes, labels, gt_boxes=gt_boxes, extent=extent, class_names=class_names,
               title=f'BEV ({len(boxes)} boxes)')
    if title:
        fig.suptitle(title, fontsize=9)
    return fig

"""Rasteriser of the synthetic world into one pinhole camera.

The ground (z = 0 in world) is ray-cast per pixel: the ground point seen by each pixel is
fixed in the ego frame (the cameras are rigidly mounted and the ego stays on flat ground),
so it is computed once per camera and only moved into the world per frame for the texture
lookup (road, lane markings, sidewalk tiles, grass, world-fixed noise). Boxes are drawn
with PIL as shaded polygons, far to near (painter's algorithm by distance to the camera;
the boxes are convex and never intersect), after back-face culling and clipping against the
near plane. An id buffer drawn alongside gives per-box visible pixel counts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ...geometry import CLASS_NAMES, box_corners, invert_transform
from .world import CLASS_COLOR, PARKING_EDGE, ROAD_HALF_WIDTH, SIDEWALK_EDGE, SyntheticWorld

NEAR = 0.1            # m, near clipping plane
FAR = 120.0           # m, boxes further than this from the camera are not drawn
SKY_TOP = np.array([110.0, 150.0, 215.0])
SKY_HORIZON = np.array([200.0, 215.0, 230.0])
SUN = np.array([0.4, -0.3, 0.87]) / np.linalg.norm([0.4, -0.3, 0.87])

# faces of geometry.box_corners' corner order, with their outward normal in the box frame
_FACES = (
    ((0, 3, 7, 4), (1.0, 0.0, 0.0)),     # front (+dx)
    ((1, 2, 6, 5), (-1.0, 0.0, 0.0)),    # back
    ((0, 1, 5, 4), (0.0, 1.0, 0.0)),     # left (+dy)
    ((3, 2, 6, 7), (0.0, -1.0, 0.0)),    # right
    ((4, 5, 6, 7), (0.0, 0.0, 1.0)),     # top
)


@dataclass
class CameraModel:
    """A camera with its precomputed per-pixel ground intersection.

    Attributes:
        K: intrinsics (3, 3) for the rendered image size.
        T_ego_cam: camera -> ego (4, 4).
        size_wh: (W, H).
        ground_ego: (M, 2) ego xy of the ground point of each ground pixel.
        ground_index: (M,) flat pixel indices of the ground pixels.
        fog: (M,) blend weight towards the horizon colour (distance fog).
        sky: (H, W, 3) float sky colour image.
    """
    K: np.ndarray
    T_ego_cam: np.ndarray
    size_wh: tuple[int, int]
    ground_ego: np.ndarray
    ground_index: np.ndarray
    fog: np.ndarray
    sky: np.ndarray


def make_camera(K: np.ndarray, T_ego_cam: np.ndarray, size_wh: tuple[int, int]) -> CameraModel:
    """Precompute the ground intersection of every pixel ray (pixel centres at integers)."""
    W, H = size_wh
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(W * H)], axis=0)           # (3, H*W)
    rays_cam = np.linalg.inv(K) @ pix                                         # (3, H*W)
    rays_ego = T_ego_cam[:3, :3] @ rays_cam                                   # (3, H*W)
    rays_ego /= np.linalg.norm(rays_ego, axis=0, keepdims=True)
    origin = T_ego_cam[:3, 3]
    dz = rays_ego[2]
    hit = dz < -1e-6
    lam = np.where(hit, -origin[2] / np.where(hit, dz, -1.0), np.inf)
    hit &= lam < 400.0
    idx = np.flatnonzero(hit)
    ground = origin[:2, None] + rays_ego[:2, idx] * lam[idx]                  # (2, M)
    fog = 1.0 - np.exp(-lam[idx] / 140.0)
    elev = np.clip(dz, 0.0, 1.0).reshape(H, W, 1) ** 0.5
    sky = SKY_HORIZON * (1 - elev) + SKY_TOP * elev                           # (H, W, 3)
    return CameraModel(np.asarray(K, np.float64), np.asarray(T_ego_cam, np.float64), (W, H),
                       ground.T.copy(), idx, fog, sky)


def ground_colors(world: SyntheticWorld, xy: np.ndarray) -> np.ndarray:
    """RGB float colours (M, 3) of world ground points xy (M, 2)."""
    s, l = world.road.road_coords(xy)
    al = np.abs(l)
    tex = world.texture
    n = tex.shape[0]
    ti = (np.floor(xy[:, 0] * 4.0).astype(np.int64) % n)                     # 0.25 m texels
    tj = (np.floor(xy[:, 1] * 4.0).astype(np.int64) % n)
    noise = tex[ti, tj] - 0.5                                                  # (M,)
    coarse = tex[(ti // 8 * 5) % n, (tj // 8 * 7) % n] - 0.5

    col = np.empty((len(xy), 3), dtype=np.float64)
    road = al < ROAD_HALF_WIDTH
    park = (al >= ROAD_HALF_WIDTH) & (al < PARKING_EDGE)
    walk = (al >= PARKING_EDGE) & (al < SIDEWALK_EDGE)
    grass = al >= SIDEWALK_EDGE
    col[road] = np.array([82.0, 82.0, 86.0])
    col[park] = np.array([105.0, 100.0, 95.0])
    col[walk] = np.array([170.0, 165.0, 155.0])
    col[grass] = np.array([70.0, 125.0, 55.0])
    col += (noise * 50.0 + coarse * 30.0)[:, None]
    # sidewalk tiles
    tile = walk & ((np.abs(((s + 1000.0) % 1.5) - 0.75) > 0.70) | (np.abs((al % 1.5) - 0.75) > 0.70))
    col[tile] *= 0.7
    # lane markings: solid centre line, dashed lane dividers, solid road edges
    centre = al < 0.12
    dashed = (np.abs(al - 3.5) < 0.08) & (((s + 1000.0) % 9.0) < 3.0)
    edge = np.abs(al - ROAD_HALF_WIDTH) < 0.1
    col[centre] = np.array([230.0, 200.0, 40.0])
    col[dashed | edge] = np.array([235.0, 235.0, 235.0])
    return col


def render_camera(camera: CameraModel, world: SyntheticWorld, T_world_ego: np.ndarray,
                  boxes_world: np.ndarray, with_ids: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one camera image.

    Args:
        camera: the camera (intrinsics, mounting, ground cache).
        world: the scene (road, texture, object colours).
        T_world_ego: ego pose at the capture stamp.
        boxes_world: (N, >=7) world boxes ``[x, y, z_bottom, dx, dy, dz, yaw, ...]`` at the
            capture stamp.
        with_ids: also return the id buffer (H, W) int32: 0 = background, i + 1 = box i.
    Returns:
        image (H, W, 3) uint8 RGB, and the id buffer or None.
    """
    W, H = camera.size_wh
    # ground and sky
    img = camera.sky.reshape(-1, 3).copy()                                    # (H*W, 3)
    gxy = camera.ground_ego @ T_world_ego[:2, :2].T + T_world_ego[:2, 3]      # (M, 2)
    gcol = ground_colors(world, gxy)
    img[camera.ground_index] = gcol * (1 - camera.fog[:, None]) + SKY_HORIZON * camera.fog[:, None]
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8).reshape(H, W, 3), 'RGB')
    draw = ImageDraw.Draw(image)
    ids = Image.new('I', (W, H), 0) if with_ids else None
    id_draw = ImageDraw.Draw(ids) if with_ids else None

    T_world_cam = T_world_ego @ camera.T_ego_cam
    for i, face, poly_cam, fill, outline in _visible_faces(camera, world, T_world_cam,
                                                           boxes_world):
        uvw = poly_cam @ camera.K.T                                           # (P, 3)
        uv = np.clip(uvw[:, :2] / uvw[:, 2:3], -1e5, 1e5)
        pts = [(float(x), float(y)) for x, y in uv]
        draw.polygon(pts, fill=fill, outline=outline)
        if id_draw is not None:
            id_draw.polygon(pts, fill=int(i) + 1, outline=int(i) + 1)
    out_ids = np.asarray(ids, dtype=np.int32) if with_ids else None
    return np.asarray(image, dtype=np.uint8), out_ids


def _visible_faces(camera: CameraModel, world: SyntheticWorld, T_world_cam: np.ndarray,
                   boxes_world: np.ndarray):
    """Yield (box index, face index, clipped camera-frame polygon, fill, outline), far to near.

    Boxes outside the view frustum and faces turned away from the camera are culled; the
    faces of one convex box never overlap each other, so their order does not matter.
    """
    if len(boxes_world) == 0:
        return
    W, H = camera.size_wh
    T_cam_world = invert_transform(T_world_cam)
    cam_pos = T_world_cam[:3, 3]
    centres = boxes_world[:, :3] + np.array([0.0, 0.0, 0.5]) * boxes_world[:, 5:6]
    dist = np.linalg.norm(centres - cam_pos, axis=1)                          # (N,)
    corners = box_corners(boxes_world[:, :7])                                 # (N, 8, 3)
    corners_cam = corners @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]        # (N, 8, 3)
    z = corners_cam[..., 2]                                                   # (N, 8)
    uvw = corners_cam @ camera.K.T                                            # (N, 8, 3)
    uv = uvw[..., :2] / np.maximum(uvw[..., 2:3], NEAR)                       # (N, 8, 2)
    front = z >= NEAR
    all_front = front.all(axis=1)
    outside = all_front & ((uv[..., 0] < 0).all(1) | (uv[..., 0] >= W).all(1)
                           | (uv[..., 1] < 0).all(1) | (uv[..., 1] >= H).all(1))
    candidate = (dist <= FAR) & front.any(axis=1) & ~outside                  # (N,)

    yaw = boxes_world[:, 6]
    c, s_ = np.cos(yaw), np.sin(yaw)
    normals_box = np.array([n for _, n in _FACES])                            # (5, 3)
    nx = c[:, None] * normals_box[:, 0] - s_[:, None] * normals_box[:, 1]     # (N, 5)
    ny = s_[:, None] * normals_box[:, 0] + c[:, None] * normals_box[:, 1]
    normals = np.stack([nx, ny, np.broadcast_to(normals_box[:, 2], nx.shape)], -1)  # (N, 5, 3)
    face_idx = np.array([f for f, _ in _FACES])                               # (5, 4)
    face_centres = corners[:, face_idx].mean(axis=2)                          # (N, 5, 3)
    facing = np.einsum('nfk,nfk->nf', normals, cam_pos - face_centres) > 0    # (N, 5)
    shade = 0.45 + 0.55 * np.clip(normals @ SUN, 0.0, None)                   # (N, 5)
    base = (np.array([CLASS_COLOR[CLASS_NAMES[k]] for k in world.objects.labels], np.float64)
            * world.objects.shade[:, None]) if len(world.objects) == len(boxes_world) else \
        np.full((len(boxes_world), 3), 128.0)
    for i in np.argsort(-dist):
        if not candidate[i]:
            continue
        for f in np.flatnonzero(facing[i]):
            poly = corners_cam[i, face_idx[f]]
            if not all_front[i]:
                poly = _clip_near(poly)
                if len(poly) < 3:
                    continue
            col = base[i] * shade[i, f]
            if f == 0:                                                        # front: lighter
                col = 0.55 * col + 0.45 * 255.0
            fill = tuple(int(v) for v in np.clip(col, 0, 255))
            outline = tuple(int(v) for v in np.clip(col * 0.5, 0, 255))
            yield int(i), int(f), poly, fill, outline


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon (P, 3) against z >= NEAR."""
    out = []
    n = len(poly)
    for k in range(n):
        a, b = poly[k], poly[(k + 1) % n]
        a_in, b_in = a[2] >= NEAR, b[2] >= NEAR
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.asarray(out).reshape(-1, 3)


def box_pixel_area(camera: CameraModel, corners_cam: np.ndarray) -> int:
    """Pixels a box (8 camera-frame corners) would cover in the image if nothing occluded it."""
    W, H = camera.size_wh
    mask = Image.new('L', (W, H), 0)
    d = ImageDraw.Draw(mask)
    for face, _ in _FACES:
        poly = _clip_near(corners_cam[list(face)])
        if len(poly) < 3:
            continue
        uvw = poly @ camera.K.T
        uv = np.clip(uvw[:, :2] / uvw[:, 2:3], -1e5, 1e5)
        d.polygon([(float(x), float(y)) for x, y in uv], fill=1)
    return int(np.count_nonzero(np.asarray(mask)))

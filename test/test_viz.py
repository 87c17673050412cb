"""Drawing functions and the ``sparsebev viz`` command."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sparsebev_cli import cli
from sparsebev_core.data.dataset import build_dataset
from sparsebev_core.data.synthetic.scenes import make_synthetic
from sparsebev_core.geometry import CAMERA_NAMES, compose_lidar2img, make_transform
from sparsebev_core.model.detector import build_model
from sparsebev_core.recipe.presets import get_preset
from sparsebev_core.viz import draw
from sparsebev_core.viz.sampling_points import SamplingPointRecorder

# a camera at the origin looking along +x (camera z = world x, camera x = -world y, y = -z)
K = np.array([[100.0, 0, 160], [0, 100.0, 120], [0, 0, 1]])
T_EGO_CAM = make_transform(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float), [0, 0, 0])
LIDAR2IMG = compose_lidar2img(K, T_EGO_CAM, np.eye(4), np.eye(4), np.eye(4))


def test_boxes_are_drawn_where_they_project_and_not_when_behind():
    image = np.zeros((240, 320, 3), np.uint8)
    box = np.array([[10.0, 0.0, -1.0, 2.0, 2.0, 2.0, 0.0]])         # 10 m ahead, centred
    out = draw.draw_boxes(image, box, LIDAR2IMG, labels=[0])
    ys, xs = np.nonzero(out.any(axis=2))
    # near face spans u = 160 +- 100 * 1 / 9, far face +- 100 / 11
    assert 145 <= xs.min() <= 150 and 170 <= xs.max() <= 175
    assert tuple(out[ys[0], xs[0]]) != (0, 0, 0)
    behind = draw.draw_boxes(image, box * np.array([[-1, 1, 1, 1, 1, 1, 1]]), LIDAR2IMG, labels=[0])
    assert not behind.any()


def test_edges_crossing_the_camera_plane_are_clipped_not_wrapped():
    segs = draw.project_box_edges(np.array([[0.5, 0.0, -1.0, 4.0, 2.0, 2.0, 0.0]]), LIDAR2IMG)[0]
    assert 0 < len(segs) < 12
    depths_ok = all(np.isfinite(np.array(s)).all() for s in segs)
    assert depths_ok


def test_camera_grid_uses_the_official_layout():
    images = [np.full((2, 3, 3), i, np.uint8) for i in range(6)]      # CAMERA_NAMES order
    grid = draw.camera_grid(images)
    assert grid.shape == (4, 9, 3)
    top = [CAMERA_NAMES[grid[0, 3 * k, 0]] for k in range(3)]
    bottom = [CAMERA_NAMES[grid[2, 3 * k, 0]] for k in range(3)]
    assert top == ['CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT']
    assert bottom == ['CAM_BACK_RIGHT', 'CAM_BACK', 'CAM_BACK_LEFT']


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp('syn'), num_scenes=1, seed=4,
                          keyframes_per_scene=3, progress=False)


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    cfg = get_preset('tiny')
    return build_model(cfg).eval(), cfg


def test_sampling_point_recorder_is_passive_and_records_every_stage(tiny, root):
    model, cfg = tiny
    ds = build_dataset(cfg, root, version='v1.0-mini', split='val')
    s = ds[2]
    args = (s['images'][None], s['lidar2img'][None], s['timestamps'][None])
    with torch.inference_mode():
        plain = model(*args)
        with SamplingPointRecorder(model) as rec:
            watched = model(*args)
    assert torch.equal(plain['all_cls_scores'], watched['all_cls_scores'])
    assert len(rec.records) == cfg.head.num_layers
    r = rec.records[-1]
    K = cfg.head.num_groups * cfg.head.num_points
    assert r.uv.shape == (cfg.num_frames, cfg.head.num_queries, K, 2)
    H, W = cfg.input_size
    inside = r.uv[r.valid]
    assert r.valid.mean() > 0.5
    assert (inside[:, 0] > 0).all() and (inside[:, 0] < W).all() and (inside[:, 1] < H).all()
    assert (r.depth[r.valid] > 0).all()


def test_viz_cli_writes_box_and_sampling_point_pictures(tiny, root, tmp_path, capsys):
    model, _ = tiny
    ckpt = tmp_path / 'tiny.pth'
    torch.save(model.state_dict(), ckpt)
    rc = cli.main(['viz', '--checkpoint', str(ckpt), '--data', str(root), '--preset', 'tiny',
                   '--version', 'v1.0-mini', '--out', str(tmp_path / 'out'), '--samples', '1',
                   '--gt', '--sampling-points'])
    assert rc == 0 and 'bbox_0000.png' in capsys.readouterr().out
    bbox = np.asarray(Image.open(tmp_path / 'out' / 'bbox_0000.png').convert('RGB'))
    assert bbox.shape[1] > 1000
    assert (bbox == 255).all(axis=2).sum() > 1000                      # white GT boxes drawn
    sp = np.asarray(Image.open(tmp_path / 'out' / 'sp_0000.png').convert('RGB'))
    assert sp.std() > 10


def test_viz_of_a_recurrent_model_streams_the_keyframes(root, tmp_path, capsys):
    """tiny_memory: the keyframes go through the streaming detector in time order (the state
    carried), the sampling points are the current frame's (T = 1)."""
    torch.manual_seed(0)
    model = build_model(get_preset('tiny_memory')).eval()
    ckpt = tmp_path / 'tiny_memory.pth'
    torch.save(model.state_dict(), ckpt)
    rc = cli.main(['viz', '--checkpoint', str(ckpt), '--data', str(root), '--preset', 'tiny_memory',
                   '--version', 'v1.0-mini', '--out', str(tmp_path / 'out'), '--samples', '3',
                   '--sampling-points', '--score', '0.0'])
    out = capsys.readouterr().out
    assert rc == 0 and all(f'{kind}_{i:04d}.png' in out for kind in ('bbox', 'sp') for i in range(3))
    sp = np.asarray(Image.open(tmp_path / 'out' / 'sp_0002.png').convert('RGB'))
    assert sp.std() > 10

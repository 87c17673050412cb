"""The view count comes from the input (N = 1, 5, 6, 7 with the same weights) and a per-view
validity mask keeps every sampling point off an invalid camera (model/sampling.py, head.py)."""
import math

import pytest
import torch

from sparsebev_core import ops
from sparsebev_core.model.head import SparseBEVHead
from sparsebev_core.model.sampling import mask_invalid_views, select_first_valid_camera
from sparsebev_core.recipe.config import HeadConfig

IMAGE_HW = (64, 128)


def small_cfg() -> HeadConfig:
    return HeadConfig(embed_dims=32, num_queries=16, num_frames=2, num_points=2, num_levels=2,
                      num_groups=4, num_layers=2, num_heads=4, ffn_dims=64, mixing_out_points=8,
                      dropout=0.0)


def ring_camera(azimuth: float) -> torch.Tensor:
    """lidar2img of a pinhole camera at the origin looking along ``azimuth`` (127 deg wide)."""
    h, w = IMAGE_HW
    forward = torch.tensor([math.cos(azimuth), math.sin(azimuth), 0.0])
    right = torch.tensor([math.sin(azimuth), -math.cos(azimuth), 0.0])
    down = torch.tensor([0.0, 0.0, -1.0])
    rotation = torch.eye(4)
    rotation[:3, :3] = torch.stack([right, down, forward])
    intrinsics = torch.tensor([[32.0, 0.0, w / 2, 0.0], [0.0, 32.0, h / 2, 0.0],
                               [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    return intrinsics @ rotation


def rig_inputs(cfg: HeadConfig, num_views: int, seed: int = 0):
    """Features, lidar2img and stamps of ``num_views`` overlapping cameras around the car."""
    g = torch.Generator().manual_seed(seed)
    tn = cfg.num_frames * num_views
    feats = [torch.randn(1, tn, cfg.embed_dims, h, w, generator=g)
             for h, w in [(16, 32), (8, 16)][:cfg.num_levels]]
    cams = torch.stack([ring_camera(2 * math.pi * n / num_views) for n in range(num_views)])
    lidar2img = cams.repeat(cfg.num_frames, 1, 1)[None]                       # [1, T*N, 4, 4]
    ts = 1.5e9 - 0.5 * torch.arange(cfg.num_frames, dtype=torch.float64).repeat_interleave(num_views)
    return feats, lidar2img, ts[None]


def drop_view(feats, lidar2img, ts, view: int, num_views: int):
    """The same inputs with camera ``view`` removed from every frame."""
    keep = [i for i in range(lidar2img.shape[1]) if i % num_views != view]
    return [f[:, keep] for f in feats], lidar2img[:, keep], ts[:, keep]


@pytest.fixture(scope='module')
def head():
    torch.manual_seed(0)
    return SparseBEVHead(small_cfg()).eval()


def run(head, feats, lidar2img, ts, valid_views=None):
    with torch.no_grad():
        out = head(feats, lidar2img, ts, IMAGE_HW, valid_views=valid_views)
    return out['all_cls_scores'], out['all_bbox_preds']


@pytest.mark.parametrize('num_views', [1, 5, 6, 7])
def test_any_view_count_runs_with_the_same_weights(head, num_views):
    cls, boxes = run(head, *rig_inputs(head.cfg, num_views))
    assert cls.shape == (2, 1, 16, 10) and boxes.shape == (2, 1, 16, 10)
    assert torch.isfinite(cls).all() and torch.isfinite(boxes).all()


def test_mask_none_equals_all_valid_bit_for_bit(head):
    feats, lidar2img, ts = rig_inputs(head.cfg, 6)
    everything = torch.ones(1, 12, dtype=torch.bool)
    for got, ref in zip(run(head, feats, lidar2img, ts, everything), run(head, feats, lidar2img, ts)):
        assert torch.equal(got, ref)


@pytest.mark.parametrize('backend', ['torch', 'gather'])
def test_an_invalid_camera_is_as_if_it_were_removed(head, backend):
    feats, lidar2img, ts = rig_inputs(head.cfg, 6)
    valid = torch.ones(1, 12, dtype=torch.bool)
    valid[:, 2::6] = False                                      # camera 2 missing in both frames
    try:
        ops.set_backend(backend)
        masked = run(head, feats, lidar2img, ts, valid)
        removed = run(head, *drop_view(feats, lidar2img, ts, 2, 6))
        full = run(head, feats, lidar2img, ts)
    finally:
        ops.set_backend('auto')
    for got, ref in zip(masked, removed):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    assert (masked[0] - full[0]).abs().max() > 1e-3             # camera 2 mattered


def test_one_camera_equals_six_cameras_with_only_the_first_valid(head):
    feats, lidar2img, ts = rig_inputs(head.cfg, 6)
    valid = torch.zeros(1, 12, dtype=torch.bool)
    valid[:, 0::6] = True
    masked = run(head, feats, lidar2img, ts, valid)
    alone = run(head, *drop_view(*drop_view(*drop_view(*drop_view(*drop_view(
        feats, lidar2img, ts, 5, 6), 4, 5), 3, 4), 2, 3), 1, 2))
    for got, ref in zip(masked, alone):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize('poison', [float('nan'), 1e30])
def test_an_invalid_view_is_never_read(head, poison):
    feats, lidar2img, ts = rig_inputs(head.cfg, 6)
    valid = torch.ones(1, 12, dtype=torch.bool)
    valid[0, 6 + 0] = False                                     # camera 0 of the past frame
    valid[0, 3] = False                                         # camera 3 of the current frame
    poisoned = [f.clone() for f in feats]
    for f in poisoned:
        f[:, 6] = poison
        f[:, 3] = poison
    clean = run(head, feats, lidar2img, ts, valid)
    dirty = run(head, poisoned, lidar2img, ts, valid)
    for got, ref in zip(dirty, clean):
        assert torch.equal(got, ref)


def test_a_point_seen_by_an_invalid_and_a_valid_camera_reads_the_valid_one():
    uv = torch.rand(1, 1, 3, 1, 2, 2)                           # [B, T, N, Q, K, 2]
    valid = torch.tensor([True, True, False]).view(1, 1, 3, 1, 1).expand(1, 1, 3, 1, 2)
    views = torch.tensor([[False, True, True]])
    _, camera = select_first_valid_camera(uv, mask_invalid_views(valid, views))
    assert camera.flatten().tolist() == [1, 1]
    _, camera = select_first_valid_camera(uv, mask_invalid_views(valid, None))
    assert camera.flatten().tolist() == [0, 0]


def test_bad_masks_are_reported(head):
    feats, lidar2img, ts = rig_inputs(head.cfg, 5)
    with pytest.raises(ValueError, match='valid_views'):
        run(head, feats, lidar2img, ts, torch.ones(1, 12, dtype=torch.bool))
    with pytest.raises(ValueError, match='valid_views'):
        run(head, feats, lidar2img, ts, torch.ones(1, 10))


def test_the_detector_takes_five_cameras_and_a_mask_end_to_end():
    from sparsebev_core.model.detector import build_model
    from sparsebev_core.recipe.presets import get_preset
    cfg = get_preset('tiny')
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    t, n = cfg.num_frames, 5
    images = torch.randint(0, 255, (1, t * n, 3, 96, 256), dtype=torch.uint8)
    cams = torch.stack([ring_camera(2 * math.pi * i / n) for i in range(n)])
    lidar2img = cams.repeat(t, 1, 1)[None]
    ts = 1.5e9 - 0.5 * torch.arange(t, dtype=torch.float64).repeat_interleave(n)[None]
    valid = torch.ones(1, t * n, dtype=torch.bool)
    valid[0, 1] = False
    with torch.no_grad():
        features = model.extract_features(images)
        poisoned = [f.clone() for f in features]
        for f in poisoned:
            f[:, 1] = float('nan')
        out = model.forward_head(poisoned, lidar2img, ts, valid_views=valid)
        ref = model.forward_head(features, lidar2img, ts, valid_views=valid)
    assert torch.equal(out['all_cls_scores'], ref['all_cls_scores'])
    assert model.decode(out)[0]['boxes'].shape[1] == 9
    with pytest.raises(ValueError, match='T\\*N'):
        model.forward_head([f[:, :-1] for f in features], lidar2img[:, :-1], ts[:, :-1])

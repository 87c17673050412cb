"""The SparseBEV head as a specification: box layouts, query init, the sampling quirks,
velocity handling, query denoising and the NMS-free coder (docs/official_model.md 1.1, 2.4-2.7, 6)."""
import json
import math
from pathlib import Path

import pytest
import torch

from sparsebev_core.model import boxes as B
from sparsebev_core.model.decoder import compute_time_diff
from sparsebev_core.model.denoising import make_denoising_queries
from sparsebev_core.model.head import SparseBEVHead
from sparsebev_core.model.sampling import (group_features_for_sampling, make_sample_points,
                                           pack_scale_weights_bgt_quirk, project_points,
                                           select_first_valid_camera, warp_points_by_velocity)
from sparsebev_core.recipe.config import HeadConfig

MANIFEST = Path(__file__).parent / 'parity' / 'official_r50_nuimg_704x256_manifest.json'


def small_cfg(**kw) -> HeadConfig:
    args = dict(embed_dims=32, num_queries=16, num_frames=2, num_points=2, num_levels=2,
                num_groups=4, num_layers=2, num_heads=4, ffn_dims=64, mixing_out_points=8,
                dropout=0.0)
    args.update(kw)
    return HeadConfig(**args)


def random_inputs(cfg: HeadConfig, batch: int = 1, seed: int = 0):
    """Random FPN features, a forward-looking pinhole rig, and timestamps 0.5 s apart."""
    g = torch.Generator().manual_seed(seed)
    tn = cfg.num_frames * 6
    feats = [torch.randn(batch, tn, cfg.embed_dims, h, w, generator=g)
             for h, w in [(16, 32), (8, 16), (4, 8), (2, 4)][:cfg.num_levels]]
    cam = torch.tensor([[32.0, 64.0, 0.0, 0.0], [0.0, 0.0, -32.0, 16.0],
                        [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])      # x right, y forward, z up
    lidar2img = cam.expand(batch, tn, 4, 4).clone()
    ts = 1.5e9 - 0.5 * torch.arange(cfg.num_frames, dtype=torch.float64).repeat_interleave(6)
    return feats, lidar2img, ts.expand(batch, tn).clone(), (64, 128)


# ---------------------------------------------------------------- box layouts (docs/official_model.md 1.1)
def gravity_boxes(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * 80 - 40
    size = torch.rand(n, 3, generator=g) * 4 + 0.3
    yaw = torch.rand(n, 1, generator=g) * 2 * math.pi - math.pi
    vel = torch.randn(n, 2, generator=g)
    return torch.cat([xyz, size, yaw, vel], dim=1).double()


def test_head_layout_round_trip_and_field_order():
    boxes = gravity_boxes()
    head = B.normalize_bbox(boxes)
    assert torch.allclose(head[:, 2], boxes[:, 3].log()) and torch.allclose(head[:, 4], boxes[:, 2])
    assert torch.allclose(head[:, 6], boxes[:, 6].sin()) and torch.allclose(head[:, 7], boxes[:, 6].cos())
    assert torch.allclose(B.denormalize_bbox(head), boxes)
    assert torch.allclose(B.denormalize_bbox(B.normalize_bbox(boxes[:, :7])), boxes[:, :7])


def test_query_layout_round_trip_and_normalised_centres():
    pc_range = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
    boxes = gravity_boxes()
    query = B.encode_bbox(boxes, pc_range)
    assert torch.allclose(query[:, 2], (boxes[:, 2] + 5.0) / 8.0)
    assert torch.allclose(B.decode_bbox(query, pc_range), boxes)
    # the head output of a query box is the same box in the head layout
    assert torch.allclose(B.query_to_head_layout(query, pc_range), B.normalize_bbox(boxes))


def test_inverse_sigmoid_clamps():
    x = torch.tensor([-0.5, 0.0, 0.25, 1.0, 2.0])
    y = B.inverse_sigmoid(x)
    assert torch.allclose(y[2], torch.tensor(math.log(1 / 3)))
    assert torch.allclose(y[[0, 1]], torch.tensor(math.log(1e-5)))
    assert torch.allclose(y[[3, 4]], torch.tensor(-math.log(1e-5)))


# ---------------------------------------------------------------- queries (docs/official_model.md 2.4)
def test_query_grid_init_is_ij_ordered_pillars_at_the_bottom():
    head = SparseBEVHead(small_cfg(num_queries=9))
    w = head.init_query_bbox.weight.detach()
    cells = torch.tensor([1 / 6, 1 / 2, 5 / 6])
    assert torch.allclose(w[:, 0], cells.repeat_interleave(3))       # x: slow index
    assert torch.allclose(w[:, 1], cells.repeat(3))                  # y: fast index
    assert (w[:, 2] == 0).all() and (w[:, 5] == 1.5).all() and (w[:, 8:] == 0).all()
    assert w[:, [3, 4, 6, 7]].std() > 0.3                            # random N(0, 1) kept
    with pytest.raises(ValueError, match='perfect square'):
        SparseBEVHead(small_cfg(num_queries=10))


def test_matching_queries_share_the_no_label_feature():
    head = SparseBEVHead(small_cfg())
    bbox, feat = head.matching_queries(2)
    assert bbox.shape == (2, 16, 10) and feat.shape == (2, 16, 32)
    assert torch.equal(feat[1, 5, :31], head.label_enc.weight[10]) and (feat[..., 31] == 0).all()


def test_official_init_of_tau_offsets_mixing_and_class_prior():
    layer = SparseBEVHead(small_cfg()).transformer.decoder.decoder_layer
    assert (layer.self_attn.gen_tau.weight == 0).all()
    assert ((layer.self_attn.gen_tau.bias >= 0) & (layer.self_attn.gen_tau.bias <= 2)).all()
    assert (layer.sampling.sampling_offset.weight == 0).all()
    assert layer.sampling.sampling_offset.bias.abs().max() <= 0.5
    assert (layer.mixing.parameter_generator.weight == 0).all()
    assert torch.allclose(layer.cls_branch[-1].bias, torch.tensor(-math.log(99.0)))


def test_state_dict_matches_official_head_names_and_shapes():
    manifest = json.loads(MANIFEST.read_text())
    official = {n[len('pts_bbox_head.'):]: tuple(s) for n, s, _ in manifest
                if n.startswith('pts_bbox_head.')}
    ours = {k: tuple(v.shape) for k, v in SparseBEVHead(HeadConfig()).state_dict().items()}
    assert ours == official
    assert not SparseBEVHead(HeadConfig(num_queries=4)).code_weights.requires_grad


# ---------------------------------------------------------------- sampling (docs/official_model.md 2.5.3)
def test_offsets_rotate_counter_clockwise_and_clockwise_for_legacy_checkpoints():
    pc_range = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
    box = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, math.pi / 2, 0.0, 0.0]])
    query = B.encode_bbox(box, pc_range)[None]                         # [1, 1, 10]
    offsets = torch.tensor([0.5, 0.0, 0.5]).view(1, 1, 1, 3)          # half a length ahead, top
    ccw = make_sample_points(query, offsets, pc_range)[0, 0, 0]
    cw = make_sample_points(query, offsets, pc_range, legacy_yaw_convention=True)[0, 0, 0]
    assert torch.allclose(ccw, torch.tensor([0.0, 2.0, 0.5]), atol=1e-5)
    assert torch.allclose(cw, torch.tensor([0.0, -2.0, 0.5]), atol=1e-5)


def test_velocity_warp_moves_past_frames_back_along_the_velocity():
    points = torch.zeros(1, 1, 3, 1, 1, 3) + torch.tensor([10.0, 20.0, 1.0])
    velocity = torch.tensor([[[2.0, -1.0]]])
    time_diff = torch.tensor([[0.0, 0.5, 1.0]])
    warped = warp_points_by_velocity(points, velocity, time_diff)[0, 0, :, 0, 0]
    assert torch.allclose(warped, torch.tensor([[10.0, 20.0, 1.0], [9.0, 20.5, 1.0], [8.0, 21.0, 1.0]]))


def test_projection_normalises_by_input_size_and_flags_points_behind():
    lidar2img = torch.tensor([[100.0, 0, 50, 0], [0, 100.0, 20, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    lidar2img = lidar2img.expand(1, 6, 4, 4)
    points = torch.tensor([[0.0, 0.0, 10.0], [1.0, 0.0, -10.0]]).view(1, 2, 1, 1, 3)
    uv, valid = project_points(points, lidar2img, (40, 100))
    assert torch.allclose(uv[0, 0, 0, 0, 0], torch.tensor([0.5, 0.5]))
    assert valid[0, 0, :, 0, 0].all() and not valid[0, 0, :, 1, 0].any()
    # behind the camera: depth clamped to 1e-5, coordinates explode (not masked)
    assert uv[0, 0, 0, 1, 0, 0].abs() > 1e5


def test_first_valid_camera_wins_and_camera_zero_when_none_is_valid():
    uv = torch.arange(6 * 3 * 2, dtype=torch.float32).view(1, 1, 6, 1, 3, 2)   # [B, T, N, Q, K, 2]
    valid = torch.zeros(1, 1, 6, 1, 3, dtype=torch.bool)
    valid[0, 0, [2, 4], 0, 0] = True          # point 0: valid in cameras 2 and 4
    valid[0, 0, 5, 0, 1] = True               # point 1: only camera 5; point 2: nowhere
    chosen, camera = select_first_valid_camera(uv, valid)
    assert camera[0, 0, 0].tolist() == [2, 5, 0]
    expected = torch.stack([uv[0, 0, 2, 0, 0], uv[0, 0, 5, 0, 1], uv[0, 0, 0, 0, 2]])
    assert torch.equal(chosen[0, 0, 0], expected)


@pytest.mark.parametrize('frames', [1, 8, 15])
def test_scale_weights_of_frame_t_group_g_come_from_group_floor_tG_plus_g_over_T(frames):
    G, P, L, Q = 4, 3, 4, 5
    w = torch.randn(2, Q, G, P, L)
    packed = pack_scale_weights_bgt_quirk(w, frames)                   # rows (b*T + t)*G + g
    for b in range(2):
        for t in range(frames):
            for g in range(G):
                assert torch.equal(packed[(b * frames + t) * G + g], w[b, :, (t * G + g) // frames])


def test_feature_groups_are_contiguous_channel_blocks_in_row_order_b_t_g():
    T, N, G, C = 2, 6, 4, 3
    feat = torch.randn(2, T * N, G * C, 5, 7)
    grouped = group_features_for_sampling([feat], G)[0]                # [BTG, C, N, H, W]
    assert grouped.shape == (2 * T * G, C, N, 5, 7)
    b, t, g, c, n = 1, 1, 2, 1, 4
    assert torch.equal(grouped[(b * T + t) * G + g, c, n], feat[b, t * N + n, g * C + c])
    # the CUDA kernel's memory layout: same values, channels innermost
    last = group_features_for_sampling([feat], G, channels_last=True)[0]
    assert torch.equal(last, grouped) and last.is_contiguous(memory_format=torch.channels_last_3d)
    # CPU: the 5-D grid_sample reads channels-last fastest (bitwise the same result)
    assert group_features_for_sampling([feat], G)[0].is_contiguous(memory_format=torch.channels_last_3d)
    assert group_features_for_sampling([feat], G, channels_last=False)[0].is_contiguous()


# ---------------------------------------------------------------- time and velocity (2.5.0, 2.5.1)
def test_time_diff_is_the_camera_mean_in_float64():
    base = 1533151603.547590
    offsets = torch.tensor([0.0, 0.0085, -0.0085, 0.025, -0.017, 0.017], dtype=torch.float64)
    ts = torch.cat([base + offsets, base - 0.5 + offsets + 0.001, base - 1.0 + offsets])[None]
    td = compute_time_diff(ts)
    assert td.dtype == torch.float32
    with pytest.raises(TypeError, match='float64'):
        compute_time_diff(ts.float())
    assert torch.allclose(td, torch.tensor([[0.0, 0.499, 1.0]]), atol=1e-6)


def test_velocity_is_divided_by_the_gap_to_the_first_past_frame():
    cfg = small_cfg()
    head = SparseBEVHead(cfg).eval()
    feats, lidar2img, ts, hw = random_inputs(cfg)

    def run(gap):
        stamps = ts.clone()
        stamps[:, 6:] = ts[:, :6] - gap
        with torch.no_grad():
            return head(feats, lidar2img, stamps, hw)['all_bbox_preds'][0]   # layer 0: zero input velocity

    half, one, zero = run(0.5), run(1.0), run(0.0)
    assert torch.allclose(half[..., :8], one[..., :8]) and one[..., 8:].abs().max() > 0
    assert torch.allclose(half[..., 8:], 2 * one[..., 8:], rtol=1e-5, atol=1e-7)
    assert torch.allclose(zero, one)                                      # gap 0 (duplicated frame) -> / 1


# ---------------------------------------------------------------- denoising (2.4.1)
def test_denoising_groups_are_isolated_and_padded():
    emb = torch.nn.Embedding(11, 31)
    gts = [torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 1.6, 0.3, 1.0, -1.0],
                         [-8.0, 5.0, -1.0, 0.5, 0.5, 1.8, 0.0, 0.0, 0.0]]),
           torch.tensor([[20.0, -3.0, 0.5, 10.0, 3.0, 3.0, 1.0, 5.0, 0.0]])]
    labels = [torch.tensor([0, 8]), torch.tensor([3])]
    dn = make_denoising_queries(gts, labels, emb, num_queries=5, pc_range=(-51.2, -51.2, -5, 51.2, 51.2, 3),
                                num_classes=10, num_groups=3)
    assert (dn.single_pad, dn.pad_size) == (2, 6)
    assert dn.query_bbox.shape == (2, 6, 10) and dn.query_feat.shape == (2, 6, 32)
    assert dn.attn_blocked.shape == (11, 11)
    blocked = dn.attn_blocked
    assert blocked[6:, :6].all() and not blocked[6:, 6:].any()       # matching queries never see DN
    for g in range(3):
        rows = slice(2 * g, 2 * g + 2)
        own = torch.zeros(11, dtype=torch.bool)
        own[2 * g:2 * g + 2] = True
        own[6:] = True                                                # DN sees own group + matching
        assert torch.equal(~blocked[rows], own.expand(2, 11))
    # element 1 has one GT: its second slot of every group is all-zero padding
    assert (dn.query_bbox[1, [1, 3, 5]] == 0).all() and (dn.query_feat[1, [1, 3, 5]] == 0).all()
    assert (dn.query_feat[0, :, -1] == 1).all()
    # targets are the un-noised GTs, group-major; noise moves centres by at most 25 % of the size
    assert torch.equal(dn.boxes[:3], torch.cat(gts)) and torch.equal(dn.boxes[3:6], torch.cat(gts))
    assert dn.batch_index.tolist() == [0, 0, 1] * 3 and dn.slot_index.tolist() == [0, 1, 0, 2, 3, 2, 4, 5, 4]
    centre = B.decode_bbox(dn.query_bbox[dn.batch_index, dn.slot_index], (-51.2, -51.2, -5, 51.2, 51.2, 3))
    shift = (centre[:, :3] - dn.boxes[:, :3]).abs()
    assert (shift <= dn.boxes[:, 3:6] * 0.25 + 1e-4).all() and shift.max() > 0
    assert torch.allclose(dn.query_bbox[dn.batch_index, dn.slot_index][:, 8:], dn.boxes[:, 7:9])
    assert make_denoising_queries([torch.zeros(0, 9)], [torch.zeros(0, dtype=torch.long)], emb, 5,
                                  (-51.2, -51.2, -5, 51.2, 51.2, 3), 10) is None


def test_denoising_queries_do_not_change_matching_outputs():
    cfg = small_cfg()
    head = SparseBEVHead(cfg).train()
    feats, lidar2img, ts, hw = random_inputs(cfg, batch=2)
    gts = [torch.tensor([[1.0, 12.0, -1.0, 4.0, 2.0, 1.6, 0.3, 1.0, -1.0]]), torch.zeros(0, 9)]
    labels = [torch.tensor([2]), torch.zeros(0, dtype=torch.long)]
    with_dn = head(feats, lidar2img, ts, hw, gts, labels)
    without = head(feats, lidar2img, ts, hw)
    assert with_dn['dn_cls_scores'].shape == (2, 2, 10, 10) and with_dn['dn_mask_dict']['pad_size'] == 10
    assert torch.allclose(with_dn['all_cls_scores'], without['all_cls_scores'], atol=1e-5)
    assert torch.allclose(with_dn['all_bbox_preds'], without['all_bbox_preds'], atol=1e-5)


def test_training_gradients_reach_queries_but_never_their_velocity():
    cfg = small_cfg()
    head = SparseBEVHead(cfg).train()
    feats, lidar2img, ts, hw = random_inputs(cfg)
    for f in feats:
        f.requires_grad_(True)
    out = head(feats, lidar2img, ts, hw)
    (out['all_cls_scores'].sum() + out['all_bbox_preds'].sum()).backward()
    grad = head.init_query_bbox.weight.grad
    assert grad[:, :8].abs().sum() > 0 and (grad[:, 8:] == 0).all()
    assert feats[0].grad.abs().sum() > 0
    assert head.transformer.decoder.decoder_layer.sampling.sampling_offset.weight.grad.abs().sum() > 0


def test_bad_input_shapes_are_reported():
    cfg = small_cfg()
    head = SparseBEVHead(cfg).eval()
    feats, lidar2img, ts, hw = random_inputs(cfg)
    with pytest.raises(ValueError, match='lidar2img'):
        head(feats, lidar2img[:, :6], ts, hw)
    with pytest.raises(ValueError, match='feature level 0'):
        head([feats[0][:, :6]] + feats[1:], lidar2img, ts, hw)


# ---------------------------------------------------------------- NMS-free coder (6.1, 6.2)
def coder_outputs():
    """Three queries: 0 confident car, 1 outside the post-centre range, 2 weak pedestrian."""
    logits = torch.full((1, 1, 3, 10), -9.0)
    logits[0, 0, 0, 0] = 3.0
    logits[0, 0, 1, 0] = 4.0
    logits[0, 0, 2, 8] = -2.0                                        # sigmoid 0.119
    g = torch.tensor([[5.0, 10.0, -1.0, 4.0, 2.0, 1.6, 0.3, 1.0, -1.0],
                      [70.0, 0.0, 0.0, 4.0, 2.0, 1.6, 0.0, 0.0, 0.0],
                      [-3.0, 2.0, -0.5, 0.6, 0.7, 1.8, -2.0, 0.2, 0.1]])
    return dict(all_cls_scores=logits, all_bbox_preds=B.normalize_bbox(g)[None, None]), g


def test_decode_keeps_top_scores_inside_range_with_bottom_centres():
    head = SparseBEVHead(small_cfg(num_queries=4))
    outputs, g = coder_outputs()
    res = head.decode(outputs)[0]
    assert res['labels'].tolist() == [0, 8] and res['query_index'].tolist() == [0, 2]
    assert torch.allclose(res['scores'], torch.sigmoid(torch.tensor([3.0, -2.0])))
    expected = g[[0, 2]].clone()
    expected[:, 2] -= expected[:, 5] / 2
    assert torch.allclose(res['boxes'], expected, atol=1e-5)
    strict = head.decode(outputs, score_threshold=0.2)[0]
    assert strict['query_index'].tolist() == [0]
    assert len(head.decode(outputs, max_num=1)[0]['scores']) == 0   # top-1 is out of range


def test_decode_legacy_convention_swaps_sizes_and_maps_yaw():
    head = SparseBEVHead(small_cfg(num_queries=4))
    head.legacy_yaw_convention = True
    assert head.transformer.decoder.decoder_layer.sampling.legacy_yaw_convention
    outputs, g = coder_outputs()
    box = head.decode(outputs)[0]['boxes'][0]
    assert torch.allclose(box[3:5], g[0, [4, 3]])
    assert torch.allclose(box[6], -g[0, 6] - math.pi / 2)

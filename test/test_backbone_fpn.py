"""ResNet backbone, FPN neck and the detector's image branch (docs/official_model.md 2.1-2.3, 10)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from sparsebev_core.model.backbones.resnet import ResNet, build_resnet
from sparsebev_core.model.detector import build_model, pad_to_multiple
from sparsebev_core.model.fpn import FPN
from sparsebev_core.recipe.backbones import ResNetConfig
from sparsebev_core.recipe.presets import get_preset

from backbone_checks import assert_checkpointing_keeps_gradients

PARITY = Path(__file__).parent / 'parity'
MANIFEST = PARITY / 'official_r50_nuimg_704x256_manifest.json'


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet50_and_fpn_parameter_counts_match_official():
    assert _count(build_resnet(ResNetConfig(depth=50))) == 23_508_032
    assert _count(FPN((256, 512, 1024, 2048), 256, 4)) == 3_344_384


def test_image_branch_state_dict_maps_onto_official_manifest():
    """Backbone + neck names, shapes and dtypes equal the official r50 state dict's."""
    manifest = json.loads(MANIFEST.read_text())
    official = {n: (tuple(s), d) for n, s, d in manifest
                if n.startswith(('img_backbone.', 'img_neck.'))}
    model = build_model(get_preset('r50_nuimg_704x256'), with_head=False)
    ours = {n: (tuple(t.shape), str(t.dtype)) for n, t in model.state_dict().items()}
    assert set(ours) == set(official), (sorted(set(ours) - set(official))[:5],
                                        sorted(set(official) - set(ours))[:5])
    assert ours == official
    assert len(official) == 334          # 318 backbone (incl. BN buffers) + 16 neck


def test_resnet101_has_23_blocks_in_layer3():
    net = ResNet(depth=101)
    assert len(net.layer3) == 23 and not hasattr(net, 'fc')


def test_frozen_stages_have_no_grad_and_stay_in_eval():
    net = ResNet(depth=18, base_channels=8, frozen_stages=1, norm_eval=False)
    net.train()
    frozen = [net.conv1, net.bn1, net.layer1]
    for m in frozen:
        assert all(not p.requires_grad for p in m.parameters())
        assert all(not sub.training for sub in m.modules())
    assert all(p.requires_grad for p in net.layer2.parameters())
    assert net.layer2[0].bn1.training                 # norm_eval off: unfrozen BN trains
    stem_mean = net.bn1.running_mean.clone()
    l2_mean = net.layer2[0].bn1.running_mean.clone()
    outs = net(torch.randn(2, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    assert net.conv1.weight.grad is None and net.layer1[0].conv1.weight.grad is None
    assert net.layer2[0].conv1.weight.grad is not None
    assert torch.equal(net.bn1.running_mean, stem_mean)          # frozen BN: no stat update
    assert not torch.equal(net.layer2[0].bn1.running_mean, l2_mean)


def test_norm_eval_keeps_every_batchnorm_in_eval_during_training():
    net = ResNet(depth=18, base_channels=8, frozen_stages=-1, norm_eval=True)
    net.train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)
    assert all(p.requires_grad for p in net.parameters())        # affine params still train
    before = [bn.running_var.clone() for bn in bns]
    net(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(b, bn.running_var) for b, bn in zip(before, bns))


def test_activation_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    assert_checkpointing_keeps_gradients(
        ResNet(depth=50, base_channels=4, frozen_stages=1, with_cp=False),
        ResNet(depth=50, base_channels=4, frozen_stages=1, with_cp=True),
        torch.randn(2, 3, 32, 64))


def test_resnet_strides_and_channels():
    net = ResNet(depth=50, base_channels=16).eval()
    outs = net(torch.randn(1, 3, 96, 160))
    assert [tuple(o.shape[1:]) for o in outs] == [(64, 24, 40), (128, 12, 20), (256, 6, 10), (512, 3, 5)]
    assert net.out_channels == [64, 128, 256, 512]


def _identity_fpn(channels: int, num_levels: int, num_outs: int) -> FPN:
    """FPN whose 1x1 laterals and 3x3 output convs are identities (checks the top-down wiring)."""
    fpn = FPN([channels] * num_levels, channels, num_outs)
    with torch.no_grad():
        for lat in fpn.lateral_convs:
            lat.conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            lat.conv.bias.zero_()
        for out in fpn.fpn_convs:
            out.conv.weight.zero_()
            out.conv.weight[:, :, 1, 1] = torch.eye(channels)
            out.conv.bias.zero_()
    return fpn


def test_fpn_upsamples_to_the_exact_size_of_the_finer_level():
    """Odd sizes: nearest neighbour by size, source index floor(i * in / out)."""
    fpn = _identity_fpn(2, 2, 2)
    fine = torch.zeros(1, 2, 7, 5)
    coarse = torch.arange(4 * 3, dtype=torch.float32).view(1, 1, 4, 3).repeat(1, 2, 1, 1)
    out = fpn([fine, coarse])
    rows = torch.tensor([0, 0, 1, 1, 2, 2, 3])       # floor(i * 4 / 7)
    cols = torch.tensor([0, 0, 1, 1, 2])             # floor(j * 3 / 5)
    expected = coarse[:, :, rows][:, :, :, cols]
    assert out[0].shape == (1, 2, 7, 5)
    torch.testing.assert_close(out[0], expected)
    torch.testing.assert_close(out[1], coarse)


def test_fpn_extra_level_is_strided_max_pool_of_the_last():
    fpn = FPN((8, 16), 4, num_outs=3)
    outs = fpn([torch.randn(1, 8, 10, 14), torch.randn(1, 16, 5, 7)])
    assert [tuple(o.shape[2:]) for o in outs] == [(10, 14), (5, 7), (3, 4)]
    torch.testing.assert_close(outs[2], outs[1][:, :, ::2, ::2])
    assert _count(fpn) == _count(FPN((8, 16), 4, num_outs=2))   # no parameters


def test_fpn_rejects_wrong_number_of_levels():
    fpn = FPN((8, 16), 4, num_outs=2)
    with pytest.raises(ValueError, match='expects 2 input levels'):
        fpn([torch.randn(1, 8, 4, 4)])


def test_pad_to_multiple_of_32_pads_right_and_bottom_with_zeros():
    x = torch.ones(2, 3, 90, 250)
    y = pad_to_multiple(x)
    assert y.shape == (2, 3, 96, 256)
    assert torch.equal(y[..., :90, :250], x) and y[..., 90:, :].abs().sum() == 0 and y[..., 250:].abs().sum() == 0


def test_extract_features_shapes_for_tiny_preset():
    cfg = get_preset('tiny')
    model = build_model(cfg, with_head=False).eval()
    images = torch.randint(0, 256, (2, 6, 3, *cfg.input_size), dtype=torch.uint8)
    feats = model.extract_features(images)
    H, W = cfg.input_size
    assert [tuple(f.shape) for f in feats] == [(2, 6, 64, H // s, W // s) for s in (4, 8, 16, 32)]
    assert model.input_hw(feats) == (H, W)


def test_bgr_preset_swaps_channels_before_normalising():
    cfg = get_preset('tiny')
    cfg.channel_order, cfg.image_mean, cfg.image_std = 'BGR', (1.0, 2.0, 3.0), (1.0, 1.0, 1.0)
    model = build_model(cfg, with_head=False)
    rgb = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    x = model.normalize_images(rgb)
    assert x[0, :, 0, 0].tolist() == [30.0 - 1.0, 20.0 - 2.0, 10.0 - 3.0]


def test_stop_prev_grad_runs_old_frames_without_grad_and_in_eval_mode():
    cfg = get_preset('tiny')
    cfg.train.stop_prev_grad = 1
    model = build_model(cfg, with_head=False)
    model.train()
    seen_modes = []
    model.img_backbone.register_forward_hook(lambda m, i, o: seen_modes.append((m.training, o[0].requires_grad)))
    images = torch.randint(0, 256, (1, 24, 3, 64, 64), dtype=torch.uint8)   # the preset's 4 frames
    feats = model.extract_features(images)
    assert seen_modes == [(True, True)] + [(False, False)] * 3
    assert model.training and model.img_backbone.layer1[0].bn1.training
    assert feats[0].shape[:2] == (1, 24)
    # the stopped frames equal an eval-mode pass over the same images
    model.eval()
    with torch.no_grad():
        ref = model.extract_features(images)
    torch.testing.assert_close(feats[0][:, 6:], ref[0][:, 6:])


def test_backbone_and_fpn_match_official_fixture():
    """One image of the parity fixture through our R50 + FPN with the fixture's weights:
    normalised input bitwise, C2..C5 statistics and raw FPN samples as the official code."""
    sys.path.insert(0, str(PARITY))
    try:
        import fill
        import inputs as parity_inputs
    finally:
        sys.path.remove(str(PARITY))
    ref = np.load(PARITY / 'ref_seed0_704x256.npz')
    meta = json.loads(str(ref['meta_json']))
    manifest = json.loads(MANIFEST.read_text())
    image_part = [e for e in manifest if e[0].startswith(('img_backbone.', 'img_neck.'))]
    weights = fill.fill_state_dict(image_part, seed=meta.get('weights_seed', 0))
    model = build_model(get_preset('r50_nuimg_704x256'), with_head=False)
    model.load_state_dict(weights, strict=True)
    model.eval()

    inp = parity_inputs.build_inputs(meta['seed'], width=704, height=256)
    cam = 0                                                       # frame 0, CAM_FRONT
    rgb = torch.from_numpy(inp['img_bgr_uint8'][cam][..., ::-1].copy()).permute(2, 0, 1)[None]
    x = model.normalize_images(rgb)                               # [1, 3, 256, 704]
    assert torch.equal(x[0], torch.from_numpy(inp['img_normalized'][0, cam]))

    captured = []
    model.img_backbone.register_forward_hook(lambda m, i, o: captured.extend(o))
    with torch.no_grad():
        feats = model.extract_features(rgb[None])                 # per level [1, 1, 256, h, w]
    for level, c in enumerate(captured, start=2):
        np.testing.assert_allclose(c.mean().item(), ref[f'backbone_c{level}_mean_per_img'][cam],
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(c.std().item(), ref[f'backbone_c{level}_std_per_img'][cam],
                                   rtol=1e-4)
    for level, f in enumerate(feats):
        index = ref[f'fpn_l{level}_sample_index']                 # [512, (cam, channel, y, x)]
        rows = np.flatnonzero(index[:, 0] == cam)
        assert len(rows) > 10
        _, ch, yy, xx = index[rows].T
        ours = f[0, 0][torch.from_numpy(ch), torch.from_numpy(yy), torch.from_numpy(xx)].numpy()
        np.testing.assert_allclose(ours, ref[f'fpn_l{level}_samples'][0, rows], rtol=1e-4, atol=1e-4)


def _tiny_inputs(cfg, batch=1):
    T, (H, W) = cfg.num_frames, cfg.input_size
    images = torch.randint(0, 256, (batch, T * 6, 3, H, W), dtype=torch.uint8)
    # a camera looking along +y (forward), so that query points project into the image
    cam = torch.tensor([[100.0, W / 2, 0, 0], [0, H / 2, -100.0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    lidar2img = cam.expand(batch, T * 6, 4, 4).clone()                     # [B, T*6, 4, 4]
    timestamps = (1.5e9 - 0.5 * torch.arange(T, dtype=torch.float64)).repeat_interleave(6)
    return images, lidar2img, timestamps.expand(batch, T * 6).clone()       # [B, T*6] float64


def test_tiny_detector_forward_decode_and_backward():
    cfg = get_preset('tiny')
    model = build_model(cfg)
    images, lidar2img, timestamps = _tiny_inputs(cfg)
    model.eval()
    with torch.no_grad():
        out = model(images, lidar2img, timestamps)
    L, Q = cfg.head.num_layers, cfg.head.num_queries
    assert out['all_cls_scores'].shape == (L, 1, Q, 10) and out['all_bbox_preds'].shape == (L, 1, Q, 10)
    dets = model.decode(out, score_threshold=0.0)
    assert dets[0]['boxes'].shape[1] == 9 and len(dets[0]['scores']) == len(dets[0]['labels'])
    model.train()
    gt_boxes = [torch.tensor([[1.0, 10.0, -1.0, 4.0, 2.0, 1.5, 0.3, 1.0, 0.0]])]
    out = model(images, lidar2img, timestamps, gt_boxes=gt_boxes, gt_labels=[torch.tensor([0])])
    (out['all_cls_scores'].sum() + out['all_bbox_preds'].sum()).backward()
    assert model.img_backbone.conv1.weight.grad.abs().sum() > 0      # gradients reach the image branch


def test_forward_head_rejects_bad_shapes_and_float32_timestamps():
    cfg = get_preset('tiny')
    model = build_model(cfg).eval()
    images, lidar2img, timestamps = _tiny_inputs(cfg)
    with torch.no_grad():
        feats = model.extract_features(images)
        with pytest.raises(TypeError, match='float64'):
            model.forward_head(feats, lidar2img, timestamps.float())
        with pytest.raises(ValueError, match='lidar2img'):
            model.forward_head(feats, lidar2img[:, :6], timestamps)
        with pytest.raises(ValueError, match='expects T\\*N images per sample'):
            model.forward_head([f[:, :6] for f in feats], lidar2img[:, :6], timestamps[:, :6])

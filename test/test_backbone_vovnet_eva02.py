"""VoVNet-99-eSE and EVA02-L backbones, the future-frame presets and their checkpoints (issue 7)."""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import pytest
import torch

from sparsebev_core.checkpoints.convert import convert_official_checkpoint, guess_preset
from sparsebev_core.checkpoints.official import CheckpointMismatchError, load_checkpoint
from sparsebev_core.checkpoints.pretrain import load_pretrained_backbone
from sparsebev_core.model.backbones.eva02 import (EVA02, VisionRotaryEmbedding, window_partition,
                                                  window_unpartition)
from sparsebev_core.model.backbones.vovnet import VoVNet
from sparsebev_core.model.detector import build_model
from sparsebev_core.recipe.backbones import EVA02Config, VoVNetConfig
from sparsebev_core.recipe.config import FPNConfig
from sparsebev_core.recipe.frame_layout import frame_offsets
from sparsebev_core.recipe.presets import get_preset

from backbone_checks import assert_checkpointing_keeps_gradients

VOV = 'vov99_dd3d_1600x640_trainval_future'
EVA = 'vit_eva02_1600x640_trainval_future'


def tiny_vovnet_config(**kw) -> VoVNetConfig:
    return VoVNetConfig(stem_channels=(8, 8, 16), stage_conv_channels=(8, 8, 12, 12),
                        stage_out_channels=(16, 24, 32, 40), layers_per_block=2,
                        blocks_per_stage=(1, 2, 2, 1), **kw)


def tiny_eva02_config(**kw) -> EVA02Config:
    base = dict(img_size=96, real_img_size=(64, 128), patch_size=16, embed_dim=64, depth=3,
                num_heads=2, pretrain_img_size=64, window_size=4, window_block_indexes=(0, 1),
                drop_path_rate=0.1, fpn_out_channels=64, frozen_blocks=1, use_act_checkpoint=True)
    base.update(kw)
    return EVA02Config(**base)


def tiny_preset_with(backbone: str):
    """The tiny preset with a tiny-width VoVNet (+ 5-level FPN) or EVA02 (own pyramid)."""
    cfg = get_preset('tiny')
    cfg.head.num_levels = 5
    if backbone == 'vovnet':
        cfg.backbone = tiny_vovnet_config()
        cfg.neck = FPNConfig(in_channels=(16, 24, 32, 40), out_channels=64, num_outs=5)
        cfg.channel_order = 'BGR'
        cfg.input_size = (64, 128)
    else:
        cfg.backbone = tiny_eva02_config()
        cfg.neck = None
        cfg.input_size = (64, 128)
        cfg.train.stop_prev_grad = 2
    return cfg


# ------------------------------------------------------------------ presets and key names
def test_future_presets_frame_layouts():
    assert frame_offsets(get_preset(VOV)) == (0, -1, -2, -3, -4, -5, -6, -7, 1, 2, 3, 4, 5, 6, 7)
    assert frame_offsets(get_preset(EVA)) == (0, -1, 1, -2, 2, -3, 3, -4, 4, -5, 5, -6, 6, -7, 7)
    assert frame_offsets(get_preset('r50_nuimg_704x256')) == (0, -1, -2, -3, -4, -5, -6, -7)
    for name in (VOV, EVA):
        cfg = get_preset(name)
        offsets = frame_offsets(cfg)
        assert len(offsets) == cfg.num_frames == cfg.head.num_frames == 15
        assert offsets[1] == -1                       # velocity divisor: newest past frame


@pytest.mark.parametrize('name', [VOV, EVA])
def test_future_preset_key_names_and_shapes(name):
    cfg = get_preset(name)
    with torch.device('meta'):                        # shapes only: no 300M-parameter allocation
        model = build_model(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    D = 'pts_bbox_head.transformer.decoder.decoder_layer.'
    P, T, L, G = cfg.head.num_points, cfg.num_frames, cfg.head.num_levels, 4
    assert shapes['pts_bbox_head.init_query_bbox.weight'] == (1600, 10)
    assert shapes[D + 'sampling.sampling_offset.weight'] == (G * P * 3, 256)
    assert shapes[D + 'sampling.scale_weights.weight'] == (G * P * L, 256)
    assert shapes[D + 'mixing.parameter_generator.weight'] == (G * (64 * 64 + P * T * 128), 256)
    if name == VOV:
        assert shapes['img_backbone.stem.stem_1/conv.weight'] == (64, 3, 3, 3)
        assert shapes['img_backbone.stem.stem_3/conv.weight'] == (128, 64, 3, 3)
        assert shapes['img_backbone.stage2.OSA2_1.layers.0.OSA2_1_0/conv.weight'] == (128, 128, 3, 3)
        assert shapes['img_backbone.stage4.OSA4_9.concat.OSA4_9_concat/conv.weight'] == (768, 768 + 5 * 192, 1, 1)
        assert shapes['img_backbone.stage5.OSA5_3.ese.fc.weight'] == (1024, 1024, 1, 1)
        assert 'img_backbone.stage4.OSA4_10.ese.fc.bias' not in shapes
        assert [shapes[f'img_neck.lateral_convs.{i}.conv.weight'][1] for i in range(4)] == [256, 512, 768, 1024]
        assert 'img_neck.lateral_convs.4.conv.weight' not in shapes          # 5th level: max-pool
    else:
        assert model.img_neck is None
        B = 'img_backbone.backbone.'
        assert shapes[B + 'net.pos_embed'] == (1, 197, 1024)
        assert shapes[B + 'net.patch_embed.proj.weight'] == (1024, 3, 16, 16)
        assert shapes[B + 'net.blocks.23.mlp.w1.weight'] == (2730, 1024)
        assert shapes[B + 'net.blocks.0.attn.q_bias'] == (1024,)
        assert B + 'net.blocks.0.attn.k_bias' not in shapes
        assert shapes[B + 'net.rope_win.freqs_cos'] == (16 * 16, 64)
        assert shapes[B + 'net.rope_glb.freqs_cos'] == (40 * 100, 64)            # 640x1600 / 16
        assert shapes[B + 'net.blocks.2.attn.rope.freqs_cos'] == (4000, 64)      # global block
        assert shapes[B + 'net.blocks.1.attn.rope.freqs_cos'] == (256, 64)       # window block
        assert shapes[B + 'simfp_2.0.weight'] == (1024, 512, 2, 2)
        assert shapes[B + 'simfp_2.5.norm.weight'] == (256,)
        assert shapes[B + 'simfp_5.1.weight'] == (256, 1024, 1, 1)
        assert 'net.blocks.24.norm1.weight' not in shapes


def test_guess_preset_recognises_vovnet_and_eva02_checkpoints():
    for name in (VOV, EVA):
        with torch.device('meta'):
            state = build_model(get_preset(name)).state_dict()
        assert guess_preset(state) == name


# ------------------------------------------------------------------ VoVNet
def test_vovnet_strides_channels_and_frozen_stem_stage2():
    net = VoVNet(tiny_vovnet_config(frozen_stages=1, norm_eval=False, with_cp=False))
    outs = net.eval()(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 16, 24), (24, 8, 12), (32, 4, 6), (40, 2, 3)]
    net.train()
    for m in (net.stem, net.stage2):
        assert all(not p.requires_grad for p in m.parameters()) and not any(s.training for s in m.modules())
    assert all(p.requires_grad for p in net.stage3.parameters()) and net.stage3.training


def test_vovnet_blocks_after_the_first_have_identity_shortcuts():
    net = VoVNet(tiny_vovnet_config())
    assert not net.stage3.OSA3_1.identity and net.stage3.OSA3_2.identity
    assert not hasattr(net.stage2, 'Pooling') and isinstance(net.stage3.Pooling, torch.nn.MaxPool2d)


def test_vovnet_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    assert_checkpointing_keeps_gradients(
        VoVNet(tiny_vovnet_config(frozen_stages=-1, norm_eval=True, with_cp=False)),
        VoVNet(tiny_vovnet_config(frozen_stages=-1, norm_eval=True, with_cp=True)),
        torch.randn(1, 3, 32, 32))


# ------------------------------------------------------------------ EVA02
def test_rope_attention_logits_depend_only_on_relative_position():
    """RoPE: <R(p_i) q, R(p_j) k> is a function of p_j - p_i (window table, integer grid)."""
    rope = VisionRotaryEmbedding(dim=8, pt_seq_len=4, ft_seq_len=4)            # 4x4 grid, head dim 16
    q = torch.randn(16).expand(1, 16, 1, 16)                                  # same vector everywhere
    k = torch.randn(16).expand(1, 16, 1, 16)
    logits = rope(q)[0, :, 0] @ rope(k)[0, :, 0].T                            # [16, 16], token = 4*row + col
    for i in range(16):
        for j in range(16):
            if i // 4 < 3 and j // 4 < 3:                                     # shift both one row down
                torch.testing.assert_close(logits[i + 4, j + 4], logits[i, j], rtol=1e-4, atol=1e-4)
            if i % 4 < 3 and j % 4 < 3:                                       # shift both one column right
                torch.testing.assert_close(logits[i + 1, j + 1], logits[i, j], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(logits[0, 1], logits[0, 4])                     # rows and columns differ


def test_rope_table_angles_follow_the_eva02_formula():
    """Token (r, c), channel j of a 2*d table: angle = (r if j < d else c) * (pt/ft) * theta^(-2*floor((j mod d)/2)/d)."""
    d, pt, ft = 8, 16, 4
    rope = VisionRotaryEmbedding(d, pt_seq_len=pt, ft_seq_len=ft)
    for r in range(ft):
        for c in range(ft):
            for j in range(2 * d):
                position = (r if j < d else c) * pt / ft
                angle = position * 10000.0 ** (-2 * ((j % d) // 2) / d)
                assert abs(rope.freqs_cos[r * ft + c, j].item() - math.cos(angle)) < 1e-6
                assert abs(rope.freqs_sin[r * ft + c, j].item() - math.sin(angle)) < 1e-6


def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 5, 7, 3)
    windows, padded = window_partition(x, 4)
    assert windows.shape == (2 * 2 * 2, 4, 4, 3) and padded == (8, 8)
    assert torch.equal(window_unpartition(windows, 4, padded, (5, 7)), x)
    assert windows[1, :, 3:].abs().sum() == 0                                  # zero padding on the right


def test_eva02_pyramid_levels_and_frozen_blocks():
    net = EVA02(tiny_eva02_config())
    outs = net.eval()(torch.randn(1, 3, 64, 128))
    assert [tuple(o.shape[1:]) for o in outs] == [(64, 16, 32), (64, 8, 16), (64, 4, 8), (64, 2, 4), (64, 1, 2)]
    torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])
    net.train()
    vit = net.backbone.net
    assert not vit.pos_embed.requires_grad and not vit.patch_embed.proj.weight.requires_grad
    assert all(not p.requires_grad for p in vit.blocks[0].parameters()) and not vit.blocks[0].training
    assert all(p.requires_grad for p in vit.blocks[1].parameters()) and vit.blocks[1].training
    with pytest.raises(ValueError, match='RoPE is built for'):
        net(torch.randn(1, 3, 64, 64))


def test_eva02_checkpointing_gives_identical_gradients_in_eval_of_dropout():
    torch.manual_seed(0)
    assert_checkpointing_keeps_gradients(
        EVA02(tiny_eva02_config(use_act_checkpoint=False, drop_path_rate=0.0)),
        EVA02(tiny_eva02_config(use_act_checkpoint=True, drop_path_rate=0.0)),
        torch.randn(1, 3, 64, 128))


# ------------------------------------------------------------------ whole detector, tiny widths
@pytest.mark.parametrize('backbone', ['vovnet', 'eva02'])
def test_tiny_width_detector_forward_backward(backbone):
    cfg = tiny_preset_with(backbone)
    model = build_model(cfg)
    T, (H, W) = cfg.num_frames, cfg.input_size
    images = torch.randint(0, 256, (1, T * 6, 3, H, W), dtype=torch.uint8)
    # a camera looking along +y (forward), so that query points project into the image
    cam = torch.tensor([[30.0, W / 2, 0, 0], [0, H / 2, -30.0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    lidar2img = cam.expand(1, T * 6, 4, 4).clone()
    timestamps = (1.5e9 - 0.5 * torch.arange(T, dtype=torch.float64)).repeat_interleave(6)[None]
    model.train()
    feats = model.extract_features(images)
    assert len(feats) == 5 and all(f.shape[:3] == (1, T * 6, 64) for f in feats)
    if backbone == 'eva02':                           # stop_prev_grad = 2: frames 2, 3 without grad
        assert feats[0].requires_grad
    out = model.forward_head(feats, lidar2img, timestamps)
    assert out['all_cls_scores'].shape == (cfg.head.num_layers, 1, cfg.head.num_queries, 10)
    (out['all_cls_scores'].sum() + out['all_bbox_preds'].sum()).backward()
    trainable = [p for p in model.img_backbone.parameters() if p.requires_grad]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize('backbone', ['vovnet', 'eva02'])
def test_conversion_of_official_named_state_dict(tmp_path, backbone):
    """No official VoVNet/EVA02 checkpoint is available offline: we write one from our own
    (tiny-width) model, whose state-dict names are the official ones."""
    cfg = tiny_preset_with(backbone)
    torch.manual_seed(0)
    source = build_model(cfg)
    official = source.state_dict()
    src = tmp_path / 'official.pth'
    torch.save(dict(meta=dict(epoch=24), state_dict=official), src)
    out = tmp_path / 'converted.pth'
    report = convert_official_checkpoint(src, out, preset=cfg)
    assert report['verified'] and report['num_keys'] == len(official)
    torch.manual_seed(1)
    target = build_model(cfg)
    load_checkpoint(target, out)
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    broken = OrderedDict(official)
    broken.pop(next(k for k in broken if k.startswith('img_backbone.')))
    with pytest.raises(CheckpointMismatchError, match='missing keys'):
        load_checkpoint(target, broken)


@pytest.mark.parametrize('layout', ['img_backbone', 'dd3d_detectron2'])
def test_dd3d_pretrain_loads_into_the_vovnet(layout):
    cfg = tiny_preset_with('vovnet')
    torch.manual_seed(0)
    backbone = {k: v + 1.0 if v.is_floating_point() else v
                for k, v in VoVNet(cfg.backbone).state_dict().items()}
    prefix = 'img_backbone.' if layout == 'img_backbone' else 'backbone.bottom_up.'
    file = OrderedDict((prefix + k, v) for k, v in backbone.items())
    file['backbone.fpn_lateral3.weight'] = torch.zeros(4, 4, 1, 1)                 # DD3D FPN
    file['fcos2d_head.cls_logits.0.weight'] = torch.zeros(3)
    model = build_model(cfg)
    report = load_pretrained_backbone(model, dict(model=file) if layout != 'img_backbone' else file)
    for k, v in backbone.items():
        assert torch.equal(model.img_backbone.state_dict()[k], v), k
    assert sorted(report['ignored']) == ['backbone.fpn_lateral3.weight', 'fcos2d_head.cls_logits.0.weight']


def test_eva02_pretrain_loads_trunk_and_pyramid_and_skips_rope_tables():
    cfg = tiny_preset_with('eva02')
    torch.manual_seed(0)
    pre_cfg = dataclasses.replace(cfg.backbone, img_size=128, real_img_size=(96, 96))  # other input size
    pretrained = {k: v + 1.0 for k, v in EVA02(pre_cfg).state_dict().items()}
    file = OrderedDict(('backbone.' + k[len('backbone.'):], v) for k, v in pretrained.items())
    file['roi_heads.box_predictor.cls_score.weight'] = torch.zeros(2, 2)
    model = build_model(cfg)
    rope_before = model.img_backbone.backbone.net.rope_glb.freqs_cos.clone()
    report = load_pretrained_backbone(model, dict(model=file))
    ours = model.img_backbone.state_dict()
    for k, v in pretrained.items():
        if 'freqs_' not in k:
            assert torch.equal(ours[k], v), k
    assert torch.equal(model.img_backbone.backbone.net.rope_glb.freqs_cos, rope_before)
    assert 'roi_heads.box_predictor.cls_score.weight' in report['ignored']
    assert any(k.endswith('rope_glb.freqs_cos') for k in report['ignored'])


def test_convert_checkpoint_backbone_only_maps_a_dd3d_file(tmp_path, monkeypatch, capsys):
    """``sparsebev convert-checkpoint --backbone-only``: DD3D layout in, ``img_backbone.*`` out."""
    from sparsebev_cli import cli
    from sparsebev_core.recipe import presets
    cfg = tiny_preset_with('vovnet')
    cfg.name = 'tiny_vovnet'
    monkeypatch.setitem(presets._PRESETS, 'tiny_vovnet', lambda: tiny_preset_with('vovnet'))
    torch.manual_seed(0)
    backbone = VoVNet(cfg.backbone).state_dict()
    src = tmp_path / 'dd3d_det_final.pth'
    file = OrderedDict(('backbone.bottom_up.' + k, v) for k, v in backbone.items())
    file['backbone.fpn_output3.weight'] = torch.zeros(2)
    torch.save(dict(model=file, iteration=1), src)
    out = tmp_path / 'vov_backbone.pth'
    assert cli.main(['convert-checkpoint', str(src), str(out), '--backbone-only', '--preset', 'tiny_vovnet']) == 0
    assert '1 other keys ignored' in capsys.readouterr().out
    converted = torch.load(out, weights_only=True)['state_dict']
    assert set(converted) == {'img_backbone.' + k for k in backbone}
    model = build_model(cfg)
    load_pretrained_backbone(model, out)
    for k, v in backbone.items():
        assert torch.equal(model.img_backbone.state_dict()[k], v), k
    # a file for another backbone is refused with the key report
    other = tmp_path / 'other.pth'
    assert cli.main(['convert-checkpoint', str(src), str(other), '--backbone-only', '--preset', 'tiny']) == 1
    err = capsys.readouterr().err              # one error line, exit code 1 (bad input)
    assert 'missing keys' in err and err.startswith('sparsebev convert-checkpoint: error:')
    assert not other.exists()

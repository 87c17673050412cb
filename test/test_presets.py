"""Presets: the official config matrix (docs/official_model.md section 7) and ``tiny``."""
from __future__ import annotations

import dataclasses
import math

import pytest

from sparsebev_core.errors import InputError
from sparsebev_core.recipe.backbones import EVA02Config, ResNetConfig, VoVNetConfig
from sparsebev_core.recipe.config import HeadConfig, ModelConfig, ModelConfigError
from sparsebev_core.recipe.presets import FUTURE_PRESET_NAMES, PRESET_NAMES, get_preset

OFFICIAL = ('r50_nuimg_704x256', 'r50_nuimg_704x256_400q_36ep', 'r101_nuimg_1408x512',
            'vov99_dd3d_1600x640_trainval_future', 'vit_eva02_1600x640_trainval_future')
OFFICIAL_V2 = ('r50_nuimg_704x256_memory',)          # SparseBEV++ (docs/official_model.md section 13)


def test_every_official_config_and_tiny_has_a_preset():
    assert set(PRESET_NAMES) == set(OFFICIAL) | set(OFFICIAL_V2) | {'tiny', 'tiny_memory'}
    for name in PRESET_NAMES:
        cfg = get_preset(name)
        assert isinstance(cfg, ModelConfig) and cfg.name == name


def test_get_preset_returns_a_fresh_copy():
    a = get_preset('r50_nuimg_704x256')
    a.head.num_queries = 1
    a.train.lr_mults = ()
    b = get_preset('r50_nuimg_704x256')
    assert b.head.num_queries == 900 and b.train.lr_mults


def test_unknown_preset_names_the_choices():
    with pytest.raises(KeyError, match='r50_nuimg_704x256'):
        get_preset('r50')


# name: (backbone type, depth, input HxW, levels, queries, frames, points, epochs,
#        backbone lr mult, frame layout, stop_prev_grad, channel order)
CONFIG_MATRIX = {
    'r50_nuimg_704x256': (ResNetConfig, 50, (256, 704), 4, 900, 8, 4, 24, 0.1, 'past', 0, 'RGB'),
    'r50_nuimg_704x256_400q_36ep': (ResNetConfig, 50, (256, 704), 4, 400, 8, 4, 36, 0.1, 'past', 0, 'RGB'),
    'r101_nuimg_1408x512': (ResNetConfig, 101, (512, 1408), 5, 900, 8, 4, 24, 0.2, 'past', 0, 'RGB'),
    'vov99_dd3d_1600x640_trainval_future': (VoVNetConfig, None, (640, 1600), 5, 1600, 15, 4, 24, 0.1,
                                            'future_blocked', 0, 'BGR'),
    'vit_eva02_1600x640_trainval_future': (EVA02Config, None, (640, 1600), 5, 1600, 15, 8, 24, 0.1,
                                           'future_interleaved', 4, 'RGB'),
}


@pytest.mark.parametrize('name', OFFICIAL)
def test_official_preset_matches_config_matrix(name):
    (btype, depth, hw, levels, queries, frames, points, epochs, bb_mult, layout, spg,
     order) = CONFIG_MATRIX[name]
    cfg = get_preset(name)
    assert isinstance(cfg.backbone, btype)
    if depth is not None:
        assert cfg.backbone.depth == depth
        assert (cfg.backbone.frozen_stages, cfg.backbone.norm_eval, cfg.backbone.with_cp) == (1, True, True)
    assert cfg.input_size == hw
    assert cfg.head.num_levels == levels
    if cfg.neck is not None:
        assert cfg.neck.num_outs == levels
    else:
        assert btype is EVA02Config                        # simple pyramid, no separate neck
    assert cfg.head.num_queries == queries and math.isqrt(queries) ** 2 == queries
    assert cfg.head.num_frames == cfg.num_frames == frames
    assert cfg.head.num_points == points
    assert cfg.train.epochs == epochs
    assert dict(cfg.train.lr_mults) == {'img_backbone': bb_mult, 'sampling_offset': 0.1}
    assert cfg.frame_layout == layout
    assert cfg.num_future_frames == (7 if 'future' in name else 0)
    assert cfg.train.stop_prev_grad == spg
    assert cfg.channel_order == order
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.total_batch_size) == (2e-4, 0.01, 8)
    assert cfg.head.num_layers == 6 and cfg.head.embed_dims == 256
    assert cfg.train.train_splits == (('train', 'val') if 'trainval' in name else ('train',))


def test_normalisation_constants_follow_channel_order():
    rgb = get_preset('r50_nuimg_704x256')
    bgr = get_preset('vov99_dd3d_1600x640_trainval_future')
    assert rgb.image_mean == (123.675, 116.28, 103.53) and rgb.image_std == (58.395, 57.12, 57.375)
    assert bgr.image_mean == rgb.image_mean[::-1] and bgr.image_std == rgb.image_std[::-1]


def test_training_resize_ranges_follow_the_official_ida_conf():
    assert get_preset('r50_nuimg_704x256').train.resize_lim == (0.38, 0.55)
    assert get_preset('r101_nuimg_1408x512').train.resize_lim == pytest.approx((0.76, 1.10))
    assert get_preset('vit_eva02_1600x640_trainval_future').train.resize_lim == (0.94, 1.25)


def test_future_presets_say_they_need_future_frames():
    assert set(FUTURE_PRESET_NAMES) == {'vov99_dd3d_1600x640_trainval_future',
                                        'vit_eva02_1600x640_trainval_future'}


def test_tiny_preset_is_small_and_consistent():
    cfg = get_preset('tiny')
    assert cfg.backbone.depth == 18 and cfg.backbone.base_channels < 64
    assert cfg.input_size == (96, 256) and all(s % 32 == 0 for s in cfg.input_size)
    assert cfg.original_size == (225, 400)
    # official test-time rule (resize by max ratio, bottom crop) fits the synthetic cameras
    scale = max(cfg.input_size[0] / 225, cfg.input_size[1] / 400)
    assert int(400 * scale) == cfg.input_size[1] and int(225 * scale) >= cfg.input_size[0]
    assert 100 <= cfg.head.num_queries <= 144 and math.isqrt(cfg.head.num_queries) ** 2 == cfg.head.num_queries
    assert cfg.num_frames == cfg.head.num_frames == 4
    assert cfg.neck.out_channels == cfg.head.embed_dims
    assert cfg.head.embed_dims % cfg.head.num_groups == 0
    assert cfg.neck.num_outs == cfg.head.num_levels


@pytest.mark.parametrize('change, words', [
    (dict(num_past_frames=5), 'head.num_frames = 4 but the frame counts give T = 6'),
    (dict(head=HeadConfig(num_frames=4, num_levels=5, embed_dims=64, num_classes=10)),
     'head.num_levels = 5 but the neck gives 4 levels'),
    (dict(head=HeadConfig(num_frames=4, num_levels=4, embed_dims=128, num_classes=10)),
     'head.embed_dims = 128 but the neck gives 64 channels'),
    (dict(class_names=('car', 'truck')), '2 class_names but head.num_classes = 10'),
])
def test_a_model_config_whose_parts_disagree_is_refused_when_built(change, words):
    """T, the pyramid levels and channels, and the classes are stated in two places each: a
    config (a hand-built one too, not only a preset) that disagrees with itself is refused."""
    with pytest.raises(ModelConfigError, match=words) as refused:
        dataclasses.replace(get_preset('tiny'), **change)
    assert isinstance(refused.value, InputError)
    cfg = get_preset('tiny')
    cfg.head.num_frames = 8                                  # edited in place: check() again
    with pytest.raises(ModelConfigError, match='head.num_frames = 8'):
        cfg.check()


def test_the_sparsebev_plus_plus_preset_is_the_official_v2_config():
    cfg = get_preset('r50_nuimg_704x256_memory')
    r50 = get_preset('r50_nuimg_704x256')
    assert (cfg.backbone, cfg.neck, cfg.input_size) == (r50.backbone, r50.neck, r50.input_size)
    assert (cfg.head.num_queries, cfg.head.num_frames, cfg.num_frames, cfg.num_past_frames) == (400, 1, 1, 0)
    assert (cfg.head.num_layers, cfg.head.num_points, cfg.head.num_levels) == (6, 4, 4)
    m = cfg.head.memory
    assert (m.num_propagated, m.max_time_interval, m.memory_len, m.len_per_frame,
            m.inference_layers) == (500, 2.0, 1024, 256, 4)
    t = cfg.train
    assert (t.lr, t.weight_decay, t.total_batch_size, t.epochs, t.lr_by_epoch) == (4e-4, 1e-3, 16, 60, False)
    assert dict(t.lr_mults) == {'img_backbone': 0.1, 'sampling_offset': 0.1}
    assert t.pretrained == r50.train.pretrained and r50.head.memory is None


def test_tiny_memory_is_tiny_made_recurrent():
    cfg, tiny = get_preset('tiny_memory'), get_preset('tiny')
    assert (cfg.backbone, cfg.neck, cfg.input_size) == (tiny.backbone, tiny.neck, tiny.input_size)
    m = cfg.head.memory
    assert cfg.head.num_queries + m.num_propagated == tiny.head.num_queries
    assert m.memory_len % m.len_per_frame == 0 and m.inference_layers < cfg.head.num_layers

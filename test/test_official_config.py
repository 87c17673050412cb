"""Official SparseBEV config files in and out (sparsebev_core/recipe/: official.py, official_write.py, mmcv_reader.py).

The configs under test/data/official_configs are our own, written in the official style:
``tiny_base.py`` is the ``tiny`` preset, ``tiny_196q.py`` overrides only
``pts_bbox_head.num_query`` (like the official 400q config) and ``tiny_196q_6f_128x352.py``
builds on that with more frames, a larger input and nested / ``_delete_`` overrides.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from sparsebev_core.errors import InputError, UsageError
from sparsebev_core.recipe.mmcv_reader import UnsafeConfigError, read_config_file
from sparsebev_core.recipe.official import OfficialConfigError, load_official_config
from sparsebev_core.recipe.official_write import export_official_config
from sparsebev_core.recipe.presets import PRESET_NAMES, get_preset, model_config

CONFIGS = Path(__file__).parent / 'data' / 'official_configs'


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize('name', PRESET_NAMES)
def test_every_preset_round_trips_through_the_official_format(tmp_path, name):
    text = export_official_config(get_preset(name))
    assert 'import' not in text and 'sparsebev_core' not in text.split('\n', 1)[1]
    loaded = load_official_config(write(tmp_path, f'{name}.py', text))
    assert loaded == get_preset(name)


@pytest.mark.parametrize('name', [n for n in PRESET_NAMES if not n.startswith('tiny')])
def test_official_presets_export_no_extension_keys(tmp_path, name):
    text = export_official_config(get_preset(name))
    data = read_config_file(write(tmp_path, f'{name}.py', text))
    head = data['model']['pts_bbox_head']
    assert set(head['transformer']) == {'type', 'embed_dims', 'num_frames', 'num_points',
                                        'num_layers', 'num_levels', 'num_classes', 'code_size',
                                        'pc_range'}
    assert not {'dn_box_noise_scale', 'dn_label_noise_scale', 'dn_weight'} & set(head)
    assert 'use_grid_mask' not in data


def test_hand_written_tiny_config_equals_the_tiny_preset():
    assert load_official_config(CONFIGS / 'tiny_base.py') == dataclasses.replace(
        get_preset('tiny'), name='tiny_base')


def test_base_chain_two_deep_with_nested_overrides():
    middle = load_official_config(CONFIGS / 'tiny_196q.py')
    expected = dataclasses.replace(get_preset('tiny'), name='tiny_196q')
    expected.head.num_queries = 196
    assert middle == expected                       # only num_query changed, the rest merged

    cfg = load_official_config(CONFIGS / 'tiny_196q_6f_128x352.py')
    assert cfg.head.num_queries == 196              # from the middle file
    assert (cfg.head.num_frames, cfg.num_past_frames, cfg.num_frames) == (6, 5, 6)
    assert cfg.input_size == (128, 352) and cfg.original_size == (225, 400)
    assert cfg.backbone.frozen_stages == 0          # nested override ...
    assert cfg.backbone.depth == 18 and cfg.backbone.base_channels == 16   # ... keeps siblings
    assert cfg.channel_order == 'BGR' and cfg.image_mean == (103.53, 116.28, 123.675)
    assert cfg.train.resize_lim == (0.9, 1.3) and cfg.train.flip is False
    assert cfg.head.embed_dims == 64 and cfg.head.num_heads == 4   # tiny_base values survive


def test_variant_config_builds_a_model_whose_shapes_follow_it():
    from sparsebev_core.model.detector import build_model
    cfg = load_official_config(CONFIGS / 'tiny_196q_6f_128x352.py')
    expected_cfg = get_preset('tiny')
    expected_cfg.head.num_queries, expected_cfg.head.num_frames = 196, 6
    expected_cfg.num_past_frames = 5
    shapes = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in build_model(expected_cfg).state_dict().items()}
    assert shapes['pts_bbox_head.init_query_bbox.weight'] == (196, 10)
    tiny = {k: tuple(v.shape) for k, v in build_model(get_preset('tiny')).state_dict().items()}
    assert tiny['pts_bbox_head.init_query_bbox.weight'] == (100, 10)
    assert {k for k in shapes if shapes[k] != tiny[k]}, 'the variant must change some shapes'


def test_delete_replaces_instead_of_merging(tmp_path):
    write(tmp_path, 'base.py', "a = dict(x=1, y=dict(p=1, q=2))\nb = [1, 2]\n")
    child = write(tmp_path, 'child.py', "_base_ = './base.py'\n"
                                         "a = dict(y=dict(_delete_=True, r=3))\nb = [3]\n")
    assert read_config_file(child) == {'a': {'x': 1, 'y': {'r': 3}}, 'b': [3]}


def test_names_of_a_base_file_are_not_visible_in_the_child(tmp_path):
    write(tmp_path, 'base.py', "embed_dims = 256\n")
    child = write(tmp_path, 'child.py', "_base_ = ['./base.py']\nx = embed_dims\n")
    with pytest.raises(UnsafeConfigError, match=r"child.py:2: name 'embed_dims' is not defined"):
        read_config_file(child)


def test_supported_expressions(tmp_path):
    path = write(tmp_path, 'c.py', '"""doc"""\nn = 8\nr = [-51.2, 3.0]\nxs = (list(range(0, 2))'
                 ' + list(range(3, 5)))\nd = dict(a=n - 1, b=n // 2, c=4 * 2 / 3, e=-n, f=r * 2)\n'
                 "s = 'data/' + 'x.pkl'\nf = f'{n}frames'\nt = tuple([1, 2])\nm = {'k': (0.1, 0.2)}\n")
    assert read_config_file(path) == dict(
        n=8, r=[-51.2, 3.0], xs=[0, 1, 3, 4], d=dict(a=7, b=4, c=4 * 2 / 3, e=-8, f=[-51.2, 3.0] * 2),
        s='data/x.pkl', f='8frames', t=(1, 2), m={'k': (0.1, 0.2)})


@pytest.mark.parametrize('source, what', [
    ('import os\n', 'Import'),
    ('from os import path\n', 'ImportFrom'),
    ("x = __import__('os')\n", '__import__'),
    ("x = open('{flag}', 'w')\n", 'open'),
    ("x = dict(a=1).keys()\n", 'calling'),
    ('x = (1).real\n', 'Attribute'),
    ('x = lambda: 1\n', 'Lambda'),
    ('x = [i for i in range(3)]\n', 'ListComp'),
    ('x = [1, 2][0]\n', 'Subscript'),
    ('x = 2 ** 10\n', 'Pow'),
    ("x = [0] * 10 ** 9\n", 'Pow'),
    ('if True:\n    x = 1\n', 'If'),
    ("x = f'{{[1]}}'\n", 'f-string of a list'),
    ("x = 'a' * 200000\n", 'longer than'),
])
def test_constructs_outside_the_subset_are_refused_with_file_and_line(tmp_path, source, what):
    flag = tmp_path / 'side_effect'
    path = write(tmp_path, 'bad.py', 'ok = 1\n' + source.format(flag=flag))
    with pytest.raises(UnsafeConfigError) as err:
        read_config_file(path)
    assert 'bad.py:2' in str(err.value) and what in str(err.value)
    assert isinstance(err.value, InputError)
    assert not flag.exists()                        # nothing was executed


def test_unknown_model_field_is_an_error_naming_it(tmp_path):
    text = export_official_config(get_preset('tiny')).replace(
        "type='SparseBEVTransformer',", "type='SparseBEVTransformer', num_experts=4,")
    with pytest.raises(OfficialConfigError, match=r'model\.pts_bbox_head\.transformer\.num_experts'):
        load_official_config(write(tmp_path, 'tiny.py', text))
    # allow_unknown only downgrades non-model fields
    with pytest.raises(OfficialConfigError, match='num_experts'):
        load_official_config(tmp_path / 'tiny.py', allow_unknown=True)


def test_unsupported_model_value_is_an_error_naming_it(tmp_path):
    text = export_official_config(get_preset('tiny')).replace("gamma=2.0", "gamma=1.5")
    with pytest.raises(OfficialConfigError, match=r'model\.pts_bbox_head\.loss_cls.*gamma'):
        load_official_config(write(tmp_path, 'tiny.py', text))


def test_missing_required_model_field_is_an_error_naming_it(tmp_path):
    text = export_official_config(get_preset('tiny')).replace('num_query=100,', '')
    with pytest.raises(OfficialConfigError, match=r'model\.pts_bbox_head\.num_query is missing'):
        load_official_config(write(tmp_path, 'tiny.py', text))


def test_unknown_non_model_field_is_an_error_or_with_the_flag_a_warning(tmp_path, caplog):
    text = export_official_config(get_preset('tiny')) + "\nmy_schedule = 'fast'\n"
    path = write(tmp_path, 'tiny.py', text)
    with pytest.raises(OfficialConfigError, match='my_schedule'):
        load_official_config(path)
    with caplog.at_level(logging.WARNING):
        cfg = load_official_config(path, allow_unknown=True)
    assert 'my_schedule' in caplog.text
    assert cfg == get_preset('tiny')


def test_inconsistent_frames_are_refused(tmp_path):
    text = export_official_config(get_preset('tiny')).replace('sweeps_num=3', 'sweeps_num=5')
    with pytest.raises(OfficialConfigError, match='num_frames = 4 but the pipeline loads 6 frames'):
        load_official_config(write(tmp_path, 'tiny.py', text))


def test_missing_base_file_and_cycles_are_clear_errors(tmp_path):
    missing = write(tmp_path, 'a.py', "_base_ = ['./nowhere.py']\n")
    with pytest.raises(InputError, match='nowhere.py'):
        load_official_config(missing)
    write(tmp_path, 'b.py', "_base_ = './c.py'\n")
    write(tmp_path, 'c.py', "_base_ = './b.py'\n")
    with pytest.raises(InputError, match='cycle'):
        load_official_config(tmp_path / 'b.py')


def test_model_config_takes_exactly_one_source():
    assert model_config('tiny', None) == get_preset('tiny')
    assert model_config(None, str(CONFIGS / 'tiny_196q.py')).head.num_queries == 196
    with pytest.raises(UsageError):
        model_config(None, None)
    with pytest.raises(UsageError):
        model_config('tiny', str(CONFIGS / 'tiny_196q.py'))
    with pytest.raises(InputError, match='nope'):
        model_config('nope', None)


def test_the_core_never_imports_openmmlab_packages():
    """Only sparsebev_core/integrations/ may import mmengine / mmcv / mmdet / mmdet3d."""
    from imports import top_level_names
    core = Path(__file__).parent.parent / 'sparsebev_core'
    offenders = [f'{path.name}: {name}' for path in core.rglob('*.py')
                 if 'integrations' not in path.relative_to(core).parts
                 for name in top_level_names(path) & {'mmengine', 'mmcv', 'mmdet', 'mmdet3d'}]
    assert not offenders

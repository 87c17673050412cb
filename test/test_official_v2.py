"""SparseBEV++ (official v2) weights and config files: the same model as the official code.

References: the key/shape/dtype manifest of the official v2 ``state_dict()``
(test/parity_v2/official_r50_nuimg_704x256_memory_manifest.json, test/parity_v2/README.md) and
our hand-written copy of the official config ``r50_nuimg_704x256_memory_8x256.py``
(test/data/official_configs/, docs/official_model.md section 13.5).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from sparsebev_cli import cli
from sparsebev_core.checkpoints.convert import guess_preset
from sparsebev_core.checkpoints.official import CheckpointMismatchError, load_checkpoint
from sparsebev_core.model.detector import build_model
from sparsebev_core.recipe.official import load_official_config
from sparsebev_core.recipe.official_write import export_official_config
from sparsebev_core.recipe.presets import get_preset

PARITY_V2 = Path(__file__).parent / 'parity_v2'
MANIFEST = PARITY_V2 / 'official_r50_nuimg_704x256_memory_manifest.json'
OFFICIAL_CONFIG = Path(__file__).parent / 'data' / 'official_configs' / 'r50_nuimg_704x256_memory_8x256.py'
PRESET = 'r50_nuimg_704x256_memory'


def shapes(model: torch.nn.Module) -> dict[str, tuple[list[int], str]]:
    return {k: (list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}


@pytest.fixture(scope='module')
def manifest() -> list[list]:
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope='module')
def official_state(manifest) -> dict[str, torch.Tensor]:
    """Official-looking v2 weights: the parity fixture's deterministic fill of the manifest."""
    spec = importlib.util.spec_from_file_location('parity_v2_fill', PARITY_V2 / 'fill_v2.py')
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    return fill.fill_state_dict(manifest, seed=0)


def test_state_dict_names_shapes_and_order_equal_the_official_v2_manifest(manifest):
    ours = build_model(get_preset(PRESET)).state_dict()
    assert {k: (list(v.shape), str(v.dtype)) for k, v in ours.items()} == \
        {name: (shape, dtype) for name, shape, dtype in manifest}
    for prefix in ('img_backbone.', 'img_neck.', 'pts_bbox_head.'):     # the official order inside
        assert [k for k in ours if k.startswith(prefix)] == \
            [name for name, _, _ in manifest if name.startswith(prefix)], prefix


def test_official_v2_config_file_and_the_preset_build_the_same_model():
    cfg = load_official_config(OFFICIAL_CONFIG)
    assert cfg.head.memory is not None and cfg.head.num_frames == 1 and cfg.num_frames == 1
    assert cfg == dataclasses.replace(get_preset(PRESET), name=cfg.name)
    assert shapes(build_model(cfg)) == shapes(build_model(get_preset(PRESET)))


def test_memory_config_fields_are_read_and_an_unsupported_interval_is_refused(tmp_path):
    text = OFFICIAL_CONFIG.read_text()
    changed = tmp_path / 'longer_memory.py'
    changed.write_text(text.replace('memory_len=1024', 'memory_len=2048')
                       .replace('num_history=500', 'num_history=300'))
    cfg = load_official_config(changed)
    assert (cfg.head.memory.memory_len, cfg.head.memory.num_propagated) == (2048, 300)
    model = build_model(cfg)
    assert model.pts_bbox_head.padding_bbox.weight.shape == (300, 10)
    assert model.pts_bbox_head.transformer.decoder.decoder_layer.cross_attn.cross_dist.shape == (1, 1, 2048)
    every_other = tmp_path / 'every_other_frame.py'
    every_other.write_text(text.replace('len_per_frame=256, interval=1', 'len_per_frame=256, interval=2'))
    with pytest.raises(Exception, match=r'memory_config\.interval = 2 is not supported'):
        load_official_config(every_other)


def test_the_streaming_segments_per_scene_are_read_and_written(tmp_path):
    text = OFFICIAL_CONFIG.read_text()
    assert get_preset(PRESET).train.seq_split_num == 2
    three = tmp_path / 'three_segments.py'
    three.write_text(text.replace('seq_split_num=2,', 'seq_split_num=3,'))
    cfg = load_official_config(three)
    assert cfg.train.seq_split_num == 3 and not cfg.train.lr_by_epoch
    from sparsebev_core.recipe.mmcv_reader import read_config_file
    written = tmp_path / 'written.py'
    written.write_text(export_official_config(cfg))
    assert read_config_file(written)['data']['train']['seq_split_num'] == 3
    every_frame = tmp_path / 'every_frame.py'
    every_frame.write_text(text.replace('seq_split_num=2,', "seq_split_num='all',"))
    with pytest.raises(Exception, match="seq_split_num = 'all'"):
        load_official_config(every_frame)


def test_official_v2_checkpoint_loads_strictly_and_converts_both_ways(official_state, manifest,
                                                                      tmp_path, capsys):
    official = tmp_path / 'official_v2.pth'
    torch.save({'meta': {}, 'state_dict': official_state}, official)
    assert guess_preset(official_state) == PRESET
    model = build_model(get_preset(PRESET))
    load_checkpoint(model, official)                                   # strict
    for key, value in official_state.items():
        assert torch.equal(model.state_dict()[key], value), key

    ours = tmp_path / 'ours.pth'
    assert cli.main(['convert-checkpoint', str(official), str(ours)]) == 0   # preset guessed
    back = tmp_path / 'back_to_official.pth'
    assert cli.main(['convert-checkpoint', str(ours), str(back), '--to', 'official',
                     '--config', str(OFFICIAL_CONFIG)]) == 0, capsys.readouterr()
    written = torch.load(back, map_location='cpu', weights_only=True)
    assert set(written) == {'meta', 'state_dict'}
    assert [k for k in written['state_dict'] if k.startswith('pts_bbox_head.')] == \
        [name for name, _, _ in manifest if name.startswith('pts_bbox_head.')]
    for key, value in official_state.items():
        assert torch.equal(written['state_dict'][key], value), key
    embedded = tmp_path / 'embedded.py'
    embedded.write_text(written['meta']['config'])
    assert load_official_config(embedded) == dataclasses.replace(get_preset(PRESET), name='embedded')


def test_a_v1_checkpoint_does_not_load_into_the_v2_model_and_says_why():
    v1 = build_model(get_preset('r50_nuimg_704x256_400q_36ep')).state_dict()
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(build_model(get_preset(PRESET)), v1)
    missing, unexpected = info.value.missing, info.value.unexpected
    assert 'pts_bbox_head.padding_bbox.weight' in missing and 'pts_bbox_head.pc_range' in missing
    assert any('.cross_attn.' in k for k in missing) and any('.norm_temp.' in k for k in missing)
    assert any(k.endswith('position_encoder.0.weight') for k in unexpected)   # the v1 position MLP
    assert '52 missing' in str(info.value)


def test_the_v2_export_is_an_official_v2_config(tmp_path):
    text = export_official_config(get_preset(PRESET))
    path = tmp_path / f'{PRESET}.py'
    path.write_text(text)
    from sparsebev_core.recipe.mmcv_reader import read_config_file
    data = read_config_file(path)
    model = data['model']
    assert model['pts_bbox_head']['memory_config'] == dict(
        num_history=500, max_time_interval=2.0, memory_len=1024, len_per_frame=256, interval=1)
    assert (model['num_frame_head_grads'], model['num_frame_backbone_grads'],
            model['num_frame_losses']) == (1, 1, 1)
    assert model['pts_bbox_head']['num_query'] == 400
    assert model['pts_bbox_head']['transformer']['num_frames'] == 1
    assert data['lr_config']['by_epoch'] is False and data['runner'] == dict(type='IterBasedRunner')
    assert 'sweep_temporal' in data['data']['train']['ann_file'] and data['data']['train']['seq_mode']
    assert not any('Sweeps' in step['type'] for step in data['test_pipeline'])

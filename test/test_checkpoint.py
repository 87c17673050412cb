"""Official checkpoints: strict loading, the version switch, conversion, pretrained backbones."""
from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from sparsebev_cli import cli
from sparsebev_core.checkpoints.convert import guess_preset
from sparsebev_core.checkpoints.official import (CheckpointError, CheckpointMismatchError,
                                                 load_checkpoint)
from sparsebev_core.checkpoints.pretrain import load_pretrained_backbone
from sparsebev_core.errors import InputError
from sparsebev_core.model.backbones.dispatch import BACKBONES, UnknownBackboneError
from sparsebev_core.model.detector import build_model
from sparsebev_core.recipe.presets import PRESET_NAMES, get_preset

MANIFEST = Path(__file__).parent / 'parity' / 'official_r50_nuimg_704x256_manifest.json'


@pytest.fixture(scope='module')
def tiny_state():
    torch.manual_seed(0)
    return OrderedDict((k, v.clone()) for k, v in build_model(get_preset('tiny')).state_dict().items())


def _fresh_tiny():
    torch.manual_seed(1)
    return build_model(get_preset('tiny'))


def _assert_loaded(model, state):
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_r50_state_dict_maps_exactly_onto_official_manifest():
    """The full check (backbone + neck + head): 385 names, shapes and dtypes in order-free equality."""
    manifest = json.loads(MANIFEST.read_text())
    official = {n: (tuple(s), d) for n, s, d in manifest}
    model = build_model(get_preset('r50_nuimg_704x256'))
    ours = {n: (tuple(t.shape), str(t.dtype)) for n, t in model.state_dict().items()}
    assert sorted(set(official) - set(ours)) == [] and sorted(set(ours) - set(official)) == []
    assert ours == official
    assert len(ours) == 385


@pytest.mark.parametrize('layout', ['mmcv_wrapper', 'bare', 'ddp_module_prefix'])
def test_loads_official_layouts(tmp_path, tiny_state, layout):
    if layout == 'mmcv_wrapper':
        obj = dict(meta=dict(epoch=24, config='...'), state_dict=tiny_state)
    elif layout == 'bare':
        obj = tiny_state
    else:
        obj = dict(state_dict=OrderedDict(('module.' + k, v) for k, v in tiny_state.items()))
    path = tmp_path / 'ckpt.pth'
    torch.save(obj, path)
    model = _fresh_tiny()
    report = load_checkpoint(model, path)
    _assert_loaded(model, tiny_state)
    assert report['missing'] == report['unexpected'] == report['mismatched'] == []
    assert report['box_convention'] == 'v1.0.0'


def test_mismatched_checkpoint_names_every_bad_key_and_loads_nothing(tiny_state):
    state = OrderedDict(tiny_state)
    del state['img_neck.fpn_convs.2.conv.bias']
    state['pts_bbox_head.some_extra.weight'] = torch.zeros(3)
    state['pts_bbox_head.init_query_bbox.weight'] = torch.zeros(81, 10)
    model = _fresh_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, dict(state_dict=state))
    message = str(info.value)
    assert 'img_neck.fpn_convs.2.conv.bias' in message
    assert 'pts_bbox_head.some_extra.weight' in message
    assert 'pts_bbox_head.init_query_bbox.weight: [81, 10] vs [100, 10]' in message
    assert info.value.missing == ['img_neck.fpn_convs.2.conv.bias']
    _assert_loaded(model, before)                     # nothing copied


def test_non_strict_load_reports_what_it_skipped(tiny_state):
    state = OrderedDict(tiny_state)
    state['pts_bbox_head.init_query_bbox.weight'] = torch.zeros(81, 10)
    model = _fresh_tiny()
    report = load_checkpoint(model, state, strict=False)
    assert [k for k, _, _ in report['mismatched']] == ['pts_bbox_head.init_query_bbox.weight']
    assert torch.equal(model.img_backbone.conv1.weight, tiny_state['img_backbone.conv1.weight'])


@pytest.mark.parametrize('version, legacy', [('v0.17.1', True), ('v1.0.0', False), (None, False)])
def test_version_key_selects_the_yaw_convention(tiny_state, version, legacy):
    model = _fresh_tiny()
    model.pts_bbox_head.legacy_yaw_convention = not legacy
    obj = dict(state_dict=tiny_state)
    if version is not None:
        obj['version'] = version
    report = load_checkpoint(model, obj)
    assert model.pts_bbox_head.legacy_yaw_convention is legacy
    assert report['box_convention'] == (version or 'v1.0.0')


class _Opaque:                       # a class torch's weights_only unpickler refuses
    pass


def test_file_with_arbitrary_pickles_needs_explicit_permission(tmp_path, tiny_state):
    path = tmp_path / 'pickled.pth'
    torch.save(dict(state_dict=tiny_state, meta=dict(obj=_Opaque())), path)
    with pytest.raises(CheckpointError, match='allow_pickle=True'):
        load_checkpoint(_fresh_tiny(), path)
    model = _fresh_tiny()
    load_checkpoint(model, path, allow_pickle=True)
    _assert_loaded(model, tiny_state)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        load_checkpoint(_fresh_tiny(), tmp_path / 'nope.pth')


def test_pretrained_backbone_renames_backbone_keys_and_ignores_the_rest(tmp_path, tiny_state):
    """nuImages detector file: backbone.* -> img_backbone.*; neck/heads ignored (FPN keeps init)."""
    backbone = {k[len('img_backbone.'):]: v + 1.0 if v.is_floating_point() else v
                for k, v in tiny_state.items() if k.startswith('img_backbone.')}
    detector_file = OrderedDict(('backbone.' + k, v) for k, v in backbone.items())
    detector_file['neck.lateral_convs.0.conv.weight'] = torch.zeros(64, 16, 1, 1)
    detector_file['rpn_head.rpn_conv.weight'] = torch.zeros(4, 4, 3, 3)
    detector_file['roi_head.bbox_head.0.fc_cls.weight'] = torch.zeros(11, 8)
    path = tmp_path / 'cascade_mask_rcnn_nuim.pth'
    torch.save(dict(meta={}, state_dict=detector_file), path)
    model = _fresh_tiny()
    neck_before = model.img_neck.lateral_convs[0].conv.weight.clone()
    report = load_pretrained_backbone(model, path)
    for k, v in backbone.items():
        assert torch.equal(model.img_backbone.state_dict()[k], v), k
    assert torch.equal(model.img_neck.lateral_convs[0].conv.weight, neck_before)
    assert sorted(report['ignored']) == ['neck.lateral_convs.0.conv.weight',
                                         'roi_head.bbox_head.0.fc_cls.weight', 'rpn_head.rpn_conv.weight']
    assert len(report['loaded']) == len(backbone)


def test_pretrained_backbone_with_missing_backbone_keys_is_refused(tiny_state):
    detector_file = OrderedDict(('backbone.' + k[len('img_backbone.'):], v)
                                for k, v in tiny_state.items() if k.startswith('img_backbone.layer'))
    with pytest.raises(CheckpointMismatchError, match='img_backbone.conv1.weight'):
        load_pretrained_backbone(_fresh_tiny(), dict(state_dict=detector_file))


def test_convert_checkpoint_cli_writes_weights_only_file_that_loads_strictly(tmp_path, tiny_state, capsys):
    src = tmp_path / 'official.pth'
    torch.save(dict(meta=dict(epoch=24), state_dict=tiny_state, version='v0.17.1'), src)
    out = tmp_path / 'converted' / 'tiny.pth'
    assert cli.main(['convert-checkpoint', str(src), str(out), '--preset', 'tiny']) == 0
    assert 'verified' in capsys.readouterr().out
    converted = torch.load(out, weights_only=True)
    assert converted['meta']['box_convention'] == 'v0.17.1' and converted['meta']['preset'] == 'tiny'
    model = _fresh_tiny()
    load_checkpoint(model, out)
    _assert_loaded(model, tiny_state)
    assert model.pts_bbox_head.legacy_yaw_convention is True


def test_convert_checkpoint_cli_reports_a_preset_mismatch(tmp_path, tiny_state, capsys):
    src = tmp_path / 'official.pth'
    torch.save(dict(state_dict=tiny_state), src)
    assert cli.main(['convert-checkpoint', str(src), str(tmp_path / 'out.pth'),
                     '--preset', 'r50_nuimg_704x256']) == 1
    out = capsys.readouterr().err                                  # errors go to stderr
    assert 'missing keys' in out and 'wrongly shaped keys' in out
    assert not (tmp_path / 'out.pth').exists()


def test_guess_preset_from_official_shapes():
    manifest = json.loads(MANIFEST.read_text())
    state = {n: torch.empty(s) for n, s, _ in manifest}
    assert guess_preset(state) == 'r50_nuimg_704x256'
    state['pts_bbox_head.init_query_bbox.weight'] = torch.empty(400, 10)
    assert guess_preset(state) == 'r50_nuimg_704x256_400q_36ep'
    state['img_backbone.layer3.22.conv1.weight'] = torch.empty(1)
    assert guess_preset(state) == 'r101_nuimg_1408x512'


@dataclasses.dataclass
class ForeignBackboneConfig:
    """A backbone config type no backbone module serves."""
    depth: int = 18


def test_every_preset_backbone_is_in_the_dispatch_table():
    assert {type(get_preset(n).backbone) for n in PRESET_NAMES} == set(BACKBONES)


def test_unknown_backbone_config_is_a_typed_error_in_build_and_in_pretrain_mapping(tiny_state):
    foreign = dataclasses.replace(get_preset('tiny'), backbone=ForeignBackboneConfig())
    with pytest.raises(UnknownBackboneError, match='ForeignBackboneConfig') as info:
        build_model(foreign)
    assert isinstance(info.value, InputError)
    model = _fresh_tiny()
    model.cfg = foreign                             # a model whose config names no backbone we know
    pretrain = OrderedDict(('backbone.' + k[len('img_backbone.'):], v)
                           for k, v in tiny_state.items() if k.startswith('img_backbone.'))
    with pytest.raises(UnknownBackboneError, match='ForeignBackboneConfig'):
        load_pretrained_backbone(model, pretrain)

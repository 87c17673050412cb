"""``sparsebev convert-checkpoint --to official``: the mmcv wrapper the official code loads.

The reference is the key/shape/dtype manifest of the official r50_nuimg_704x256 checkpoint
(test/parity/official_r50_nuimg_704x256_manifest.json, see test/parity/README.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from sparsebev_cli import cli
from sparsebev_core.checkpoints.official import LEGACY_VERSION, load_checkpoint
from sparsebev_core.recipe.official import load_official_config
from sparsebev_core.recipe.presets import get_preset

MANIFEST = Path(__file__).parent / 'parity' / 'official_r50_nuimg_704x256_manifest.json'
CONFIGS = Path(__file__).parent / 'data' / 'official_configs'


def test_to_official_writes_the_mmcv_wrapper_with_the_official_keys_and_shapes(tmp_path, capsys):
    from sparsebev_core.model.detector import build_model
    ours = tmp_path / 'ours.pth'
    model = build_model(get_preset('r50_nuimg_704x256'))
    torch.save(dict(state_dict=model.state_dict(), version=LEGACY_VERSION), ours)
    out = tmp_path / 'official.pth'
    rc = cli.main(['convert-checkpoint', str(ours), str(out), '--to', 'official',
                   '--preset', 'r50_nuimg_704x256'])
    assert rc == 0, capsys.readouterr().out
    written = torch.load(out, map_location='cpu', weights_only=True)
    assert set(written) == {'meta', 'state_dict', 'version'} and written['version'] == LEGACY_VERSION
    manifest = json.loads(MANIFEST.read_text())
    assert {k: (list(v.shape), str(v.dtype)) for k, v in written['state_dict'].items()} == \
        {name: (shape, dtype) for name, shape, dtype in manifest}       # mmcv loads by name
    assert written['meta']['CLASSES'] == list(get_preset('r50_nuimg_704x256').class_names)
    config = tmp_path / 'r50_nuimg_704x256.py'                 # the embedded config reads back
    config.write_text(written['meta']['config'])
    assert load_official_config(config) == get_preset('r50_nuimg_704x256')
    for key, value in model.state_dict().items():
        assert torch.equal(written['state_dict'][key], value), key
    assert load_checkpoint(build_model(get_preset('r50_nuimg_704x256')), out)['box_convention'] == LEGACY_VERSION


def test_to_official_with_a_config_file_and_a_mismatching_checkpoint(tmp_path, capsys):
    from sparsebev_core.model.detector import build_model
    ours = tmp_path / 'tiny.pth'
    torch.save(dict(state_dict=build_model(get_preset('tiny')).state_dict()), ours)
    out = tmp_path / 'official.pth'
    # the 196-query config does not fit the 100-query checkpoint: a clear error, nothing written
    rc = cli.main(['convert-checkpoint', str(ours), str(out), '--to', 'official',
                   '--config', str(CONFIGS / 'tiny_196q.py')])
    assert rc == 1 and 'init_query_bbox' in capsys.readouterr().err and not out.exists()
    rc = cli.main(['convert-checkpoint', str(ours), str(out), '--to', 'official',
                   '--config', str(CONFIGS / 'tiny_base.py')])
    assert rc == 0
    written = torch.load(out, map_location='cpu', weights_only=True)
    assert set(written) == {'meta', 'state_dict'}
    assert written['meta']['preset'] == 'tiny_base'


def test_config_and_preset_together_or_a_bad_config_are_clear_errors(tmp_path, capsys):
    args = ['convert-checkpoint', str(tmp_path / 'in.pth'), str(tmp_path / 'out.pth'), '--to', 'official']
    assert cli.main(args + ['--preset', 'tiny', '--config', str(CONFIGS / 'tiny_base.py')]) == 2
    assert 'not allowed with argument --preset' in capsys.readouterr().err   # as every command
    bad = tmp_path / 'bad.py'
    bad.write_text("import os\n")
    assert cli.main(args + ['--config', str(bad)]) == 1
    assert 'bad.py:1' in capsys.readouterr().err and not (tmp_path / 'out.pth').exists()

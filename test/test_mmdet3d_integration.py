"""The mmdet3d route (sparsebev_core/integrations/mmdet3d.py), with the real mmengine.

Where mmdet3d itself is installed (``pip install --no-deps mmdet3d mmdet mmcv-lite``, see
docs/mmdet3d.md) the tests use its real ``MODELS`` registry; mmdet3d's own model modules
(``mmdet3d.models``, imported lazily by that registry) need mmcv's compiled ops and numba,
which a CPU machine without the compiled mmcv does not have, so that lazy import is switched
off for the test (our builders need none of it). Without mmdet3d the tests use an mmengine
registry with the ``mmdet3d`` scope, which is what mmdet3d's registry is.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

mmengine = pytest.importorskip('mmengine', reason='install the mmdet3d extra: pip install -e ".[mmdet3d]"')

from sparsebev_core.checkpoints.official import load_checkpoint  # noqa: E402
from sparsebev_core.errors import MissingDependencyError  # noqa: E402
from sparsebev_core.integrations import mmdet3d as integration  # noqa: E402
from sparsebev_core.model.detector import SparseBEV, build_backbone, build_model  # noqa: E402
from sparsebev_core.recipe.backbones import EVA02Config, VoVNetConfig  # noqa: E402
from sparsebev_core.recipe.config import ModelConfig  # noqa: E402
from sparsebev_core.recipe.mmcv_reader import read_config_file  # noqa: E402
from sparsebev_core.recipe.official import OfficialConfigError, load_official_config  # noqa: E402
from sparsebev_core.recipe.official_backbones import EVA02_DEFAULTS  # noqa: E402

CONFIGS = Path(__file__).parent / 'data' / 'official_configs'
CONFIG_NAMES = ('tiny_base.py', 'tiny_196q.py', 'tiny_196q_6f_128x352.py')


def mmdet3d_available() -> bool:
    try:
        import mmdet3d.registry  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def models(monkeypatch):
    """mmdet3d's MODELS registry (real one where importable), with our builders registered."""
    if mmdet3d_available():
        from mmdet3d.registry import MODELS
        monkeypatch.setattr(MODELS, '_imported', True)   # mmdet3d.models needs compiled mmcv ops
    else:
        from mmengine.registry import MODELS as ROOT, Registry
        MODELS = ROOT._children.get('mmdet3d') or Registry('model', parent=ROOT, scope='mmdet3d')
    return integration.register_sparsebev(MODELS)


def tiny_inputs(cfg: ModelConfig, seed: int = 0):
    """Images 0..255, a forward-looking pinhole rig at network-input pixels, 0.5 s steps."""
    g = torch.Generator().manual_seed(seed)
    n = cfg.num_frames * 6
    h, w = cfg.input_size
    images = torch.rand(1, n, 3, h, w, generator=g) * 255
    cam = torch.tensor([[w / 2, w / 2, 0.0, 0.0], [0.0, h / 2, -h / 2, 0.0],
                        [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    timestamps = 1.5e9 - 0.5 * torch.arange(cfg.num_frames, dtype=torch.float64).repeat_interleave(6)
    return images, cam.expand(1, n, 4, 4).clone(), timestamps[None]


@pytest.mark.skipif(not mmdet3d_available(), reason='mmdet3d not installed (see docs/mmdet3d.md)')
def test_importing_the_module_registers_into_the_real_mmdet3d_registry():
    from mmdet3d.registry import MODELS
    import sparsebev_core.integrations.mmdet3d  # noqa: F401
    for name in integration.REGISTERED_NAMES:
        assert name in MODELS.module_dict, name


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_mmengine_reads_our_test_configs_as_our_reader_does(name):
    """Our restricted reader's ``_base_`` / ``_delete_`` merge equals mmengine's own."""
    theirs = mmengine.Config.fromfile(str(CONFIGS / name)).to_dict()
    ours = read_config_file(CONFIGS / name)
    for key in ('model', 'ida_aug_conf', 'optimizer', 'data', 'total_epochs'):
        assert theirs[key] == ours[key], key


def test_custom_imports_in_a_config_registers_our_modules(tmp_path, monkeypatch):
    module = 'sparsebev_core.integrations.mmdet3d'
    monkeypatch.delitem(sys.modules, module)                     # so that the config imports it
    real = mmdet3d_available()
    if real:
        from mmdet3d.registry import MODELS
        for name in integration.REGISTERED_NAMES:
            MODELS.module_dict.pop(name, None)
    config = tmp_path / 'with_imports.py'
    config.write_text(f"_base_ = [{str(CONFIGS / 'tiny_196q.py')!r}]\n"
                      f"custom_imports = dict(imports=[{module!r}], allow_failed_imports=False)\n")
    cfg = mmengine.Config.fromfile(str(config))
    assert module in sys.modules and sys.modules[module] is not integration
    if real:
        assert all(name in MODELS.module_dict for name in integration.REGISTERED_NAMES)
        monkeypatch.setattr(MODELS, '_imported', True)
        assert isinstance(MODELS.build(cfg.model), SparseBEV)
    assert load_official_config(config).head.num_queries == 196   # custom_imports is accepted


def test_registry_build_equals_the_registry_free_build(models, tmp_path):
    path = CONFIGS / 'tiny_196q.py'
    cfg = load_official_config(path)
    model_dict = mmengine.Config.fromfile(str(path)).model
    torch.manual_seed(0)
    built = models.build(copy.deepcopy(model_dict))
    torch.manual_seed(0)
    ours = build_model(cfg)
    assert type(built) is SparseBEV
    assert {k: v.shape for k, v in built.state_dict().items()} == \
        {k: v.shape for k, v in ours.state_dict().items()}
    checkpoint = tmp_path / 'tiny_196q.pth'
    torch.manual_seed(1)
    torch.save(dict(state_dict=build_model(cfg).state_dict()), checkpoint)   # other weights
    for model in (built, ours):
        load_checkpoint(model, checkpoint)                       # our loader on the built model
        model.eval()
    images, lidar2img, timestamps = tiny_inputs(cfg)
    with torch.no_grad():
        out_built = built(images, lidar2img, timestamps)
        out_ours = ours(images, lidar2img, timestamps)
    for key in ('all_cls_scores', 'all_bbox_preds'):
        assert out_built[key].shape[2] == 196
        assert torch.equal(out_built[key], out_ours[key]), key


def test_head_and_backbone_types_build_our_modules(models):
    model_dict = read_config_file(CONFIGS / 'tiny_base.py')['model']
    head = models.build(dict(model_dict['pts_bbox_head']))
    assert set(head.state_dict()) == set(build_model(load_official_config(CONFIGS / 'tiny_base.py'))
                                         .pts_bbox_head.state_dict())
    small_vov = dict(stem_channels=(8, 8, 16), stage_conv_channels=(8, 8, 8, 8),
                     stage_out_channels=(16, 16, 16, 16), blocks_per_stage=(1, 1, 1, 1),
                     layers_per_block=2)
    vov = models.build(dict(type='VoVNet', spec_name='V-99-eSE',
                            out_features=['stage2', 'stage3', 'stage4', 'stage5'], **small_vov))
    expected = build_backbone(ModelConfig(name='v', backbone=VoVNetConfig(
        frozen_stages=-1, norm_eval=True, with_cp=False, **small_vov)))
    assert {k: v.shape for k, v in vov.state_dict().items()} == \
        {k: v.shape for k, v in expected.state_dict().items()}
    small_eva = dict(img_size=64, real_img_size=(32, 64), embed_dim=32, depth=2, num_heads=2,
                     window_size=2, window_block_indexes=(0,), fpn_out_channels=16)
    eva = models.build(dict(type='EVA02', **small_eva))
    expected = build_backbone(ModelConfig(name='e', backbone=EVA02Config(
        **{**EVA02_DEFAULTS, **small_eva})))
    assert {k: v.shape for k, v in eva.state_dict().items()} == \
        {k: v.shape for k, v in expected.state_dict().items()}


def test_unknown_model_field_through_the_registry_is_an_error_naming_it(models):
    model_dict = read_config_file(CONFIGS / 'tiny_base.py')['model']
    model_dict['pts_bbox_head']['transformer']['num_experts'] = 4
    with pytest.raises(OfficialConfigError, match=r'model\.pts_bbox_head\.transformer\.num_experts'):
        models.build(model_dict)


def test_register_without_mmdet3d_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mmdet3d.registry', None)     # import now fails
    with pytest.raises(MissingDependencyError, match=r'sparsebev_ros\[mmdet3d\]'):
        integration.register_sparsebev()

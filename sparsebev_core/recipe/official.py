"""Official SparseBEV config files <-> ``ModelConfig``.

``load_official_config(path)`` reads an official-style config (``configs/*.py`` of the
official repository, or your own variant of one) with the restricted reader of
``config_file.py`` and maps every model-relevant field onto a ``ModelConfig``;
``export_official_config(cfg)`` writes one back, so that loading the export of a preset
gives the preset again. ``loading.model_config(preset, config_file)`` is what the command
line calls for ``--preset NAME`` / ``--config FILE``.

Rules (docs/official_config.md has the field table):

* A field of ``model=dict(...)`` that we do not know is an error naming it, always. A model
  field whose value our implementation has built in (losses, code size, ResNet style, ...)
  must have that value or it is an error too.
* Unknown non-model fields (top-level names, pipeline steps, optimizer keys) are errors
  too, unless ``allow_unknown=True`` downgrades them to warnings.
* Missing fields of mmdet's own modules (ResNet, FPN) take mmdet's defaults; the SparseBEV
  fields that decide the architecture (``num_query``, ``embed_dims``, ``num_frames``, ...)
  are required.
* Fields of our configs that the official code has no argument for (``num_groups``,
  ``num_heads``, ``ffn_dims`` ... of the ``tiny`` preset) are written as extra keys of
  ``pts_bbox_head.transformer`` / ``pts_bbox_head`` only when they differ from the official
  values, so the export of every official preset is a plain official config.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

from .config import (EVA02Config, FPNConfig, HeadConfig, ModelConfig, ResNetConfig, TrainConfig,
                     VoVNetConfig)
from .mmcv_reader import ConfigFileError, read_config_file_with_helpers

log = logging.getLogger(__name__)

PAD_SIZE_DIVISOR = 32            # official img_pad_cfg; the detector pads to this multiple
DATASET_ROOT = 'data/nuscenes/'

# Values our implementation has built in; a config asking for others is refused.
FIXED_HEAD_FIELDS: dict[str, Any] = {'code_size': 10, 'sync_cls_avg_factor': True}
FIXED_LOSSES: dict[str, dict[str, Any]] = {
    'loss_cls': dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0),
    'loss_bbox': dict(type='L1Loss', loss_weight=0.25),
    'loss_iou': dict(type='GIoULoss', loss_weight=0.0),
}
FIXED_ASSIGNER: dict[str, Any] = dict(
    type='HungarianAssigner3D', cls_cost=dict(type='FocalLossCost', weight=2.0),
    reg_cost=dict(type='BBox3DL1Cost', weight=0.25), iou_cost=dict(type='IoUCost', weight=0.0))

# Head fields the official code has no argument for: (config key, section) -> HeadConfig field.
TRANSFORMER_EXTRAS = ('num_groups', 'num_heads', 'ffn_dims', 'mixing_out_points', 'dropout')
HEAD_EXTRAS = ('dn_box_noise_scale', 'dn_label_noise_scale', 'dn_weight')

SWEEP_LOADERS = {'LoadMultiViewImageFromMultiSweeps': 'past',
                 'LoadMultiViewImageFromMultiSweepsFuture': 'future_blocked',
                 'LoadMultiViewImageFromMultiSweepsFutureInterleave': 'future_interleaved'}
LAYOUT_LOADERS = {layout: name for name, layout in SWEEP_LOADERS.items()}
# pipeline steps we know and read nothing from (data loading / formatting)
PLAIN_PIPELINE_STEPS = frozenset({
    'LoadMultiViewImageFromFiles', 'LoadAnnotations3D', 'ObjectRangeFilter', 'ObjectNameFilter',
    'RandomTransformImage', 'DefaultFormatBundle3D', 'Collect3D', 'MultiScaleFlipAug3D'})
# top-level names of the official configs that hold nothing for ModelConfig / TrainConfig
# (helper variables whose values reach the model through ``model``, logging, data paths)
PLAIN_TOP_LEVEL = frozenset({
    'dataset_type', 'dataset_root', 'data_root', 'input_modality', 'point_cloud_range',
    'voxel_size', 'embed_dims', 'num_layers', 'num_query', 'num_frames', 'num_levels',
    'num_points', 'img_backbone', 'img_neck', 'img_norm_cfg', 'revise_keys', 'resume_from',
    'checkpoint_config', 'log_config', 'eval_config', 'debug', 'custom_imports', 'dist_params',
    'log_level', 'work_dir', 'workflow', 'gpu_ids', 'seed', 'find_unused_parameters'})


class OfficialConfigError(ConfigFileError):
    """An official config names a field we do not know, lacks one, or asks for the unsupported."""


_REQUIRED = object()


class _Section:
    """One dict of a config being read: hands out typed values, remembers the keys used."""

    def __init__(self, data: dict, where: str, model: bool, unknown: list[str]):
        if not isinstance(data, dict):
            raise OfficialConfigError(f'{where} must be a dict, got {type(data).__name__}')
        self.data, self.where, self.model, self.unknown = data, where, model, unknown
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = _REQUIRED) -> Any:
        """The value as written (``default`` when absent; required when no default)."""
        self.used.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise OfficialConfigError(f'{self.name(key)} is missing (required)')
        return default

    def get(self, key: str, like: Any, default: Any = _REQUIRED) -> Any:
        """The value converted to the type of ``like`` (int, float, bool, str, tuple of those)."""
        value = self.raw(key, default)
        return convert_like(like, value, self.name(key))

    def fixed(self, key: str, supported: Any) -> None:
        """An optional field whose only supported value is ``supported``."""
        if key in self.data and not _same(self.raw(key), supported):
            raise OfficialConfigError(
                f'{self.name(key)} = {self.data[key]!r} is not supported: this implementation '
                f'has {supported!r} built in')
        self.used.add(key)

    def section(self, key: str, default: Any = _REQUIRED) -> '_Section | None':
        value = self.raw(key, default)
        return None if value is None else _Section(value, self.name(key), self.model, self.unknown)

    def name(self, key: str) -> str:
        """The dotted name of ``key`` in this section, for messages."""
        return f'{self.where}.{key}' if self.where else key

    def finish(self) -> None:
        """Unknown keys: an error for model fields, collected for the others."""
        extra = [k for k in self.data if k not in self.used]
        if not extra:
            return
        names = ', '.join(self.name(k) for k in extra)
        if self.model:
            raise OfficialConfigError(f'unknown model field(s): {names} (not part of the SparseBEV '
                                      f'model this implementation builds)')
        self.unknown.extend(self.name(k) for k in extra)


def _same(a: Any, b: Any) -> bool:
    """Equality that treats lists and tuples alike (configs mix them) and bools apart from ints."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def convert_like(like: Any, value: Any, where: str) -> Any:
    """``value`` converted to the type of ``like``; a clear error naming ``where`` otherwise."""
    def bad() -> OfficialConfigError:
        return OfficialConfigError(f'{where} = {value!r}: expected a value like {like!r}')
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise bad()
        return value
    if isinstance(like, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if isinstance(like, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if isinstance(like, str):
        if not isinstance(value, str):
            raise bad()
        return value
    if isinstance(like, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad()
        if not like:
            return tuple(value)
        return tuple(convert_like(like[0], v, f'{where}[{i}]') for i, v in enumerate(value))
    raise bad()


# ============================================================================ reading
def _read_dataclass(section: _Section, cls: type, official_defaults: dict[str, Any],
                    required: tuple[str, ...]) -> Any:
    """A backbone dataclass from same-named config keys.

    Absent keys take the official module's constructor defaults (``official_defaults``),
    then the dataclass defaults; ``required`` keys must be present.
    """
    base = dataclasses.replace(cls(), **official_defaults)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in required:
            section.raw(f.name)                       # raises when missing
        if not section.has(f.name):
            continue
        default = getattr(base, f.name)
        like = default if not isinstance(default, tuple) or default else ()
        values[f.name] = section.get(f.name, like)
    return dataclasses.replace(base, **values)


# constructor defaults of the official VoVNet / EVA02 modules (for keys a config leaves out)
VOVNET_DEFAULTS: dict[str, Any] = dict(frozen_stages=-1, norm_eval=True, with_cp=False)
EVA02_DEFAULTS: dict[str, Any] = dict(
    img_size=1024, real_img_size=(256, 704), patch_size=16, in_chans=3, embed_dim=768, depth=12,
    num_heads=12, mlp_ratio=4 * 2 / 3, qkv_bias=True, drop_path_rate=0.0, use_abs_pos=True,
    pt_hw_seq_len=16, window_size=0, window_block_indexes=(), use_act_checkpoint=False,
    pretrain_img_size=224, frozen_blocks=-1, fpn_out_channels=256,
    fpn_scale_factors=(4.0, 2.0, 1.0, 0.5), fpn_top_block=False)
VOVNET_SPEC_NAME = 'V-99-eSE'                 # the one VoVNet variant we build
EVA02_FPN_SQUARE_PAD = 1600                   # detectron2 padding hint of the official config; unused
EVA02_FIXED: dict[str, Any] = dict(residual_block_indexes=(), intp_freq=True, fpn_norm='LN',
                                   pretrain_use_cls_token=True, out_feature='last_feat',
                                   fpn_in_feature='last_feat')


def _pretrained_of(section: _Section) -> str | None:
    """``pretrained='...'`` or ``init_cfg=dict(type='Pretrained', checkpoint='...')``."""
    path = section.raw('pretrained', None)
    init = section.section('init_cfg', None)
    if init is not None:
        init.fixed('type', 'Pretrained')
        path = init.get('checkpoint', '')
        init.finish()
    if path is not None and not isinstance(path, str):
        raise OfficialConfigError(f'{section.where}.pretrained = {path!r}: expected a file path')
    return path


def _read_backbone(b: _Section) -> tuple[object, str | None]:
    """(ResNetConfig | VoVNetConfig | EVA02Config, pretrained path or None)."""
    kind = b.raw('type')
    if kind == 'ResNet':                              # mmdet ResNet: its defaults apply
        b.fixed('num_stages', 4)
        b.fixed('style', 'pytorch')
        norm = b.section('norm_cfg', None)
        if norm is not None:
            if norm.raw('type', 'BN') not in ('BN', 'BN2d'):
                raise OfficialConfigError(f'{norm.where}.type = {norm.data["type"]!r}: only BatchNorm (BN, BN2d) is supported')
            norm.fixed('requires_grad', True)
            norm.finish()
        cfg = ResNetConfig(depth=b.get('depth', 0), base_channels=b.get('base_channels', 0, 64),
                           out_indices=b.get('out_indices', (0,), (0, 1, 2, 3)),
                           frozen_stages=b.get('frozen_stages', 0, -1),
                           norm_eval=b.get('norm_eval', False, False),
                           with_cp=b.get('with_cp', False, False))
    elif kind == 'VoVNet':
        if b.raw('spec_name') != VOVNET_SPEC_NAME:
            raise OfficialConfigError(f'{b.name("spec_name")} = {b.data["spec_name"]!r} is not '
                                      f'supported: this implementation builds {VOVNET_SPEC_NAME!r}')
        b.fixed('input_ch', 3)
        cfg = _read_dataclass(b, VoVNetConfig, VOVNET_DEFAULTS, required=('out_features',))
    elif kind == 'EVA02':
        for key, value in EVA02_FIXED.items():
            b.fixed(key, value)
        b.raw('xattn', None)                          # xformers attention: same result, not used
        b.raw('fpn_square_pad', None)                 # a padding hint; the input size is fixed
        cfg = _read_dataclass(b, EVA02Config, EVA02_DEFAULTS, required=())
    else:
        raise OfficialConfigError(f'{b.where}.type = {kind!r}: supported backbones are ResNet, '
                                  f'VoVNet (V-99-eSE) and EVA02')
    pretrained = _pretrained_of(b)
    b.finish()
    return cfg, pretrained


def _read_neck(n: _Section) -> FPNConfig:
    n.fixed('type', 'FPN')
    n.fixed('start_level', 0)
    n.fixed('add_extra_convs', False)
    cfg = FPNConfig(in_channels=n.get('in_channels', (0,)), out_channels=n.get('out_channels', 0),
                    num_outs=n.get('num_outs', 0))
    n.finish()
    return cfg


def _read_head(h: _Section) -> HeadConfig:
    d = HeadConfig()
    h.fixed('type', 'SparseBEVHead')
    for key, value in FIXED_HEAD_FIELDS.items():
        h.fixed(key, value)
    for key, loss in FIXED_LOSSES.items():
        h.fixed(key, loss)
    h.raw('positional_encoding', None)                # built but never used by the official head
    num_classes = h.get('num_classes', 0)
    t = h.section('transformer')
    t.fixed('type', 'SparseBEVTransformer')
    t.fixed('code_size', 10)
    head = HeadConfig(
        num_classes=num_classes, embed_dims=t.get('embed_dims', 0),
        num_queries=h.get('num_query', 0), num_frames=t.get('num_frames', 0),
        num_points=t.get('num_points', 0), num_levels=t.get('num_levels', 0),
        num_layers=t.get('num_layers', 0), pc_range=t.get('pc_range', (0.0,)),
        code_weights=h.get('code_weights', (0.0,), d.code_weights),
        query_denoising=h.get('query_denoising', False, d.query_denoising),
        dn_groups=h.get('query_denoising_groups', 0, d.dn_groups),
        **{k: t.get(k, getattr(d, k)) for k in TRANSFORMER_EXTRAS if t.has(k)},
        **{k: h.get(k, getattr(d, k)) for k in HEAD_EXTRAS if h.has(k)})
    if t.get('num_classes', 0, num_classes) != num_classes:
        raise OfficialConfigError(f'{t.where}.num_classes = {t.data["num_classes"]} differs from '
                                  f'{h.where}.num_classes = {num_classes}')
    in_channels = h.get('in_channels', 0, head.embed_dims)
    if in_channels != head.embed_dims:
        raise OfficialConfigError(f'{h.where}.in_channels = {in_channels} must equal '
                                  f'{t.where}.embed_dims = {head.embed_dims}')
    t.finish()
    coder = h.section('bbox_coder', None)
    if coder is not None:
        coder.fixed('type', 'NMSFreeCoder')
        coder.raw('voxel_size', None)                 # unused by the coder
        head.post_center_range = coder.get('post_center_range', (0.0,), d.post_center_range)
        head.max_num = coder.get('max_num', 0, d.max_num)
        head.score_threshold = coder.get('score_threshold', 0.0, d.score_threshold)
        for key, ours in (('pc_range', head.pc_range), ('num_classes', num_classes)):
            if coder.has(key) and not _same(coder.raw(key), ours):
                raise OfficialConfigError(f'{coder.where}.{key} = {coder.data[key]!r} differs from '
                                          f'the transformer\'s {ours!r}')
        coder.finish()
    h.finish()
    return head


def _read_train_cfg(tc: _Section) -> None:
    pts = tc.section('pts', None)
    if pts is not None:
        for key in ('grid_size', 'voxel_size', 'point_cloud_range', 'out_size_factor'):
            pts.raw(key, None)                        # unused by the SparseBEV head
        pts.fixed('assigner', FIXED_ASSIGNER)
        pts.finish()
    tc.finish()


def read_model_dict(model: dict, where: str = 'model', into: ModelConfig | None = None
                    ) -> ModelConfig:
    """``ModelConfig`` fields from an official ``model=dict(type='SparseBEV', ...)``.

    Fields outside the model dict (frames layout, input size, training recipe) keep the
    values of ``into`` (default: a fresh ``ModelConfig`` with ``num_past_frames = T - 1``).
    """
    m = _Section(model, where, model=True, unknown=[])
    cfg = into if into is not None else ModelConfig(name='official')
    m.fixed('type', 'SparseBEV')
    aug = m.section('data_aug', None)
    if aug is not None:
        cfg.train.photometric = aug.get('img_color_aug', False, cfg.train.photometric)
        norm = aug.section('img_norm_cfg', None)
        if norm is not None:
            cfg.image_mean = norm.get('mean', (0.0,))
            cfg.image_std = norm.get('std', (0.0,))
            cfg.channel_order = 'RGB' if norm.get('to_rgb', False, True) else 'BGR'
            norm.finish()
        pad = aug.section('img_pad_cfg', None)
        if pad is not None:
            pad.fixed('size_divisor', PAD_SIZE_DIVISOR)
            pad.finish()
        aug.finish()
    cfg.train.stop_prev_grad = m.get('stop_prev_grad', 0, cfg.train.stop_prev_grad)
    cfg.backbone, pretrained = _read_backbone(m.section('img_backbone'))
    if pretrained is not None:
        cfg.train.pretrained = pretrained
    neck = m.section('img_neck', None)
    cfg.neck = _read_neck(neck) if neck is not None else None
    cfg.head = _read_head(m.section('pts_bbox_head'))
    train_cfg = m.section('train_cfg', None)
    if train_cfg is not None:
        _read_train_cfg(train_cfg)
    m.raw('test_cfg', None)
    m.finish()
    if into is None:
        cfg.num_past_frames = cfg.head.num_frames - 1
    return cfg


def read_head_dict(head: dict, where: str = 'pts_bbox_head') -> HeadConfig:
    """``HeadConfig`` from an official ``pts_bbox_head=dict(type='SparseBEVHead', ...)``."""
    return _read_head(_Section(head, where, model=True, unknown=[]))


def read_backbone_dict(backbone: dict, where: str = 'img_backbone') -> tuple[object, str | None]:
    """(backbone config, pretrained path or None) from an official ``img_backbone=dict(...)``."""
    return _read_backbone(_Section(backbone, where, model=True, unknown=[]))


def _read_pipeline(steps: Any, where: str, unknown: list[str], cfg: ModelConfig,
                   frames: dict[str, Any]) -> None:
    if not isinstance(steps, (list, tuple)):
        raise OfficialConfigError(f'{where} must be a list of steps')
    for i, raw in enumerate(steps):
        step = _Section(raw, f'{where}[{i}]', model=False, unknown=unknown)
        kind = step.raw('type', None)
        if kind in SWEEP_LOADERS:
            layout = SWEEP_LOADERS[kind]
            if layout == 'past':
                past, future = step.get('sweeps_num', 0), 0
            else:
                past, future = step.get('prev_sweeps_num', 0), step.get('next_sweeps_num', 0)
            step.raw('test_mode', None)
            seen = frames.setdefault('layout', (layout, past, future, step.where))
            if seen[:3] != (layout, past, future):
                raise OfficialConfigError(f'{step.where} loads frames as {kind}({past}, {future}) '
                                          f'but {seen[3]} differently')
        elif kind == 'GlobalRotScaleTransImage':
            cfg.train.rot_range = step.get('rot_range', (0.0,), cfg.train.rot_range)
            cfg.train.scale_range = step.get('scale_ratio_range', (0.0,), cfg.train.scale_range)
            step.fixed('translation_std', [0, 0, 0])
        elif kind in PLAIN_PIPELINE_STEPS:
            step.used.update(step.data)
        else:
            unknown.append(f'{step.where}.type = {kind!r} (unknown pipeline step)')
            step.used.update(step.data)
        if kind == 'MultiScaleFlipAug3D':
            _read_pipeline(raw.get('transforms', []), f'{step.where}.transforms', unknown, cfg, frames)
        step.finish()


def _split_of(ann_file: Any, where: str, unknown: list[str]) -> str | None:
    match = re.search(r'infos_(\w+?)(_sweep)?\.pkl$', str(ann_file))
    if match is None:
        unknown.append(f'{where} = {ann_file!r} (not a nuscenes_infos_<split>[_sweep].pkl file)')
        return None
    return match.group(1)


def _read_top_level(top: _Section, cfg: ModelConfig) -> None:
    """The training recipe and data fields outside ``model``."""
    t = cfg.train
    if top.has('class_names'):
        cfg.class_names = top.get('class_names', ('',))
    aug = top.section('ida_aug_conf', None)
    if aug is not None:
        t.resize_lim = aug.get('resize_lim', (0.0,), t.resize_lim)
        cfg.input_size = aug.get('final_dim', (0,), cfg.input_size)
        cfg.original_size = (aug.get('H', 0, cfg.original_size[0]), aug.get('W', 0, cfg.original_size[1]))
        aug.fixed('bot_pct_lim', (0.0, 0.0))
        aug.fixed('rot_lim', (0.0, 0.0))
        t.flip = aug.get('rand_flip', False, t.flip)
        aug.finish()
    frames: dict[str, Any] = {}
    for key in ('train_pipeline', 'test_pipeline'):
        if top.has(key):
            _read_pipeline(top.raw(key), key, top.unknown, cfg, frames)
    if 'layout' in frames:
        cfg.frame_layout, cfg.num_past_frames, cfg.num_future_frames = frames['layout'][:3]
    data = top.section('data', None)
    if data is not None:
        data.used.update(data.data)
        t.workers_per_gpu = data.get('workers_per_gpu', 0, t.workers_per_gpu)
        train = data.data.get('train')
        if isinstance(train, dict) and 'ann_file' in train:
            files = train['ann_file'] if isinstance(train['ann_file'], (list, tuple)) else [train['ann_file']]
            splits = [_split_of(f, 'data.train.ann_file', top.unknown) for f in files]
            if all(splits):
                t.train_splits = tuple(splits)
    opt = top.section('optimizer', None)
    if opt is not None:
        opt.fixed('type', 'AdamW')
        t.lr = opt.get('lr', 0.0, t.lr)
        t.weight_decay = opt.get('weight_decay', 0.0, t.weight_decay)
        paramwise = opt.section('paramwise_cfg', None)
        t.lr_mults = ()
        if paramwise is not None:
            keys = paramwise.section('custom_keys', {})
            mults = []
            for name in keys.data:
                entry = keys.section(name)
                mults.append((name, entry.get('lr_mult', 0.0)))
                entry.finish()
            t.lr_mults = tuple(mults)
            keys.finish()
            paramwise.finish()
        opt.finish()
    hook = top.section('optimizer_config', None)
    if hook is not None:
        hook.raw('type', None)
        t.loss_scale = hook.get('loss_scale', 0.0, t.loss_scale)
        clip = hook.section('grad_clip', None)
        if clip is not None:
            t.grad_clip = clip.get('max_norm', 0.0)
            clip.fixed('norm_type', 2)
            clip.finish()
        hook.finish()
    lr = top.section('lr_config', None)
    if lr is not None:
        lr.fixed('policy', 'CosineAnnealing')
        lr.fixed('warmup', 'linear')
        t.warmup_iters = lr.get('warmup_iters', 0, t.warmup_iters)
        t.warmup_ratio = lr.get('warmup_ratio', 0.0, t.warmup_ratio)
        t.min_lr_ratio = lr.get('min_lr_ratio', 0.0, t.min_lr_ratio)
        lr.finish()
    t.epochs = top.get('total_epochs', 0, t.epochs)
    t.total_batch_size = top.get('batch_size', 0, t.total_batch_size)
    t.grid_mask = top.get('use_grid_mask', False, t.grid_mask)
    load_from = top.raw('load_from', None)
    if load_from is not None and not t.pretrained:
        t.pretrained = convert_like('', load_from, 'load_from')


def config_from_dict(data: dict, name: str, allow_unknown: bool = False,
                     helpers: set[str] = frozenset()) -> ModelConfig:
    """``ModelConfig`` from a merged official config dict (see ``read_config_file``).

    ``helpers``: top-level names that only carry a value into other fields (not read here).
    """
    unknown: list[str] = []
    top = _Section(data, '', model=False, unknown=unknown)
    cfg = ModelConfig(name=name, train=TrainConfig(pretrained=''))
    read_model_dict(top.raw('model'), 'model', into=cfg)
    cfg.num_past_frames = cfg.head.num_frames - 1
    _read_top_level(top, cfg)
    top.used.update(k for k in data if k in PLAIN_TOP_LEVEL or k in helpers)
    extra = [k for k in data if k not in top.used]
    unknown.extend(extra)
    if unknown:
        message = 'unknown non-model field(s): ' + '; '.join(unknown)
        if not allow_unknown:
            raise OfficialConfigError(message + ' (load with allow_unknown=True to turn these '
                                      'into warnings)')
        log.warning('%s (ignored)', message)
    if cfg.num_frames != cfg.head.num_frames:
        raise OfficialConfigError(
            f'model.pts_bbox_head.transformer.num_frames = {cfg.head.num_frames} but the pipeline '
            f'loads {cfg.num_frames} frames (1 + {cfg.num_past_frames} past + '
            f'{cfg.num_future_frames} future)')
    if len(cfg.class_names) != cfg.head.num_classes:
        raise OfficialConfigError(f'class_names has {len(cfg.class_names)} names but '
                                  f'model.pts_bbox_head.num_classes = {cfg.head.num_classes}')
    return cfg


def load_official_config(path: str | Path, allow_unknown: bool = False) -> ModelConfig:
    """``ModelConfig`` of an official-style SparseBEV config file (named after the file)."""
    data, helpers = read_config_file_with_helpers(path)
    try:
        return config_from_dict(data, Path(path).stem, allow_unknown, helpers)
    except OfficialConfigError as err:
        raise OfficialConfigError(f'{path}: {err}') from None


# ============================================================================ writing
def _backbone_dict(cfg: ModelConfig) -> dict:
    b = cfg.backbone
    if isinstance(b, ResNetConfig):
        return dict(type='ResNet', depth=b.depth, **({'base_channels': b.base_channels}
                                                    if b.base_channels != 64 else {}),
                    num_stages=4, out_indices=b.out_indices, frozen_stages=b.frozen_stages,
                    norm_cfg=dict(type='BN2d', requires_grad=True), norm_eval=b.norm_eval,
                    style='pytorch', with_cp=b.with_cp)
    kind = 'VoVNet' if isinstance(b, VoVNetConfig) else 'EVA02'
    if kind == 'EVA02' and not isinstance(b, EVA02Config):
        raise TypeError(f'unknown backbone config {type(b).__name__}')
    defaults = type(b)()
    fields = {f.name: getattr(b, f.name) for f in dataclasses.fields(b)}
    if kind == 'VoVNet':                # the official keys first, extensions only when changed
        official = ('out_features', 'norm_eval', 'frozen_stages', 'with_cp')
        out = dict(type=kind, spec_name=VOVNET_SPEC_NAME, **{k: fields[k] for k in official})
        out.update({k: v for k, v in fields.items() if k not in official and v != getattr(defaults, k)})
        return out
    out = dict(type=kind, **fields)
    out.update(residual_block_indexes=(), fpn_norm='LN', fpn_square_pad=EVA02_FPN_SQUARE_PAD)
    if cfg.train.pretrained:
        out['pretrained'] = cfg.train.pretrained
    return out


def _head_dict(cfg: ModelConfig) -> dict:
    h, d = cfg.head, HeadConfig()
    transformer = dict(type='SparseBEVTransformer', embed_dims=h.embed_dims,
                       num_frames=h.num_frames, num_points=h.num_points, num_layers=h.num_layers,
                       num_levels=h.num_levels, num_classes=h.num_classes, code_size=10,
                       pc_range=list(h.pc_range))
    transformer.update({k: getattr(h, k) for k in TRANSFORMER_EXTRAS if getattr(h, k) != getattr(d, k)})
    head = dict(type='SparseBEVHead', num_classes=h.num_classes, in_channels=h.embed_dims,
                num_query=h.num_queries, query_denoising=h.query_denoising,
                query_denoising_groups=h.dn_groups, code_size=10, code_weights=list(h.code_weights),
                sync_cls_avg_factor=True, transformer=transformer,
                bbox_coder=dict(type='NMSFreeCoder', post_center_range=list(h.post_center_range),
                                pc_range=list(h.pc_range), max_num=h.max_num,
                                voxel_size=[0.2, 0.2, 8], score_threshold=h.score_threshold,
                                num_classes=h.num_classes),
                positional_encoding=dict(type='SinePositionalEncoding', num_feats=h.embed_dims // 2,
                                         normalize=True, offset=-0.5),
                **FIXED_LOSSES)
    head.update({k: getattr(h, k) for k in HEAD_EXTRAS if getattr(h, k) != getattr(d, k)})
    return head


def model_dict(cfg: ModelConfig) -> dict:
    """The official ``model=dict(...)`` of a ``ModelConfig`` (what mmdet3d builds)."""
    norm = dict(mean=list(cfg.image_mean), std=list(cfg.image_std), to_rgb=cfg.channel_order == 'RGB')
    return dict(
        type='SparseBEV',
        data_aug=dict(img_color_aug=cfg.train.photometric, img_norm_cfg=norm,
                      img_pad_cfg=dict(size_divisor=PAD_SIZE_DIVISOR)),
        stop_prev_grad=cfg.train.stop_prev_grad,
        img_backbone=_backbone_dict(cfg),
        img_neck=(None if cfg.neck is None else
                  dict(type='FPN', in_channels=list(cfg.neck.in_channels),
                       out_channels=cfg.neck.out_channels, num_outs=cfg.neck.num_outs)),
        pts_bbox_head=_head_dict(cfg),
        train_cfg=dict(pts=dict(grid_size=[512, 512, 1], voxel_size=[0.2, 0.2, 8],
                                point_cloud_range=list(cfg.head.pc_range), out_size_factor=4,
                                assigner=FIXED_ASSIGNER)))


def _pipelines(cfg: ModelConfig) -> tuple[list, list]:
    loader = LAYOUT_LOADERS[cfg.frame_layout]
    frames = (dict(sweeps_num=cfg.num_past_frames) if cfg.frame_layout == 'past' else
              dict(prev_sweeps_num=cfg.num_past_frames, next_sweeps_num=cfg.num_future_frames))
    load = dict(type='LoadMultiViewImageFromFiles', to_float32=False, color_type='color')
    ida = 'ida_aug_conf'                                        # written as a name reference
    train = [load, dict(type=loader, **frames),
             dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
             dict(type='ObjectRangeFilter', point_cloud_range=list(cfg.head.pc_range)),
             dict(type='ObjectNameFilter', classes=_Name('class_names')),
             dict(type='RandomTransformImage', ida_aug_conf=_Name(ida), training=True),
             dict(type='GlobalRotScaleTransImage', rot_range=list(cfg.train.rot_range),
                  scale_ratio_range=list(cfg.train.scale_range)),
             dict(type='DefaultFormatBundle3D', class_names=_Name('class_names')),
             dict(type='Collect3D', keys=['gt_bboxes_3d', 'gt_labels_3d', 'img'], meta_keys=(
                 'filename', 'ori_shape', 'img_shape', 'pad_shape', 'lidar2img', 'img_timestamp'))]
    test = [load, dict(type=loader, **frames, test_mode=True),
            dict(type='RandomTransformImage', ida_aug_conf=_Name(ida), training=False),
            dict(type='MultiScaleFlipAug3D', img_scale=(cfg.original_size[1], cfg.original_size[0]),
                 pts_scale_ratio=1, flip=False, transforms=[
                     dict(type='DefaultFormatBundle3D', class_names=_Name('class_names'), with_label=False),
                     dict(type='Collect3D', keys=['img'], meta_keys=(
                         'filename', 'box_type_3d', 'ori_shape', 'img_shape', 'pad_shape',
                         'lidar2img', 'img_timestamp'))])]
    return train, test


def _data_dict(cfg: ModelConfig) -> dict:
    def split(kind: str, ann: Any, pipeline: str, test_mode: bool) -> dict:
        out = dict(type=_Name('dataset_type'), data_root=_Name('dataset_root'), ann_file=ann,
                   pipeline=_Name(pipeline), classes=_Name('class_names'),
                   modality=_Name('input_modality'), test_mode=test_mode)
        if kind == 'train':
            out['use_valid_flag'] = True
        out['box_type_3d'] = 'LiDAR'
        return out
    files = [f'{DATASET_ROOT}nuscenes_infos_{s}_sweep.pkl' for s in cfg.train.train_splits]
    return dict(workers_per_gpu=cfg.train.workers_per_gpu,
                train=split('train', files[0] if len(files) == 1 else files, 'train_pipeline', False),
                val=split('val', f'{DATASET_ROOT}nuscenes_infos_val_sweep.pkl', 'test_pipeline', True),
                test=split('test', f'{DATASET_ROOT}nuscenes_infos_test_sweep.pkl', 'test_pipeline', True))


def export_official_config(cfg: ModelConfig) -> str:
    """An official-format config file (Python text) describing ``cfg``.

    ``load_official_config`` of the written file gives ``cfg`` back (``name`` = file stem).
    For the official presets the text is a plain official config; other configs carry the
    extra keys listed in the module docstring.
    """
    t = cfg.train
    train_pipeline, test_pipeline = _pipelines(cfg)
    eva = isinstance(cfg.backbone, EVA02Config)
    resnet = isinstance(cfg.backbone, ResNetConfig)
    top: list[tuple[str, Any]] = [
        ('dataset_type', 'CustomNuScenesDataset'),
        ('dataset_root', DATASET_ROOT),
        ('input_modality', dict(use_lidar=False, use_camera=True, use_radar=False, use_map=False,
                                use_external=True)),
        ('class_names', list(cfg.class_names)),
        ('point_cloud_range', list(cfg.head.pc_range)),
        ('voxel_size', [0.2, 0.2, 8]),
        ('model', model_dict(cfg)),
        ('ida_aug_conf', {'resize_lim': t.resize_lim, 'final_dim': cfg.input_size,
                          'bot_pct_lim': (0.0, 0.0), 'rot_lim': (0.0, 0.0),
                          'H': cfg.original_size[0], 'W': cfg.original_size[1],
                          'rand_flip': t.flip}),
        ('train_pipeline', train_pipeline),
        ('test_pipeline', test_pipeline),
        ('data', _data_dict(cfg)),
        ('optimizer', dict(type='AdamW', lr=t.lr, paramwise_cfg=dict(custom_keys={
            name: dict(lr_mult=mult) for name, mult in t.lr_mults}), weight_decay=t.weight_decay)),
        ('optimizer_config', dict(type='Fp16OptimizerHook', loss_scale=t.loss_scale,
                                  grad_clip=dict(max_norm=t.grad_clip, norm_type=2))),
        ('lr_config', dict(policy='CosineAnnealing', warmup='linear', warmup_iters=t.warmup_iters,
                           warmup_ratio=t.warmup_ratio, min_lr_ratio=t.min_lr_ratio)),
        ('total_epochs', t.epochs),
        ('batch_size', t.total_batch_size),
        ('load_from', (t.pretrained or None) if not eva else None),
        ('revise_keys', [('backbone', 'img_backbone')] if resnet and t.pretrained else None),
        ('resume_from', None),
        ('checkpoint_config', dict(interval=1, max_keep_ckpts=1)),
        ('log_config', dict(interval=1, hooks=[
            dict(type='MyTextLoggerHook', interval=1, reset_flag=True),
            dict(type='MyTensorboardLoggerHook', interval=500, reset_flag=True)])),
        ('eval_config', dict(interval=_Name('total_epochs'))),
        ('debug', False),
    ]
    if not t.grid_mask:
        top.append(('use_grid_mask', False))            # extension: the official detector always masks
    header = (f'# SparseBEV config "{cfg.name}" in the official (mmcv) format, written by '
              f'sparsebev_core.recipe.official.export_official_config\n')
    return header + ''.join(f'\n{name} = {render_value(value)}\n' for name, value in top)


class _Name(str):
    """A reference to a module-level name in the written file (rendered without quotes)."""


def render_value(value: Any, indent: int = 0, width: int = 96) -> str:
    """Python source for a config value: ``dict(k=v)`` for identifier keys, repr otherwise."""
    flat = _render_flat(value)
    if len(flat) + indent <= width or not isinstance(value, (dict, list, tuple)) or not value:
        return flat
    pad, inner = ' ' * indent, ' ' * (indent + 4)
    if isinstance(value, dict):
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            items = [f'{inner}{k}={render_value(v, indent + 4, width)}' for k, v in value.items()]
            return 'dict(\n' + ',\n'.join(items) + ')'
        items = [f'{inner}{k!r}: {render_value(v, indent + 4, width)}' for k, v in value.items()]
        return '{\n' + ',\n'.join(items) + f'\n{pad}}}'
    open_, close = ('[', ']') if isinstance(value, list) else ('(', ')')
    items = [f'{inner}{render_value(v, indent + 4, width)}' for v in value]
    trailing = ',' if isinstance(value, tuple) and len(value) == 1 else ''
    return open_ + '\n' + ',\n'.join(items) + trailing + f'\n{pad}{close}'


def _render_flat(value: Any) -> str:
    if isinstance(value, _Name):
        return str(value)
    if isinstance(value, dict):
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            return 'dict(' + ', '.join(f'{k}={_render_flat(v)}' for k, v in value.items()) + ')'
        return '{' + ', '.join(f'{k!r}: {_render_flat(v)}' for k, v in value.items()) + '}'
    if isinstance(value, list):
        return '[' + ', '.join(_render_flat(v) for v in value) + ']'
    if isinstance(value, tuple):
        inner = ', '.join(_render_flat(v) for v in value)
        return f'({inner},)' if len(value) == 1 else f'({inner})'
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    raise TypeError(f'cannot write a {type(value).__name__} into a config file')


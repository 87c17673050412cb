"""Official SparseBEV config files -> ``ModelConfig``.

``load_official_config(path)`` reads an official-style config (``configs/*.py`` of the
official repository, or your own variant of one) with the restricted reader of
``mmcv_reader.py`` and maps every model-relevant field onto a ``ModelConfig``;
``official_write.export_official_config(cfg)`` writes one back, so that loading the export
of a preset gives the preset again. ``presets.model_config(preset, config_file)`` is what the
command line calls for ``--preset NAME`` / ``--config FILE``. The format's fixed values and
the typed section reader are ``official_fields``; each backbone's mapping is its row in
``official_backbones``.

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

import logging
import re
from pathlib import Path
from typing import Any

from .config import FPNConfig, HeadConfig, MemoryConfig, ModelConfig, ModelConfigError, TrainConfig
from .mmcv_reader import read_config_file_with_helpers
from .official_backbones import read_backbone
from .official_fields import (FIXED_ASSIGNER, FIXED_HEAD_FIELDS, FIXED_LOSSES, HEAD_EXTRAS,
                              PAD_SIZE_DIVISOR, SWEEP_LOADERS, TRANSFORMER_EXTRAS, V2_CLIP_FIELDS,
                              OfficialConfigError, Section, convert_like, same_value)

log = logging.getLogger(__name__)

# pipeline steps we know and read nothing from (data loading / formatting)
PLAIN_PIPELINE_STEPS = frozenset({
    'LoadMultiViewImageFromFiles', 'LoadAnnotations3D', 'ObjectRangeFilter', 'ObjectNameFilter',
    'RandomTransformImage', 'DefaultFormatBundle3D', 'Collect3D', 'MultiScaleFlipAug3D',
    'PETRFormatBundle3D'})                         # the v2 (SparseBEV++) format step
# top-level names of the official configs that hold nothing for ModelConfig / TrainConfig
# (helper variables whose values reach the model through ``model``, logging, data paths)
PLAIN_TOP_LEVEL = frozenset({
    'dataset_type', 'dataset_root', 'data_root', 'input_modality', 'point_cloud_range',
    'voxel_size', 'embed_dims', 'num_layers', 'num_query', 'num_frames', 'num_levels',
    'num_points', 'img_backbone', 'img_neck', 'img_norm_cfg', 'revise_keys', 'resume_from',
    'checkpoint_config', 'log_config', 'eval_config', 'debug', 'custom_imports', 'dist_params',
    'log_level', 'work_dir', 'workflow', 'gpu_ids', 'seed', 'find_unused_parameters',
    'file_client_args', 'num_epochs', 'runner'})   # + names of the v2 configs


def _read_neck(n: Section) -> FPNConfig:
    n.fixed('type', 'FPN')
    n.fixed('start_level', 0)
    n.fixed('add_extra_convs', False)
    cfg = FPNConfig(in_channels=n.get('in_channels', (0,)), out_channels=n.get('out_channels', 0),
                    num_outs=n.get('num_outs', 0))
    n.finish()
    return cfg


def _read_head(h: Section) -> HeadConfig:
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
    t.fixed('return_intermediate', True)              # v2 configs name it; every layer is returned
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
            if coder.has(key) and not same_value(coder.raw(key), ours):
                raise OfficialConfigError(f'{coder.where}.{key} = {coder.data[key]!r} differs from '
                                          f'the transformer\'s {ours!r}')
        coder.finish()
    memory = h.section('memory_config', None)
    if memory is not None:
        head.memory = read_memory_config(memory, head)
    h.finish()
    return head


def _read_train_cfg(tc: Section) -> None:
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
    m = Section(model, where, model=True, unknown=[])
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
    cfg.backbone, pretrained = read_backbone(m.section('img_backbone'))
    if pretrained is not None:
        cfg.train.pretrained = pretrained
    neck = m.section('img_neck', None)
    cfg.neck = _read_neck(neck) if neck is not None else None
    cfg.head = _read_head(m.section('pts_bbox_head'))
    train_cfg = m.section('train_cfg', None)
    if train_cfg is not None:
        _read_train_cfg(train_cfg)
    m.raw('test_cfg', None)
    for key in V2_CLIP_FIELDS:                        # v2 streaming training, one frame per step
        m.fixed(key, 1)
    m.finish()
    if into is None:
        cfg.num_past_frames = cfg.head.num_frames - 1
    return cfg


def read_head_dict(head: dict, where: str = 'pts_bbox_head') -> HeadConfig:
    """``HeadConfig`` from an official ``pts_bbox_head=dict(type='SparseBEVHead', ...)``."""
    return _read_head(Section(head, where, model=True, unknown=[]))


def read_backbone_dict(backbone: dict, where: str = 'img_backbone') -> tuple[object, str | None]:
    """(backbone config, pretrained path or None) from an official ``img_backbone=dict(...)``."""
    return read_backbone(Section(backbone, where, model=True, unknown=[]))


def _read_pipeline(steps: Any, where: str, unknown: list[str], cfg: ModelConfig,
                   frames: dict[str, Any]) -> None:
    if not isinstance(steps, (list, tuple)):
        raise OfficialConfigError(f'{where} must be a list of steps')
    for i, raw in enumerate(steps):
        step = Section(raw, f'{where}[{i}]', model=False, unknown=unknown)
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
    match = re.search(r'infos_(\w+?)(_sweep)?(_temporal)?\.pkl$', str(ann_file))   # v2: *_sweep_temporal
    if match is None:
        unknown.append(f'{where} = {ann_file!r} (not a nuscenes_infos_<split>[_sweep].pkl file)')
        return None
    return match.group(1)


def _read_top_level(top: Section, cfg: ModelConfig) -> None:
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
        if isinstance(train, dict) and train.get('seq_mode'):       # v2 streaming training
            split_num = train.get('seq_split_num', 1)
            if isinstance(split_num, bool) or not isinstance(split_num, int) or split_num < 1:
                raise OfficialConfigError(f'data.train.seq_split_num = {split_num!r}: a count of '
                                          "segments per scene (>= 1) is supported, not 'all'")
            t.seq_split_num = split_num
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
        t.lr_by_epoch = lr.get('by_epoch', False, t.lr_by_epoch)
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
    top = Section(data, '', model=False, unknown=unknown)
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
    try:
        return cfg.check()
    except ModelConfigError as err:
        raise OfficialConfigError(str(err)) from None


def load_official_config(path: str | Path, allow_unknown: bool = False) -> ModelConfig:
    """``ModelConfig`` of an official-style SparseBEV config file (named after the file)."""
    data, helpers = read_config_file_with_helpers(path)
    try:
        return config_from_dict(data, Path(path).stem, allow_unknown, helpers)
    except OfficialConfigError as err:
        raise OfficialConfigError(f'{path}: {err}') from None


def read_memory_config(m: Section, head: HeadConfig) -> MemoryConfig:
    """``MemoryConfig`` of ``pts_bbox_head.memory_config`` (official names; ``interval=1`` only)."""
    d = MemoryConfig()
    m.fixed('interval', 1)                    # 2 would read every other memory frame: not built
    memory = MemoryConfig(num_propagated=m.get('num_history', 0),
                          max_time_interval=m.get('max_time_interval', 0.0),
                          memory_len=m.get('memory_len', 0), len_per_frame=m.get('len_per_frame', 0),
                          inference_layers=m.get('inference_layers', 0, d.inference_layers))
    m.finish()
    try:
        memory.check(head)
    except ValueError as err:
        raise OfficialConfigError(f'{m.where}: {err}') from None
    return memory

"""``ModelConfig`` -> an official SparseBEV config (the ``model`` dict, or a whole config file as
Python text): ``export_official_config(cfg)``, which ``official.load_official_config`` reads
back into ``cfg``.

Fields of our configs that the official code has no argument for (``num_groups``,
``num_heads``, ``ffn_dims`` ... of the ``tiny`` preset) are written as extra keys of
``pts_bbox_head.transformer`` / ``pts_bbox_head`` only when they differ from the official
values, so the export of every official preset is a plain official config.
"""
from __future__ import annotations

from typing import Any

from .config import HeadConfig, MemoryConfig, ModelConfig
from .official_backbones import official_backbone
from .official_fields import (DATASET_ROOT, FIXED_ASSIGNER, FIXED_LOSSES, HEAD_EXTRAS,
                              LAYOUT_LOADERS, MEMORY_INFERENCE_LAYERS, PAD_SIZE_DIVISOR,
                              TRANSFORMER_EXTRAS, V2_CLIP_FIELDS, V2_COLLECT_KEYS)


def _backbone_dict(cfg: ModelConfig) -> dict:
    return official_backbone(cfg.backbone).write(cfg.backbone, cfg.train.pretrained)


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
    if h.memory is not None:
        head['memory_config'] = memory_config_dict(h.memory)
    return head


def model_dict(cfg: ModelConfig) -> dict:
    """The official ``model=dict(...)`` of a ``ModelConfig`` (what mmdet3d builds)."""
    norm = dict(mean=list(cfg.image_mean), std=list(cfg.image_std), to_rgb=cfg.channel_order == 'RGB')
    return dict(
        type='SparseBEV',
        **({key: 1 for key in V2_CLIP_FIELDS} if cfg.head.memory is not None else {}),
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
    memory = cfg.head.memory is not None
    train_pipeline, test_pipeline = _memory_pipelines(cfg) if memory else _pipelines(cfg)
    backbone = official_backbone(cfg.backbone)
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
        ('data', _memory_data_dict(cfg) if memory else _data_dict(cfg)),
        ('optimizer', dict(type='AdamW', lr=t.lr, paramwise_cfg=dict(custom_keys={
            name: dict(lr_mult=mult) for name, mult in t.lr_mults}), weight_decay=t.weight_decay)),
        ('optimizer_config', dict(type='Fp16OptimizerHook', loss_scale=t.loss_scale,
                                  grad_clip=dict(max_norm=t.grad_clip, norm_type=2))),
        ('lr_config', dict(policy='CosineAnnealing', warmup='linear', warmup_iters=t.warmup_iters,
                           warmup_ratio=t.warmup_ratio, min_lr_ratio=t.min_lr_ratio,
                           **({} if t.lr_by_epoch else {'by_epoch': False}))),
        ('total_epochs', t.epochs),
        ('batch_size', t.total_batch_size),
        ('load_from', (t.pretrained or None) if not backbone.own_pretrain else None),
        ('revise_keys', list(backbone.revise_keys) if backbone.revise_keys and t.pretrained
         else None),
        ('resume_from', None),
        ('checkpoint_config', dict(interval=1, max_keep_ckpts=1)),
        ('log_config', dict(interval=1, hooks=[
            dict(type='MyTextLoggerHook', interval=1, reset_flag=True),
            dict(type='MyTensorboardLoggerHook', interval=500, reset_flag=True)])),
        ('eval_config', dict(interval=_Name('total_epochs'))),
        ('debug', False),
    ]
    if not t.lr_by_epoch:
        top.append(('runner', dict(type='IterBasedRunner')))   # the v2 recipe's iteration runner
    if not t.grid_mask:
        top.append(('use_grid_mask', False))            # extension: the official detector always masks
    header = (f'# SparseBEV config "{cfg.name}" in the official (mmcv) format, written by '
              f'sparsebev_core.recipe.official_write.export_official_config\n')
    return header + ''.join(f'\n{name} = {render_value(value)}\n' for name, value in top)


# ---------------------------------------------------------------------------- SparseBEV++ (v2)
def memory_config_dict(memory: MemoryConfig) -> dict:
    """The official ``memory_config`` of a ``MemoryConfig`` (``inference_layers`` only when not 4)."""
    out = dict(num_history=memory.num_propagated, max_time_interval=memory.max_time_interval,
               memory_len=memory.memory_len, len_per_frame=memory.len_per_frame, interval=1)
    if memory.inference_layers != MEMORY_INFERENCE_LAYERS:
        out['inference_layers'] = memory.inference_layers
    return out


def _memory_pipelines(cfg: ModelConfig) -> tuple[list, list]:
    """The v2 pipelines: one frame of images, the keys the recurrent head reads (poses, stamps)."""
    load = dict(type='LoadMultiViewImageFromFiles', to_float32=False, color_type='color')
    meta = ('filename', 'ori_shape', 'img_shape', 'pad_shape', 'timestamp', 'ego_pose', 'ego_pose_inv')
    train = [load,
             dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
             dict(type='ObjectRangeFilter', point_cloud_range=list(cfg.head.pc_range)),
             dict(type='ObjectNameFilter', classes=_Name('class_names')),
             dict(type='RandomTransformImage', ida_aug_conf=_Name('ida_aug_conf'), training=True),
             dict(type='GlobalRotScaleTransImage', rot_range=list(cfg.train.rot_range),
                  scale_ratio_range=list(cfg.train.scale_range)),
             dict(type='PETRFormatBundle3D', class_names=_Name('class_names'),
                  collect_keys=V2_COLLECT_KEYS + ['prev_exists']),
             dict(type='Collect3D', keys=['gt_bboxes_3d', 'gt_labels_3d', 'img', 'prev_exists']
                  + V2_COLLECT_KEYS, meta_keys=meta)]
    test = [load,
            dict(type='RandomTransformImage', ida_aug_conf=_Name('ida_aug_conf'), training=False),
            dict(type='MultiScaleFlipAug3D', img_scale=(cfg.original_size[1], cfg.original_size[0]),
                 pts_scale_ratio=1, flip=False, transforms=[
                     dict(type='PETRFormatBundle3D', class_names=_Name('class_names'),
                          collect_keys=V2_COLLECT_KEYS, with_label=False),
                     dict(type='Collect3D', keys=['img'] + V2_COLLECT_KEYS, meta_keys=(
                         'filename', 'box_type_3d', 'ori_shape', 'img_shape', 'pad_shape',
                         'lidar2img', 'img_timestamp', 'scene_token', 'timestamp', 'ego_pose',
                         'ego_pose_inv'))])]
    return train, test


def _memory_data_dict(cfg: ModelConfig) -> dict:
    """The v2 ``data``: streaming (sequential) clips of one frame over the temporal info files."""
    def split(name: str, pipeline: str, test_mode: bool, **extra: Any) -> dict:
        return dict(type=_Name('dataset_type'), data_root=_Name('dataset_root'),
                    ann_file=f'{DATASET_ROOT}nuscenes_infos_{name}_sweep_temporal.pkl',
                    pipeline=_Name(pipeline), classes=_Name('class_names'),
                    modality=_Name('input_modality'), test_mode=test_mode, **extra,
                    box_type_3d='LiDAR')
    splits = cfg.train.train_splits
    train = split(splits[0], 'train_pipeline', False, collect_keys=V2_COLLECT_KEYS + ['img', 'prev_exists', 'img_metas'],
                  queue_length=1, num_frame_losses=1, seq_split_num=cfg.train.seq_split_num, seq_mode=True,
                  use_valid_flag=True)
    if len(splits) > 1:
        train['ann_file'] = [f'{DATASET_ROOT}nuscenes_infos_{s}_sweep_temporal.pkl' for s in splits]
    return dict(samples_per_gpu=cfg.train.total_batch_size, workers_per_gpu=cfg.train.workers_per_gpu,
                train=train,
                val=split('val', 'test_pipeline', True, collect_keys=V2_COLLECT_KEYS + ['img', 'img_metas'],
                          queue_length=1),
                test=dict(split('test', 'test_pipeline', True),
                          ann_file=f'{DATASET_ROOT}nuscenes_infos_test_sweep.pkl'),
                shuffler_sampler=dict(type='InfiniteGroupEachSampleInBatchSampler'),
                nonshuffler_sampler=dict(type='DistributedSampler'))


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

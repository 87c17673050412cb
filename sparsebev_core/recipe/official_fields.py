"""The official config format, shared by reading and writing: the values the official code
has built in, and a typed reader of one dict of a config (:class:`Section`).

A ``Section`` hands out typed values (``get``), refuses unsupported ones (``fixed``) and
remembers which keys were read, so that ``finish`` can name every unknown key: an error for
a model field, a collected warning for the others (``official.py`` has the rules).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .mmcv_reader import ConfigFileError

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

# SparseBEV++ (official v2, ``r50_nuimg_704x256_memory_8x256.py``): ``pts_bbox_head.memory_config``,
# one frame per clip step, no sweep loader, the temporal info files with ego poses.
MEMORY_INFERENCE_LAYERS = 4         # hard-coded by the official v2 decoder: docs/official_model.md, quirk 23
V2_CLIP_FIELDS = ('num_frame_head_grads', 'num_frame_backbone_grads', 'num_frame_losses')
V2_COLLECT_KEYS = ['lidar2img', 'timestamp', 'img_timestamp', 'ego_pose', 'ego_pose_inv']


class OfficialConfigError(ConfigFileError):
    """An official config names a field we do not know, lacks one, or asks for the unsupported."""


_REQUIRED = object()


class Section:
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
        if key in self.data and not same_value(self.raw(key), supported):
            raise OfficialConfigError(
                f'{self.name(key)} = {self.data[key]!r} is not supported: this implementation '
                f'has {supported!r} built in')
        self.used.add(key)

    def section(self, key: str, default: Any = _REQUIRED) -> 'Section | None':
        value = self.raw(key, default)
        return None if value is None else Section(value, self.name(key), self.model, self.unknown)

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


def same_value(a: Any, b: Any) -> bool:
    """Equality that treats lists and tuples alike (configs mix them) and bools apart from ints."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
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


def read_dataclass(section: Section, cls: type, official_defaults: dict[str, Any],
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


def pretrained_of(section: Section) -> str | None:
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

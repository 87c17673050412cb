"""The official SparseBEV configurations by name, plus ``tiny`` for tests, the demo and CPU training.

Presets are data (docs/official_model.md section 7): each is a function returning a fresh
``ModelConfig``, so callers may edit what they get without touching anyone else's copy.
:func:`model_config` is what ``--preset NAME`` / ``--config FILE`` resolve through (a preset
name or an official config file -> ``ModelConfig``), in every command and in the node.

==================================  ========  =========  ======  ====  ========  ==  ======
name                                backbone  input HxW  levels  Q     frames    P   epochs
==================================  ========  =========  ======  ====  ========  ==  ======
r50_nuimg_704x256                   R50       256x704    4       900   8 past    4   24
r50_nuimg_704x256_400q_36ep         R50       256x704    4       400   8 past    4   36
r101_nuimg_1408x512                 R101      512x1408   5       900   8 past    4   24
vov99_dd3d_1600x640_trainval_future V2-99     640x1600   5       1600  15 future 4   24
vit_eva02_1600x640_trainval_future  EVA02-L   640x1600   5       1600  15 future 8   24
tiny                                R18/4     96x256     4       100   4 past    4   -
r50_nuimg_704x256_memory            R50       256x704    4       400+500  1 + memory  4  60
tiny_memory                         R18/4     96x256     4       64+36  1 + memory  4   -
==================================  ========  =========  ======  ====  ========  ==  ======

The ``*_memory`` presets are SparseBEV++ (official v2): learned + propagated queries, one
frame sampled, a recurrent query memory (``HeadConfig.memory``, docs/official_model.md 13).
"""
from __future__ import annotations

from typing import Callable

from ..errors import InputError, UsageError
from .backbones import EVA02Config, ResNetConfig, VoVNetConfig
from .config import FPNConfig, HeadConfig, MemoryConfig, ModelConfig, TrainConfig
from .frame_layout import needs_future_frames

# Official pretrain files (names as in the official configs' ``load_from`` / ``pretrained``).
NUIMG_R50_PRETRAIN = 'pretrain/cascade_mask_rcnn_r50_fpn_coco-20e_20e_nuim_20201009_124951-40963960.pth'
NUIMG_R101_PRETRAIN = 'pretrain/cascade_mask_rcnn_r101_fpn_1x_nuim_20201024_134804-45215b1e.pth'
DD3D_V99_PRETRAIN = 'pretrain/dd3d_det_final.pth'
EVA02_L_PRETRAIN = 'pretrain/eva02_L_coco_seg_sys_o365.pth'

BGR_MEAN = (103.53, 116.28, 123.675)        # VoVNet (DD3D / detectron2) normalisation, BGR order
BGR_STD = (57.375, 57.12, 58.395)


def _r50_nuimg_704x256() -> ModelConfig:
    """The ablation setting of the paper: R50 (nuImages), 704x256, 900 queries, 8 frames."""
    return ModelConfig(
        name='r50_nuimg_704x256',
        backbone=ResNetConfig(depth=50, frozen_stages=1, norm_eval=True, with_cp=True),
        neck=FPNConfig(in_channels=(256, 512, 1024, 2048), out_channels=256, num_outs=4),
        head=HeadConfig(num_queries=900, num_frames=8, num_points=4, num_levels=4),
        train=TrainConfig(epochs=24, resize_lim=(0.38, 0.55), pretrained=NUIMG_R50_PRETRAIN,
                          lr_mults=(('img_backbone', 0.1), ('sampling_offset', 0.1))),
        input_size=(256, 704),
        num_past_frames=7)


def _r50_nuimg_704x256_400q_36ep() -> ModelConfig:
    """The setting compared with other methods: 400 queries, 36 epochs."""
    cfg = _r50_nuimg_704x256()
    cfg.name = 'r50_nuimg_704x256_400q_36ep'
    cfg.head.num_queries = 400
    cfg.train.epochs = 36
    cfg.train.workers_per_gpu = 12
    return cfg


def _r101_nuimg_1408x512() -> ModelConfig:
    """R101 (nuImages), 1408x512, 5-level FPN (max-pool extra level)."""
    cfg = _r50_nuimg_704x256()
    cfg.name = 'r101_nuimg_1408x512'
    cfg.backbone = ResNetConfig(depth=101, frozen_stages=1, norm_eval=True, with_cp=True)
    cfg.neck = FPNConfig(in_channels=(256, 512, 1024, 2048), out_channels=256, num_outs=5)
    cfg.head.num_levels = 5
    cfg.input_size = (512, 1408)
    cfg.train.resize_lim = (0.38 * 2, 0.55 * 2)
    cfg.train.lr_mults = (('img_backbone', 0.2), ('sampling_offset', 0.1))
    cfg.train.pretrained = NUIMG_R101_PRETRAIN
    return cfg


def _vov99_dd3d_1600x640_trainval_future() -> ModelConfig:
    """VoVNet-99-eSE (DD3D), 1600x640, 1600 queries, 15 frames incl. 7 future (blocked order).

    Trained on train+val (test-server setting); BGR normalisation as detectron2/DD3D.
    """
    cfg = _r50_nuimg_704x256()
    cfg.name = 'vov99_dd3d_1600x640_trainval_future'
    cfg.backbone = VoVNetConfig(frozen_stages=1, norm_eval=True, with_cp=True)
    cfg.neck = FPNConfig(in_channels=(256, 512, 768, 1024), out_channels=256, num_outs=5)
    cfg.head.num_queries = 1600
    cfg.head.num_levels = 5
    cfg.head.num_points = 4
    cfg.head.num_frames = 15
    cfg.input_size = (640, 1600)
    cfg.image_mean, cfg.image_std, cfg.channel_order = BGR_MEAN, BGR_STD, 'BGR'
    cfg.frame_layout = 'future_blocked'
    cfg.num_past_frames, cfg.num_future_frames = 7, 7
    cfg.train.resize_lim = (0.94, 1.25)
    cfg.train.lr_mults = (('img_backbone', 0.1), ('sampling_offset', 0.1))
    cfg.train.pretrained = DD3D_V99_PRETRAIN
    cfg.train.train_splits = ('train', 'val')
    return cfg


def _vit_eva02_1600x640_trainval_future() -> ModelConfig:
    """EVA02-L + simple pyramid (5 levels, no neck), 1600 queries, 8 points, 15 frames interleaved."""
    cfg = _r50_nuimg_704x256()
    cfg.name = 'vit_eva02_1600x640_trainval_future'
    cfg.backbone = EVA02Config()
    cfg.neck = None
    cfg.head.num_queries = 1600
    cfg.head.num_levels = 5
    cfg.head.num_points = 8
    cfg.head.num_frames = 15
    cfg.input_size = (640, 1600)
    cfg.frame_layout = 'future_interleaved'
    cfg.num_past_frames, cfg.num_future_frames = 7, 7
    cfg.train.resize_lim = (0.94, 1.25)
    cfg.train.stop_prev_grad = 4
    cfg.train.pretrained = EVA02_L_PRETRAIN
    cfg.train.train_splits = ('train', 'val')
    return cfg


def _tiny() -> ModelConfig:
    """Small and fast: ResNet-18 at 1/4 width, 96x256 input, 100 queries, 4 frames, 3 layers.

    For tests, the demo and CPU training on synthetic cameras of 400x225 (nuScenes 1600x900
    scaled by 1/4): the test-time resize is 0.64 (-> 256x144, bottom crop to 96 rows). Trained
    from scratch, so nothing is frozen and BatchNorm statistics update.
    """
    test_scale = max(96 / 225, 256 / 400)    # = 0.64, official test-time rule
    official_ratio = (0.38 / 0.44, 0.55 / 0.44)   # train resize range relative to test (704x256)
    return ModelConfig(
        name='tiny',
        backbone=ResNetConfig(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False,
                              with_cp=False),
        neck=FPNConfig(in_channels=(16, 32, 64, 128), out_channels=64, num_outs=4),
        head=HeadConfig(embed_dims=64, num_queries=100, num_frames=4, num_points=4, num_levels=4,
                        num_groups=4, num_layers=3, num_heads=4, ffn_dims=128,
                        mixing_out_points=32),
        train=TrainConfig(epochs=12, total_batch_size=2, lr=1e-3, warmup_iters=20,
                          lr_mults=(('sampling_offset', 0.1),),
                          resize_lim=(round(test_scale * official_ratio[0], 4),
                                      round(test_scale * official_ratio[1], 4)),
                          pretrained='', workers_per_gpu=0),
        input_size=(96, 256),
        original_size=(225, 400),
        num_past_frames=3)


def _recurrent(cfg: ModelConfig, name: str, num_queries: int, memory: MemoryConfig) -> ModelConfig:
    """``cfg`` made SparseBEV++: ``num_queries`` learned queries, one frame sampled, ``memory``."""
    cfg.name = name
    cfg.head.num_queries = num_queries
    cfg.head.num_frames = 1
    cfg.head.memory = memory
    cfg.num_past_frames = 0
    return cfg


def _r50_nuimg_704x256_memory() -> ModelConfig:
    """SparseBEV++ (official v2, ``r50_nuimg_704x256_memory_8x256``): R50 (nuImages), 704x256,
    400 learned + 500 propagated queries, one frame sampled, a 4 x 256 query memory, 4 of 6
    decoder layers at inference (docs/official_model.md section 13).

    Its recipe (13.5): streaming-video training (``seq_split_num = 2`` segments per scene), a
    total batch of 16, 60 "epochs" of ``len(train set) // 16`` iterations (28130 // 16 = 1758
    on nuScenes: 105,480 iterations), cosine by iteration, AdamW lr 4e-4, weight decay 1e-3."""
    cfg = _recurrent(_r50_nuimg_704x256(), 'r50_nuimg_704x256_memory', 400,
                     MemoryConfig(num_propagated=500, max_time_interval=2.0, memory_len=1024,
                                  len_per_frame=256, inference_layers=4))
    cfg.train = TrainConfig(epochs=60, total_batch_size=16, lr=4e-4, weight_decay=1e-3,
                            resize_lim=(0.38, 0.55), pretrained=NUIMG_R50_PRETRAIN,
                            lr_mults=(('img_backbone', 0.1), ('sampling_offset', 0.1)),
                            lr_by_epoch=False)
    return cfg


def _tiny_memory() -> ModelConfig:
    """``tiny`` made recurrent, for tests: 64 learned + 36 propagated queries, a 4 x 16 memory,
    3 decoder layers in training and 2 at inference; trained as the v2 recipe (streaming, cosine
    by iteration) with ``tiny``'s optimiser numbers."""
    cfg = _recurrent(_tiny(), 'tiny_memory', 64,
                     MemoryConfig(num_propagated=36, max_time_interval=2.0, memory_len=64,
                                  len_per_frame=16, inference_layers=2))
    cfg.train.lr_by_epoch = False
    return cfg


_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    'r50_nuimg_704x256': _r50_nuimg_704x256,
    'r50_nuimg_704x256_400q_36ep': _r50_nuimg_704x256_400q_36ep,
    'r101_nuimg_1408x512': _r101_nuimg_1408x512,
    'vov99_dd3d_1600x640_trainval_future': _vov99_dd3d_1600x640_trainval_future,
    'vit_eva02_1600x640_trainval_future': _vit_eva02_1600x640_trainval_future,
    'tiny': _tiny,
    'r50_nuimg_704x256_memory': _r50_nuimg_704x256_memory,
    'tiny_memory': _tiny_memory,
}
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)
# presets that need frames from the future: offline evaluation only, never streaming
FUTURE_PRESET_NAMES: tuple[str, ...] = tuple(
    n for n in PRESET_NAMES if needs_future_frames(_PRESETS[n]().check()))


class UnknownPresetError(InputError, KeyError):
    """A preset name that is not in ``PRESET_NAMES`` (a ``KeyError`` too, as before)."""

    def __str__(self) -> str:           # KeyError would quote the message
        return str(self.args[0]) if self.args else ''


def get_preset(name: str) -> ModelConfig:
    """A fresh ``ModelConfig`` for preset ``name`` (see ``PRESET_NAMES``)."""
    try:
        factory = _PRESETS[name]
    except KeyError:
        raise UnknownPresetError(f'unknown preset {name!r}; choose one of: '
                                 f'{", ".join(PRESET_NAMES)}') from None
    return factory().check()                  # the factories edit a base preset in place


def model_config(preset: str | None = None, config_file: str | None = None) -> ModelConfig:
    """The model recipe: the official config file ``config_file`` if given, else the preset.

    Exactly one of the two; raises ``UsageError`` otherwise, and :class:`UnknownPresetError`
    (an ``InputError``) for an unknown preset name.
    """
    if preset and config_file:
        raise UsageError(f'give one model, --preset NAME or --config FILE, not both (got '
                         f'{preset!r} and {config_file!r})')
    if config_file:
        from .official import load_official_config   # only when a config file is given
        return load_official_config(config_file)
    if not preset:
        raise UsageError('give a model: --preset NAME or --config FILE')
    return get_preset(preset)

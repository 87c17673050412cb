"""Plain dataclasses that describe a SparseBEV model and its training recipe.

Presets (``sparsebev_core.recipe.presets``) are instances of these; models are built from them with
plain constructors (``build_model(cfg)``), no registry and no dict configs. A ``ModelConfig``
checks that its parts agree when it is built (:meth:`ModelConfig.check`). The backbone configs
are ``backbones.py``'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import InputError
from ..geometry import CLASS_NAMES, POINT_CLOUD_RANGE
from .backbones import BackboneConfig, ResNetConfig


@dataclass
class FPNConfig:
    """mmdet FPN without extra convs; level ``num_outs - 1`` may be a max-pool of the last."""
    in_channels: tuple[int, ...] = (256, 512, 1024, 2048)
    out_channels: int = 256
    num_outs: int = 4


@dataclass
class HeadConfig:
    """SparseBEV head and decoder (docs/official_model.md section 2.4 - 2.6)."""
    num_classes: int = 10
    embed_dims: int = 256
    num_queries: int = 900                   # must be a perfect square (grid init)
    num_frames: int = 8                      # T
    num_points: int = 4                      # P, per group per frame
    num_levels: int = 4                      # L
    num_groups: int = 4                      # G
    num_layers: int = 6                      # iterations of the one shared decoder layer
    num_heads: int = 8                       # self-attention heads
    ffn_dims: int = 512
    mixing_out_points: int = 128
    dropout: float = 0.1
    pc_range: tuple[float, ...] = POINT_CLOUD_RANGE
    post_center_range: tuple[float, ...] = (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)
    max_num: int = 300                       # top-k of the NMS-free coder
    score_threshold: float = 0.05
    code_weights: tuple[float, ...] = (2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    # query denoising (training only)
    query_denoising: bool = True
    dn_groups: int = 10
    dn_box_noise_scale: float = 0.5
    dn_label_noise_scale: float = 0.5
    dn_weight: float = 1.0
    # SparseBEV++ (official v2): recurrent query memory; None = v1 multi-frame sampling
    memory: 'MemoryConfig | None' = None


@dataclass
class TrainConfig:
    """Optimisation recipe (docs/official_model.md section 4.3) and data augmentation ranges."""
    epochs: int = 24
    total_batch_size: int = 8                # split evenly over processes (>= 1 each)
    lr: float = 2e-4
    weight_decay: float = 0.01
    lr_mults: tuple[tuple[str, float], ...] = (('img_backbone', 0.1), ('sampling_offset', 0.1))
    warmup_iters: int = 500
    warmup_ratio: float = 1.0 / 3.0
    min_lr_ratio: float = 1e-3
    grad_clip: float = 35.0
    loss_scale: float = 512.0                # static AMP loss scale (image branch only)
    resize_lim: tuple[float, float] = (0.38, 0.55)
    flip: bool = True
    rot_range: tuple[float, float] = (-0.3925, 0.3925)
    scale_range: tuple[float, float] = (0.95, 1.05)
    photometric: bool = True
    grid_mask: bool = True
    stop_prev_grad: int = 0                  # frames after the first N run under no_grad
    pretrained: str = ''                     # backbone pretrain file (nuImages / DD3D / EVA02)
    workers_per_gpu: int = 8
    train_splits: tuple[str, ...] = ('train',)   # ('train', 'val') for the test-server presets
    lr_by_epoch: bool = True                 # cosine stepped per epoch (v1); False: per iteration (v2)
    # streaming-video training of the recurrent presets (docs/training.md): each scene is cut
    # into this many time-ordered segments, one batch slot walks one segment a frame per step
    seq_split_num: int = 2


class ModelConfigError(InputError, ValueError):
    """A ``ModelConfig`` whose parts disagree (frame counts, pyramid levels, classes, memory)."""


FrameLayout = Literal['past', 'future_blocked', 'future_interleaved']


@dataclass
class ModelConfig:
    """Everything needed to build one SparseBEV model and feed it."""
    name: str
    backbone: BackboneConfig = field(default_factory=ResNetConfig)
    neck: FPNConfig | None = field(default_factory=FPNConfig)  # None: the backbone is its own pyramid
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    input_size: tuple[int, int] = (256, 704)                  # network input (H, W)
    original_size: tuple[int, int] = (900, 1600)              # camera images the recipe assumes
    image_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)   # in channel order below
    image_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    channel_order: Literal['RGB', 'BGR'] = 'RGB'             # what the backbone expects
    frame_layout: FrameLayout = 'past'
    num_past_frames: int = 7
    num_future_frames: int = 0
    class_names: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        self.check()

    @property
    def num_frames(self) -> int:
        """T = 1 current + past + future frames."""
        return 1 + self.num_past_frames + self.num_future_frames

    def check(self) -> 'ModelConfig':
        """Raise :class:`ModelConfigError` when the parts disagree; returns ``self``.

        * T is stated by the frame counts (``1 + num_past_frames + num_future_frames``) and
          again by ``head.num_frames`` (the head is built from ``HeadConfig`` alone): they agree;
        * the head reads every level of the pyramid: ``head.num_levels == neck.num_outs`` and
          ``head.embed_dims == neck.out_channels`` (with a neck);
        * one class name per class: ``len(class_names) == head.num_classes``;
        * a recurrent head (``head.memory``, SparseBEV++) samples one frame and its memory
          numbers fit together (:meth:`MemoryConfig.problems`).

        Runs when the config is built (``__post_init__``); code that edits a config in place
        (the presets, the official config reader) calls it again when done. Whether the frame
        layout fits the frame counts is ``frame_layout.frame_offsets``'.
        """
        problems = []
        if self.head.num_frames != self.num_frames:
            problems.append(f'head.num_frames = {self.head.num_frames} but the frame counts give '
                            f'T = {self.num_frames} (1 + {self.num_past_frames} past + '
                            f'{self.num_future_frames} future)')
        if self.neck is not None and self.head.num_levels != self.neck.num_outs:
            problems.append(f'head.num_levels = {self.head.num_levels} but the neck gives '
                            f'{self.neck.num_outs} levels (neck.num_outs)')
        if self.neck is not None and self.head.embed_dims != self.neck.out_channels:
            problems.append(f'head.embed_dims = {self.head.embed_dims} but the neck gives '
                            f'{self.neck.out_channels} channels (neck.out_channels)')
        if len(self.class_names) != self.head.num_classes:
            problems.append(f'{len(self.class_names)} class_names but head.num_classes = '
                            f'{self.head.num_classes}')
        if self.head.memory is not None:
            problems.extend(f'head.memory: {p}' for p in self.head.memory.problems(self.head))
        if problems:
            raise ModelConfigError(f'model config {self.name!r} is inconsistent: '
                                   + '; '.join(problems))
        return self


# ---------------------------------------------------------------------------- SparseBEV++ (v2)
@dataclass
class MemoryConfig:
    """The recurrent query memory of SparseBEV++ (the official v2 ``memory_config``).

    docs/official_model.md section 13. With ``HeadConfig.memory`` set the head samples one
    frame (``num_frames = 1``) and carries queries from frame to frame instead: the
    ``num_propagated`` best queries of a frame join its ``num_queries`` learned ones in the
    next frame, and the best ``len_per_frame`` of them are pushed onto a first-in first-out
    memory of ``memory_len`` query features that every decoder layer cross-attends to.
    """
    num_propagated: int = 500          # official num_history: queries carried to the next frame
    max_time_interval: float = 2.0     # s; a longer gap replaces them by the padding queries
    memory_len: int = 1024             # memory queue length (query features and boxes)
    len_per_frame: int = 256           # best queries of a frame pushed onto the memory
    inference_layers: int = 4          # decoder iterations in eval mode (training: num_layers)

    def problems(self, head: HeadConfig) -> list[str]:
        """What does not fit together, one phrase per problem naming the field (empty: fine)."""
        out = []
        if head.num_frames != 1:
            out.append(f'a recurrent head samples one frame: num_frames must be 1, '
                       f'got {head.num_frames}')
        if not 0 < self.len_per_frame <= self.num_propagated:
            out.append(f'len_per_frame ({self.len_per_frame}) must be in 1..num_propagated '
                       f'({self.num_propagated}): the memory takes the best propagated queries')
        if self.memory_len < self.len_per_frame:
            out.append(f'memory_len ({self.memory_len}) must hold at least one frame '
                       f'(len_per_frame = {self.len_per_frame})')
        if not 1 <= self.inference_layers <= head.num_layers:
            out.append(f'inference_layers ({self.inference_layers}) must be in '
                       f'1..num_layers ({head.num_layers})')
        if self.max_time_interval <= 0:
            out.append(f'max_time_interval must be > 0 s, got {self.max_time_interval}')
        return out

    def check(self, head: HeadConfig) -> None:
        """Raise :class:`ModelConfigError` naming the fields when the numbers do not fit."""
        problems = self.problems(head)
        if problems:
            raise ModelConfigError('memory config: ' + '; '.join(problems))

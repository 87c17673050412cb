"""What a training process reads, and in which order: every sample drawn with its own seeded
RNGs (:class:`SeededSamples`: augmentation independent of workers, order and resumption), this
process's shuffled share of an epoch (:func:`epoch_indices`), batches stacked
(:func:`collate_samples`) and moved to the device (:func:`move_batch`).

The recurrent (SparseBEV++) presets train on video instead (docs/training.md, "Streaming
training"): :class:`StreamPlan` lays out this process's batch slots walking scene segments
(``data.segments``), :class:`StreamSamples` draws each frame with RNGs seeded by (seed,
iteration, slot), :func:`collate_stream_samples` adds the frame stamps, poses and segment
starts.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import random
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from ..data.segments import SegmentError, SegmentWalk, process_slots, scene_segments
from ..devices import DistInfo
from ..recipe.config import ModelConfig


@contextlib.contextmanager
def seeded_rngs(seed: int):
    """Run a block with python / numpy / torch global RNGs seeded by ``seed``, then put the
    previous states back (the training loop's own random stream is left untouched)."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)      # CPU only: CUDA streams stay untouched
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


class SeededSamples(Dataset):
    """Wraps a dataset so that sample ``i`` of epoch ``e`` is drawn with RNGs seeded by
    ``(seed, e, i)``: augmentation no longer depends on worker count, order or resumption."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample_seed = (self.seed * 1_000_003 + self.epoch * 100_003 + index) % 2**63
        with seeded_rngs(sample_seed):
            return self.dataset[index]


def collate_samples(samples: Sequence[dict]) -> dict:
    """Stack samples into a batch.

    Each sample: ``images [T*6, 3, H, W]`` uint8 RGB, ``lidar2img [T*6, 4, 4]``, ``timestamps
    [T*6]`` float64 seconds, ``gt_boxes [K, 9]`` gravity centre, ``gt_labels [K]``.
    Returns ``images [B, T*6, 3, H, W]``, ``lidar2img [B, T*6, 4, 4]`` float32, ``timestamps
    [B, T*6]`` float64, ``gt_boxes`` / ``gt_labels`` lists.
    """
    def tensor(x, dtype=None):
        t = torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x
        return t if dtype is None else t.to(dtype)

    return {
        'images': torch.stack([tensor(s['images']) for s in samples]),
        'lidar2img': torch.stack([tensor(s['lidar2img'], torch.float32) for s in samples]),
        'timestamps': torch.stack([tensor(s['timestamps'], torch.float64) for s in samples]),
        'gt_boxes': [tensor(s['gt_boxes'], torch.float32).reshape(-1, 9) for s in samples],
        'gt_labels': [tensor(s['gt_labels'], torch.long).reshape(-1) for s in samples],
    }


def collate_stream_samples(samples: Sequence[dict]) -> dict:
    """:func:`collate_samples` of one-frame samples plus ``stamp [B]`` float64 (s),
    ``model_pose [B, 4, 4]`` float64 (augmented model frame -> world) and ``segment_start [B]``
    bool (:class:`StreamSamples`)."""
    batch = collate_samples(samples)
    batch['stamp'] = torch.tensor([float(s['stamp']) for s in samples], dtype=torch.float64)
    batch['model_pose'] = torch.stack([torch.as_tensor(np.asarray(s['model_pose']), dtype=torch.float64)
                                       for s in samples])
    batch['segment_start'] = torch.tensor([bool(s['segment_start']) for s in samples])
    return batch


class StreamSamples(Dataset):
    """Streaming training's view of a dataset: item ``(index, iteration, slot, segment_start)``
    is sample ``index`` drawn with RNGs seeded by ``(seed, iteration, slot)`` (each frame its
    own augmentation, as the official pipeline draws one per frame), with ``segment_start``."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int, int, bool]) -> dict:
        index, iteration, slot, segment_start = item
        draw = np.random.SeedSequence([self.seed, iteration, slot]).generate_state(1, np.uint64)[0]
        with seeded_rngs(int(draw) % 2**63):
            sample = dict(self.dataset[index])
        sample['segment_start'] = bool(segment_start)
        return sample


class StreamPlan:
    """This process's batches of streaming training (``data.segments``).

    The scenes of ``dataset.infos`` (``scene_token``, ``timestamp`` per sample) are cut into
    ``split_num`` segments each; the ``per_process * world_size`` global slots walk them
    (:class:`~sparsebev_core.data.segments.SegmentWalk`, seeded by ``seed``), this process
    holding slots ``rank * per_process ...``. A nominal epoch is ``len(dataset) // global
    batch`` iterations (the official ``num_iters_per_epoch``; at least 1).
    """

    def __init__(self, dataset: Dataset, split_num: int, per_process: int, info: DistInfo,
                 seed: int):
        infos = getattr(dataset, 'infos', None)
        if infos is None:
            raise SegmentError('streaming training needs the dataset\'s infos (scene_token and '
                               'timestamp of every sample) to cut its scenes into segments')
        global_batch = per_process * info.world_size
        self.walk = SegmentWalk(scene_segments(infos, split_num), global_batch, seed)
        self.slots = process_slots(info.rank, per_process)
        self.iters_per_epoch = max(1, len(dataset) // global_batch)

    def batches(self, start: int, count: int) -> list[list[tuple[int, int, int, bool]]]:
        """Items of :class:`StreamSamples` for iterations ``start .. start + count - 1``, one
        list (this process's slots) per iteration."""
        plan = itertools.islice(self.walk.batches(self.slots, start), count)
        return [[(step.index, start + i, slot, step.segment_start)
                 for slot, step in zip(self.slots, steps)] for i, steps in enumerate(plan)]


def epoch_indices(dataset_len: int, info: DistInfo, seed: int, epoch: int) -> list[int]:
    """This process's sample order for ``epoch`` (``DistributedSampler``, shuffled by seed+epoch)."""
    sampler = DistributedSampler(range(dataset_len), num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return list(sampler)


def batches_per_epoch(dataset_len: int, info: DistInfo, batch_size: int) -> int:
    per_process = math.ceil(dataset_len / info.world_size)
    return math.ceil(per_process / batch_size)


def build_train_dataset(cfg: ModelConfig, data_root: str, version: str):
    """The multi-frame nuScenes dataset (``data.dataset``) with the training pipeline of the preset."""
    from ..data.dataset import build_dataset
    return build_dataset(cfg, data_root, version=version, split='train')


def attach_image_augmentations(model: torch.nn.Module, cfg: ModelConfig) -> None:
    """Photometric distortion and GridMask on the detector's training image hooks."""
    from ..data import transforms
    if cfg.train.photometric:
        model.photometric_aug = transforms.PhotoMetricDistortion()
    if cfg.train.grid_mask:
        model.grid_mask = transforms.GridMask()


def move_batch(batch: dict, device: torch.device) -> dict:
    """The model's inputs on ``device``; other keys (the stream's stamps, poses and segment
    starts, which stay with the CPU-side slot states) unchanged."""
    return {
        **batch,
        'images': batch['images'].to(device, non_blocking=True),
        'lidar2img': batch['lidar2img'].to(device),
        'timestamps': batch['timestamps'].to(device),
        'gt_boxes': [b.to(device) for b in batch['gt_boxes']],
        'gt_labels': [l.to(device) for l in batch['gt_labels']],
    }

"""Train a SparseBEV preset: ``sparsebev train`` or ``torchrun -m sparsebev_core.engine.train``.

The official recipe (docs/official_model.md section 4): Hungarian matching, focal + L1 losses on
every decoder layer with query denoising, AdamW with lr multipliers, cosine schedule by epoch
with linear warm-up, fp16 AMP on the image branch with a static loss scale (CUDA only; CPU
runs in fp32), gradient clipping at 35, DDP with the total batch split over processes.

The recurrent (SparseBEV++) presets train on video (docs/training.md, "Streaming training"):
each batch slot walks one scene segment in time order, one frame per step, its recurrent state
carried from step to step, detached, and cleared at a segment start (``stream_state``); the
cosine runs by iteration (``TrainConfig.lr_by_epoch = False``).

A run is reproducible and can be killed at any time: the data order comes from a
``DistributedSampler`` seeded by (seed, epoch) (streaming: a segment walk seeded by seed), every
sample's augmentation from a generator seeded by (seed, epoch, index) (streaming: (seed,
iteration, slot); both ``train_data``), and checkpoints (``train_state``) (every epoch, on
SIGTERM, at ``--max-iters``) hold the model, optimiser, schedule, scaler, position and RNG
states, and the streaming slots' recurrent states, so that ``--resume`` continues exactly
where the run stopped.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from ..checkpoints.files import atomic_save, remove_stale_temporaries
from ..devices import DistInfo, finish_distributed, init_distributed, resolve_device
from ..errors import InputError, UsageError
from ..recipe.config import ModelConfig
from .losses import SparseBEVLoss
from .optim import CosineWarmupSchedule, build_optimizer, build_scaler
from .stream_state import SlotStates
from .train_data import (SeededSamples, StreamPlan, StreamSamples, attach_image_augmentations,
                         batches_per_epoch, build_train_dataset, collate_samples,
                         collate_stream_samples, epoch_indices, move_batch)
from .train_state import (LATEST, SigtermFlag, TrainPosition, TrainingCheckpointError,
                          load_training_state, rng_state, save_training_state)

FINAL_WEIGHTS = 'model_final.pth'


class PretrainNotFoundError(InputError, FileNotFoundError):
    """The backbone pretrain file the preset (or --pretrained) names is not there."""


class TrainArgumentError(UsageError, ValueError):
    """A training option has a value that cannot mean anything; the message names it."""


# ----------------------------------------------------------------------------- processes
# DistInfo / init_distributed / resolve_device live in sparsebev_core.devices (one place
# for devices and the torchrun job); the names are imported above for this module's callers.


def per_process_batch_size(total: int, world_size: int) -> int:
    """The official split of the total batch over processes; at least one sample each."""
    if total // world_size < 1:
        raise TrainArgumentError(f'total batch size {total} cannot be split over {world_size} processes '
                         '(each needs >= 1 sample): raise --batch-size or use fewer processes')
    return total // world_size


def set_random_seed(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; in deterministic mode also force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


# ----------------------------------------------------------------------------- training
@dataclass
class TrainOptions:
    """Everything about a run that is not the model recipe."""
    work_dir: str = 'work_dirs/run'
    epochs: int | None = None                 # None: the preset's
    max_iters: int | None = None              # stop (and checkpoint) after this many iterations
    batch_size: int | None = None             # total over processes; None: the preset's
    seed: int = 0
    deterministic: bool = False
    resume: str | None = None                 # path, or 'auto' = work_dir/latest.pth
    workers: int | None = None
    log_interval: int = 10
    checkpoint_interval: int = 500            # also write latest.pth every N iterations; 0: off
    progress: bool = True
    tensorboard: bool = True


def validate_train_options(options: TrainOptions) -> TrainOptions:
    """Refuse option values that would silently mean something else (``--epochs 0`` was "the
    preset's", ``-1`` an untrained model). Returns ``options``; raises TrainArgumentError."""
    rules = (('epochs', '--epochs', 1, True), ('batch_size', '--batch-size', 1, True),
             ('max_iters', '--max-iters', 1, True), ('workers', '--workers', 0, True),
             ('log_interval', '--log-interval', 1, False),
             ('checkpoint_interval', '--checkpoint-interval', 0, False))
    for name, flag, lowest, optional in rules:
        value = getattr(options, name)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            default = " (leave it out for the preset's)" if name in ('epochs', 'batch_size') else ''
            raise TrainArgumentError(f'{flag} must be an integer >= {lowest}, got {value!r}{default}')
    return options


def reduce_logs(losses: dict[str, torch.Tensor], info: DistInfo) -> dict[str, float]:
    """Detached loss values averaged over processes (for logging only)."""
    names = sorted(losses)
    values = torch.stack([losses[k].detach().float() for k in names])
    if info.distributed:
        dist.all_reduce(values)
        values /= info.world_size
    return dict(zip(names, values.tolist()))


def gather_rng_states(info: DistInfo) -> list[dict]:
    """Every process's RNG states, in rank order (each rank draws its own DN noise and
    augmentation, so an exact resume needs all of them)."""
    return gather_objects(rng_state(), info)


def gather_objects(value, info: DistInfo) -> list:
    """``value`` of every process, in rank order (CPU objects; all processes call this together)."""
    if not info.distributed:
        return [value]
    values: list = [None] * info.world_size
    dist.all_gather_object(values, value)
    return values


def any_process(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` is set in any process (all processes must call this together;
    the tensor lives on ``device`` because nccl reduces CUDA tensors only)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def train(cfg: ModelConfig, dataset: Dataset, options: TrainOptions, device: torch.device,
          info: DistInfo | None = None, model: torch.nn.Module | None = None) -> dict:
    """Train ``model`` (default: ``build_model(cfg)``) on ``dataset``; returns a summary dict.

    Writes ``work_dir/latest.pth`` (training state) every epoch, on SIGTERM and at
    ``max_iters``, and ``work_dir/model_final.pth`` (weights only) when all epochs are done.
    """
    validate_train_options(options)
    info = info or DistInfo()
    streaming = cfg.head.memory is not None          # SparseBEV++: video, one frame per step
    work_dir = Path(options.work_dir)
    if info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(work_dir):
            print(f'removed {stale}, left by an interrupted checkpoint save', file=sys.stderr)
    epochs = cfg.train.epochs if options.epochs is None else options.epochs
    batch_size = per_process_batch_size(
        cfg.train.total_batch_size if options.batch_size is None else options.batch_size,
        info.world_size)
    if model is None:
        from ..model.detector import build_model
        model = build_model(cfg, amp=device.type == 'cuda')
    model.to(device)
    model.train()
    ddp_model = model
    if info.distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None,
            broadcast_buffers=False, find_unused_parameters=False)

    if streaming:
        stream = StreamPlan(dataset, cfg.train.seq_split_num, batch_size, info, options.seed)
        slots = SlotStates(cfg.head, batch_size, device)
        iters_per_epoch = stream.iters_per_epoch
    else:
        samples = SeededSamples(dataset, options.seed)
        iters_per_epoch = batches_per_epoch(len(samples), info, batch_size)
    planned_iters = epochs * iters_per_epoch
    total_iters = planned_iters if options.max_iters is None else min(planned_iters, options.max_iters)

    criterion = SparseBEVLoss(num_classes=cfg.head.num_classes, code_weights=cfg.head.code_weights,
                              dn_weight=cfg.head.dn_weight)
    optimizer = build_optimizer(model, cfg.train)
    schedule = CosineWarmupSchedule(optimizer, epochs, cfg.train.warmup_iters,
                                    cfg.train.warmup_ratio, cfg.train.min_lr_ratio,
                                    total_iters=None if cfg.train.lr_by_epoch else planned_iters)
    scaler = build_scaler(device, cfg.train.loss_scale)
    meta = {'preset': cfg.name, 'seed': options.seed, 'epochs': epochs,
            'world_size': info.world_size, 'total_batch_size': batch_size * info.world_size}

    position = TrainPosition()
    if options.resume:
        resume_path = work_dir / LATEST if options.resume == 'auto' else Path(options.resume)
        position, saved = load_training_state(resume_path, model, optimizer, schedule, scaler,
                                              rank=info.rank,
                                              stream_slots=slots if streaming else None)
        for key in ('preset', 'world_size', 'total_batch_size', 'epochs', 'seed'):
            if key in saved and saved[key] != meta[key]:
                raise TrainingCheckpointError(
                    f'{resume_path} was written by a run with {key}={saved[key]!r}; '
                    f'this run has {key}={meta[key]!r}. An exact resume needs the '
                    f'same preset, processes, total batch, epochs and seed')
    workers = cfg.train.workers_per_gpu if options.workers is None else options.workers
    writer = _summary_writer(work_dir) if (info.is_main and options.tensorboard) else None
    progress = _progress_bar(total_iters, position.global_iteration,
                             enabled=info.is_main and options.progress)
    last_logs: dict[str, float] = {}
    loss_history: list[float] = []            # this process's total loss per iteration
    stopped_early = False

    def checkpoint() -> None:
        rng_states = gather_rng_states(info)
        stream_states = gather_objects(slots.state_dict(), info) if streaming else None
        if info.is_main:
            save_training_state(work_dir, model, optimizer, schedule, scaler, position, meta,
                                rng_states=rng_states, stream_states=stream_states)
        if info.distributed:
            dist.barrier()

    def epoch_loader() -> DataLoader:
        """The rest of the current epoch's batches (from ``position``)."""
        common = dict(num_workers=workers, generator=torch.Generator().manual_seed(options.seed),
                      pin_memory=device.type == 'cuda')
        if streaming:
            plan = stream.batches(position.global_iteration,
                                  iters_per_epoch - position.iteration_in_epoch)
            return DataLoader(StreamSamples(dataset, options.seed), batch_sampler=plan,
                              collate_fn=collate_stream_samples, **common)
        samples.epoch = position.epoch
        indices = epoch_indices(len(samples), info, options.seed, position.epoch)
        indices = indices[position.iteration_in_epoch * batch_size:]
        return DataLoader(samples, batch_size=batch_size, sampler=indices,
                          collate_fn=collate_samples, **common)

    with SigtermFlag() as sigterm:
        while position.epoch < epochs and position.global_iteration < total_iters:
            for batch in epoch_loader():
                schedule.step(position.epoch, position.global_iteration)
                batch = move_batch(batch, device)
                if streaming:
                    logs = stream_train_step(ddp_model, criterion, optimizer, scaler, cfg, batch, slots)
                else:
                    logs = train_step(ddp_model, criterion, optimizer, scaler, cfg, batch)
                loss_history.append(float(logs['_losses']['loss'].detach()))
                position.iteration_in_epoch += 1
                position.global_iteration += 1
                if (position.global_iteration % options.log_interval == 0
                        or position.global_iteration == total_iters):
                    last_logs = reduce_logs(logs.pop('_losses'), info) | logs
                    _log(writer, progress, last_logs, optimizer, position.global_iteration)
                else:
                    logs.pop('_losses')
                if progress is not None:
                    progress.update(1)
                stop = any_process(sigterm.requested, info, device)
                if stop or position.global_iteration >= total_iters:
                    stopped_early = stop or position.global_iteration < planned_iters
                    break
                if (options.checkpoint_interval and position.iteration_in_epoch < iters_per_epoch
                        and position.global_iteration % options.checkpoint_interval == 0):
                    checkpoint()                  # a kill before the epoch ends can resume here
            if position.iteration_in_epoch >= iters_per_epoch:
                position.epoch += 1
                position.iteration_in_epoch = 0
            checkpoint()
            if stopped_early:
                break
    if progress is not None:
        progress.close()
    if writer is not None:
        writer.close()
    finished = position.epoch >= epochs
    if finished and info.is_main:
        atomic_save({'state_dict': model.state_dict(), 'meta': meta}, work_dir / FINAL_WEIGHTS)
    return {'position': position, 'finished': finished, 'logs': last_logs,
            'loss_history': loss_history, 'checkpoint': str(work_dir / LATEST)}


def train_step(model: torch.nn.Module, criterion: SparseBEVLoss, optimizer, scaler,
               cfg: ModelConfig, batch: dict) -> dict:
    """One optimisation step; returns ``{'grad_norm', '_losses': {name: tensor, 'loss': total}}``."""
    outputs = model(batch['images'], batch['lidar2img'], batch['timestamps'],
                    gt_boxes=batch['gt_boxes'], gt_labels=batch['gt_labels'])
    return optimise(criterion(outputs, batch['gt_boxes'], batch['gt_labels']), optimizer, scaler, cfg)


def stream_train_step(model: torch.nn.Module, criterion: SparseBEVLoss, optimizer, scaler,
                      cfg: ModelConfig, batch: dict, slots: SlotStates) -> dict:
    """One step of streaming training (recurrent presets): every slot's frame from the state its
    previous frame left (cleared at a segment start, ``SlotStates.before_step``), the next state
    kept detached (``after_step``), then the losses of this frame on every decoder layer and one
    optimisation step, as :func:`train_step`."""
    state, motion = slots.before_step(batch['segment_start'], batch['stamp'], batch['model_pose'])
    outputs, next_state = model(batch['images'], batch['lidar2img'], state=state, motion=motion,
                                gt_boxes=batch['gt_boxes'], gt_labels=batch['gt_labels'])
    slots.after_step(next_state, batch['stamp'], batch['model_pose'])
    return optimise(criterion(outputs, batch['gt_boxes'], batch['gt_labels']), optimizer, scaler, cfg)


def optimise(losses: dict[str, torch.Tensor], optimizer, scaler, cfg: ModelConfig) -> dict:
    """Backward of the summed ``losses``, clipping, the optimiser and scaler steps; returns
    ``{'grad_norm', '_losses': {name: tensor, 'loss': total}}``."""
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group['params']]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
    scaler.step(optimizer)                 # skipped when gradients are inf/NaN (fp16)
    scaler.update(cfg.train.loss_scale)    # static scale: back to 512 after every step
    losses['loss'] = loss
    return {'grad_norm': float(grad_norm), '_losses': losses}


def _summary_writer(work_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:            # tensorboard missing: train anyway, say so once
        print('tensorboard is not installed: no scalars will be written', file=sys.stderr)
        return None
    return SummaryWriter(str(work_dir / 'tensorboard'))


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc='train', unit='it', dynamic_ncols=True)


def _log(writer, progress, logs: dict[str, float], optimizer, step: int) -> None:
    lr = optimizer.param_groups[0]['lr']
    if progress is not None:
        progress.set_postfix(loss=f"{logs['loss']:.3f}", cls=f"{logs.get('loss_cls', 0):.3f}",
                             bbox=f"{logs.get('loss_bbox', 0):.3f}", lr=f'{lr:.2e}')
    if writer is not None:
        for name, value in logs.items():
            writer.add_scalar(f'train/{name}', value, step)
        writer.add_scalar('train/lr', lr, step)


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev train`` (and of ``torchrun -m sparsebev_core.engine.train``)."""
    from ..cli_common import add_device_argument, add_model_arguments, add_threads_argument
    add_model_arguments(parser, 'r50_nuimg_704x256', checkpoint='none')
    parser.add_argument('--data', default='data/nuscenes', help='nuScenes (or synthetic) root')
    parser.add_argument('--version', default='v1.0-trainval', help='nuScenes version folder')
    parser.add_argument('--epochs', type=int, default=None, help="default: the preset's")
    parser.add_argument('--batch-size', type=int, default=None,
                        help="total batch over all processes (default: the preset's)")
    parser.add_argument('--work-dir', default=None, help='default: work_dirs/<preset>')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='continue from WORK_DIR/latest.pth, or from the given file')
    parser.add_argument('--max-iters', type=int, default=None,
                        help='stop after this many iterations (checkpoint written)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--deterministic', action='store_true',
                        help='deterministic kernels (exact resume, slower on CUDA)')
    add_device_argument(parser)
    parser.add_argument('--pretrained', default=None,
                        help="backbone pretrain file (default: the preset's; 'none' = scratch)")
    parser.add_argument('--workers', type=int, default=None, help='data-loader workers per process')
    add_threads_argument(parser, default=None)
    parser.add_argument('--log-interval', type=int, default=10)
    parser.add_argument('--checkpoint-interval', type=int, default=500,
                        help='also write latest.pth every N iterations (0: only per epoch)')
    parser.add_argument('--no-progress', action='store_true', help='no tqdm bar')


def load_backbone_pretrain(model: torch.nn.Module, cfg: ModelConfig, pretrained: str | None) -> str:
    """Load the nuImages/DD3D/EVA02 backbone pretrain the preset names (or ``pretrained``)."""
    path = cfg.train.pretrained if pretrained is None else pretrained
    if not path or path == 'none':
        return ''
    if not Path(path).is_file():
        raise PretrainNotFoundError(
            f'backbone pretrain file {path} not found: download the official pretrain checkpoint '
            f"(see README 'Train and evaluate on nuScenes') or pass --pretrained none to train "
            'from scratch')
    from ..checkpoints.pretrain import load_pretrained_backbone
    load_pretrained_backbone(model, path)
    return path


def main(args: argparse.Namespace) -> int:
    """``sparsebev train``: build preset, data and model, then run ``train``."""
    from ..cli_common import model_config_from_args
    from ..model.detector import build_model
    cfg = model_config_from_args(args)
    options = validate_train_options(TrainOptions(
        work_dir=args.work_dir or f'work_dirs/{cfg.name}', epochs=args.epochs,
        max_iters=args.max_iters, batch_size=args.batch_size, seed=args.seed,
        deterministic=args.deterministic, resume=args.resume, workers=args.workers,
        log_interval=args.log_interval, checkpoint_interval=getattr(args, 'checkpoint_interval', 500),
        progress=not args.no_progress))
    if args.threads:
        torch.set_num_threads(args.threads)
    info = init_distributed(args.device)
    device = torch.device(resolve_device(args.device, local_rank=info.local_rank))
    if device.type == 'cuda':
        torch.cuda.set_device(device)            # each torchrun process on its own GPU
    set_random_seed(args.seed + info.rank, args.deterministic)
    dataset = build_train_dataset(cfg, args.data, args.version)
    torch.manual_seed(args.seed)                       # same initial weights in every process
    model = build_model(cfg, amp=device.type == 'cuda')
    torch.manual_seed(args.seed + info.rank)
    if args.resume is None:
        load_backbone_pretrain(model, cfg, args.pretrained)
    attach_image_augmentations(model, cfg)
    start = time.time()
    summary = train(cfg, dataset, options, device, info, model)
    if info.is_main:
        state = 'finished' if summary['finished'] else 'stopped'
        saved = Path(summary['checkpoint'])
        print(f"{state} at epoch {summary['position'].epoch}, iteration "
              f"{summary['position'].global_iteration} after {time.time() - start:.0f} s; "
              + (f'checkpoint {saved}' if saved.is_file() else 'no checkpoint written'), flush=True)
    finish_distributed(info)
    return 0


if __name__ == '__main__':                 # torchrun -m sparsebev_core.engine.train ...
    from ..cli_common import run_command
    _parser = argparse.ArgumentParser(prog='torchrun -m sparsebev_core.engine.train')
    add_arguments(_parser)
    sys.exit(run_command('sparsebev_core.engine.train', main, _parser.parse_args()))

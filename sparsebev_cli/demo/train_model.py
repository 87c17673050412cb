"""Train the ``tiny`` (or ``tiny_memory``) preset on synthetic scenes until it detects them;
evaluate; export.

This is how ``sparsebev_core/weights/tiny_synthetic.pth`` (the demo model) and
``tiny_memory_synthetic.pth`` (SparseBEV++, ``--preset tiny_memory``: streaming-video training,
started from the tiny weights where names and shapes match, ``--init-from``) are made; see
``docs/demo_model.md`` for the exact commands, seeds, data and time of the shipped files.

Steps: generate the synthetic dataset (``make_synthetic``, skipped when ``--data`` already
holds one; likewise each ``--extra-data`` world), train with the official recipe on its
``mini_train`` scenes and every scene of the extra worlds (resumable: run the same command
again after a kill), evaluate with the nuscenes-devkit on its ``mini_val`` scenes (never seen
in training), and write the weights (fp16 by default, a few MB) with the recipe and the
metrics in the file's ``meta``. The shipped model is four runs of this script: stage 1 from
scratch, stages 2 to 4 each from the previous stage's weights (``--init-from``) on three
worlds (docs/demo_model.md).

    python -m sparsebev_cli.demo.train_model --data /tmp/syn10 --work-dir /tmp/demo_train \
        --export /tmp/stage1.pth

(Stage 1 of the shipped file was made when this recipe lived in ``bench/train_synthetic.py``.)
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset

from sparsebev_core.checkpoints.files import atomic_save
from sparsebev_core.data.dataset import build_dataset
from sparsebev_core.data.synthetic.scenes import make_synthetic
from sparsebev_core.engine.evaluate import evaluate, metrics_table
from sparsebev_core.engine.train import TrainOptions, set_random_seed, train
from sparsebev_core.engine.train_data import attach_image_augmentations
from sparsebev_core.model.detector import build_model
from sparsebev_core.recipe.presets import get_preset

VERSION = 'v1.0-mini'
TRAINABLE_PRESETS = ('tiny', 'tiny_memory')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The recipe's options (defaults: the shipped model's, see docs/demo_model.md)."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--preset', default='tiny', choices=TRAINABLE_PRESETS,
                   help="the model: 'tiny' (the demo model) or 'tiny_memory' (SparseBEV++, "
                        'streaming-video training)')
    p.add_argument('--init-from', '--init', dest='init_from', default=None, metavar='FILE',
                   help='start from these weights, every tensor whose name and shape match: all '
                        'of them for the same preset (fine-tuning, with a fresh optimiser and '
                        'schedule), the shared ones for tiny_memory from the tiny weights; '
                        'ignored when resuming')
    p.add_argument('--data', required=True, help='synthetic dataset root (generated if missing)')
    p.add_argument('--scenes', type=int, default=10, help='scenes to generate (8 train + 2 val)')
    p.add_argument('--keyframes', type=int, default=40, help='keyframes per generated scene')
    p.add_argument('--data-seed', type=int, default=0, help='make_synthetic seed')
    p.add_argument('--extra-data', nargs='*', default=[], metavar='ROOT',
                   help='more synthetic worlds to train on, every scene of each (mini_train and '
                        'mini_val); the i-th (from 1) is generated with seed DATA_SEED + i when '
                        'missing. Evaluation stays on the mini_val scenes of --data')
    p.add_argument('--work-dir', required=True, help='checkpoints, tensorboard, evaluation')
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--lr', type=float, default=None, help="default: the preset's")
    p.add_argument('--lr-by-iteration', action='store_true',
                   help='cosine stepped every iteration (default: every epoch, the v1 rule)')
    p.add_argument('--stop-prev-grad', type=int, default=0,
                   help='frames after the first N run without gradients (official option; '
                        '1 = only the current frame back-propagates, ~20%% less CPU)')
    p.add_argument('--checkpoint-interval', type=int, default=500,
                   help='also write latest.pth every N iterations (evaluate it with --eval-only)')
    p.add_argument('--seed', type=int, default=0, help='training seed')
    p.add_argument('--max-iters', type=int, default=None, help='stop early (resumable)')
    p.add_argument('--grid-mask', action='store_true', help='GridMask on (off by default here)')
    p.add_argument('--photometric', action='store_true',
                   help='photometric distortion on (off by default here: the demo scenes come '
                        'from the same renderer, and it costs CPU time)')
    p.add_argument('--dn-groups', type=int, default=3,
                   help='query-denoising groups (official 10; fewer = faster on CPU)')
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads (1 is fastest on a shared, oversubscribed machine)')
    p.add_argument('--export', default=None, help='write the trained weights here')
    p.add_argument('--fp32', action='store_true', help='export fp32 weights (default fp16)')
    p.add_argument('--eval-only', action='store_true', help='skip training, evaluate WORK_DIR')
    return p.parse_args(argv)


def training_scenes(cfg, data: Path, extra_data: list[str]):
    """The ``mini_train`` scenes of ``data`` and every scene of each ``extra_data`` world."""
    parts = [build_dataset(cfg, data, version=VERSION, split='train')]
    for root in extra_data:
        parts += [build_dataset(cfg, root, version=VERSION, split=split, training=True)
                  for split in ('train', 'val')]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def main(argv: list[str] | None = None) -> int:
    """Generate the data if needed, train (resumably), evaluate, export."""
    args = parse_args(argv)
    command = 'python -m sparsebev_cli.demo.train_model ' + ' '.join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    data = Path(args.data)
    work_dir = Path(args.work_dir)
    for i, root in enumerate([data] + [Path(r) for r in args.extra_data]):
        if not (root / VERSION).is_dir():
            make_synthetic(root, num_scenes=args.scenes, seed=args.data_seed + i,
                           keyframes_per_scene=args.keyframes)
    torch.set_num_threads(args.threads)
    cfg = get_preset(args.preset)
    cfg.head.dn_groups = args.dn_groups
    cfg.train.grid_mask = bool(args.grid_mask)
    cfg.train.photometric = bool(args.photometric)
    cfg.train.total_batch_size = args.batch_size
    if args.lr is not None:
        cfg.train.lr = args.lr
    cfg.train.lr_by_epoch = not args.lr_by_iteration
    cfg.train.stop_prev_grad = args.stop_prev_grad

    set_random_seed(args.seed, deterministic=False)
    model = build_model(cfg)
    initialised, init_meta = None, None
    if args.init_from and not (work_dir / 'latest.pth').is_file():
        initialised, init_meta = init_matching(model, args.init_from)
        print(f'{initialised} of {len(model.state_dict())} tensors from {args.init_from}')
    start = time.time()
    summary = None
    if not args.eval_only:
        dataset = training_scenes(cfg, data, args.extra_data)
        attach_image_augmentations(model, cfg)
        resume = 'auto' if (work_dir / 'latest.pth').is_file() else None
        summary = train(cfg, dataset, TrainOptions(work_dir=str(work_dir), epochs=args.epochs,
                                                   max_iters=args.max_iters, seed=args.seed,
                                                   resume=resume, log_interval=10,
                                                   checkpoint_interval=args.checkpoint_interval),
                        torch.device('cpu'), model=model)
        print(f"training stopped at {summary['position']} after {time.time() - start:.0f} s "
              f"(this invocation)", flush=True)
        if not summary['finished'] and args.max_iters is None:
            print('stopped before the last epoch (SIGTERM): run the same command again to resume')
            return 1
    else:
        state = torch.load(work_dir / 'latest.pth', map_location='cpu', weights_only=False)
        model.load_state_dict(state['state_dict'])

    state_dict = model.state_dict()
    if not args.fp32:               # evaluate exactly what is shipped
        state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
        model.load_state_dict(state_dict)
    model.photometric_aug = model.grid_mask = None
    metrics = evaluate(model.eval(), cfg, data, version=VERSION, split='val', mode='online',
                       out_dir=work_dir / 'eval', device='cpu')
    print(metrics_table(metrics))
    meta = dict(preset=args.preset, command=command, data=str(data), data_seed=args.data_seed,
                extra_data=args.extra_data, init_from=args.init_from, init_meta=init_meta,
                scenes=args.scenes, keyframes=args.keyframes, train_seed=args.seed,
                epochs=args.epochs, batch_size=args.batch_size, lr=cfg.train.lr,
                dn_groups=cfg.head.dn_groups, threads=args.threads,
                lr_by_iteration=args.lr_by_iteration, stop_prev_grad=args.stop_prev_grad,
                grid_mask=cfg.train.grid_mask, photometric=cfg.train.photometric,
                iterations=summary['position'].global_iteration if summary else None,
                mAP=metrics.get('mean_ap'), NDS=metrics.get('nd_score'))
    (work_dir / 'demo_model_meta.json').write_text(json.dumps(meta, indent=2))
    if args.export:
        atomic_save({'state_dict': state_dict, 'meta': meta}, args.export)
        print(f'wrote {args.export} ({Path(args.export).stat().st_size / 1e6:.1f} MB)')
    return 0


def init_matching(model: torch.nn.Module, path: str) -> tuple[int, dict | None]:
    """Copy the tensors of the checkpoint at ``path`` whose names and shapes match ``model``'s
    (the rest keep their initialisation); returns how many were copied and the file's ``meta``
    (its recipe and metrics; None if it has none)."""
    checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    source = checkpoint.get('state_dict', checkpoint)
    target = model.state_dict()
    matching = {k: v.to(target[k].dtype) for k, v in source.items()
                if k in target and v.shape == target[k].shape}
    model.load_state_dict(matching, strict=False)
    return len(matching), checkpoint.get('meta')


if __name__ == '__main__':
    sys.exit(main())

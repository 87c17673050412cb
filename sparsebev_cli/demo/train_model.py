"""Train the ``tiny`` (or ``tiny_memory``) preset on synthetic scenes until it detects them;
evaluate; export.

This is how ``sparsebev_core/weights/tiny_synthetic.pth`` (the demo model) and
``tiny_memory_synthetic.pth`` (SparseBEV++, ``--preset tiny_memory``: streaming-video training,
started from the tiny weights where names and shapes match, ``--init-from``) are made; see
``docs/demo_model.md`` for the exact commands, seeds, data and time of the shipped files.

Steps: generate the synthetic dataset (``make_synthetic``, skipped when ``--data`` already
holds one), train with the official recipe on its ``mini_train`` scenes (resumable: run the
same command again after a kill), evaluate with the nuscenes-devkit on its ``mini_val``
scenes (never seen in training), and write the weights (fp16 by default, a few MB) with the
recipe and the metrics in the file's ``meta``.

    python -m sparsebev_cli.demo.train_model --data /tmp/syn10 --work-dir /tmp/demo_train \
        --export sparsebev_core/weights/tiny_synthetic.pth

(The shipped file was made when this recipe lived in ``bench/train_synthetic.py``; the code is
the same.)
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

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
    p.add_argument('--init-from', default=None,
                   help='start from these weights where names and shapes match (e.g. the tiny '
                        'weights for tiny_memory); ignored when resuming')
    p.add_argument('--data', required=True, help='synthetic dataset root (generated if missing)')
    p.add_argument('--scenes', type=int, default=10, help='scenes to generate (8 train + 2 val)')
    p.add_argument('--keyframes', type=int, default=40, help='keyframes per generated scene')
    p.add_argument('--data-seed', type=int, default=0, help='make_synthetic seed')
    p.add_argument('--work-dir', required=True, help='checkpoints, tensorboard, evaluation')
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--lr', type=float, default=None, help="default: the preset's")
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


def main(argv: list[str] | None = None) -> int:
    """Generate the data if needed, train (resumably), evaluate, export."""
    args = parse_args(argv)
    command = 'python -m sparsebev_cli.demo.train_model ' + ' '.join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    data = Path(args.data)
    work_dir = Path(args.work_dir)
    if not (data / VERSION).is_dir():
        make_synthetic(data, num_scenes=args.scenes, seed=args.data_seed,
                       keyframes_per_scene=args.keyframes)
    torch.set_num_threads(args.threads)
    cfg = get_preset(args.preset)
    cfg.head.dn_groups = args.dn_groups
    cfg.train.grid_mask = bool(args.grid_mask)
    cfg.train.photometric = bool(args.photometric)
    cfg.train.total_batch_size = args.batch_size
    if args.lr is not None:
        cfg.train.lr = args.lr

    set_random_seed(args.seed, deterministic=False)
    model = build_model(cfg)
    initialised = None
    if args.init_from and not (work_dir / 'latest.pth').is_file():
        initialised = init_matching(model, args.init_from)
        print(f'{initialised} of {len(model.state_dict())} tensors from {args.init_from}')
    start = time.time()
    summary = None
    if not args.eval_only:
        dataset = build_dataset(cfg, data, version=VERSION, split='train')
        attach_image_augmentations(model, cfg)
        resume = 'auto' if (work_dir / 'latest.pth').is_file() else None
        summary = train(cfg, dataset, TrainOptions(work_dir=str(work_dir), epochs=args.epochs,
                                                   max_iters=args.max_iters, seed=args.seed,
                                                   resume=resume, log_interval=10),
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
    meta = dict(preset=args.preset, command=command, init_from=args.init_from, data=str(data), data_seed=args.data_seed,
                scenes=args.scenes, keyframes=args.keyframes, train_seed=args.seed,
                epochs=args.epochs, batch_size=args.batch_size, lr=cfg.train.lr,
                dn_groups=cfg.head.dn_groups, threads=args.threads,
                grid_mask=cfg.train.grid_mask, photometric=cfg.train.photometric,
                iterations=summary['position'].global_iteration if summary else None,
                mAP=metrics.get('mean_ap'), NDS=metrics.get('nd_score'))
    (work_dir / 'demo_model_meta.json').write_text(json.dumps(meta, indent=2))
    if args.export:
        atomic_save({'state_dict': state_dict, 'meta': meta}, args.export)
        print(f'wrote {args.export} ({Path(args.export).stat().st_size / 1e6:.1f} MB)')
    return 0


def init_matching(model: torch.nn.Module, path: str) -> int:
    """Copy the tensors of the checkpoint at ``path`` whose names and shapes match ``model``'s
    (the rest keep their initialisation); returns how many were copied."""
    source = torch.load(path, map_location='cpu', weights_only=False)
    source = source.get('state_dict', source)
    target = model.state_dict()
    matching = {k: v.to(target[k].dtype) for k, v in source.items()
                if k in target and v.shape == target[k].shape}
    model.load_state_dict(matching, strict=False)
    return len(matching)


if __name__ == '__main__':
    sys.exit(main())

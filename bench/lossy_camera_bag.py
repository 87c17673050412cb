"""A 12 Hz bag where one camera loses 20% of its images and every stamp jitters +-5 ms,
replayed through the pipeline with the tiny model (docs/rigs.md).

    PYTHONPATH=.:test OMP_NUM_THREADS=1 python bench/lossy_camera_bag.py --frames 240

The bag is the closed-form drive of ``test/ros_scene.py`` (64x36 JPEGs, six cameras);
prints published / anchor frames, degraded frames, and the sets spanning more than
``sync_window``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=240)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))
    import numpy as np
    import torch
    from ros_scene import write_drive

    from sparsebev_ros.bags.replay import replay
    from sparsebev_ros.params import validate
    from sparsebev_ros.pipeline import build_detector

    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    jitter = rng.integers(-5_000_000, 5_000_001, (args.frames, 6))
    lost = rng.random(args.frames) < 0.2
    params = validate({'preset': 'tiny', 'device': 'cpu'})
    with tempfile.TemporaryDirectory() as tmp:
        bag = write_drive(Path(tmp) / 'in', 'sqlite3', num_frames=args.frames,
                          jitter_ns=lambda f, i: int(jitter[f, i]),
                          drop=lambda f, i: i == 5 and bool(lost[f]))
        report = replay(bag.path, Path(tmp) / 'out', params,
                        build_detector(params, log=lambda text: None), progress=False)
    anchors = len(bag.anchor_stamps)
    print(f'| frames (anchor images) | {anchors} |\n'
          f'| CAM_BACK_RIGHT images lost | {int(lost.sum())} ({lost.mean():.0%}) |\n'
          f'| published | {report.stats.published} ({report.stats.published / anchors:.1%}) |\n'
          f'| degraded (published without CAM_BACK_RIGHT) | {report.stats.degraded} |\n'
          f'| skipped | {sum(report.stats.skipped.values())} |\n'
          f'| sets spanning more than sync_window (60 ms) | {report.sets_over_window} '
          f'(widest {report.max_set_spread_ns / 1e6:.1f} ms) |\n'
          f'| synchroniser drops | {dict(report.sync_counts) or "none"} |')
    print(report.summary())
    return 0


if __name__ == '__main__':
    sys.exit(main())

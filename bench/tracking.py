"""Track IDs of SparseBEV++ against greedy centre-distance association, by the nuScenes tracking
metrics (nuscenes-devkit ``TrackingEval``: AMOTA, AMOTP, ID switches), in one run.

    PYTHONPATH=. python bench/tracking.py --data DATA [--split val] [--checkpoint FILE] [--out DIR]

DATA is a nuScenes-format dataset (``sparsebev make-synthetic``; docs/tracking.md names the
one measured). Every scene of the split streams through ``StreamingDetector`` (``tiny_memory``
with its bundled weights unless ``--checkpoint``), keyframes in time order, reset at each scene
start; each frame's detections (the decoder's threshold and top-k), one box per query (its
best class: the detections of one query share its track ID), are written twice, with the same
boxes and scores:

* ``queries``: the model's own track IDs (``Detections.track_ids``: a propagated query keeps
  its identity, ``streaming.track_ids``);
* ``greedy``: IDs from ``engine.greedy_tracker.GreedyTracker`` (per class, velocity-predicted
  centres, CenterPoint's gates, nearest pair first), reset at each scene start.

Then the devkit scores both submissions. Prints a markdown table and the machine; writes the
submissions and the devkit's summaries under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recurrent_vs_cache import cpu_name  # noqa: E402  (bench/, the script's folder)

from sparsebev_core.data.dataset import build_dataset  # noqa: E402
from sparsebev_core.data.infos import resolve_split, stream_scenes  # noqa: E402
from sparsebev_core.engine.evaluate import boxes_to_submission, class_ranges, write_submission  # noqa: E402
from sparsebev_core.engine.greedy_tracker import GreedyTracker  # noqa: E402
from sparsebev_core.engine.tracking_eval import (run_tracking_eval, tracking_names,  # noqa: E402
                                                 tracking_records, tracking_table)
from sparsebev_core.loading import load_model  # noqa: E402
from sparsebev_core.recipe.presets import model_config  # noqa: E402
from sparsebev_core.streaming.detector import StreamingDetector  # noqa: E402


def best_per_query(records: list[dict]) -> list[dict]:
    """One box per query: the best-scoring record of each track ID (a query's other classes
    share its ID; the decoding gives them in descending score order)."""
    kept: dict[str, dict] = {}
    for record in records:
        kept.setdefault(record['tracking_id'], record)
    return list(kept.values())


def track_scenes(detector: StreamingDetector, infos: list[dict], data_root: Path) -> dict:
    """``{'queries': results, 'greedy': results}``: the devkit's tracking records per sample
    token, the same detections with the model's IDs and with the greedy tracker's."""
    names, ranges = tracking_names(), class_ranges()
    greedy = GreedyTracker()
    ours, baseline, scene = {}, {}, None
    for info, det in stream_scenes(detector, infos, data_root):
        if det.track_ids is None:
            raise SystemExit(f'preset {detector.cfg.name!r} does not track (no track IDs): '
                             'use a SparseBEV++ preset (tiny_memory)')
        if info['scene_token'] != scene:
            greedy.reset()
            scene = info['scene_token']
        records = tracking_records(best_per_query(boxes_to_submission(
            det.boxes, det.scores, det.labels, info['token'], info['T_ego_model'],
            info['T_world_ego'], detector.cfg.class_names, ranges, track_ids=det.track_ids)), names)
        ours[info['token']] = records
        centres = np.array([r['translation'][:2] for r in records]).reshape(-1, 2)
        velocities = np.array([r['velocity'] for r in records]).reshape(-1, 2)
        ids = greedy.step(float(info['timestamp']), centres, velocities,
                          [r['tracking_name'] for r in records])
        baseline[info['token']] = [dict(r, tracking_id=str(i)) for r, i in zip(records, ids)]
    return {'queries': ours, 'greedy': baseline}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', required=True, help='nuScenes-format dataset root')
    p.add_argument('--version', default='v1.0-mini')
    p.add_argument('--split', default='val')
    p.add_argument('--preset', default='tiny_memory')
    p.add_argument('--checkpoint', default=None, help="default: the preset's bundled weights")
    p.add_argument('--out', default='work_dirs/tracking')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    cfg = model_config(args.preset)
    loaded = load_model(cfg, args.checkpoint)
    detector = StreamingDetector(loaded.model, cfg, device='cpu')
    eval_set = resolve_split(args.version, args.split)
    infos = build_dataset(cfg, args.data, version=args.version, split=eval_set,
                          training=False).infos
    summaries = {}
    for name, results in track_scenes(detector, infos, Path(args.data)).items():
        path = write_submission(results, out / name / 'results_tracking.json')
        summaries[name] = run_tracking_eval(path, eval_set, out / name, args.version, args.data)
    (out / 'summary.json').write_text(json.dumps(
        {name: {k: v for k, v in s.items() if k != 'label_metrics'} for name, s in summaries.items()},
        indent=2))
    scenes = len({i['scene_token'] for i in infos})
    print(f'{args.preset} ({loaded.checkpoint}), {eval_set} of {args.data}: {scenes} scenes, '
          f'{len(infos)} keyframes')
    print(f'machine: {cpu_name()}, {torch.get_num_threads()} torch thread(s), torch '
          f'{torch.__version__}\n')
    print(tracking_table(summaries))
    return 0


if __name__ == '__main__':
    sys.exit(main())

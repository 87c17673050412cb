"""nuScenes tracking metrics of tracked detections (nuscenes-devkit ``TrackingEval``).

The devkit's tracking benchmark (config ``tracking_nips_2019``): seven classes (bicycle, bus,
car, motorcycle, pedestrian, trailer, truck), every box of every sample of the split with a
``tracking_id``, ``tracking_name`` and ``tracking_score``; AMOTA and AMOTP average MOTA-like
accuracy and the position error over recall thresholds, ``ids`` counts identity switches.
It needs ``pandas`` and ``motmetrics`` beside the devkit (the ``test`` extra installs them).

Detections become tracking records through ``evaluate.boxes_to_submission(..., track_ids=)``
(global frame, the devkit's class ranges) and :func:`tracking_records` (the tracking classes,
the detection score as the tracking score). Synthetic datasets work as nuScenes ones: their
scenes carry the mini split names and their annotations instance tokens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import InputError

TRACKING_CONFIG = 'tracking_nips_2019'
TABLE_METRICS = ('amota', 'amotp', 'ids', 'frag', 'mota', 'recall', 'tp', 'fp', 'fn')


def tracking_names() -> tuple[str, ...]:
    """The classes the devkit's tracking benchmark scores."""
    from nuscenes.eval.common.config import config_factory
    return tuple(config_factory(TRACKING_CONFIG).tracking_names)


def tracking_records(records: Iterable[Mapping], names: Iterable[str] | None = None) -> list[dict]:
    """Detection submission records that carry a ``tracking_id`` -> the devkit's tracking
    records (``tracking_name`` = the detection name, ``tracking_score`` = its score), the
    tracking classes (``names``, default :func:`tracking_names`) only."""
    names = set(tracking_names() if names is None else names)
    return [dict(sample_token=r['sample_token'], translation=list(r['translation']),
                 size=list(r['size']), rotation=list(r['rotation']), velocity=list(r['velocity']),
                 tracking_id=str(r['tracking_id']), tracking_name=r['detection_name'],
                 tracking_score=float(r['detection_score']))
            for r in records if r['detection_name'] in names]


def run_tracking_eval(result_path: str | Path, eval_set: str, out_dir: str | Path, version: str,
                      data_root: str | Path, verbose: bool = False) -> dict:
    """The devkit's ``TrackingEval`` (``tracking_nips_2019``) of the submission at
    ``result_path`` (``evaluate.write_submission`` of tracking records, every sample of
    ``eval_set``); returns its metrics summary (``amota``, ``amotp``, ``ids``, ``label_metrics``,
    ...), also written to ``out_dir/metrics_summary.json``. A submission without any box is
    an ``InputError``."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.tracking.evaluate import TrackingEval

    if not any(json.loads(Path(result_path).read_text())['results'].values()):
        raise InputError(f'{result_path} has no tracked box of the classes {", ".join(tracking_names())}: '
                         'nothing to score (the devkit cannot read an empty submission)')
    evaluation = TrackingEval(config_factory(TRACKING_CONFIG), str(result_path), eval_set,
                              str(out_dir), version, str(data_root), verbose=verbose)
    return evaluation.main(render_curves=False)


def tracking_table(summaries: Mapping[str, Mapping]) -> str:
    """Markdown table of the headline metrics, one row per named summary."""
    lines = ['| tracker | ' + ' | '.join(m.upper() if m in ('amota', 'amotp', 'ids', 'mota')
                                          else m for m in TABLE_METRICS) + ' |',
             '|---' * (len(TABLE_METRICS) + 1) + '|']
    for name, summary in summaries.items():
        cells = [f'{summary[m]:.3f}' if isinstance(summary[m], float) and m not in
                 ('ids', 'frag', 'tp', 'fp', 'fn') else f'{int(summary[m])}' for m in TABLE_METRICS]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)

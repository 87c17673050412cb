"""``sparsebev eval``: inference over a split and the nuscenes-devkit detection evaluation.

Two inference modes, as the official code has (docs/official_model.md 6.3):

* ``online`` (the official single-GPU path): keyframes scene by scene, each in time order,
  through ``StreamingDetector``, which runs the backbone on the six current images and takes
  the past frames' features from its cache (a SparseBEV++ model: carries its recurrent state);
  the memory is reset at each scene start (SparseBEV++: by ``--recurrent-reset``);
* ``offline`` (the official multi-GPU path): every frame of every sample through the
  backbone (``NuScenesMultiFrameDataset`` in test mode).

Boxes go to the submission format by :func:`boxes_to_submission` (the official
``output_to_nusc_box`` + ``lidar_nusc_box_to_global`` + attribute rule), then the devkit's
``DetectionEval`` runs and the metrics are printed and written to JSON. Under ``torchrun``
(``WORLD_SIZE`` > 1) every process evaluates a share of the scenes (online) or samples
(offline) and rank 0 gathers the results and runs the devkit.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..attributes import official_attribute
from ..devices import dist_info_from_env, finish_distributed, init_distributed, resolve_device
from ..errors import InputError
from ..geometry import CLASS_NAMES, rot_to_quat
from ..recipe.frame_layout import check_streamable

if TYPE_CHECKING:
    from ..streaming.options import StreamingOptions

SUBMISSION_META = dict(use_camera=True, use_lidar=False, use_radar=False, use_map=False,
                       use_external=False)


def class_ranges() -> dict[str, float]:
    """Per-class evaluation radius (m, ego frame) of the devkit's ``detection_cvpr_2019``."""
    from nuscenes.eval.common.config import config_factory
    return dict(config_factory('detection_cvpr_2019').class_range)


def boxes_to_submission(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                        sample_token: str, T_ego_model: np.ndarray, T_world_ego: np.ndarray,
                        class_names: Sequence[str] = CLASS_NAMES,
                        ranges: dict[str, float] | None = None,
                        track_ids: np.ndarray | None = None) -> list[dict]:
    """Model-frame detections -> nuScenes submission records (global frame).

    Args:
        boxes: (N, 9) ``[x, y, z_bottom, dx, dy, dz, yaw, vx, vy]`` in the model (LIDAR_TOP)
            frame, as ``SparseBEV.decode`` returns them.
        scores, labels: (N,) each.
        T_ego_model, T_world_ego: the keyframe's LIDAR_TOP -> ego calibration and ego pose.
        ranges: per-class radius filter in the ego frame (default: the devkit's).
        track_ids: (N,) the boxes' track IDs (``Detections.track_ids``), or None.
    Returns:
        one dict per kept box: gravity-centre ``translation``, ``size`` (w, l, h) =
        (dy, dx, dz), ``rotation`` (w, x, y, z), ``velocity`` (vx, vy), name, score and the
        official attribute; with ``track_ids`` also ``tracking_id`` (a string, as the devkit's
        tracking submissions have it).
    """
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    ranges = class_ranges() if ranges is None else ranges
    q_ego_model = Quaternion(rot_to_quat(np.asarray(T_ego_model)[:3, :3]))
    q_world_ego = Quaternion(rot_to_quat(np.asarray(T_world_ego)[:3, :3]))
    boxes = np.asarray(boxes, np.float64).reshape(-1, 9)
    ids = [None] * len(boxes) if track_ids is None else np.asarray(track_ids).reshape(-1).tolist()
    out = []
    for box, score, label, track_id in zip(boxes, np.asarray(scores).reshape(-1),
                                           np.asarray(labels).reshape(-1), ids):
        name = class_names[int(label)]
        centre = box[:3] + np.array([0.0, 0.0, box[5] * 0.5])             # gravity centre
        nusc_box = Box(centre, box[[4, 3, 5]], Quaternion(axis=[0, 0, 1], radians=float(box[6])),
                       velocity=(float(box[7]), float(box[8]), 0.0))
        nusc_box.rotate(q_ego_model)
        nusc_box.translate(np.asarray(T_ego_model)[:3, 3])
        if np.linalg.norm(nusc_box.center[:2]) > ranges[name]:
            continue
        nusc_box.rotate(q_world_ego)
        nusc_box.translate(np.asarray(T_world_ego)[:3, 3])
        speed = math.hypot(nusc_box.velocity[0], nusc_box.velocity[1])
        out.append(dict(
            sample_token=sample_token,
            translation=[float(v) for v in nusc_box.center],
            size=[float(v) for v in nusc_box.wlh],
            rotation=[float(v) for v in nusc_box.orientation.elements],
            velocity=[float(v) for v in nusc_box.velocity[:2]],
            detection_name=name,
            detection_score=float(score),
            attribute_name=official_attribute(name, speed)))
        if track_id is not None:
            out[-1]['tracking_id'] = str(track_id)
    return out


def write_submission(results: dict[str, list[dict]], path: str | Path) -> Path:
    """``{'meta', 'results'}`` JSON as the devkit (and the eval.ai server) reads it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(meta=SUBMISSION_META, results=results)))
    return path


def run_detection_eval(nusc, result_path: str | Path, eval_set: str, out_dir: str | Path,
                       verbose: bool = False) -> dict:
    """The devkit's ``DetectionEval`` (``detection_cvpr_2019``); returns its serialised metrics
    (``mean_ap``, ``nd_score``, ``tp_errors``, ``mean_dist_aps``, ...)."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = config_factory('detection_cvpr_2019')
    results = json.loads(Path(result_path).read_text())['results']
    if not any(results.values()):
        # the devkit cannot infer the box type of an empty submission and raises; nothing
        # detected means AP 0 and the worst TP errors, i.e. NDS 0
        summary = _empty_summary(config)
        (out_dir / 'metrics_summary.json').write_text(json.dumps(summary, indent=2))
        return summary
    evaluation = DetectionEval(nusc, config, str(result_path), eval_set, str(out_dir),
                               verbose=verbose)
    metrics, _ = evaluation.evaluate()
    summary = metrics.serialize()
    (out_dir / 'metrics_summary.json').write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_samples(nusc, results: dict[str, list[dict]], out_dir: str | Path) -> dict:
    """nuScenes detection metrics (``detection_cvpr_2019``) over the samples of ``results`` only.

    ``results``: submission records per sample token (:func:`boxes_to_submission`), written to
    ``out_dir/results_nusc.json``. The devkit's ``DetectionEval`` constructor takes a whole
    split (a predefined one, or a ``splits.json`` it reads from inside the dataset folder) and
    requires predictions for every sample of it; one scene of v1.0-trainval (``sparsebev demo
    --nuscenes``) is neither. So the ground truth of exactly these samples is loaded with the
    devkit's ``load_gt_of_sample_tokens``, both sides are filtered with its ``add_center_dist``
    + ``filter_eval_boxes``, and its own ``DetectionEval.evaluate()`` computes the metrics.
    Adds ``num_samples``, ``num_gt_boxes`` and ``num_pred_boxes`` to the summary.
    """
    import contextlib
    import io

    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.loaders import load_gt_of_sample_tokens
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.eval.detection.evaluate import DetectionEval

    class SampleSubsetEval(DetectionEval):
        """``DetectionEval.evaluate()`` on given, already filtered boxes (its constructor
        loads whole splits, which is what this avoids)."""

        def __init__(self, config, gt_boxes, pred_boxes) -> None:   # no super().__init__()
            self.nusc, self.cfg, self.verbose, self.output_dir = nusc, config, False, str(out_dir)
            self.gt_boxes, self.pred_boxes = gt_boxes, pred_boxes
            self.sample_tokens = gt_boxes.sample_tokens

    out_dir = Path(out_dir)
    write_submission(results, out_dir / 'results_nusc.json')
    config = config_factory('detection_cvpr_2019')
    with contextlib.redirect_stderr(io.StringIO()):            # the devkit's own tqdm bar
        gt = load_gt_of_sample_tokens(nusc, list(results), DetectionBox, verbose=False)
    predictions = EvalBoxes.deserialize(results, DetectionBox)
    evaluation = SampleSubsetEval(config, _filter_boxes(nusc, gt, config.class_range),
                                  _filter_boxes(nusc, predictions, config.class_range))
    metrics, _ = evaluation.evaluate()
    summary = metrics.serialize()
    summary['num_samples'] = len(results)
    summary['num_gt_boxes'] = int(sum(len(evaluation.gt_boxes[t])
                                      for t in evaluation.gt_boxes.sample_tokens))
    summary['num_pred_boxes'] = int(sum(len(v) for v in results.values()))
    return summary


def _filter_boxes(nusc, boxes, class_range: dict):
    """The devkit's centre distance + range/points filter (which fails on zero boxes)."""
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes
    if not boxes.all:
        return boxes
    return filter_eval_boxes(nusc, add_center_dist(nusc, boxes), class_range)


def _empty_summary(config) -> dict:
    """The devkit's summary for a submission without any box: AP 0, TP errors 1."""
    names = list(config.class_names)
    tp_names = ('trans_err', 'scale_err', 'orient_err', 'vel_err', 'attr_err')
    return dict(mean_ap=0.0, nd_score=0.0, tp_errors={k: 1.0 for k in tp_names},
                mean_dist_aps={n: 0.0 for n in names},
                label_tp_errors={n: {k: 1.0 for k in tp_names} for n in names},
                note='no detections in the submission')


def metrics_table(summary: dict) -> str:
    """The headline metrics and per-class AP as text (the official log's order)."""
    tp = summary['tp_errors']
    lines = [f"mAP:  {summary['mean_ap']:.4f}",
             f"mATE: {tp['trans_err']:.4f}", f"mASE: {tp['scale_err']:.4f}",
             f"mAOE: {tp['orient_err']:.4f}", f"mAVE: {tp['vel_err']:.4f}",
             f"mAAE: {tp['attr_err']:.4f}", f"NDS:  {summary['nd_score']:.4f}", '',
             f"{'class':<22}{'AP':>8}"]
    for name, ap in summary['mean_dist_aps'].items():
        lines.append(f'{name:<22}{ap:>8.3f}')
    return '\n'.join(lines)


# ------------------------------------------------------------------------------ inference
def infer_online(model, cfg, infos: Sequence[dict], data_root: str | Path, device: str = 'cpu',
                 progress: bool = True, options: 'StreamingOptions | None' = None
                 ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Keyframes through ``StreamingDetector``, scene by scene, each in time order, reset at each
    scene start (a v1 model's feature cache; a SparseBEV++ model's recurrent state, cleared or
    kept by ``options.recurrent_reset``). Returns ``{sample_token: (boxes, scores, labels)}`` in
    the model frame."""
    from functools import partial

    from tqdm import tqdm

    from ..data.infos import stream_scenes
    from ..streaming.detector import StreamingDetector

    detector = StreamingDetector(model, cfg, device=device, options=options)
    bar = partial(tqdm, desc='eval online', disable=not progress)
    return {info['token']: (det.boxes, det.scores, det.labels)
            for info, det in stream_scenes(detector, infos, data_root, bar)}


def infer_offline(model, cfg, infos: Sequence[dict], data_root: str | Path, device: str = 'cpu',
                  batch_size: int = 1, workers: int = 0, progress: bool = True,
                  indices: Sequence[int] | None = None
                  ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All T frames of every sample (or of the samples ``indices``) through the backbone
    (test-mode dataset over all ``infos``, so that every sample finds its history)."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    from ..data.dataset import NuScenesMultiFrameDataset, collate
    from ..frame import Detections

    dataset = NuScenesMultiFrameDataset(infos, data_root, cfg, training=False)
    if indices is not None:
        dataset = Subset(dataset, list(indices))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate)
    model = model.to(device).eval()
    results = {}
    with torch.inference_mode():
        for batch in tqdm(loader, desc='eval offline', disable=not progress):
            outputs = model(batch['images'].to(device), batch['lidar2img'].to(device),
                            batch['timestamps'].to(device))
            for meta, decoded in zip(batch['meta'], model.decode(outputs)):
                det = Detections.from_decoded(decoded, class_names=cfg.class_names)
                results[meta['sample_token']] = (det.boxes, det.scores, det.labels)
    return results


def to_submission(detections: dict, infos: Sequence[dict],
                  class_names: Sequence[str] = CLASS_NAMES) -> dict[str, list[dict]]:
    """Submission records of every sample (empty lists where nothing was detected)."""
    ranges = class_ranges()
    return {info['token']: boxes_to_submission(*detections[info['token']], info['token'],
                                                info['T_ego_model'], info['T_world_ego'],
                                                class_names, ranges)
            for info in infos}


# ------------------------------------------------------------------------------ distributed
def _shard(infos: Sequence[dict], rank: int, world: int, by_scene: bool) -> list[int]:
    """Indices of this process's samples: whole scenes (online: the feature cache needs each
    scene in order) or every world-th sample (offline)."""
    if by_scene:
        scenes = sorted({i['scene_token'] for i in infos})
        mine = set(scenes[rank::world])
        return [k for k, i in enumerate(infos) if i['scene_token'] in mine]
    return list(range(len(infos)))[rank::world]


def evaluate(model, cfg, data_root: str | Path, version: str = 'v1.0-trainval',
             split: str = 'val', mode: str = 'online', out_dir: str | Path = 'work_dirs/eval',
             device: str = 'cpu', batch_size: int = 1, progress: bool = True,
             options: 'StreamingOptions | None' = None) -> dict | None:
    """Run inference over ``split`` and the devkit evaluation; returns the metrics summary
    (None on ranks other than 0). ``options``: how the online mode streams (default
    ``StreamingOptions()``)."""
    from nuscenes import NuScenes

    from ..data.dataset import build_dataset
    from ..data.infos import resolve_split

    if mode not in ('online', 'offline'):
        raise InputError(f"mode must be 'online' or 'offline', got {mode!r}")
    if mode == 'online':
        check_streamable(cfg)                   # the feature cache cannot see the future
    elif cfg.head.memory is not None:
        raise InputError(f'preset {cfg.name!r} is recurrent (SparseBEV++): its frames run one after '
                         'the other in time order, carrying the state; use --mode online')
    eval_set = resolve_split(version, split)
    infos = build_dataset(cfg, data_root, version=version, split=eval_set, training=False,
                          load_images=False).infos
    info = dist_info_from_env()
    rank, world = info.rank, info.world_size
    mine = _shard(infos, rank, world, by_scene=(mode == 'online'))
    start = time.perf_counter()
    if mode == 'online':
        detections = infer_online(model, cfg, [infos[k] for k in mine], data_root, device,
                                  progress and rank == 0, options)
    else:
        detections = infer_offline(model, cfg, infos, data_root, device, batch_size,
                                   progress=progress and rank == 0, indices=mine)
    if world > 1:
        import torch.distributed as dist
        gathered: list = [None] * world
        dist.all_gather_object(gathered, detections)
        detections = {k: v for part in gathered for k, v in part.items()}
    if rank != 0:
        return None
    seconds = time.perf_counter() - start
    out_dir = Path(out_dir)
    result_path = write_submission(to_submission(detections, infos, cfg.class_names),
                                   out_dir / 'results_nusc.json')
    nusc = NuScenes(version=version, dataroot=str(data_root), verbose=False)
    summary = run_detection_eval(nusc, result_path, eval_set, out_dir)
    summary['inference'] = dict(mode=mode, samples=len(infos), seconds=round(seconds, 2),
                                processes=world)
    (out_dir / 'metrics_summary.json').write_text(json.dumps(summary, indent=2))
    return summary


# ------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev eval``."""
    from ..cli_common import add_device_argument, add_model_arguments
    add_model_arguments(parser, 'r50_nuimg_704x256', checkpoint='required',
                        checkpoint_help='model weights (.pth)')
    parser.add_argument('--data', default='data/nuscenes', help='nuScenes dataset root')
    parser.add_argument('--version', default='v1.0-trainval',
                        choices=('v1.0-trainval', 'v1.0-mini'))
    parser.add_argument('--split', default='val', help='val (mini_val for v1.0-mini) or a devkit split')
    parser.add_argument('--mode', default='online', choices=('online', 'offline'),
                        help='online: feature cache (official single-GPU), the only mode of the '
                             'SparseBEV++ presets; offline: all frames')
    parser.add_argument('--out', default='work_dirs/eval', help='results and metrics folder')
    add_device_argument(parser, '; under torchrun each process takes cuda:LOCAL_RANK')
    parser.add_argument('--batch-size', type=int, default=1, help='offline mode only')
    parser.add_argument('--recurrent-reset', default='clear', choices=('clear', 'official'),
                        help="SparseBEV++ presets: 'clear' (default) forgets the recurrent state at "
                             "each scene start; 'official' keeps it across scenes, as the official "
                             'evaluation does (docs/streaming.md)')


def main(args: argparse.Namespace) -> int:
    """Load the checkpoint, evaluate, print the table."""
    from ..cli_common import model_config_from_args
    from ..loading import load_model

    info = init_distributed(args.device)
    device = resolve_device(args.device, local_rank=info.local_rank if info.distributed else None)
    from ..streaming.options import StreamingOptions
    loaded = load_model(model_config_from_args(args), args.checkpoint)
    summary = evaluate(loaded.model, loaded.cfg, args.data, args.version, args.split, args.mode,
                       args.out, device, args.batch_size,
                       options=StreamingOptions(recurrent_reset=args.recurrent_reset))
    if summary is not None:
        print(metrics_table(summary))
        print(f'metrics written to {Path(args.out) / "metrics_summary.json"}')
    finish_distributed(info)
    return 0

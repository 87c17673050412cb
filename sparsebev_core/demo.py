"""``sparsebev demo``: a synthetic scene end to end, as a robot would see it.

1. generate a synthetic nuScenes-format scene the bundled model never saw in training
   (``data.synthetic.make_synthetic`` with the demo seed), or take a real nuScenes scene
   (``--nuscenes ROOT --scene NAME``);
2. write it as a rosbag2 with compressed camera images, CameraInfo and TF
   (``sparsebev_ros.nuscenes_bag``);
3. replay the bag through the ROS pipeline without ROS (``sparsebev_ros.replay``: the sync,
   TF buffer, FrameAssembler and StreamingDetector the node runs), writing an output bag with
   the detections and markers;
4. score the keyframe detections against the scene's ground truth with nuscenes-devkit
   (mAP, NDS, per-class AP) and draw one picture per keyframe (six cameras with predicted and
   ground-truth boxes, plus a bird's-eye view) and an animated GIF of them.

Everything goes to ``demo_output/`` (or ``--out``); the command prints where to look.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .geometry import (CAMERA_NAMES, CLASS_NAMES, compose_lidar2img, gravity_to_bottom_center,
                       invert_transform, transform_boxes, transform_from_quat)

DEMO_SEED = 20231001                 # world seed of the demo scene; training uses other seeds
DEMO_KEYFRAMES = 20                  # 2 Hz keyframes: a 9.5 s scene
EVAL_SCORE_THRESHOLD = 0.05          # official test-time threshold (boxes scored for mAP)
EVAL_MAX_BOXES = 300                 # official top-k

@dataclass
class DemoReport:
    """Where the demo wrote its outputs and what it measured."""
    out_dir: Path
    scene: str
    input_bag: Path
    output_bag: Path
    pictures: list[Path] = field(default_factory=list)
    animation: Path | None = None
    metrics_json: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    keyframes: int = 0
    keyframes_detected: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    replay_summary: str = ''


# --------------------------------------------------------------------------------------------
# keyframe bookkeeping
# --------------------------------------------------------------------------------------------
@dataclass
class Keyframe:
    """One nuScenes sample and what the pipeline produced for it."""
    index: int
    sample_token: str
    anchor_stamp_ns: int                     # CAM_FRONT keyframe stamp = pipeline frame stamp
    frame: Any = None                        # sparsebev_core.frame.Frame of the pipeline
    boxes: np.ndarray | None = None          # model frame (N, 9), bottom centre
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None


def scene_keyframes(nusc: Any, scene_name: str, max_seconds: float | None = None) -> list[Keyframe]:
    """The scene's samples in time order, keyed by their CAM_FRONT stamp (ns)."""
    scene = next((s for s in nusc.scene if s['name'] == scene_name), None)
    if scene is None:
        raise SystemExit(f"scene '{scene_name}' is not in {nusc.version} at {nusc.dataroot}; "
                         f"scenes: {', '.join(sorted(s['name'] for s in nusc.scene))}")
    keyframes, token, start_us = [], scene['first_sample_token'], None
    while token:
        sample = nusc.get('sample', token)
        stamp_us = nusc.get('sample_data', sample['data'][CAMERA_NAMES[0]])['timestamp']
        start_us = stamp_us if start_us is None else start_us
        if max_seconds is not None and (stamp_us - start_us) * 1e-6 > max_seconds:
            break
        keyframes.append(Keyframe(len(keyframes), token, int(stamp_us) * 1000))
        token = sample['next']
    return keyframes


def ground_truth_boxes(nusc: Any, sample_token: str) -> tuple[np.ndarray, np.ndarray]:
    """Detection-class annotations of a sample with at least one lidar/radar point.

    Returns world-frame gravity-centre boxes (N, 9) ``[x, y, z, dx, dy, dz, yaw, vx, vy]``
    (dx = length) and class indices (N,), the boxes the devkit evaluates.
    """
    from nuscenes.eval.detection.utils import category_to_detection_name
    boxes, labels = [], []
    for ann_token in nusc.get('sample', sample_token)['anns']:
        ann = nusc.get('sample_annotation', ann_token)
        name = category_to_detection_name(ann['category_name'])
        if name is None or ann['num_lidar_pts'] + ann['num_radar_pts'] == 0:
            continue
        R = transform_from_quat(ann['rotation'], [0, 0, 0])
        yaw = math.atan2(R[1, 0], R[0, 0])
        velocity = nusc.box_velocity(ann_token)[:2]
        velocity = np.where(np.isfinite(velocity), velocity, 0.0)
        w, l, h = ann['size']
        boxes.append([*ann['translation'], l, w, h, yaw, *velocity])
        labels.append(CLASS_NAMES.index(name))
    return np.asarray(boxes, np.float64).reshape(-1, 9), np.asarray(labels, np.int64)


# --------------------------------------------------------------------------------------------
# evaluation (nuscenes-devkit, restricted to the scene's samples)
# --------------------------------------------------------------------------------------------
def submission_boxes(keyframe: Keyframe, class_names: Sequence[str]) -> list[dict]:
    """Keyframe detections as nuScenes submission records (global frame, gravity centre, the
    official class-range filter and attribute rule: ``engine.evaluate.boxes_to_submission``)."""
    from .engine.evaluate import boxes_to_submission
    if keyframe.frame is None or keyframe.boxes is None or not len(keyframe.boxes):
        return []
    return boxes_to_submission(keyframe.boxes, keyframe.scores, keyframe.labels,
                               keyframe.sample_token, keyframe.frame.T_ego_model,
                               keyframe.frame.T_world_ego, class_names)


def evaluate_keyframes(nusc: Any, keyframes: Sequence[Keyframe], class_names: Sequence[str],
                       out_dir: Path) -> dict[str, Any]:
    """nuScenes detection metrics over the given samples only (``detection_cvpr_2019``).

    The devkit's ``DetectionEval`` evaluates whole splits; this runs its own ``evaluate()``
    on ground truth and predictions restricted to the scene's samples, so one scene of
    v1.0-trainval can be scored as well as the synthetic one.
    """
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.loaders import load_gt_of_sample_tokens
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.eval.detection.evaluate import DetectionEval

    from .engine.evaluate import write_submission

    results = {k.sample_token: submission_boxes(k, class_names) for k in keyframes}
    write_submission(results, out_dir / 'results_nusc.json')

    cfg = config_factory('detection_cvpr_2019')
    evaluation = DetectionEval.__new__(DetectionEval)          # devkit evaluate(), our subset
    evaluation.nusc, evaluation.cfg, evaluation.verbose = nusc, cfg, False
    evaluation.output_dir = str(out_dir)
    with contextlib.redirect_stderr(io.StringIO()):            # the devkit's own tqdm bar
        gt = load_gt_of_sample_tokens(nusc, list(results), DetectionBox, verbose=False)
    predictions = EvalBoxes.deserialize(results, DetectionBox)
    evaluation.gt_boxes = _filter(nusc, gt, cfg.class_range)
    evaluation.pred_boxes = _filter(nusc, predictions, cfg.class_range)
    evaluation.sample_tokens = evaluation.gt_boxes.sample_tokens
    metrics, _ = evaluation.evaluate()
    summary = metrics.serialize()
    summary['num_samples'] = len(results)
    summary['num_gt_boxes'] = int(sum(len(evaluation.gt_boxes[t]) for t in evaluation.gt_boxes.sample_tokens))
    summary['num_pred_boxes'] = int(sum(len(v) for v in results.values()))
    return summary


def _filter(nusc: Any, boxes: Any, class_range: dict) -> Any:
    """The devkit's centre distance + range/points filter (which fails on zero boxes)."""
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes
    if not boxes.all:
        return boxes
    return filter_eval_boxes(nusc, add_center_dist(nusc, boxes), class_range)


def metrics_text(metrics: dict[str, Any]) -> str:
    """Human summary: mAP, TP errors, NDS, per-class AP (``engine.evaluate.metrics_table``)."""
    from .engine.evaluate import metrics_table
    return (metrics_table(metrics) + f"\n\nsamples: {metrics.get('num_samples')}, "
            f"ground-truth boxes: {metrics.get('num_gt_boxes')}, "
            f"predicted boxes: {metrics.get('num_pred_boxes')}")


# --------------------------------------------------------------------------------------------
# pictures
# --------------------------------------------------------------------------------------------
def keyframe_picture(frame: Any, pred_boxes: np.ndarray, pred_labels: np.ndarray,
                     pred_scores: np.ndarray, gt_boxes: np.ndarray, class_names: Sequence[str],
                     title: str = '') -> np.ndarray:
    """Six cameras with predictions (class colours) and ground truth, plus a BEV panel
    (``viz.draw.detections_figure``, the official figure layout), as an RGB array.

    Boxes are model-frame (bottom centre); each camera image is the original one, projected
    into with its own ``lidar2img`` (no resize), so boxes land on the pixels the camera saw.
    """
    import matplotlib.pyplot as plt

    from .image import as_rgb_image
    from .viz.draw import detections_figure

    images = [as_rgb_image(camera.image) for camera in frame.cameras]
    lidar2img = [compose_lidar2img(camera.K, camera.T_ego_cam, camera.T_world_ego,
                                   frame.T_world_ego, frame.T_ego_model)
                 for camera in frame.cameras]
    figure = detections_figure(images, lidar2img, pred_boxes, pred_labels, pred_scores,
                               gt_boxes=gt_boxes, class_names=class_names, title=title,
                               extent=55.0)
    try:
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()
    finally:
        plt.close(figure)


# --------------------------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------------------------
def _fresh(path: Path) -> Path:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return path


def bundled_checkpoint(preset: str) -> str | None:
    """The weights shipped in ``sparsebev_core/weights`` for ``preset`` (None if there are none)."""
    folder = Path(__file__).with_name('weights')
    files = sorted(folder.glob(f'{preset}*.pth')) if folder.is_dir() else []
    return str(files[0]) if files else None


def build_streaming_detector(preset: str, checkpoint: str | None, device: str,
                             log: Callable[[str], None] = print) -> tuple[Any, Any, str | None]:
    """(StreamingDetector, ModelConfig, checkpoint used) for the demo.

    The detector keeps the official evaluation threshold (0.05) and top-300, so the metrics
    see what ``sparsebev eval`` would; the pictures and the published topics filter higher.
    """
    import torch

    from .checkpoint import load_checkpoint
    from .model.detector import build_model
    from .model.streaming import StreamingDetector
    from .presets import get_preset

    cfg = get_preset(preset)
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    model = build_model(cfg)
    checkpoint = checkpoint or bundled_checkpoint(preset)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    elif preset == 'tiny':
        log(f"warning: no bundled weights in {Path(__file__).with_name('weights')} for preset "
            "'tiny': the model has random weights and its boxes mean nothing")
    else:
        raise SystemExit(f"--checkpoint is required for preset '{preset}'")
    return StreamingDetector(model, cfg, device=device, score_threshold=EVAL_SCORE_THRESHOLD,
                             max_detections=EVAL_MAX_BOXES), cfg, checkpoint


def table_version(root: Path) -> str:
    """The nuScenes table folder under ``root``: v1.0-trainval if present, else v1.0-mini."""
    for version in ('v1.0-trainval', 'v1.0-mini'):
        if (root / version).is_dir():
            return version
    found = sorted(p.name for p in root.glob('v1.0-*')) if root.is_dir() else []
    raise SystemExit(f'{root} holds no v1.0-trainval or v1.0-mini tables'
                     + (f' (found {", ".join(found)}: pass --version)' if found else
                        ': --nuscenes must be a nuScenes dataset root'))


def run_demo(out_dir: str | Path = 'demo_output', *, preset: str = 'tiny',
             checkpoint: str | None = None, nuscenes_root: str | None = None,
             version: str | None = None, scene: str | None = None,
             keyframes: int = DEMO_KEYFRAMES, seed: int = DEMO_SEED, device: str = 'auto',
             score_threshold: float = 0.3, storage: str = 'sqlite3',
             max_seconds: float | None = None, gif: bool = True, progress: bool = True,
             cpu_threads: int | None = 1, log: Callable[[str], None] = print) -> DemoReport:
    """Generate (or take) a scene, bag it, replay it through the pipeline, score and draw it.

    ``cpu_threads``: torch intra-op threads while the demo runs on a CPU (None: leave as is).
    One by default: the tiny model's operations are too small to gain from more, and with
    anything else running on the machine OpenMP threads waiting on each other made the replay
    about 8x slower on a 2-core VM (22.9 s against 2.8 s for 19 frames, same run conditions).
    """
    import torch

    previous_threads = torch.get_num_threads()
    if cpu_threads and not (device.startswith('cuda') or
                            (device == 'auto' and torch.cuda.is_available())):
        torch.set_num_threads(cpu_threads)
    try:
        return _run_demo(out_dir, preset, checkpoint, nuscenes_root, version, scene, keyframes,
                         seed, device, score_threshold, storage, max_seconds, gif, progress, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run_demo(out_dir, preset, checkpoint, nuscenes_root, version, scene, keyframes, seed,
              device, score_threshold, storage, max_seconds, gif, progress, log) -> DemoReport:
    from nuscenes.nuscenes import NuScenes
    from PIL import Image

    from sparsebev_ros.nuscenes_bag import write_scene
    from sparsebev_ros.params import defaults, as_dict, validate
    from sparsebev_ros.replay import replay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    # 1. the scene
    if nuscenes_root is None:
        from .data.synthetic import make_synthetic
        root = make_synthetic(_fresh(out / 'dataset'), num_scenes=1, seed=seed,
                              keyframes_per_scene=keyframes, progress=progress)
        version = 'v1.0-mini'
        scene = json.loads((root / 'synthetic.json').read_text())['scenes'][0]['name']
        seconds['generate scene'] = time.perf_counter() - t
    else:
        root = Path(nuscenes_root)
        if scene is None:
            raise SystemExit('--scene is required with --nuscenes (e.g. --scene scene-0103)')
        version = version or table_version(root)
    nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    frames = scene_keyframes(nusc, scene, max_seconds)

    # 2. the bag
    t = time.perf_counter()
    input_bag = _fresh(out / 'input_bag')
    write_scene(nusc, scene, input_bag, storage=storage, progress=progress, max_seconds=max_seconds)
    seconds['write bag'] = time.perf_counter() - t

    # 3. replay through the pipeline
    t = time.perf_counter()
    detector, cfg, checkpoint = build_streaming_detector(preset, checkpoint, device, log)
    values = as_dict(defaults())
    values.update(preset=preset, checkpoint=checkpoint or '', score_threshold=score_threshold)
    params = validate(values)
    by_stamp = {k.anchor_stamp_ns: k for k in frames}

    def on_result(result: Any) -> None:
        keyframe = by_stamp.get(result.stamp_ns)
        if keyframe is not None:
            det = result.detections
            keyframe.frame, keyframe.boxes = result.frame, det.boxes
            keyframe.scores, keyframe.labels = det.scores, det.labels

    output_bag = _fresh(out / 'output_bag')
    report_replay = replay(input_bag, output_bag, params, detector, storage=storage,
                           progress=progress, log=lambda text: log(f'warning: {text}'),
                           on_result=on_result)
    seconds['replay'] = time.perf_counter() - t

    # 4. metrics and pictures
    t = time.perf_counter()
    class_names = tuple(cfg.class_names)
    metrics = evaluate_keyframes(nusc, frames, class_names, _fresh(out / 'evaluation'))
    metrics_json = out / 'metrics.json'
    metrics_json.write_text(json.dumps(metrics, indent=2))
    (out / 'metrics.txt').write_text(metrics_text(metrics) + '\n')
    seconds['evaluate'] = time.perf_counter() - t

    t = time.perf_counter()
    picture_dir = _fresh(out / 'keyframes')
    picture_dir.mkdir()
    pictures, thumbnails = [], []
    for k in frames:
        if k.frame is None:
            continue
        T_model_world = invert_transform(k.frame.T_world_ego @ k.frame.T_ego_model)
        gt_world, _ = ground_truth_boxes(nusc, k.sample_token)
        gt = gravity_to_bottom_center(transform_boxes(gt_world, T_model_world)) if len(gt_world) \
            else np.zeros((0, 9))
        keep = k.scores >= score_threshold
        picture = keyframe_picture(
            k.frame, k.boxes[keep], k.labels[keep], k.scores[keep], gt, class_names,
            title=f'{scene} keyframe {k.index:02d}: predictions with score >= {score_threshold} '
                  f'(class colours), ground truth (white)')
        path = picture_dir / f'keyframe_{k.index:02d}.png'
        Image.fromarray(picture).save(path, optimize=True)
        pictures.append(path)
        thumbnails.append(Image.fromarray(picture).resize((picture.shape[1] // 2, picture.shape[0] // 2)))
    animation = None
    if gif and thumbnails:
        animation = out / 'keyframes.gif'
        thumbnails[0].save(animation, save_all=True, append_images=thumbnails[1:], duration=500, loop=0)
    seconds['pictures'] = time.perf_counter() - t

    return DemoReport(out_dir=out, scene=scene, input_bag=input_bag, output_bag=output_bag,
                      pictures=pictures, animation=animation, metrics_json=metrics_json,
                      metrics=metrics, keyframes=len(frames),
                      keyframes_detected=sum(k.frame is not None for k in frames),
                      seconds=seconds, replay_summary=report_replay.summary())


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev demo``."""
    parser.add_argument('--out', default='demo_output', help='output folder (default demo_output)')
    parser.add_argument('--preset', default='tiny', help='model preset (default tiny)')
    parser.add_argument('--checkpoint', default=None,
                        help='model weights (default: the bundled tiny model)')
    parser.add_argument('--nuscenes', default=None, metavar='ROOT',
                        help='run on a real nuScenes scene from this dataset root instead')
    parser.add_argument('--version', default=None,
                        help='nuScenes table version (default: v1.0-trainval if ROOT has it, '
                             'else v1.0-mini)')
    parser.add_argument('--scene', default=None, help='scene name with --nuscenes, e.g. scene-0103')
    parser.add_argument('--keyframes', type=int, default=DEMO_KEYFRAMES,
                        help=f'keyframes of the synthetic scene (2 Hz; default {DEMO_KEYFRAMES})')
    parser.add_argument('--seed', type=int, default=DEMO_SEED,
                        help='world seed of the synthetic scene (the bundled model never saw '
                             'the default)')
    parser.add_argument('--max-seconds', type=float, default=None,
                        help='only the first N seconds of the scene')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument('--score-threshold', type=float, default=0.3,
                        help='boxes drawn and published above this score (metrics use 0.05)')
    parser.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3')
    parser.add_argument('--no-gif', action='store_true', help='skip the animated GIF')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1: fastest for the tiny model; 0 = '
                             "torch's default)")
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')


def summary_text(report: DemoReport, seconds: float) -> str:
    """What ran, the metrics, and where to look."""
    out = report.out_dir
    return '\n'.join([
        f'SparseBEV demo on {report.scene}: {report.keyframes_detected}/{report.keyframes} '
        f'keyframes detected in {seconds:.0f} s '
        f'({", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())})',
        report.replay_summary, '', metrics_text(report.metrics), '', 'Look at:',
        f'  pictures   {out / "keyframes"}/keyframe_*.png'
        + (f'  (animated: {report.animation})' if report.animation else ''),
        f'  metrics    {out / "metrics.txt"}  ({report.metrics_json}, devkit input in '
        f'{out / "evaluation"})',
        f'  bags       {report.input_bag} (cameras, TF)  ->  {report.output_bag} '
        '(+ /sparsebev/detections, /sparsebev/markers)'])


def main(args: argparse.Namespace) -> int:
    """Run the demo and print where its outputs are."""
    start = time.perf_counter()
    report = run_demo(args.out, preset=args.preset, checkpoint=args.checkpoint,
                      nuscenes_root=args.nuscenes, version=args.version, scene=args.scene,
                      keyframes=args.keyframes, seed=args.seed, device=args.device,
                      score_threshold=args.score_threshold, storage=args.storage,
                      max_seconds=args.max_seconds, gif=not args.no_gif,
                      progress=not args.no_progress, cpu_threads=args.threads or None,
                      log=lambda text: print(text, file=sys.stderr))
    text = summary_text(report, time.perf_counter() - start)
    (report.out_dir / 'summary.txt').write_text(text + '\n')
    print()
    print(text)
    print(f'  this text  {report.out_dir / "summary.txt"}')
    return 0

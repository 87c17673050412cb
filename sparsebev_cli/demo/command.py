"""``sparsebev demo``: a synthetic scene end to end, as a robot would see it.

1. generate a synthetic nuScenes-format scene the bundled model never saw in training
   (``data.synthetic.make_synthetic`` with the demo seed), or take a real nuScenes scene
   (``--nuscenes ROOT --scene NAME``);
2. write it as a rosbag2 with compressed camera images, CameraInfo and TF
   (``sparsebev_ros.bags.from_nuscenes``);
3. replay the bag through the ROS pipeline without ROS (``sparsebev_ros.bags.replay``: the sync,
   TF buffer, FrameAssembler and StreamingDetector the node runs), writing an output bag with
   the detections and markers;
4. score the keyframe detections against the scene's ground truth with nuscenes-devkit
   (``engine.evaluate.evaluate_samples``: mAP, NDS, per-class AP) and draw one picture per
   keyframe (``viz.frame_pictures``: six cameras with predicted and ground-truth boxes, plus a
   bird's-eye view) and an animated GIF of them.

Everything goes to ``demo_output/`` (or ``--out``); the command prints where to look.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sparsebev_core.errors import UsageError
from sparsebev_core.geometry import gravity_to_bottom_center, invert_transform, transform_boxes

DEMO_SEED = 20231001                 # world seed of the demo scene; training uses other seeds
DEMO_KEYFRAMES = 20                  # 2 Hz keyframes: a 9.5 s scene


@dataclass
class DemoOptions:
    """What ``sparsebev demo`` runs on and how (the command-line options, one field each).

    ``cpu_threads``: torch intra-op threads while the demo runs on a CPU (None: leave as is).
    One by default: the tiny model's operations are too small to gain from more, and with
    anything else running on the machine OpenMP threads waiting on each other made the replay
    about 8x slower on a 2-core VM (22.9 s against 2.8 s for 19 frames, same run conditions).
    """
    out_dir: str | Path = 'demo_output'
    preset: str = 'tiny'
    config: str | None = None                # official config file, instead of the preset
    checkpoint: str | None = None            # default: the bundled weights of the preset
    nuscenes_root: str | None = None         # a real nuScenes scene instead of a synthetic one
    version: str | None = None
    scene: str | None = None
    keyframes: int = DEMO_KEYFRAMES
    seed: int = DEMO_SEED
    device: str = 'auto'
    score_threshold: float = 0.3             # drawn and published boxes; metrics use 0.05
    storage: str = 'sqlite3'
    max_seconds: float | None = None
    gif: bool = True
    progress: bool = True
    cpu_threads: int | None = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> 'DemoOptions':
        """The options of a parsed ``sparsebev demo`` command line."""
        return cls(out_dir=args.out, preset=args.preset, config=args.config,
                   checkpoint=args.checkpoint, nuscenes_root=args.nuscenes, version=args.version,
                   scene=args.scene, keyframes=args.keyframes, seed=args.seed, device=args.device,
                   score_threshold=args.score_threshold, storage=args.storage,
                   max_seconds=args.max_seconds, gif=not args.no_gif,
                   progress=not args.no_progress, cpu_threads=args.threads or None)


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
    from sparsebev_core.data.infos import scene_by_name
    from sparsebev_core.geometry import CAMERA_NAMES

    scene = scene_by_name(nusc, scene_name)
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


def submission_boxes(keyframe: Keyframe, class_names: Sequence[str]) -> list[dict]:
    """Keyframe detections as nuScenes submission records (global frame, gravity centre, the
    official class-range filter and attribute rule: ``engine.evaluate.boxes_to_submission``)."""
    from sparsebev_core.engine.evaluate import boxes_to_submission
    if keyframe.frame is None or keyframe.boxes is None or not len(keyframe.boxes):
        return []
    return boxes_to_submission(keyframe.boxes, keyframe.scores, keyframe.labels,
                               keyframe.sample_token, keyframe.frame.T_ego_model,
                               keyframe.frame.T_world_ego, class_names)


def evaluate_keyframes(nusc: Any, keyframes: Sequence[Keyframe], class_names: Sequence[str],
                       out_dir: Path) -> dict[str, Any]:
    """nuScenes detection metrics over the scene's samples only
    (``engine.evaluate.evaluate_samples``), so one scene of v1.0-trainval can be scored as well
    as the synthetic one."""
    from sparsebev_core.engine.evaluate import evaluate_samples
    results = {k.sample_token: submission_boxes(k, class_names) for k in keyframes}
    return evaluate_samples(nusc, results, out_dir)


def metrics_text(metrics: dict[str, Any]) -> str:
    """Human summary: mAP, TP errors, NDS, per-class AP (``engine.evaluate.metrics_table``)."""
    from sparsebev_core.engine.evaluate import metrics_table
    return (metrics_table(metrics) + f"\n\nsamples: {metrics.get('num_samples')}, "
            f"ground-truth boxes: {metrics.get('num_gt_boxes')}, "
            f"predicted boxes: {metrics.get('num_pred_boxes')}")


# --------------------------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------------------------
def _fresh(path: Path) -> Path:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return path


def run_demo(options: DemoOptions | None = None, log: Callable[[str], None] = print,
             **overrides: Any) -> DemoReport:
    """Generate (or take) a scene, bag it, replay it through the pipeline, score and draw it.

    ``overrides`` replace fields of ``options`` (``run_demo(out_dir=..., keyframes=4)``).
    """
    from sparsebev_core.devices import cpu_threads

    options = dataclasses.replace(options or DemoOptions(), **overrides)
    if options.nuscenes_root is not None and options.scene is None:
        raise UsageError('--scene is required with --nuscenes (e.g. --scene scene-0103)')
    with cpu_threads(options.cpu_threads, options.device):
        return _run_demo(options, log)


def _scene(options: DemoOptions, out: Path, seconds: dict[str, float]) -> tuple[Any, str]:
    """Step 1: the devkit tables (synthetic ones generated now) and the scene name."""
    from nuscenes.nuscenes import NuScenes

    from sparsebev_core.data.infos import table_version

    if options.nuscenes_root is None:
        from sparsebev_core.data.synthetic.scenes import make_synthetic
        t = time.perf_counter()
        root = make_synthetic(_fresh(out / 'dataset'), num_scenes=1, seed=options.seed,
                              keyframes_per_scene=options.keyframes, progress=options.progress)
        version = 'v1.0-mini'
        scene = json.loads((root / 'synthetic.json').read_text())['scenes'][0]['name']
        seconds['generate scene'] = time.perf_counter() - t
    else:
        root = Path(options.nuscenes_root)
        scene = options.scene
        version = options.version or table_version(root)
    return NuScenes(version=version, dataroot=str(root), verbose=False), scene


def _replay(options: DemoOptions, input_bag: Path, output_bag: Path, frames: list[Keyframe],
            log: Callable[[str], None]) -> tuple[Any, Any]:
    """Step 3: the bag through the ROS pipeline; fills the keyframes' detections."""
    from sparsebev_core.loading import load_detector
    from sparsebev_core.recipe.presets import model_config
    from sparsebev_core.streaming.options import StreamingOptions
    from sparsebev_ros.bags.replay import replay
    from sparsebev_ros.params import as_dict, defaults, validate

    # the detector decodes with the recipe's test-time threshold and top-k (cfg.head: 0.05 and
    # 300 officially), so the metrics see what `sparsebev eval` would; the pictures and the
    # published topics filter higher (options.score_threshold)
    detector = load_detector(model_config(options.preset, options.config), options.checkpoint,
                             options.device, StreamingOptions(),
                             log=lambda text: log(f'warning: {text}'))
    values = as_dict(defaults())
    values.update(preset=options.preset, checkpoint=options.checkpoint or '',
                  score_threshold=options.score_threshold)
    params = validate(values)
    by_stamp = {k.anchor_stamp_ns: k for k in frames}

    def on_result(result: Any) -> None:
        keyframe = by_stamp.get(result.stamp_ns)
        if keyframe is not None:
            det = result.detections
            keyframe.frame, keyframe.boxes = result.frame, det.boxes
            keyframe.scores, keyframe.labels = det.scores, det.labels

    report = replay(input_bag, output_bag, params, detector, storage=options.storage,
                    progress=options.progress, log=lambda text: log(f'warning: {text}'),
                    on_result=on_result)
    return report, detector.cfg


def _pictures(nusc: Any, scene: str, frames: Sequence[Keyframe], class_names: Sequence[str],
              score_threshold: float, picture_dir: Path) -> tuple[list[Path], list[np.ndarray]]:
    """Step 4b: one PNG per detected keyframe; returns the files and the animation frames."""
    from sparsebev_core.data.infos import detection_ground_truth
    from sparsebev_core.viz.frame_pictures import frame_picture, save_picture, thumbnail

    pictures, thumbnails = [], []
    for k in frames:
        if k.frame is None:
            continue
        T_model_world = invert_transform(k.frame.T_world_ego @ k.frame.T_ego_model)
        gt_world, _ = detection_ground_truth(nusc, k.sample_token)
        gt = gravity_to_bottom_center(transform_boxes(gt_world, T_model_world)) if len(gt_world) \
            else np.zeros((0, 9))
        keep = k.scores >= score_threshold
        picture = frame_picture(
            k.frame, k.boxes[keep], k.labels[keep], k.scores[keep], gt, class_names,
            title=f'{scene} keyframe {k.index:02d}: predictions with score >= {score_threshold} '
                  f'(class colours), ground truth (white)')
        pictures.append(save_picture(picture, picture_dir / f'keyframe_{k.index:02d}.png'))
        thumbnails.append(thumbnail(picture))
    return pictures, thumbnails


def _run_demo(options: DemoOptions, log: Callable[[str], None]) -> DemoReport:
    from sparsebev_core.viz.frame_pictures import save_animation
    from sparsebev_ros.bags.from_nuscenes import write_scene

    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    # 1. the scene
    nusc, scene = _scene(options, out, seconds)
    frames = scene_keyframes(nusc, scene, options.max_seconds)

    # 2. the bag
    t = time.perf_counter()
    input_bag = _fresh(out / 'input_bag')
    write_scene(nusc, scene, input_bag, storage=options.storage, progress=options.progress,
                max_seconds=options.max_seconds)
    seconds['write bag'] = time.perf_counter() - t

    # 3. replay through the pipeline
    t = time.perf_counter()
    output_bag = _fresh(out / 'output_bag')
    report_replay, cfg = _replay(options, input_bag, output_bag, frames, log)
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
    pictures, thumbnails = _pictures(nusc, scene, frames, class_names, options.score_threshold,
                                     picture_dir)
    animation = save_animation(thumbnails, out / 'keyframes.gif') if options.gif else None
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
    from sparsebev_core.cli_common import (add_device_argument, add_model_arguments,
                                           add_threads_argument)
    parser.add_argument('--out', default='demo_output', help='output folder (default demo_output)')
    add_model_arguments(parser, 'tiny', checkpoint_help='model weights (default: the bundled '
                        'tiny model)')
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
    add_device_argument(parser)
    parser.add_argument('--score-threshold', type=float, default=0.3,
                        help='boxes drawn and published above this score (metrics use 0.05)')
    parser.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3')
    parser.add_argument('--no-gif', action='store_true', help='skip the animated GIF')
    add_threads_argument(parser, default=1)
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
    report = run_demo(DemoOptions.from_args(args), log=lambda text: print(text, file=sys.stderr))
    text = summary_text(report, time.perf_counter() - start)
    (report.out_dir / 'summary.txt').write_text(text + '\n')
    print()
    print(text)
    print(f'  this text  {report.out_dir / "summary.txt"}')
    return 0

"""``sparsebev timing``: inference speed the official way, plus where the time goes.

Official methodology (docs/official_model.md section 8.1): batch 1, keyframes of the validation
scenes in order, the streaming ("online") path in which only the current six images go
through the backbone and past features come from a cache, a warm-up whose iterations are not
counted, and FPS = samples / time of the model call (host-to-device copy, normalisation,
backbone, FPN, head, top-k decoding). Image decoding and resizing are data loading there and
are not in the official FPS; we time them too and report an end-to-end FPS beside it.

Stages per sample: ``decode`` (JPEG -> RGB, six images), ``preprocess`` (official resize and
crop, upload), ``backbone`` (normalisation, backbone, FPN), ``head`` (projection matrices,
decoder), ``postprocess`` (top-k decoding, boxes to numpy).

``--compare`` times, in the same process on the same frames, the baseline (eager, fp32, the
torch sampling backend, PIL resize) and the fast path (``--fast-precision``, ``--compile-head``,
the CUDA sampling backend when it is built, the 'torch' resize on the device) and prints per
stage the medians, p99 and the speed-up (:func:`compare_table`).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..frame import CameraView, Frame

STAGES = ('decode', 'preprocess', 'backbone', 'head', 'postprocess')
MODEL_STAGES = ('backbone', 'head', 'postprocess')       # the official timed region


# ----------------------------------------------------------------------------- frames
def evaluation_scenes(nusc, version: str) -> list[str]:
    """Scene names to time on: the devkit's val split (``mini_val`` for mini), else all."""
    from nuscenes.utils.splits import create_splits_scenes
    splits = create_splits_scenes()
    wanted = splits['mini_val'] if 'mini' in version else splits['val']
    present = [s['name'] for s in nusc.scene]
    chosen = [name for name in present if name in wanted]
    return chosen or present


def keyframe_frames(nusc, scene_names: Sequence[str]) -> Iterator[Frame]:
    """Keyframes of the scenes in order, as ``Frame``s holding the *encoded* JPEG bytes.

    The reference stamp and model frame are the LIDAR_TOP sample_data's (nuScenes
    convention); each camera carries its own capture stamp and ego pose.
    """
    by_name = {s['name']: s for s in nusc.scene}
    for name in scene_names:
        token = by_name[name]['first_sample_token']
        while token:
            sample = nusc.get('sample', token)
            yield _sample_frame(nusc, sample)
            token = sample['next']


def _sample_frame(nusc, sample: dict) -> Frame:
    """The keyframe as a ``Frame`` (encoded JPEGs), built by the same code as the dataset."""
    from ..data.infos import frame_from_info, sample_info
    return frame_from_info(sample_info(nusc, sample, with_annotations=False), nusc.dataroot)


def decode_frame(frame: Frame) -> Frame:
    """The same frame with its six images decoded to uint8 RGB arrays."""
    from ..image import decode_image
    cameras = [CameraView(image=decode_image(c.image) if isinstance(c.image, (bytes, bytearray))
                          else c.image, K=c.K, T_ego_cam=c.T_ego_cam, stamp=c.stamp,
                          T_world_ego=c.T_world_ego, name=c.name) for c in frame.cameras]
    return Frame(cameras=cameras, stamp=frame.stamp, T_world_ego=frame.T_world_ego,
                 T_ego_model=frame.T_ego_model, key=frame.key)


# ----------------------------------------------------------------------------- measuring
@dataclass
class TimingReport:
    """Per-stage latencies (ms) of the counted samples."""
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    warmup: int = 0
    device: str = 'cpu'
    preset: str = ''
    sampling_backend: str = ''             # the msmv_sampling backend that ran (compare)
    held_bytes: int | None = None          # temporal memory the stream held after the last step

    @property
    def samples(self) -> int:
        return len(self.stages['backbone'])

    def official_fps(self) -> float:
        """Samples per second of the model call (decode and resize excluded, as officially)."""
        per_sample = [sum(self.stages[s][i] for s in MODEL_STAGES) for i in range(self.samples)]
        return 1e3 * len(per_sample) / sum(per_sample)

    def end_to_end_fps(self) -> float:
        """Samples per second including JPEG decoding and resizing."""
        per_sample = [sum(self.stages[s][i] for s in STAGES) for i in range(self.samples)]
        return 1e3 * len(per_sample) / sum(per_sample)

    def step_ms(self) -> list[float]:
        """Per sample: backbone + head + postprocess (the streaming model step), ms."""
        return [sum(self.stages[s][i] for s in MODEL_STAGES) for i in range(self.samples)]

    def table(self) -> str:
        lines = [f'{self.preset} on {self.device}: {self.samples} samples after '
                 f'{self.warmup} warm-up, batch 1',
                 f'{"stage":<12} {"mean ms":>9} {"median ms":>10} {"p90 ms":>8}']
        for stage in STAGES:
            values = np.asarray(self.stages[stage])
            lines.append(f'{stage:<12} {values.mean():9.2f} {np.median(values):10.2f} '
                         f'{np.percentile(values, 90):8.2f}')
        lines.append(f'FPS (official: backbone + head + postprocess): {self.official_fps():.2f}')
        lines.append(f'FPS (end to end, with decode + preprocess):   {self.end_to_end_fps():.2f}')
        if self.held_bytes is not None:
            lines.append(self.held_line())
        return '\n'.join(lines)

    def held_line(self) -> str:
        """The temporal memory held per stream between steps (feature cache or recurrent state)."""
        return (f'temporal memory held by the stream between steps: {self.held_bytes / 1e6:.3g} MB '
                '(feature cache buffers, or the recurrent state of a *_memory preset)')


def measure(detector, frames: Sequence[Frame], samples: int, warmup: int,
            progress: bool = True) -> TimingReport:
    """Step ``detector`` over ``frames`` (cycled when too few; the memory is reset at each
    wrap-around) and collect per-stage latencies of ``samples`` steps after ``warmup`` steps."""
    from tqdm import tqdm
    if not frames:
        raise InputError('no frames to time: the dataset has no keyframes in the chosen scenes')
    report = TimingReport(warmup=warmup, device=str(detector.device), preset=detector.cfg.name)
    for i in tqdm(range(warmup + samples), desc='timing', unit='sample', disable=not progress):
        frame = frames[i % len(frames)]
        if i % len(frames) == 0:
            detector.reset('timing: start of the frame list')
        t0 = time.perf_counter()
        decoded = decode_frame(frame)
        decode_ms = (time.perf_counter() - t0) * 1e3
        detections = detector.step(decoded)
        if i < warmup:
            continue
        report.stages['decode'].append(decode_ms)
        for stage in STAGES[1:]:
            report.stages[stage].append(float(detections.timings.get(stage, 0.0)))
    held = getattr(detector, 'held_bytes', None)
    report.held_bytes = None if held is None else int(held())
    return report


@dataclass(frozen=True)
class FastPath:
    """What the fast path changes against the baseline (eager fp32, torch sampling, PIL)."""
    precision: str = 'fp16'
    compile_head: bool = False
    sampling_backend: str = 'auto'          # 'cuda' when the extension is built and inputs are
    resize_method: str = 'torch'

    def describe(self) -> str:
        return (f'precision {self.precision}, compile_head {self.compile_head}, sampling backend '
                f'{self.sampling_backend}, resize {self.resize_method}')


def compare(model, cfg, device: str, frames: Sequence[Frame], samples: int, warmup: int,
            fast: FastPath, progress: bool = False) -> tuple[TimingReport, TimingReport]:
    """(baseline, fast) reports over the same frames in this process, baseline first."""
    from ..ops import available_backends, get_backend, set_backend
    from ..streaming.detector import StreamingDetector
    from ..streaming.options import StreamingOptions
    from ..streaming.runtime import EagerRuntime
    previous = get_backend()
    try:
        set_backend('torch')
        baseline = StreamingDetector(EagerRuntime(model, device, 'fp32', channels_last_backbone=False),
                                     cfg, options=StreamingOptions(resize_method='pil',
                                                                   cache_channels_last=False))
        base = measure(baseline, frames, samples, warmup, progress)
        base.sampling_backend = 'torch'
        del baseline
        set_backend(fast.sampling_backend)
        runtime = EagerRuntime(model, device, fast.precision, compile_head=fast.compile_head)
        fast_options = StreamingOptions(resize_method=fast.resize_method)
        fast_report = measure(StreamingDetector(runtime, cfg, options=fast_options),
                              frames, samples, warmup, progress)
        cuda_ran = device.startswith('cuda') and 'cuda' in available_backends() \
            and fast.sampling_backend in ('auto', 'cuda')
        fast_report.sampling_backend = 'cuda' if cuda_ran else 'torch'
    finally:
        set_backend(previous)
    return base, fast_report


def _stats(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values)), float(np.percentile(values, 99))


def compare_table(base: TimingReport, fast: TimingReport, fast_path: FastPath) -> str:
    """Markdown: per stage median and p99 (ms) of both paths and the speed-up of the medians."""
    lines = [f'{base.preset} on {base.device}: {base.samples} samples after {base.warmup} '
             f'warm-up, batch 1; baseline: eager fp32, torch sampling, PIL resize; fast: '
             f'{fast_path.describe()}' +
             (f' (ran: {fast.sampling_backend})' if fast.sampling_backend else ''), '',
             '| stage | baseline median ms | baseline p99 ms | fast median ms | fast p99 ms | speed-up |',
             '|---|---|---|---|---|---|']
    rows = [(stage, base.stages[stage], fast.stages[stage]) for stage in STAGES]
    rows.append(('model step (backbone + head + postprocess)', base.step_ms(), fast.step_ms()))
    for name, b, f in rows:
        (bm, bp), (fm, fp) = _stats(b), _stats(f)
        speedup = f'{bm / fm:.2f}x' if fm > 0 else 'n/a'
        lines.append(f'| {name} | {bm:.2f} | {bp:.2f} | {fm:.2f} | {fp:.2f} | {speedup} |')
    if base.held_bytes is not None and fast.held_bytes is not None:
        lines += ['', f'baseline {base.held_line()}; fast: {fast.held_bytes / 1e6:.3g} MB']
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev timing``."""
    from ..cli_common import add_device_argument, add_model_arguments
    add_model_arguments(parser, 'r50_nuimg_704x256',
                        checkpoint_help='weights (.pth); without one, random weights are timed')
    parser.add_argument('--data', default=None,
                        help="nuScenes (or synthetic) root; 'rig': 20 keyframes of 1600x900 JPEGs "
                             'without the nuscenes-devkit; default: a synthetic scene in a temp dir')
    parser.add_argument('--version', default='v1.0-mini')
    add_device_argument(parser)
    parser.add_argument('--samples', type=int, default=500, help='counted samples (official: 500)')
    parser.add_argument('--warmup', type=int, default=10, help='uncounted first samples (official: 10)')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'fp16', 'bf16'),
                        help='whole-model precision (official timing: fp32)')
    parser.add_argument('--num-queries', type=int, default=None,
                        help="override the preset's query count (a perfect square, e.g. 400)")
    parser.add_argument('--compare', action='store_true',
                        help='time the baseline (eager fp32, torch sampling) and the fast path '
                             'in this run and print the speed-up per stage')
    parser.add_argument('--fast-precision', default='fp16', choices=('fp32', 'fp16', 'bf16'),
                        help='precision of the fast path (--compare)')
    parser.add_argument('--compile-head', action='store_true',
                        help='torch.compile the head in the fast path (CUDA graphs on CUDA)')


def main(args: argparse.Namespace) -> int:
    """Build the model and the detector, load keyframes, time them, print the table."""
    import torch

    from ..cli_common import model_config_from_args
    from ..devices import resolve_device
    from ..loading import load_model
    from ..streaming.detector import StreamingDetector
    from ..streaming.options import StreamingOptions

    device = resolve_device(args.device)
    torch.manual_seed(0)
    cfg = model_config_from_args(args)
    if getattr(args, 'num_queries', None):
        cfg.head.num_queries = int(args.num_queries)
    loaded = load_model(cfg, args.checkpoint, use_bundled=False, random_weights_ok=True)
    model, cfg = loaded.model, loaded.cfg
    if not args.checkpoint:
        print('no --checkpoint: timing random weights (speed does not depend on them, '
              'except through the number of boxes above the score threshold)')
    if device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as tmp:
        data, version = args.data, args.version
        if data == 'rig':
            from ..data.synthetic.stream import rig_frames
            frames = rig_frames(20)
        else:
            frames = _dataset_frames(data, version, Path(tmp))
        if getattr(args, 'compare', False):
            fast = FastPath(args.fast_precision, args.compile_head)
            base, fast_report = compare(model, cfg, device, frames, args.samples, args.warmup,
                                        fast, progress=True)
            print(compare_table(base, fast_report, fast))
            return 0
        detector = StreamingDetector(model, cfg, device=device,
                                     options=StreamingOptions(precision=args.precision))
        report = measure(detector, frames, args.samples, args.warmup)
    print(report.table())
    return 0


def _dataset_frames(data: str | None, version: str, tmp: Path) -> list[Frame]:
    """Keyframes of a nuScenes-layout dataset (a synthetic scene in ``tmp`` when None)."""
    from nuscenes.nuscenes import NuScenes
    if data is None:
        from ..data.synthetic.scenes import make_synthetic
        data, version = make_synthetic(tmp / 'synthetic', num_scenes=1, seed=0,
                                       progress=False), 'v1.0-mini'
    nusc = NuScenes(version=version, dataroot=str(data), verbose=False)
    return list(keyframe_frames(nusc, evaluation_scenes(nusc, version)))

"""``sparsebev timing``: inference speed the official way, plus where the time goes.

Official methodology (spec/sparsebev.md section 8.1): batch 1, keyframes of the validation
scenes in order, the streaming ("online") path in which only the current six images go
through the backbone and past features come from a cache, a warm-up whose iterations are not
counted, and FPS = samples / time of the model call (host-to-device copy, normalisation,
backbone, FPN, head, top-k decoding). Image decoding and resizing are data loading there and
are not in the official FPS; we time them too and report an end-to-end FPS beside it.

Stages per sample: ``decode`` (JPEG -> RGB, six images), ``preprocess`` (official resize and
crop, upload), ``backbone`` (normalisation, backbone, FPN), ``head`` (projection matrices,
decoder), ``postprocess`` (top-k decoding, boxes to numpy).
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
        return '\n'.join(lines)


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
    return report


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev timing``."""
    from ..cli_common import add_device_argument, add_model_arguments
    add_model_arguments(parser, 'r50_nuimg_704x256',
                        checkpoint_help='weights (.pth); without one, random weights are timed')
    parser.add_argument('--data', default=None,
                        help='nuScenes (or synthetic) root; default: a synthetic scene in a temp dir')
    parser.add_argument('--version', default='v1.0-mini')
    add_device_argument(parser)
    parser.add_argument('--samples', type=int, default=500, help='counted samples (official: 500)')
    parser.add_argument('--warmup', type=int, default=10, help='uncounted first samples (official: 10)')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'fp16', 'bf16'),
                        help='backbone + FPN autocast (official timing: fp32)')


def main(args: argparse.Namespace) -> int:
    """Build the model and the detector, load keyframes, time them, print the table."""
    import torch
    from nuscenes.nuscenes import NuScenes

    from ..cli_common import model_config_from_args
    from ..loading import load_model
    from ..model.streaming import StreamingDetector
    from ..runtime_env import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    loaded = load_model(model_config_from_args(args), args.checkpoint, use_bundled=False,
                        random_weights_ok=True)
    model, cfg = loaded.model, loaded.cfg
    if not args.checkpoint:
        print('no --checkpoint: timing random weights (speed does not depend on them, '
              'except through the number of boxes above the score threshold)')
    if device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True
    detector = StreamingDetector(model, cfg, device=device, precision=args.precision)

    with tempfile.TemporaryDirectory() as tmp:
        data, version = args.data, args.version
        if data is None:
            from ..data.synthetic import make_synthetic
            data, version = make_synthetic(Path(tmp) / 'synthetic', num_scenes=1, seed=0,
                                           progress=False), 'v1.0-mini'
        nusc = NuScenes(version=version, dataroot=str(data), verbose=False)
        frames = list(keyframe_frames(nusc, evaluation_scenes(nusc, version)))
        report = measure(detector, frames, args.samples, args.warmup)
    print(report.table())
    return 0

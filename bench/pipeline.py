"""Six 1600x900 JPEGs in at 12 Hz through the node's code path, detections out.

    python bench/pipeline.py --preset r50_nuimg_704x256 --device cuda --precision fp16
    python bench/pipeline.py --preset tiny --device cpu --frames 24      # slow, but runs

What runs is what the node runs: a camera thread publishes six ``CompressedImage`` messages
(1600x900 JPEGs, nuScenes-like rig, stamps 1/12 s apart, TF of the ego pose published with
them) into the node's one-slot mailbox (``sparsebev_ros.backpressure.LatestMailbox``: a set waiting
when a newer one arrives is dropped); a worker thread takes the newest set and runs
``sparsebev_ros.pipeline.Pipeline.process`` (FrameAssembler -> StreamingDetector ->
Detection3DArray + MarkerArray). The JPEGs reach the detector encoded and are decoded in its
pool (``--workers``) or on the GPU (``Pipeline(defer_decoding=True)``, the node's default on
CUDA); ``--decode-in-assembler`` decodes them one after another in the assembler instead. Latency = from the moment a set is published to its output
messages. Random weights (speed does not depend on them); the first ``--warmup`` outputs are
not counted. Prints one markdown table.
"""
from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sparsebev_core.geometry import CAMERA_NAMES  # noqa: E402

from sparsebev_core.data.synthetic.stream import RIG_HW, rig_jpegs, rig_T_world_ego  # noqa: E402
from sparsebev_core.rig import nuscenes_rig  # noqa: E402

HEIGHT, WIDTH = RIG_HW
RATE_HZ = 12.0
T0_NS = 1_700_000_000_000_000_000          # the rig's start (stream.RIG_T0) in ns
RIG = nuscenes_rig()                        # the cameras of stream.rig_frames


def build(args):
    """The node's pieces: parameters, detector, TF buffer, message factory, pipeline."""
    from sparsebev_core.devices import resolve_device
    from sparsebev_core.loading import load_model
    from sparsebev_core.recipe.presets import get_preset
    from sparsebev_core.streaming.detector import StreamingDetector
    from sparsebev_core.streaming.options import StreamingOptions
    from sparsebev_core.streaming.runtime import EagerRuntime
    from sparsebev_ros.codecs import matrix_to_translation_quat
    from sparsebev_ros.frames import tf_buffer_lookup
    from sparsebev_ros.messages import RosbagsMessages, header, ros2_typestore
    from sparsebev_ros.params import validate
    from sparsebev_ros.pipeline import Pipeline
    from sparsebev_ros.tf_buffer import TfBuffer

    import torch
    torch.manual_seed(0)
    device = resolve_device(args.device)
    params = validate(dict(preset=args.preset, device=device, precision=args.precision))
    loaded = load_model(get_preset(args.preset), None, use_bundled=args.preset == 'tiny',
                        random_weights_ok=True, log=lambda text: None)
    runtime = EagerRuntime(loaded.model, device, args.precision, compile_head=args.compile_head)
    detector = StreamingDetector(runtime, loaded.cfg, options=StreamingOptions(
        score_threshold=params.score_threshold, max_detections=params.max_detections,
        resize_method=args.resize, preprocess_workers=args.workers))
    factory = RosbagsMessages(ros2_typestore('humble'))
    tf = TfBuffer()

    def put(parent, child, T, stamp, static=False):
        t, q = matrix_to_translation_quat(T)
        tf.set_transform(parent, child, stamp, t, q, static)

    for name in CAMERA_NAMES:
        put('base_link', name, RIG.camera(name).T_base_cam, 0, static=True)
    pipe = Pipeline(params, detector, tf_buffer_lookup(tf), factory,
                    defer_decoding=not args.decode_in_assembler)
    for i, name in enumerate(CAMERA_NAMES):
        pipe.on_camera_info(i, factory.new(
            'sensor_msgs/msg/CameraInfo', header=header(factory, 0, name), height=HEIGHT,
            width=WIDTH, distortion_model='plumb_bob', d=np.zeros(5),
            k=RIG.camera(name).K.reshape(-1), p=np.zeros(12)))

    def publish(frame: int, images: list[bytes]) -> list:
        stamps = [T0_NS + int(frame * 1e9 / RATE_HZ) + i * 5_000_000 for i in range(6)]
        for s in stamps:
            put('map', 'base_link', rig_T_world_ego(s / 1e9), s)
        return [factory.new('sensor_msgs/msg/CompressedImage', header=header(factory, s, name),
                            format='jpeg', data=np.frombuffer(data, np.uint8))
                for s, name, data in zip(stamps, CAMERA_NAMES, images)]

    return pipe, publish, device, detector


def run(args) -> str:
    """Publish ``args.frames`` sets at 12 Hz, process them as the node does, return the table."""
    from sparsebev_ros.backpressure import LatestMailbox
    from sparsebev_ros.frames import Skip

    pipe, publish, device, detector = build(args)
    sets = [rig_jpegs(seed) for seed in range(4)]
    mailbox: LatestMailbox = LatestMailbox()
    latencies, stages, skips = [], {}, []
    processed = 0

    def worker():
        nonlocal processed
        while True:
            item = mailbox.take()
            if item is None:
                return
            published, msgs = item
            result = pipe.process(msgs)
            done = time.perf_counter()
            processed += 1
            if isinstance(result, Skip):
                skips.append(result.reason)
                continue
            if processed > args.warmup:
                latencies.append((done - published) * 1e3)
                for key, value in result.detections.timings.items():
                    stages.setdefault(key, []).append(float(value))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    # warm-up frames are offered slowly (compilation, cuDNN autotuning), then 12 Hz
    for frame in range(args.warmup):
        mailbox.put((time.perf_counter(), publish(frame, sets[frame % len(sets)])))
        while processed <= frame:
            time.sleep(0.001)
    dropped_before = mailbox.dropped
    start = time.perf_counter()
    for k in range(args.frames):
        frame = args.warmup + k
        due = start + k / RATE_HZ
        time.sleep(max(0.0, due - time.perf_counter()))
        mailbox.put((time.perf_counter(), publish(frame, sets[frame % len(sets)])))
    while processed + (mailbox.dropped - dropped_before) < args.warmup + args.frames:
        time.sleep(0.005)
    mailbox.close()
    thread.join(timeout=60)
    dropped = mailbox.dropped - dropped_before
    return table(args, device, latencies, stages, dropped, skips)


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or 'cpu'


def table(args, device: str, latencies, stages, dropped: int, skips) -> str:
    import torch
    name = torch.cuda.get_device_name(0) if device.startswith('cuda') else cpu_name()
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    lines = [f'Six 1600x900 JPEGs at {RATE_HZ:g} Hz through the node pipeline: {args.preset}, '
             f'{device} ({name}), precision {args.precision}, compile_head {args.compile_head}, '
             f'resize {args.resize}, {args.workers} preprocess workers, decoding in the '
             f'{"assembler" if args.decode_in_assembler else "detector"}, torch {torch.__version__}', '',
             '| frames offered | outputs | dropped | skipped | p50 ms | p90 ms | p99 ms | max ms |',
             '|---|---|---|---|---|---|---|---|',
             f'| {args.frames} | {len(latencies)} | {dropped} | {len(skips)} | '
             f'{np.percentile(lat, 50):.1f} | {np.percentile(lat, 90):.1f} | '
             f'{np.percentile(lat, 99):.1f} | {lat.max():.1f} |', '',
             '| stage (detector) | median ms |', '|---|---|']
    lines += [f'| {key} | {np.median(values):.2f} |' for key, values in stages.items()]
    if skips:
        lines.append(f'\nskip reasons: {sorted(set(skips))}')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', default='r50_nuimg_704x256')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'fp16', 'bf16'))
    parser.add_argument('--compile-head', action='store_true')
    parser.add_argument('--resize', default='torch', choices=('pil', 'torch', 'cv2'))
    parser.add_argument('--workers', type=int, default=6, help='preprocess (decode) threads')
    parser.add_argument('--decode-in-assembler', action='store_true',
                        help='decode in the FrameAssembler, one image after another (the CPU '
                             "default of the node); default: the detector's pool decodes")
    parser.add_argument('--frames', type=int, default=120, help='counted frames (10 s at 12 Hz)')
    parser.add_argument('--warmup', type=int, default=5)
    args = parser.parse_args(argv)
    print(run(args))
    return 0


if __name__ == '__main__':
    sys.exit(main())

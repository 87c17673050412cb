"""SparseBEV (v1: feature cache) against SparseBEV++ (v2: recurrent state) streaming on one rig.

    PYTHONPATH=. python bench/recurrent_vs_cache.py                    # r50, 8 + 16 steps each
    PYTHONPATH=. python bench/recurrent_vs_cache.py --presets tiny tiny_memory --warmup 4 --steps 8

Both presets (random weights seeded alike: the cost does not depend on the values) run as
``StreamingDetector`` with the default options (eager fp32, PIL resize) over the same 2 Hz
frames of ``sparsebev timing --data rig`` (six 1600x900 JPEGs, decoded before the clock
starts). The two detectors take turns step by step, so that a load change on the shared
machine hits both alike; the first ``--warmup`` steps of each (which fill v1's cache with its
T frames and v2's memory queue) are not counted. Per stage (``Detections.timings``: preprocess,
backbone, head, postprocess) and per step: median, p90 and minimum over ``--steps`` steps;
then the temporal memory each stream holds between steps (``StreamingDetector.held_bytes``:
v1's allocated feature-cache slots, v2's recurrent state) and the bytes of one frame's
features. Prints markdown.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sparsebev_core.data.synthetic.stream import rig_frames  # noqa: E402
from sparsebev_core.engine.timing import decode_frame  # noqa: E402
from sparsebev_core.loading import load_model  # noqa: E402
from sparsebev_core.recipe.presets import model_config  # noqa: E402
from sparsebev_core.streaming.detector import StreamingDetector  # noqa: E402

STAGES = ('preprocess', 'backbone', 'head', 'postprocess')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build(name: str) -> StreamingDetector:
    torch.manual_seed(0)
    cfg = model_config(name)
    model = load_model(cfg, None, log=lambda text: None, use_bundled=False,
                       random_weights_ok=True).model
    return StreamingDetector(model, cfg, device='cpu')


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--presets', nargs=2, default=['r50_nuimg_704x256', 'r50_nuimg_704x256_memory'])
    parser.add_argument('--warmup', type=int, default=8, help='uncounted steps of each detector')
    parser.add_argument('--steps', type=int, default=16, help='counted steps of each detector')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    total = args.warmup + args.steps
    frames = [decode_frame(f) for f in rig_frames(total)]
    detectors = {name: build(name) for name in args.presets}
    times = {name: {s: [] for s in STAGES + ('step',)} for name in detectors}
    started = time.perf_counter()
    for i, frame in enumerate(frames):
        order = list(detectors.items())
        for name, detector in (order if i % 2 == 0 else order[::-1]):   # alternate who goes first
            timings = detector.step(frame).timings
            if i >= args.warmup:
                for stage in STAGES:
                    times[name][stage].append(timings[stage])
                times[name]['step'].append(sum(timings[s] for s in STAGES))
    wall = time.perf_counter() - started

    print(f'machine: {cpu_name()}, {torch.get_num_threads()} torch thread(s), torch '
          f'{torch.__version__}; {args.steps} counted steps each after {args.warmup} warm-up, '
          f'taking turns step by step; {wall:.0f} s in all\n')
    print('| preset | ' + ' | '.join(f'{s} median / p90 / min (ms)' for s in STAGES + ('step',)) + ' |')
    print('|---|' + '---|' * (len(STAGES) + 1))
    for name, t in times.items():
        cells = [f'{statistics.median(v):.0f} / {percentile(v, 0.9):.0f} / {min(v):.0f}'
                 for v in (t[s] for s in STAGES + ('step',))]
        print(f'| {name} | ' + ' | '.join(cells) + ' |')
    first, second = args.presets
    for stage in ('head', 'step'):
        ratio = statistics.median(times[first][stage]) / statistics.median(times[second][stage])
        print(f'\n{stage}: {first} / {second} = {ratio:.2f}x (medians)', end='')
    print('\n\n| preset | temporal memory held per stream | what | one frame of features |')
    print('|---|---|---|---|')
    for name, detector in detectors.items():
        if detector.recurrent:
            state = detector.recurrent_state
            what = (f'recurrent state: {state.propagated_feat.shape[1]} propagated + '
                    f'{state.memory_rows_allocated} memory rows')
            frame_bytes = sum(level.numel() * level.element_size()
                              for level in detector.runtime.encode(
                                  torch.zeros(len(frames[0].cameras), 3, *detector.input_hw,
                                              dtype=torch.uint8)))
        else:
            slots = detector.feature_slots
            what = (f'feature cache: {len(detector.cached_keys)} frames cached, '
                    f'{slots.capacity} slots allocated')
            frame_bytes = slots.bytes_per_slot
        print(f'| {name} | {detector.held_bytes() / 1e6:.3g} MB | {what} | {frame_bytes / 1e6:.3g} MB |')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Where a streaming step spends its time: the top kernels / operators of the fast path.

    python bench/profile_step.py --preset r50_nuimg_704x256 --device cuda --precision fp16

Steps a ``StreamingDetector`` (random weights) over the rig frames of ``sparsebev timing
--data rig`` (encoded 1600x900 JPEGs), warms up, then records ``--steps`` steps with
``torch.profiler`` and prints the operators with the most device (CUDA) or CPU time as a
markdown table: what limits the step.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', default='r50_nuimg_704x256')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--precision', default='fp16', choices=('fp32', 'fp16', 'bf16'))
    parser.add_argument('--compile-head', action='store_true')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--top', type=int, default=15)
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from sparsebev_core.devices import resolve_device
    from sparsebev_core.data.synthetic.stream import rig_frames
    from sparsebev_core.engine.timing import decode_frame
    from sparsebev_core.loading import load_model
    from sparsebev_core.recipe.presets import get_preset
    from sparsebev_core.streaming.detector import StreamingDetector
    from sparsebev_core.streaming.options import StreamingOptions
    from sparsebev_core.streaming.runtime import EagerRuntime

    torch.manual_seed(0)
    device = resolve_device(args.device)
    loaded = load_model(get_preset(args.preset), None, use_bundled=False, random_weights_ok=True,
                        log=lambda text: None)
    runtime = EagerRuntime(loaded.model, device, args.precision, compile_head=args.compile_head)
    detector = StreamingDetector(runtime, loaded.cfg, options=StreamingOptions(resize_method='torch'))
    frames = [decode_frame(f) for f in rig_frames(args.warmup + args.steps)]
    for frame in frames[:args.warmup]:
        detector.step(frame)
    cuda = device.startswith('cuda')
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for frame in frames[args.warmup:]:
            detector.step(frame)
        if cuda:
            torch.cuda.synchronize()
    key = 'self_device_time_total' if cuda else 'self_cpu_time_total'
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)
    total = sum(getattr(e, key, 0.0) for e in events) or 1.0
    print(f'{args.preset} on {device}, precision {args.precision}, compile_head '
          f'{args.compile_head}: top operators by {"device" if cuda else "CPU"} self time over '
          f'{args.steps} steps\n')
    print('| operator / kernel | calls | ms per step | share |')
    print('|---|---|---|---|')
    for event in events[:args.top]:
        value = getattr(event, key, 0.0)
        print(f'| {event.key[:90]} | {event.count // args.steps} | '
              f'{value / 1e3 / args.steps:.3f} | {100 * value / total:.1f}% |')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Torch eager vs onnxruntime (CPU) behind the runtime seam: one streaming step, same inputs.

    python bench/runtimes.py                                   # tiny and r50_nuimg_704x256
    python bench/runtimes.py --presets tiny --steps 20 --threads 2
    python bench/runtimes.py --presets r50_nuimg_704x256 --steps 3 --profile

For each preset, in one process: the model (bundled weights for ``tiny``, random weights seeded
alike otherwise: the cost does not depend on the values), exported with ``export_onnx`` into a
temporary folder, run as ``EagerRuntime`` (torch eager, float32, the default CPU sampling
backend) and as ``OnnxRuntime`` (``CPUExecutionProvider``) with the same thread count. A step is
what ``StreamingDetector`` asks of a runtime per frame: ``encode`` of the six current images and
``run_head`` over T cache slots (S = T + 1 slots, the probe inputs of the export); the two
runtimes take turns step by step. Reported: the median, p90 and minimum over ``--steps`` timed
steps (after one warm-up), encoder and head separately, and the speed-up of onnxruntime.
``--profile``: onnxruntime's own profiler (``enable_profiling``) on one more step; the ops that
take most of the time, per graph.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sparsebev_core.export.onnx_export import export_onnx, probe_inputs  # noqa: E402
from sparsebev_core.loading import load_model  # noqa: E402
from sparsebev_core.recipe.presets import model_config  # noqa: E402
from sparsebev_core.streaming.onnx_runtime import OnnxRuntime  # noqa: E402
from sparsebev_core.streaming.runtime import EagerRuntime  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_runtimes(runtimes: dict, images, cache, slots, lidar2img, time_diff, steps: int) -> dict:
    """Per runtime and step: encode ms and run_head ms. The runtimes take turns step by step
    (one warm-up step first), so a load change on a shared machine hits both alike."""
    times = {name: {'encoder': [], 'head': []} for name in runtimes}
    for step in range(steps + 1):
        for name, runtime in runtimes.items():
            t0 = time.perf_counter()
            runtime.encode(images)
            t1 = time.perf_counter()
            runtime.run_head(cache, slots, lidar2img, time_diff)
            t2 = time.perf_counter()
            if step:
                times[name]['encoder'].append((t1 - t0) * 1e3)
                times[name]['head'].append((t2 - t1) * 1e3)
    result = {}
    for name, t in times.items():
        t['step'] = [a + b for a, b in zip(t['encoder'], t['head'])]
        result[name] = {k: (statistics.median(v), percentile(v, 0.9), min(v)) for k, v in t.items()}
    return result


def top_ops(profile_file: str, count: int = 6) -> list[tuple[str, float]]:
    """(op type, share of the node time) from an onnxruntime profile of one session (node
    names are those of the optimised graph: fused ops such as FusedConv appear as such)."""
    events = json.loads(Path(profile_file).read_text())
    per_op: Counter = Counter()
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            per_op[e['args']['op_name']] += e['dur']
    total = sum(per_op.values()) or 1
    return [(op, dur / total) for op, dur in per_op.most_common(count)]


def profile(onnx_dir: Path, cfg, threads: int, images, cache, slots, lidar2img, time_diff) -> dict:
    import onnxruntime as ort
    out = {}
    feeds = {'encoder': {'images': images.numpy()},
             'head': {**{f'cache_level{i}': c.numpy() for i, c in enumerate(cache)},
                      'slots': slots.numpy(), 'lidar2img': lidar2img.numpy(),
                      'time_diff': time_diff.numpy()}}
    for graph in ('encoder', 'head'):
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.intra_op_num_threads = threads
        options.profile_file_prefix = str(onnx_dir / f'profile_{graph}')
        session = ort.InferenceSession(str(onnx_dir / f'{graph}.onnx'), options,
                                       providers=['CPUExecutionProvider'])
        session.run(None, feeds[graph])
        out[graph] = top_ops(session.end_profiling())
    return out


def bench_preset(name: str, steps: int, threads: int, want_profile: bool) -> dict:
    cfg = model_config(name)
    checkpoint = None
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        export_onnx(cfg, checkpoint, tmp, random_weights_ok=True, log=lambda text: None)
        torch.manual_seed(0)                                   # the same weights again
        model = load_model(cfg, checkpoint, log=lambda text: None, random_weights_ok=True).model
        eager = EagerRuntime(model)
        onnx_rt = OnnxRuntime(tmp, cfg, threads=threads)
        images, lidar2img, time_diff = probe_inputs(cfg, 6)
        levels = eager.encode(images)
        T = cfg.num_frames
        cache = [torch.stack([lv * (1.0 + 0.05 * s) for s in range(T + 1)]) for lv in levels]
        slots = torch.tensor([(3 * t + 1) % (T + 1) for t in range(T)], dtype=torch.int64)
        result = time_runtimes({'torch': eager, 'onnxruntime': onnx_rt}, images, cache, slots,
                               lidar2img, time_diff, steps)
        if want_profile:
            result['profile'] = profile(Path(tmp), cfg, threads, images, cache, slots,
                                        lidar2img, time_diff)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--presets', nargs='+', default=['tiny', 'r50_nuimg_704x256'])
    parser.add_argument('--steps', type=int, nargs='+', default=[10, 3],
                        help='timed steps per preset (one number for all, or one per preset)')
    parser.add_argument('--threads', type=int, default=1, help='torch and onnxruntime threads')
    parser.add_argument('--profile', action='store_true', help="onnxruntime's top ops per graph")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps if len(args.steps) == len(args.presets) else [args.steps[0]] * len(args.presets)
    import onnxruntime as ort
    print(f'machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} '
          f'thread(s); torch {torch.__version__}, onnxruntime {ort.__version__}')
    print('| preset | runtime | encoder median / p90 / min (ms) | head median / p90 / min (ms) | '
          'step median / p90 / min (ms) | step speed-up (median, min) |')
    print('|---|---|---|---|---|---|')
    for name, n in zip(args.presets, steps):
        r = bench_preset(name, n, args.threads, args.profile)
        base = r['torch']['step']
        for runtime in ('torch', 'onnxruntime'):
            t = r[runtime]
            cells = ' | '.join('{:.0f} / {:.0f} / {:.0f}'.format(*t[k]) for k in ('encoder', 'head', 'step'))
            print(f'| {name} | {runtime} | {cells} | {base[0] / t["step"][0]:.2f}x, '
                  f'{base[2] / t["step"][2]:.2f}x |', flush=True)
        for graph, ops in r.get('profile', {}).items():
            print(f'  profile {name} {graph}: ' + ', '.join(f'{op} {share:.0%}' for op, share in ops))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Benchmark of the msmv_sampling backends at the shapes of the official presets.

    python bench/sampling.py                      # every available backend, fp32 + fp16, GPU if any
    python bench/sampling.py --device cpu --dtypes fp32 --repeats 3
    python bench/sampling.py --device cpu --shapes r50_nuimg_704x256 --dtypes fp32 --threads 1

Shapes (one decoder layer's sampling call; the head makes six per frame): B = 1, T = 8 frames,
G = 4 groups of C = 64 channels, N = 6 cameras, Q = 900 queries, P = 4 points, L = 4 FPN levels
at strides 4, 8, 16, 32 of the input (704x256 for r50_nuimg_704x256, 1408x512 for
r101_nuimg_1408x512). Rows of the table: the torch backend (5-D grid_sample, the in-run baseline)
given the plain [R, C, N, H, W] features; every backend also given features already in
channels-last memory [R, N, H, W, C] (what ``group_features_for_sampling`` builds once per frame
for the backends that prefer it: the CPU torch backend, gather, cuda); the gather backend
(explicit bilinear taps, the plugin-free ONNX / TensorRT formulation) given plain features (one
copy per call); the CUDA backend given plain features (converted on every call). All rows sample
the same inputs in one process. Times are medians; speed-ups are against the torch row of the
same shape and dtype, measured in the same run.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sparsebev_core import ops  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    input_hw: tuple[int, int]
    batch: int = 1
    frames: int = 8
    groups: int = 4
    channels: int = 64
    views: int = 6
    queries: int = 900
    points: int = 4
    strides: tuple[int, ...] = (4, 8, 16, 32)

    @property
    def rows(self) -> int:
        return self.batch * self.frames * self.groups

    def level_sizes(self) -> list[tuple[int, int]]:
        h, w = self.input_hw
        return [(h // s, w // s) for s in self.strides]


SHAPES = {
    'r50_nuimg_704x256': Shape('r50_nuimg_704x256', (256, 704)),
    'r101_nuimg_1408x512': Shape('r101_nuimg_1408x512', (512, 1408)),
}
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def make_inputs(shape: Shape, dtype: torch.dtype, device: str, seed: int = 0):
    """Features [R, C, N, H, W] per level, locations [R, Q, P, 3], softmax weights [R, Q, P, L]."""
    g = torch.Generator(device='cpu').manual_seed(seed)
    feats = [torch.randn(shape.rows, shape.channels, shape.views, h, w, generator=g).to(device, dtype)
             for h, w in shape.level_sizes()]
    uv = torch.rand(shape.rows, shape.queries, shape.points, 2, generator=g) * 1.2 - 0.1
    view = torch.randint(0, shape.views, (shape.rows, shape.queries, shape.points, 1), generator=g)
    loc = torch.cat([uv, view / (shape.views - 1)], -1).to(device)            # [R, Q, P, 3]
    weights = torch.randn(shape.rows, shape.queries, shape.points, len(shape.strides),
                          generator=g).softmax(-1).to(device)                # [R, Q, P, L]
    return feats, loc, weights


def timed(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> float:
    """Median milliseconds of ``fn`` (synchronising the GPU around each call)."""
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def channels_last(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Same values, memory ``[R, N, H, W, C]`` (done once per frame by the head)."""
    return [f.contiguous(memory_format=torch.channels_last_3d) for f in features]


def variants(device: str) -> dict[str, tuple[Callable, Callable]]:
    """name -> (prepare features once, sample) for every backend that runs on ``device``."""
    out = {'torch': (lambda f: f, ops.msmv_sampling_torch),
           'torch, channels-last input': (channels_last, ops.msmv_sampling_torch),
           'gather': (lambda f: f, ops.msmv_sampling_gather),
           'gather, channels-last input': (channels_last, ops.msmv_sampling_gather)}
    if device.startswith('cuda') and 'cuda' in ops.available_backends():
        from sparsebev_core.ops import cuda_backend
        out['cuda'] = (lambda f: f, cuda_backend.msmv_sampling_cuda)
        out['cuda, channels-last input'] = (
            lambda f: [cuda_backend.to_kernel_layout(x) for x in f], cuda_backend.msmv_sampling_cuda)
    return out


def bench_one(shape: Shape, dtype: torch.dtype, device: str, prepare: Callable, sample: Callable,
              warmup: int, repeats: int) -> tuple[float, float]:
    feats, loc, weights = make_inputs(shape, dtype, device)
    feats = [f.requires_grad_(True) for f in prepare(feats)]
    loc.requires_grad_(True)
    weights.requires_grad_(True)
    grad_out = torch.randn(shape.rows, shape.queries, shape.channels, shape.points,
                           device=device, dtype=dtype)

    def forward():
        with torch.no_grad():
            sample(feats, loc, weights)

    def forward_backward():
        for t in (*feats, loc, weights):
            t.grad = None
        sample(feats, loc, weights).backward(grad_out)

    return timed(forward, device, warmup, repeats), timed(forward_backward, device, warmup, repeats)


def device_name(device: str) -> str:
    if device.startswith('cuda'):
        return f'{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})'
    return f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--shapes', nargs='+', default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'fp16'], choices=list(DTYPES))
    parser.add_argument('--warmup', type=int, default=None, help='default: 5 on GPU, 1 on CPU')
    parser.add_argument('--repeats', type=int, default=None, help='default: 50 on GPU, 3 on CPU')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--backends', nargs='+', default=None,
                        help='rows to run (names as in the table; default: all available)')
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    on_gpu = args.device.startswith('cuda')
    warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    repeats = args.repeats if args.repeats is not None else (50 if on_gpu else 3)

    print(f'msmv_sampling on {device_name(args.device)}; backends: {", ".join(variants(args.device))}')
    print(f'median of {repeats} after {warmup} warm-up; speed-up = torch time / this time, same run\n')
    print('| shape | dtype | backend | forward ms | speed-up | fwd+bwd ms | speed-up |')
    print('|---|---|---|---|---|---|---|')
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        for dtype_name in args.dtypes:
            baseline = None
            for name, (prepare, sample) in variants(args.device).items():
                if args.backends is not None and name not in args.backends and name != 'torch':
                    continue
                try:
                    fwd, fwd_bwd = bench_one(shape, DTYPES[dtype_name], args.device, prepare, sample,
                                             warmup, repeats)
                except (RuntimeError, NotImplementedError) as error:
                    reason = str(error).splitlines()[0][:60]
                    print(f'| {shape_name} | {dtype_name} | {name} | n/a: {reason} | | | |')
                    continue
                if name == 'torch':
                    baseline = (fwd, fwd_bwd)
                speed = (f'{baseline[0] / fwd:.2f}x', f'{baseline[1] / fwd_bwd:.2f}x') if baseline else ('', '')
                print(f'| {shape_name} | {dtype_name} | {name} | {fwd:.2f} | {speed[0]} | '
                      f'{fwd_bwd:.2f} | {speed[1]} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

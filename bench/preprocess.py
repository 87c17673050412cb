"""Per-frame image preprocessing of the streaming detector: decode + resize/crop of six JPEGs.

Times one frame of six 1600x900 JPEG cameras -> 704x256 network input (r50_nuimg_704x256) for
each ``image.resize_crop`` method, and reports each as a ratio to the official PIL path
measured in the same run (speed claims are ratios to an in-run baseline, never absolute
numbers from another machine). Also reports how far each method's pixels are from PIL's.

    .venv/bin/python bench/preprocess.py [--repeats 10] [--size 1600 900] [--input 704 256]
                                         [--workers 6]
"""
from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from sparsebev_core.image import RESIZE_METHODS, decode_image, resize_crop


def camera_jpegs(width: int, height: int, seed: int = 0) -> list[bytes]:
    """Six photo-like JPEGs (smooth colour fields with edges), quality 90."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(6):
        image = cv2.GaussianBlur((rng.random((height, width, 3)) * 255).astype(np.uint8), (0, 0), 4)
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX)
        yy, xx = np.mgrid[:height, :width]
        image[(xx // 40 + yy // 40) % 2 == 0] //= 2
        out.append(cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def time_frame(jpegs: list[bytes], final_hw: tuple[int, int], method: str, repeats: int,
               workers: int = 0) -> float:
    """Median seconds for decode + resize/crop of the six images (``workers`` threads, as
    ``StreamingOptions(preprocess_workers=...)``; 0 = one thread)."""
    def prepare(data: bytes):
        return resize_crop(decode_image(data), final_hw, method=method)

    pool = ThreadPoolExecutor(workers) if workers else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        list(pool.map(prepare, jpegs)) if pool else [prepare(d) for d in jpegs]
        times.append(time.perf_counter() - start)
    if pool:
        pool.shutdown()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--size', type=int, nargs=2, default=(1600, 900), metavar=('W', 'H'))
    parser.add_argument('--input', type=int, nargs=2, default=(704, 256), metavar=('W', 'H'))
    parser.add_argument('--workers', type=int, default=0,
                        help='also time each method with this many preprocessing threads')
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)                         # one core, like one preprocessing worker
    jpegs = camera_jpegs(*args.size)
    final_hw = (args.input[1], args.input[0])
    decoded = [decode_image(d) for d in jpegs]
    reference = [resize_crop(im, final_hw, 'pil')[0].astype(int) for im in decoded]
    decode_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for data in jpegs:
            decode_image(data)
        decode_times.append(time.perf_counter() - start)
    decode_only = statistics.median(decode_times)
    baseline = time_frame(jpegs, final_hw, 'pil', args.repeats)
    print(f'six {args.size[0]}x{args.size[1]} JPEGs -> {args.input[0]}x{args.input[1]}, '
          f'{args.repeats} repeats, one thread; baseline = decode + PIL bicubic (official)')
    print(f'{"method":<8} {"time / baseline":>16} {"mean |diff|":>12} {"max |diff|":>11}')
    print(f'{"decode":<8} {decode_only / baseline:>16.2f} {"":>12} {"":>11}')
    for method in RESIZE_METHODS:
        seconds = baseline if method == 'pil' else time_frame(jpegs, final_hw, method, args.repeats)
        diffs = [np.abs(resize_crop(im, final_hw, method)[0] - ref) for im, ref in zip(decoded, reference)]
        print(f'{method:<8} {seconds / baseline:>16.2f} {np.mean(diffs):>12.4f} '
              f'{max(int(d.max()) for d in diffs):>11d}')
        if args.workers:
            threaded = time_frame(jpegs, final_hw, method, args.repeats, args.workers)
            print(f'{method + f" x{args.workers}":<8} {threaded / baseline:>16.2f}')


if __name__ == '__main__':
    main()

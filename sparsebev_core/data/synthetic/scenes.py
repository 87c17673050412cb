"""Synthetic scenes written in the nuScenes table layout (``sparsebev make-synthetic``).

``make_synthetic(out_dir, num_scenes=2)`` writes ``OUT/v1.0-mini/*.json`` (the thirteen
nuScenes tables), rendered JPEG camera images under ``OUT/samples`` / ``OUT/sweeps`` and a
tiny map mask, so that ``NuScenes(version='v1.0-mini', dataroot=OUT)`` loads it and
``DetectionEval(eval_set='mini_val')`` runs on it. What it models:

* six cameras with the nuScenes calibration (log n015) and intrinsics scaled to the image
  size (default 400x225 = 1600x900 / 4), or any camera rig (``rig=``, ``--rig FILE``:
  ``sparsebev_core.rig``, each camera with its own name, size, intrinsics and extrinsics),
  12 Hz camera sweeps with per-camera trigger offsets, keyframes (samples) at 2 Hz, an ego
  pose record per sample_data;
* LIDAR_TOP sample_data at the keyframes only (nuScenes has 20 Hz sweeps); each
  ``.pcd.bin`` is a small but valid point cloud (a ground ring and the corners of the
  annotated boxes) that no model reads;
* a world of a curved road with boxes of the ten detection classes (``world``),
  rendered with correct occlusion (``render``), written scene by scene (``scene_writer``);
* annotations at the keyframes for objects within 60 m of the ego: gravity-centre global
  boxes, size (w, l, h), yaw quaternion, prev/next chains (the devkit derives velocities),
  visibility from the rendered id buffers, attributes by the official speed-based
  rule (``attributes.official_attribute``), and ``num_lidar_pts`` = the number of the box's visible pixels in the
  six cameras (a proxy: 0 when fully occluded or out of view, so the devkit drops it).

Scene names come from the devkit's ``mini_train`` / ``mini_val`` splits (at most 10
scenes): one validation scene for up to five scenes, two above; the rest are training
scenes. Everything is deterministic from ``seed``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ...errors import InputError, UsageError
from ...rig import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, Rig, load_rig, nuscenes_rig, rig_to_dict
from .render import make_camera
from .scene_writer import (KEYFRAME_PERIOD_US, SWEEPS_PER_KEYFRAME, TABLE_NAMES, SceneWriter, Tokens,
                           static_tables)
from .world import SyntheticWorld, make_world

MINI_TRAIN = ('scene-0061', 'scene-0553', 'scene-0655', 'scene-0757', 'scene-0796',
              'scene-1077', 'scene-1094', 'scene-1100')
MINI_VAL = ('scene-0103', 'scene-0916')


def scene_names(num_scenes: int) -> list[tuple[str, str]]:
    """(name, split) of each scene: training scenes first, then 1 (<= 5 scenes) or 2 val."""
    if not 1 <= num_scenes <= len(MINI_TRAIN) + len(MINI_VAL):
        raise InputError(f'num_scenes must be in 1..{len(MINI_TRAIN) + len(MINI_VAL)} (the '
                         f'devkit mini splits name that many scenes); got {num_scenes}')
    n_val = 1 if num_scenes <= 5 else 2
    n_train = num_scenes - n_val
    return [(n, 'mini_train') for n in MINI_TRAIN[:n_train]] + \
        [(n, 'mini_val') for n in MINI_VAL[:n_val]]


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """(W, H) as ints, or UsageError naming ``--size`` when a side is outside 8..8192 pixels."""
    try:
        w, h = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise UsageError(f'--size must be two integers W H, got {image_size!r}') from None
    if not (MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE):
        raise UsageError(f'--size {w} {h}: width and height must each be {MIN_IMAGE_SIDE}..'
                         f'{MAX_IMAGE_SIDE} pixels (default 400 225)')
    return w, h


def scene_world(seed: int, scene_index: int, keyframes_per_scene: int
                ) -> tuple[SyntheticWorld, np.random.Generator]:
    """The world of scene ``scene_index`` of ``make_synthetic(seed=seed)``, and the generator
    that goes on to draw that scene's stamps."""
    rng = np.random.default_rng([seed, scene_index])
    duration = (keyframes_per_scene - 1) * KEYFRAME_PERIOD_US * 1e-6
    return make_world(rng, duration), rng


def make_synthetic(out_dir: str | Path, num_scenes: int = 2, seed: int = 0,
                   keyframes_per_scene: int = 20, image_size: tuple[int, int] = (400, 225),
                   version: str = 'v1.0-mini', jpeg_quality: int = 90,
                   progress: bool = True, rig: Rig | None = None) -> Path:
    """Write a synthetic dataset in the nuScenes layout and return its root.

    Args:
        out_dir: dataset root (created); tables go to ``out_dir/version``.
        num_scenes: 1..10; names from the devkit mini splits (see :func:`scene_names`).
        seed: everything (world, stamps, tokens) is a function of the seed.
        keyframes_per_scene: samples per scene (2 Hz; 20 = a 9.5 s scene).
        image_size: camera image (W, H) of the default rig; intrinsics are the nuScenes ones
            scaled to it.
        version: name of the table folder (``v1.0-mini`` for the mini evaluation splits).
        jpeg_quality: JPEG quality of the camera images.
        progress: show a tqdm bar.
        rig: the cameras to render (``sparsebev_core.rig``; None: the six nuScenes cameras at
            ``image_size``); its names are the channels, the rig is written to ``OUT/rig.yaml``.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    check_image_size(image_size)
    if keyframes_per_scene < 2:
        raise InputError('keyframes_per_scene must be >= 2 (velocities need a neighbour)')
    names = scene_names(num_scenes)
    out.mkdir(parents=True, exist_ok=True)
    token = Tokens(seed)
    tables: dict[str, list] = {name: [] for name in TABLE_NAMES}
    image_wh = (int(image_size[0]), int(image_size[1]))
    custom_rig = rig is not None
    rig = rig or nuscenes_rig(image_wh)
    static_tables(tables, token, rig.names)
    cameras = [make_camera(c.K, c.T_base_cam, c.image_wh) for c in rig.cameras]
    frames_per_scene = len(cameras) * ((keyframes_per_scene - 1) * SWEEPS_PER_KEYFRAME + 1)
    start = time.perf_counter()
    with tqdm(total=frames_per_scene * len(names), desc='make-synthetic', unit='img',
              disable=not progress) as bar:
        for i, (name, _split) in enumerate(names):
            world, rng = scene_world(seed, i, keyframes_per_scene)
            writer = SceneWriter(out, tables, token, i, name, world, rig, cameras,
                                  keyframes_per_scene, jpeg_quality, rng)
            writer.write_log_and_calibration()
            writer.write(bar)
    map_token = token('map', 0)
    map_file = f'maps/{map_token}.png'
    (out / 'maps').mkdir(exist_ok=True)
    Image.fromarray(np.full((20, 20), 255, np.uint8)).save(out / map_file)
    tables['map'].append(dict(token=map_token, log_tokens=[r['token'] for r in tables['log']],
                              category='semantic_prior', filename=map_file))
    table_dir = out / version
    table_dir.mkdir(exist_ok=True)
    for name in TABLE_NAMES:
        with open(table_dir / f'{name}.json', 'w') as f:
            json.dump(tables[name], f, indent=0)
    meta = dict(generator='sparsebev_core.data.synthetic', seed=seed, num_scenes=num_scenes,
                keyframes_per_scene=keyframes_per_scene, image_size=list(image_wh),
                version=version, scenes=[dict(name=n, split=s) for n, s in names],
                seconds=round(time.perf_counter() - start, 2))
    if custom_rig:
        import yaml
        meta['rig'] = rig_to_dict(rig)
        (out / 'rig.yaml').write_text(yaml.safe_dump(meta['rig'], sort_keys=False))
    (out / 'synthetic.json').write_text(json.dumps(meta, indent=2))
    return out


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev make-synthetic``."""
    parser.add_argument('out', help='output dataset root (tables go to OUT/v1.0-mini)')
    parser.add_argument('--scenes', type=int, default=2, help='number of scenes (1..10)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--keyframes', type=int, default=20, help='keyframes (2 Hz) per scene')
    parser.add_argument('--size', type=int, nargs=2, default=(400, 225), metavar=('W', 'H'),
                        help='camera image size (of the default six nuScenes cameras)')
    parser.add_argument('--rig', default=None, metavar='FILE',
                        help='render this camera rig instead (YAML: camera names, image size, '
                             'intrinsics, extrinsics; see sparsebev_core/rig.py)')
    parser.add_argument('--version', default='v1.0-mini')


def main(args: argparse.Namespace) -> int:
    """Generate the dataset and print where it went and how long it took."""
    start = time.perf_counter()
    out = make_synthetic(args.out, num_scenes=args.scenes, seed=args.seed,
                         keyframes_per_scene=args.keyframes, image_size=tuple(args.size),
                         version=args.version,
                         rig=load_rig(args.rig) if getattr(args, 'rig', None) else None)
    print(f'wrote {args.scenes} synthetic scene(s) to {out} in '
          f'{time.perf_counter() - start:.1f} s')
    return 0

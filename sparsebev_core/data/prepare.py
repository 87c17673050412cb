"""``sparsebev prepare-nuscenes``: info files for every split of a nuScenes version."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .infos import TablesNotFoundError, build_infos, info_path, save_infos, splits_of_version


def prepare_nuscenes(root: str | Path, version: str = 'v1.0-trainval', out: str | Path | None = None,
                     splits: tuple[str, ...] | None = None, progress: bool = True) -> list[Path]:
    """Build and write the info files of ``splits`` (default: all splits of the version).

    Returns the written paths (``OUT/sparsebev_infos_<version>_<split>.pkl``).
    """
    from nuscenes import NuScenes

    root = Path(root)
    if not (root / version).is_dir():
        raise TablesNotFoundError(f'no nuScenes tables at {root / version}; pass --root (the '
                                  f'folder holding {version}/, samples/, sweeps/) and --version')
    nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    written = []
    for split in splits or splits_of_version(version):
        infos = build_infos(nusc, split, progress=progress)
        path = save_infos(info_path(out or root, version, split), infos, version=version,
                          split=split, data_root=str(root.resolve()))
        written.append(path)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev prepare-nuscenes``."""
    parser.add_argument('--root', default='data/nuscenes', help='nuScenes dataset root')
    parser.add_argument('--version', default='v1.0-trainval',
                        choices=('v1.0-trainval', 'v1.0-mini', 'v1.0-test'))
    parser.add_argument('--out', default=None, help='output folder (default: the root)')
    parser.add_argument('--split', action='append', default=None,
                        help='only this devkit split (repeatable; default: all of the version)')


def main(args: argparse.Namespace) -> int:
    """Write the info files and say where they went."""
    start = time.perf_counter()
    paths = prepare_nuscenes(args.root, args.version, args.out,
                             tuple(args.split) if args.split else None)
    for p in paths:
        print(f'wrote {p}')
    print(f'done in {time.perf_counter() - start:.1f} s')
    return 0

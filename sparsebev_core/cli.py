"""The ``sparsebev`` command: one entry point, subcommands in the manner of ``ros2 bag``.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``main(args) -> int``. Modules are imported only when their subcommand runs, so
``sparsebev --help`` stays fast and a subcommand's heavy imports (nuscenes-devkit, rosbags,
matplotlib) cost nothing to the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). Plain table, no registry.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    'demo': ('sparsebev_core.demo',
             'detect objects in a synthetic scene end to end (bag -> replay -> pictures, metrics)'),
    'make-synthetic': ('sparsebev_core.data.synthetic',
                       'generate a synthetic dataset in the nuScenes table layout'),
    'prepare-nuscenes': ('sparsebev_core.data.prepare',
                         'build info files (cameras, sweeps, annotations) from nuScenes tables'),
    'train': ('sparsebev_core.engine.train', 'train a preset (also: torchrun -m sparsebev_core.engine.train)'),
    'eval': ('sparsebev_core.engine.evaluate', 'run inference and the nuscenes-devkit evaluation'),
    'timing': ('sparsebev_core.engine.timing', 'measure FPS and a per-stage latency breakdown'),
    'viz': ('sparsebev_core.viz.cli', 'draw predictions and sampling points'),
    'convert-checkpoint': ('sparsebev_core.checkpoint', 'convert an official SparseBEV checkpoint'),
    'replay': ('sparsebev_ros.replay', 'run the ROS pipeline over a rosbag2 file, without ROS'),
    'nuscenes-to-bag': ('sparsebev_ros.nuscenes_bag', 'write a nuScenes (or synthetic) scene as a rosbag2'),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Parser with every subcommand; only the one named ``only`` gets its full arguments."""
    parser = argparse.ArgumentParser(prog='sparsebev', description='SparseBEV tools')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sparsebev`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith('-')), None)
    if command not in SUBCOMMANDS:
        build_parser().parse_args(argv or ['--help'])
        return 2
    args = build_parser(only=command).parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return int(module.main(args) or 0)


if __name__ == '__main__':
    sys.exit(main())

"""The ``sparsebev`` command: one entry point, subcommands in the manner of ``ros2 bag``.

:data:`SUBCOMMANDS` is the one table of every command this repository has. Each subcommand
lives in its own module, which provides ``add_arguments(parser)`` and ``main(args) -> int``.
Modules are imported only when their subcommand runs, so ``sparsebev --help`` stays fast and
a subcommand's heavy imports (nuscenes-devkit, rosbags, matplotlib) cost nothing to the others.

Exit codes, the same in every subcommand (``sparsebev_core.cli_common.run_command``): 0 success,
1 bad input (a file, a parameter value, a scene name, a missing optional package), 2 usage
(missing or conflicting options, argparse errors); an error is one line on stderr. Under
``torchrun``: ``torchrun -m sparsebev_cli.cli eval ...``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from sparsebev_core.cli_common import parse_or_exit_code, run_command

# subcommand -> (module, one-line help). Plain table, no registry.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    'demo': ('sparsebev_cli.demo.command',
             'detect objects in a synthetic scene end to end (bag -> replay -> pictures, metrics)'),
    'make-synthetic': ('sparsebev_core.data.synthetic.scenes',
                       'generate a synthetic dataset in the nuScenes table layout'),
    'prepare-nuscenes': ('sparsebev_core.data.prepare',
                         'build info files (cameras, sweeps, annotations) from nuScenes tables'),
    'train': ('sparsebev_core.engine.train', 'train a preset (also: torchrun -m sparsebev_core.engine.train)'),
    'eval': ('sparsebev_core.engine.evaluate', 'run inference and the nuscenes-devkit evaluation'),
    'timing': ('sparsebev_core.engine.timing', 'measure FPS and a per-stage latency breakdown'),
    'viz': ('sparsebev_core.viz.cli', 'draw predictions and sampling points'),
    'convert-checkpoint': ('sparsebev_core.checkpoints.convert', 'convert an official SparseBEV checkpoint'),
    'export-onnx': ('sparsebev_core.export.onnx_export',
                    'export the encoder and head as ONNX graphs + export.json (docs/deploy.md)'),
    'build-op': ('sparsebev_core.ops.build',
                 'compile the CUDA sampling op just in time (also: python -m sparsebev_core.ops.build)'),
    'replay': ('sparsebev_ros.bags.replay', 'run the ROS pipeline over a rosbag2 file, without ROS'),
    'nuscenes-to-bag': ('sparsebev_ros.bags.from_nuscenes', 'write a nuScenes (or synthetic) scene as a rosbag2'),
    'params-table': ('sparsebev_ros.params',
                     "print the README table of the node's parameters (also: python -m sparsebev_ros.params)"),
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
    """Entry point of the ``sparsebev`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith('-')), None)
    if command not in SUBCOMMANDS:
        code = parse_or_exit_code(build_parser(), argv or ['--help'])
        return code if isinstance(code, int) else 2
    args = parse_or_exit_code(build_parser(only=command), argv)
    if isinstance(args, int):
        return args
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return run_command(f'sparsebev {command}', module.main, args)


if __name__ == '__main__':
    sys.exit(main())

"""What every command shares: the common flags and the one error-to-exit-code wrapper.

Flags: ``--preset NAME`` | ``--config FILE`` (an official SparseBEV config; the two exclude each
other), ``--checkpoint FILE``, ``--device`` (default ``auto`` in every command) and
``--threads N``. Each subcommand picks the ones it has and its own preset default; reading them
back is :func:`model_config_from_args`.

Exit codes (:func:`run_command`, used by ``sparsebev`` and the ``python -m`` entry points):
0 success, 1 bad input (``InputError``, ``MissingDependencyError``), 2 usage (``UsageError``
and argparse's own errors); the error is one ``<prog>: error: <message>`` line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from .devices import DEFAULT_DEVICE, DEVICE_HELP
from .errors import SparseBEVError
from .recipe.config import ModelConfig
from .recipe.presets import model_config


def add_model_arguments(parser: argparse.ArgumentParser, preset_default: str | None,
                        checkpoint: str = 'optional',
                        checkpoint_help: str = 'model weights (.pth): official or converted',
                        preset_help: str | None = None) -> None:
    """``--preset`` / ``--config`` (mutually exclusive) and ``--checkpoint``.

    ``checkpoint``: 'required', 'optional' or 'none' (the command takes no weights).
    """
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--preset', default=preset_default,
                       help=preset_help or f'model preset (default {preset_default})')
    group.add_argument('--config', default=None, metavar='FILE',
                       help='an official SparseBEV config file (.py), instead of --preset')
    if checkpoint != 'none':
        parser.add_argument('--checkpoint', default=None, required=checkpoint == 'required',
                            help=checkpoint_help)


def add_device_argument(parser: argparse.ArgumentParser, help_suffix: str = '') -> None:
    """``--device``, default ``auto``."""
    parser.add_argument('--device', default=DEFAULT_DEVICE, help=DEVICE_HELP + help_suffix)


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None) -> None:
    """``--threads``: torch CPU threads (0 or absent: torch's default)."""
    parser.add_argument('--threads', type=int, default=default,
                        help='torch CPU threads (1 is fastest for small models on a shared CPU; '
                             f"0 = torch's default; default {default if default else 'torch'})")


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The recipe named by ``--config`` or ``--preset``."""
    return model_config(args.preset, args.config)


def run_command(prog: str, main: Callable[[argparse.Namespace], int | None],
                args: argparse.Namespace) -> int:
    """``main(args)``, with a ``SparseBEVError`` turned into one line on stderr and its exit
    code. Other exceptions are bugs and keep their traceback."""
    try:
        return int(main(args) or 0)
    except SparseBEVError as error:
        print(f'{prog}: error: {error}', file=sys.stderr)
        return error.exit_code


def parse_or_exit_code(parser: argparse.ArgumentParser, argv: list[str]
                       ) -> argparse.Namespace | int:
    """``parser.parse_args(argv)``, or the exit code argparse asked for (0 after ``--help``,
    2 after a usage error it has already printed)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)

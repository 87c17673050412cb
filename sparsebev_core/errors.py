"""The error types the library raises on purpose.

One base class, one meaning per subclass. Library code raises these (never ``SystemExit``);
only the command-line entry point turns them into a message on stderr and an exit code:

| class | meaning | exit code |
|---|---|---|
| ``InputError`` | bad input: a file, a parameter value, a message, a frame | 1 |
| ``MissingDependencyError`` | an optional package the requested feature needs is not installed | 1 |
| ``UsageError`` | the command was used wrongly (missing or conflicting options) | 2 |

Modules derive their specific errors from these (``InvalidFrameError``, ``CheckpointError``,
``ImageDecodeError``, ...), so a caller can catch by meaning and the CLI by base class.
"""
from __future__ import annotations


class SparseBEVError(Exception):
    """Base of every error raised on purpose by ``sparsebev_core`` and ``sparsebev_ros``."""
    exit_code = 1


class InputError(SparseBEVError, ValueError):
    """Bad input from the user or the data (a file, a parameter, a message); exit code 1."""


class MissingDependencyError(SparseBEVError, ImportError):
    """An optional package needed for the requested feature is missing; the message names it."""


class UsageError(SparseBEVError):
    """The command was used wrongly (missing or conflicting options); exit code 2."""
    exit_code = 2

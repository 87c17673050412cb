"""A YAML file the user points at (a rig file, a ROS parameter file), read one way: a missing
file or broken YAML is the caller's typed error naming the file, never a traceback."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def read_yaml_file(path: str | Path, error: type[Exception], what: str, hint: str = '') -> Any:
    """The parsed content of ``path`` (``yaml.safe_load``); ``error(message)`` when the file does
    not exist or is not YAML. ``what`` names the file in the message ('rig file'), ``hint``
    says what a good one looks like."""
    import yaml
    path = Path(path)
    if not path.is_file():
        raise error(f'{what} {path} does not exist')
    try:
        return yaml.safe_load(path.read_bytes())
    except yaml.YAMLError as exc:
        raise error(f'{what} {path} is not valid YAML ({exc.__class__.__name__}: '
                    f'{str(exc).splitlines()[0]})' + (f'; {hint}' if hint else '')) from None

"""This package built with the real colcon (PyPI ``colcon-common-extensions``, pinned in
scripts/ros2_tier2.sh) into a workspace, and commands run in it the way a user runs them after
``source install/setup.bash``."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = 'sparsebev_ros'


def user_env(**extra: str) -> dict:
    """The environment of a user's shell: this venv's ``python3`` first on PATH (as an
    activated venv does), and without ``PYTHONDONTWRITEBYTECODE`` (set on some CI machines: it
    makes setuptools warn on stderr about every file it does not byte-compile)."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONDONTWRITEBYTECODE'}
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')])
    env.update(extra)
    return env


@dataclass
class Workspace:
    root: Path
    build_output: str                 # what `colcon build` printed

    @property
    def install(self) -> Path:
        return self.root / 'install'

    @property
    def executable(self) -> Path:
        """Where ``ros2 run sparsebev_ros detector_node`` finds the node."""
        return self.install / PACKAGE / 'lib' / PACKAGE / 'detector_node'

    def sourced(self, *command: str) -> list[str]:
        """``command`` run after ``source install/setup.bash``."""
        return ['bash', '-c', 'source "$0/setup.bash" && exec "$@"', str(self.install), *command]

    def stderr_log(self) -> str:
        return (self.root / 'log' / 'latest_build' / PACKAGE / 'stderr.log').read_text()


def colcon(root: Path, *arguments: str, env: dict | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m colcon`` (the venv's colcon) with the workspace's folders under ``root``."""
    return subprocess.run([sys.executable, '-m', 'colcon', '--log-base', str(root / 'log'),
                           *arguments], cwd=root, capture_output=True, text=True,
                          timeout=timeout, env=env if env is not None else user_env())


def build(root: Path, *options: str) -> Workspace:
    """``colcon build [options]`` of this repository (its root is the package) into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    result = colcon(root, 'build', '--base-paths', str(ROOT), '--build-base', str(root / 'build'),
                    '--install-base', str(root / 'install'), *options)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f'colcon build {" ".join(options)} failed:\n{output[-4000:]}'
    return Workspace(root, output)

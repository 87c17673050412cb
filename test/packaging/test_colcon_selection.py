"""``colcon test`` (pytest with ``--junit-prefix=sparsebev_ros``) runs test/packaging/ only, and
runs it on a ROS machine with only package.xml's dependencies: without torch, rosbags or
nuscenes-devkit nothing fails to import during collection (the review's run ended with
"Interrupted: 47 errors during collection"), and the checks that need torch skip saying so.
Tier 2 runs the real ``colcon test`` the same way (test/ros2/test_colcon_workspace.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from declared import ROOT, declared_only_env, undeclared_modules

COLCON = ['--junit-prefix=sparsebev_ros']       # what colcon_core's pytest task passes
# these tests start pytest themselves; not again inside the run they start
pytestmark = pytest.mark.skipif(bool(os.environ.get('SPARSEBEV_HIDE_MODULES')),
                                reason='already inside the declared-only pytest run')


def pytest_run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=env if env is not None else dict(os.environ))


def test_the_declared_only_python_really_lacks_the_pip_installs():
    env = declared_only_env()
    assert {'torch', 'simplejpeg', 'rosbags', 'nuscenes'} <= undeclared_modules()
    assert not undeclared_modules() & {'numpy', 'yaml', 'PIL', 'cv2', 'scipy', 'pytest'}
    probe = subprocess.run([sys.executable, '-c', 'import numpy, cv2, yaml; import torch'],
                           env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 1 and "No module named 'torch'" in probe.stderr


def test_under_colcon_only_test_packaging_is_collected_and_nothing_fails_to_import():
    result = pytest_run('--collect-only', '-q', *COLCON, env=declared_only_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    collected = [line for line in result.stdout.splitlines() if '::' in line]
    assert collected and all(line.startswith('test/packaging/') for line in collected)
    assert 'error' not in result.stdout.lower().split('collected')[-1]


def test_without_colcon_or_with_sparsebev_all_tests_the_ml_suite_is_collected():
    files = ['test/packaging/test_ros_params.py', 'test/test_ros_messages.py']
    plain = pytest_run('--collect-only', '-q', *files).stdout
    assert 'test/test_ros_messages.py::' in plain and 'test_ros_params.py::' in plain
    everything = pytest_run('--collect-only', '-q', *COLCON, *files,
                            env={**os.environ, 'SPARSEBEV_ALL_TESTS': '1'}).stdout
    assert 'test/test_ros_messages.py::' in everything


def test_under_colcon_with_only_the_declared_dependencies_the_checks_pass_or_skip_saying_why():
    result = pytest_run('-q', '-rs', *COLCON, env=declared_only_env())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert ' passed' in result.stdout and 'failed' not in result.stdout
    assert 'needs torch, a pip install that package.xml does not declare' in result.stdout

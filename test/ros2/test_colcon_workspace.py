"""Tier 2: this package through the real colcon (PyPI colcon-common-extensions): ``colcon build``
without stderr noise and with the executables where ``ros2 run`` looks; ``--symlink-install``
(setup.py develop) and the interpreter it writes into them; ``colcon test`` on a Python with
only package.xml's dependencies."""
from __future__ import annotations

import subprocess
import sys

from colcon_workspace import ROOT, build, colcon, user_env

sys.path.insert(0, str(ROOT / 'test' / 'packaging'))
from declared import declared_only_env  # noqa: E402


def test_colcon_build_installs_the_package_and_reports_no_stderr_output(workspace):
    """The review's builds ended with "1 package had stderr output" (the CUDA-skip message on
    stderr; setuptools >= 72 adds a warning about ``tests_require``)."""
    assert 'Finished <<< sparsebev_ros' in workspace.build_output
    assert 'stderr output' not in workspace.build_output, workspace.build_output
    assert workspace.stderr_log() == ''
    share = workspace.install / 'sparsebev_ros' / 'share' / 'sparsebev_ros'
    assert (share / 'launch' / 'detector.launch.py').is_file()
    assert (share / 'config' / 'detector.yaml').is_file() and (share / 'package.xml').is_file()
    # a plain build runs the python3 first on PATH (setup.cfg [build_scripts] executable)
    assert workspace.executable.read_text().splitlines()[0] == '#!/usr/bin/env python3'


def run_node_with_a_bad_parameter(workspace) -> subprocess.CompletedProcess:
    """``ros2 run sparsebev_ros detector_node`` with an invalid parameter: the node imports
    everything (rclpy, torch, ...) and exits 1 naming the parameter."""
    return subprocess.run(workspace.sourced(str(workspace.executable), '--ros-args', '-p',
                                            'max_camera_time_diff:=-2.0'),
                          capture_output=True, text=True, timeout=180, env=user_env())


def test_the_installed_executable_runs_the_workspace_package(workspace):
    result = run_node_with_a_bad_parameter(workspace)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "invalid parameters: parameter 'max_camera_time_diff'" in output


def test_symlink_install_writes_the_python_that_ran_colcon_into_the_executables(tmp_path):
    """``--symlink-install`` runs ``setup.py develop``, whose wrapper scripts take their
    ``#!`` from ``sys.executable`` whatever setup.cfg says (README "Build with colcon": run the
    venv's colcon, ``python -m colcon``, so that this is the venv with torch)."""
    workspace = build(tmp_path / 'ws', '--symlink-install')
    site = workspace.install / 'sparsebev_ros' / 'lib' / 'python3.11' / 'site-packages'
    assert (site / 'sparsebev-ros.egg-link').is_file() or (site / 'sparsebev_ros.egg-link').is_file()
    assert workspace.executable.read_text().splitlines()[0] == f'#!{sys.executable}'
    assert 'stderr output' not in workspace.build_output, workspace.build_output
    result = run_node_with_a_bad_parameter(workspace)
    assert result.returncode == 1 and 'max_camera_time_diff' in result.stdout + result.stderr


def test_colcon_test_passes_on_a_python_with_only_the_declared_dependencies(workspace):
    """The review's ``colcon test`` with package.xml's Python dependencies only: "Interrupted:
    47 errors during collection" (No module named 'torch', 'rosbags', ...)."""
    env = declared_only_env(user_env())
    paths = ['--base-paths', str(ROOT), '--build-base', str(workspace.root / 'build'),
             '--install-base', str(workspace.install)]
    result = colcon(workspace.root, 'test', *paths, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    summary = colcon(workspace.root, 'test-result', '--test-result-base',
                     str(workspace.root / 'build'), '--all', env=env)
    text = summary.stdout + summary.stderr
    assert summary.returncode == 0, text[-4000:]
    assert '0 errors, 0 failures' in text, text[-4000:]
    xml = (workspace.root / 'build' / 'sparsebev_ros' / 'pytest.xml').read_text()
    assert 'needs torch, a pip install' in xml                  # skipped, saying why
    assert 'test_ros_dependencies' in xml and 'test_ros_messages' not in xml

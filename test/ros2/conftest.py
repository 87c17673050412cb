"""Tier 2 (real rclpy) lives here and runs only through ``scripts/ros2_tier2.sh``.

The main test run (``pytest test``, no ROS) skips this directory entirely; the script sets
``SPARSEBEV_TIER2=1`` in the ROS venv. ``standins/`` (tf2_ros),
``typings/`` (their mypy stubs) and ``interfaces/`` (message packages) are not tests.
"""
import os

import pytest

if os.environ.get('SPARSEBEV_TIER2'):
    collect_ignore = ['standins', 'typings', 'interfaces']
else:
    collect_ignore_glob = ['*']


def pytest_report_header(config):
    if not os.environ.get('SPARSEBEV_TIER2'):
        return []
    header = 'tier 2: real rclpy 7.1.6 (Jazzy wheels) + Fast DDS on loopback; '
    missing = os.environ.get('SPARSEBEV_TIER2_NO_UPSTREAM')
    if missing:
        return [header + 'tf2_ros is a STAND-IN from test/ros2/standins and the tests of the '
                f'real tf2_ros / launch skip: {missing}']
    return [header + 'the real tf2_ros 0.36.4, launch 3.4.3 and launch_ros 0.26.6 (Jazzy, built '
            "from the upstream archives) and Humble's tf2_ros_py 0.25.8"]



@pytest.fixture()
def context():
    """A fresh rclpy context, shut down after the test."""
    import rclpy
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.fixture(scope='session')
def workspace(tmp_path_factory):
    """This package built by ``colcon build`` (plain) into a fresh workspace."""
    from colcon_workspace import build
    return build(tmp_path_factory.mktemp('colcon') / 'ws')

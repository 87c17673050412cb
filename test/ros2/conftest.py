"""Tier 2 (real rclpy) lives here and runs only through ``scripts/ros2_tier2.sh``.

The main test run (``pytest test``, no ROS) skips this directory entirely; the script sets
``SPARSEBEV_TIER2=1`` in the ROS venv. ``standins/`` (tf2_ros),
``typings/`` (their mypy stubs) and ``interfaces/`` (message packages) are not tests.
"""
import os

if os.environ.get('SPARSEBEV_TIER2'):
    collect_ignore = ['standins', 'typings', 'interfaces']
else:
    collect_ignore_glob = ['*']


def pytest_report_header(config):
    if os.environ.get('SPARSEBEV_TIER2'):
        return ['tier 2: real rclpy 7.1.6 (Jazzy wheels) + Fast DDS on loopback; tf2_ros is a '
                'STAND-IN from test/ros2/standins (no wheel exists)']
    return []

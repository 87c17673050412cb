"""Tier 2 (real rclpy) lives here and runs only through ``scripts/ros2_tier2.sh``.

The main test run (``pytest test``, no ROS) skips this directory entirely; the script sets
``SPARSEBEV_TIER2=1`` in the ROS venv. ``standins/`` (tf2_ros, message_filters),
``typings/`` (their mypy stubs) and ``interfaces/`` (message packages) are not tests.
"""
import os

if os.environ.get('SPARSEBEV_TIER2'):
    collect_ignore = ['standins', 'typings', 'interfaces']
else:
    collect_ignore_glob = ['*']

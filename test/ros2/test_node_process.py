"""Tier 2: ``detector_node`` as its own process, the way ``ros2 run`` starts it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import rclpy

from ros2_rig import wait_for

def run_node_process(*ros_args: str) -> Any:
    return subprocess.Popen([sys.executable, '-m', 'sparsebev_ros.node', '--ros-args', *ros_args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'))


def test_main_exits_1_with_a_message_on_an_invalid_parameter():
    proc = run_node_process('-p', 'max_camera_time_diff:=-2.0')
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    assert "invalid parameters: parameter 'max_camera_time_diff'" in output


def test_main_runs_as_its_own_process_and_stops_cleanly_on_sigint():
    """``ros2 run sparsebev_ros detector_node`` in short: start, be discoverable, stop on ^C."""
    proc = run_node_process('-r', '__node:=sparsebev_proc', '-p', 'preset:=tiny', '-p', 'device:=cpu')
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node('sparsebev_probe', context=context)
    try:
        wait_for(lambda: ('sparsebev_proc', '/') in probe.get_node_names_and_namespaces()
                 and bool(probe.get_publishers_info_by_topic('/sparsebev_proc/detections'))
                 and any(info.node_name == 'sparsebev_proc' for info in
                         probe.get_subscriptions_info_by_topic('/CAM_BACK_RIGHT/camera_info')),
                 90.0, 'the node process to appear on the graph with its topics')
    finally:
        probe.destroy_node()
        rclpy.shutdown(context=context)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert 'Traceback' not in output
    assert 'bundled DEMO weights' in output and 'synthetic scenes only' in output   # a WARN


def test_main_exits_1_naming_a_missing_python_package():
    """A module the node needs is missing: it stops at start-up saying which and how to get
    it, instead of running and failing every frame."""
    code = ('import sys; sys.modules["simplejpeg"] = None; import sparsebev_ros.node as n; '
            'sys.exit(n.main(["--ros-args", "-r", "__node:=sparsebev_nojpeg"]))')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert 'missing simplejpeg' in output and 'pip install simplejpeg' in output

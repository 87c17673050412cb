"""Tier 2: the installed ``detector.launch.py`` run by the real Jazzy ``launch`` /
``launch_ros`` (``ros2launch.api``, what ``ros2 launch`` calls) from a colcon workspace, in its
own process; a probe node checks the detector's name, lifecycle state, parameters and topics;
SIGINT stops everything cleanly. ``lifecycle:=true autostart:=true`` must reach ``active``; the
parameter descriptors (``ros2 param describe``) carry the schema's ranges. ``rviz:=true``
without rviz2 must start nothing (the review found the detector left running with parent 1)."""
from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import rclpy
from lifecycle_msgs.msg import State
from rcl_interfaces.msg import ParameterType
from lifecycle_msgs.srv import GetState
from rclpy.parameter_client import AsyncParameterClient

from colcon_workspace import user_env
from ros2_rig import Spinning, needs_upstream, wait_for

pytestmark = needs_upstream
DRIVER = Path(__file__).resolve().parent / 'ros2_launch.py'
START = 120.0         # s: the node imports torch and loads the model on 2 busy cores


def processes_with(text: str) -> dict[int, str]:
    """pid -> command line of every process whose command line contains ``text``."""
    found = {}
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / 'cmdline').read_bytes().replace(b'\0', b' ').decode()
            except OSError:
                continue
            if text in cmdline:
                found[int(entry.name)] = cmdline
    return found


def terminal_sigint() -> None:
    """^C as in a terminal: a test run started in the background (CI) inherits SIGINT ignored,
    and launch (which reacts to signals through ``signal.set_wakeup_fd``, installing no handler
    of its own) would then never see it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def processes_in_group(pgid: int) -> dict[int, str]:
    """pid -> command line of the processes in process group ``pgid``."""
    found = {}
    for pid, cmdline in processes_with('').items():
        try:
            if os.getpgid(pid) == pgid:
                found[pid] = cmdline
        except OSError:
            continue
    return found


class Launched:
    """``ros2 launch sparsebev_ros detector.launch.py namespace:=<unique> ARGS`` in its own
    process group, sourced from ``workspace``; never leaves a process behind."""

    def __init__(self, workspace, *arguments: str) -> None:
        self.namespace = f'launch_{uuid.uuid4().hex[:8]}'
        self.marker = f'__ns:=/{self.namespace}'           # on the detector's command line
        self.proc = subprocess.Popen(
            workspace.sourced('python', str(DRIVER), 'sparsebev_ros', 'detector.launch.py',
                              f'namespace:={self.namespace}', *arguments),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=user_env(PYTHONFAULTHANDLER='1'), start_new_session=True,
            preexec_fn=terminal_sigint)
        self.output = ''

    @property
    def node(self) -> str:
        return f'/{self.namespace}/sparsebev'

    def stop(self) -> int:
        """SIGINT, as ^C in a terminal: launch forwards it to the node. A launch that has not
        ended 90 s later gets SIGABRT in every process (faulthandler prints their stacks)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.output, _ = self.proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            hung = processes_in_group(self.proc.pid)
            for pid in hung:
                os.kill(pid, signal.SIGABRT)
            self.output = self.proc.communicate(timeout=30)[0]
            raise AssertionError(f'the launch did not end on SIGINT; processes {hung}:\n'
                                 f'{self.output[-8000:]}') from None
        return self.proc.returncode

    def leftovers(self) -> dict[int, str]:
        return processes_with(self.marker)

    def kill_everything(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.output += self.proc.communicate(timeout=30)[0]
        for pid in self.leftovers():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture()
def probe():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('sparsebev_launch_probe', context=context)
    try:
        with Spinning(context, node):
            yield node
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def parameters(probe, node: str, names: list[str]) -> dict:
    client = AsyncParameterClient(probe, node)
    assert client.wait_for_services(timeout_sec=30.0), f'no parameter services of {node}'
    future = client.get_parameters(names)
    wait_for(future.done, 30.0, f'the parameters of {node}')
    from rclpy.parameter import parameter_value_to_python
    return {name: parameter_value_to_python(value)
            for name, value in zip(names, future.result().values)}


def descriptors(probe, node: str, names: list[str]) -> dict:
    """What ``ros2 param describe`` shows: the node's ``describe_parameters`` service."""
    client = AsyncParameterClient(probe, node)
    assert client.wait_for_services(timeout_sec=30.0), f'no parameter services of {node}'
    future = client.describe_parameters(names)
    wait_for(future.done, 30.0, f'the descriptors of {node}')
    return {d.name: d for d in future.result().descriptors}


def lifecycle_state(probe, node: str) -> int:
    client = probe.create_client(GetState, f'{node}/get_state')
    assert client.wait_for_service(timeout_sec=30.0), f'no {node}/get_state'
    future = client.call_async(GetState.Request())
    wait_for(future.done, 30.0, 'the lifecycle state')
    probe.destroy_client(client)
    return future.result().current_state.id


def on_graph(probe, launched: Launched) -> bool:
    return ('sparsebev', f'/{launched.namespace}') in probe.get_node_names_and_namespaces()


def subscribes(probe, topic: str) -> bool:
    return any(info.node_name == 'sparsebev' for info in probe.get_subscriptions_info_by_topic(topic))


def stop_cleanly(launched: Launched, workspace) -> None:
    detector = launched.leftovers()
    assert len(detector) == 1, detector
    (cmdline,) = detector.values()
    assert str(workspace.executable) in cmdline, f'not the workspace install: {cmdline}'
    assert launched.stop() == 0, launched.output[-3000:]
    assert 'process has finished cleanly' in launched.output, launched.output[-3000:]
    assert 'Traceback' not in launched.output, launched.output[-3000:]
    assert not launched.leftovers(), 'a process outlived the launch'


def test_plain_node_with_a_namespace_and_overrides(workspace, probe):
    launched = Launched(workspace, 'score_threshold:=0.45', 'use_sim_time:=true',
                        'cam_front_image:=/car/front/compressed')
    try:
        wait_for(lambda: on_graph(probe, launched) and bool(
            probe.get_publishers_info_by_topic(f'{launched.node}/detections')),
                 START, f'{launched.node} with its outputs')
        assert parameters(probe, launched.node, ['score_threshold', 'use_sim_time', 'preset',
                                                 'image_transport']) == \
            {'score_threshold': 0.45, 'use_sim_time': True, 'preset': 'tiny',
             'image_transport': 'compressed'}
        assert probe.get_publishers_info_by_topic(f'{launched.node}/markers')
        described = descriptors(probe, launched.node, ['score_threshold', 'max_detections',
                                                       'sync_window', 'precision',
                                                       'score_thresholds.pedestrian'])
        threshold = described['score_threshold']
        assert not threshold.read_only and 'drop boxes' in threshold.description
        assert [(r.from_value, r.to_value) for r in threshold.floating_point_range] == [(0.0, 1.0)]
        assert [(r.from_value, r.to_value) for r in described['max_detections'].integer_range] \
            == [(1, 10000)] and described['max_detections'].read_only
        assert described['sync_window'].additional_constraints == '> 0.0'
        assert described['precision'].additional_constraints == "one of 'fp32', 'fp16', 'bf16'"
        pedestrian = described['score_thresholds.pedestrian']
        assert pedestrian.type == ParameterType.PARAMETER_DOUBLE and not pedestrian.read_only
        assert [(r.from_value, r.to_value) for r in pedestrian.floating_point_range] == [(0.0, 1.0)]
        wait_for(lambda: subscribes(probe, '/car/front/compressed'), 30.0, 'the remapped camera')
        assert not subscribes(probe, '/CAM_FRONT/image_raw/compressed')
        assert subscribes(probe, '/CAM_BACK/image_raw/compressed')       # the file's topics
        assert f'{launched.node}/get_state' not in dict(probe.get_service_names_and_types())
        stop_cleanly(launched, workspace)
    finally:
        launched.kill_everything()


def test_lifecycle_node_waits_unconfigured_with_its_parameters(workspace, probe):
    launched = Launched(workspace, 'lifecycle:=true', 'score_threshold:=0.2')
    try:
        wait_for(lambda: on_graph(probe, launched), START, f'{launched.node} on the graph')
        assert lifecycle_state(probe, launched.node) == State.PRIMARY_STATE_UNCONFIGURED
        assert parameters(probe, launched.node, ['score_threshold', 'use_sim_time']) == \
            {'score_threshold': 0.2, 'use_sim_time': False}
        assert not probe.get_publishers_info_by_topic(f'{launched.node}/detections')  # configure
        stop_cleanly(launched, workspace)
    finally:
        launched.kill_everything()


def test_lifecycle_autostart_reaches_active_with_per_class_thresholds_from_a_file(
        workspace, probe, tmp_path):
    """``lifecycle:=true autostart:=true``: the launch configures the node once it is up and
    activates it once inactive; a parameter file's nested per-class map arrives as
    ``score_thresholds.<class>`` parameters."""
    params_file = tmp_path / 'detector.yaml'
    installed = (workspace.install / 'sparsebev_ros' / 'share' / 'sparsebev_ros' / 'config' /
                 'detector.yaml').read_text()
    empty = '    # score_thresholds: {<key>: <value>, ...}'
    assert empty in installed
    params_file.write_text(installed.replace(
        empty, '    score_thresholds:\n      pedestrian: 0.2\n      traffic_cone: 0.45\n' + empty))
    launched = Launched(workspace, 'lifecycle:=true', 'autostart:=true',
                        f'params_file:={params_file}')
    try:
        wait_for(lambda: on_graph(probe, launched), START, f'{launched.node} on the graph')
        wait_for(lambda: lifecycle_state(probe, launched.node) == State.PRIMARY_STATE_ACTIVE,
                 START, f'{launched.node} active')
        assert probe.get_publishers_info_by_topic(f'{launched.node}/detections')   # configured
        wait_for(lambda: subscribes(probe, '/CAM_FRONT/image_raw/compressed'), 30.0,
                 'the camera subscriptions (activated)')
        assert parameters(probe, launched.node, ['score_thresholds.pedestrian',
                                                 'score_thresholds.traffic_cone']) == \
            {'score_thresholds.pedestrian': 0.2, 'score_thresholds.traffic_cone': 0.45}
        stop_cleanly(launched, workspace)
    finally:
        launched.kill_everything()


def test_rviz_without_rviz2_starts_nothing_and_says_what_to_install(workspace):
    assert 'rviz2' not in os.environ.get('AMENT_PREFIX_PATH', '')
    launched = Launched(workspace, 'rviz:=true')
    try:
        launched.output, _ = launched.proc.communicate(timeout=START)
        orphans = launched.leftovers()
        assert not orphans, f'the failed launch left the detector running: {orphans}'
        assert launched.proc.returncode != 0, launched.output[-3000:]
        assert "rviz:=true but the package 'rviz2' is not installed" in launched.output
        assert 'ros-$ROS_DISTRO-rviz2' in launched.output
        assert 'process started' not in launched.output, launched.output[-3000:]
    finally:
        launched.kill_everything()

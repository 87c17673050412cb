"""Start the SparseBEV detector node, optionally with RViz.

    ros2 launch sparsebev_ros detector.launch.py                         # tiny demo model
    ros2 launch sparsebev_ros detector.launch.py preset:=r50_nuimg_704x256 \\
        checkpoint:=/models/sparsebev_r50_nuimg_704x256.pth device:=cuda precision:=fp16 \\
        namespace:=perception rviz:=true use_sim_time:=true \\
        cam_front_image:=/car/front/image_rect/compressed

Parameters come from ``params_file`` (default: the installed ``config/detector.yaml``); the
arguments in ``OVERRIDES`` replace the file's value when given (empty = keep the file's). The
``cam_*_image`` / ``cam_*_camera_info`` arguments give a camera's topics *whole*: the image
topic the node subscribes (with ``/compressed`` for compressed transport) and the CameraInfo
topic; empty = the parameter file's topics. ``namespace`` puts the node (and its outputs) under
a namespace; RViz then gets a copy of ``config/sparsebev.rviz`` whose topics follow it.

``lifecycle:=true`` starts a managed node (launch_ros ``LifecycleNode``) that waits unconfigured
for a lifecycle manager (nav2_lifecycle_manager, ``ros2 lifecycle set``); with
``autostart:=true`` the launch itself configures it as soon as it is up and activates it once it
is ``inactive`` (``ChangeState`` events; launch_ros has no ``autostart`` argument before Kilted).

``rviz:=true`` on a machine without rviz2 fails before anything is started (a detector started
first would outlive the failed launch, orphaned, still holding the GPU and publishing).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_context import LaunchContext
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'sparsebev_ros'
NODE_NAME = 'sparsebev'          # sparsebev_ros.params.NODE_NAME
EXECUTABLE = 'detector_node'     # setup.py console_scripts
LIFECYCLE_FLAG = '--lifecycle'   # sparsebev_ros.node.LIFECYCLE_FLAG: a managed node
# share/sparsebev_ros/launch/ -> share/sparsebev_ros/config/ (the same layout as the sources)
RVIZ_TEMPLATE = Path(__file__).resolve().parents[1] / 'config' / 'sparsebev.rviz'

# (launch argument prefix, default image base topic, default CameraInfo topic) in the model's
# camera order; the topics are the defaults of the `image_topics` / `camera_info_topics`
# parameters.
CAMERAS = (
    ('cam_front', '/CAM_FRONT/image_raw', '/CAM_FRONT/camera_info'),
    ('cam_front_right', '/CAM_FRONT_RIGHT/image_raw', '/CAM_FRONT_RIGHT/camera_info'),
    ('cam_front_left', '/CAM_FRONT_LEFT/image_raw', '/CAM_FRONT_LEFT/camera_info'),
    ('cam_back', '/CAM_BACK/image_raw', '/CAM_BACK/camera_info'),
    ('cam_back_left', '/CAM_BACK_LEFT/image_raw', '/CAM_BACK_LEFT/camera_info'),
    ('cam_back_right', '/CAM_BACK_RIGHT/image_raw', '/CAM_BACK_RIGHT/camera_info'),
)
# Arguments that override the parameter file only when set (empty = keep the file's value),
# with the parameter type their text is converted to.
OVERRIDES = {
    'preset': 'str', 'checkpoint': 'str', 'config_file': 'str', 'image_transport': 'str',
    'device': 'str', 'precision': 'str', 'score_threshold': 'float', 'output_frame': 'str',
    'world_frame': 'str', 'base_frame': 'str', 'use_projection_matrix': 'bool', 'runtime': 'str',
    'onnx_dir': 'str',
}
TRUE_WORDS, FALSE_WORDS = ('true', '1', 'yes', 'on'), ('false', '0', 'no', 'off')


def _is_true(text: str) -> bool:
    return text.strip().lower() in TRUE_WORDS


def _convert(name: str, text: str) -> object:
    """A launch argument's text as the parameter's type (a clear error otherwise)."""
    kind = OVERRIDES[name]
    if kind == 'float':
        try:
            return float(text)
        except ValueError:
            raise ValueError(f'launch argument {name}:={text!r} must be a number') from None
    if kind == 'bool':
        if text.strip().lower() not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError(f'launch argument {name}:={text!r} must be true or false')
        return _is_true(text)
    return text


def _output_topic(namespace: str, leaf: str) -> str:
    """``/<namespace>/sparsebev/<leaf>``: where the node's ``~/<leaf>`` lands."""
    prefix = '/' + namespace.strip('/') if namespace.strip('/') else ''
    return f'{prefix}/{NODE_NAME}/{leaf}'


def rviz_config(namespace: str, image_topics: dict[str, str], fixed_frame: str) -> str:
    """The RViz layout with its topics following the namespace and the camera topics; written
    to a temporary file whose path is returned."""
    import yaml
    layout = yaml.safe_load(RVIZ_TEMPLATE.read_text())
    manager = layout['Visualization Manager']
    for display in manager['Displays']:
        topic = display.get('Topic')
        if not isinstance(topic, dict):
            continue
        value = topic.get('Value', '')
        if value.startswith(f'/{NODE_NAME}/'):
            topic['Value'] = _output_topic(namespace, value.split('/', 2)[2])
        elif value in image_topics:
            topic['Value'] = image_topics[value]
    if fixed_frame:
        manager['Global Options']['Fixed Frame'] = fixed_frame
    with tempfile.NamedTemporaryFile('w', prefix='sparsebev_', suffix='.rviz', delete=False) as f:
        yaml.safe_dump(layout, f, sort_keys=False)
    return f.name


class MissingPackageError(RuntimeError):
    """A package this launch was asked to start is not installed (raised before any action)."""


def _require_package(package: str, asked_by: str) -> None:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    try:
        get_package_prefix(package)
    except PackageNotFoundError:
        raise MissingPackageError(
            f"{asked_by} but the package '{package}' is not installed (apt install "
            f"ros-$ROS_DISTRO-{package.replace('_', '-')}); nothing was started") from None


def _nodes(context: LaunchContext) -> list:
    rviz = _is_true(LaunchConfiguration('rviz').perform(context))
    if rviz:                 # before any action: a failed launch must not leave a detector behind
        _require_package('rviz2', 'rviz:=true')
    overrides = {name: _convert(name, text) for name in OVERRIDES
                 if (text := LaunchConfiguration(name).perform(context))}
    use_sim_time = _is_true(LaunchConfiguration('use_sim_time').perform(context))
    overrides['use_sim_time'] = use_sim_time
    namespace = LaunchConfiguration('namespace').perform(context)

    remappings = []
    shown_images = {}       # default compressed topic (in the RViz layout) -> topic shown
    for prefix, image_topic, info_topic in CAMERAS:
        image = LaunchConfiguration(f'{prefix}_image').perform(context)
        info = LaunchConfiguration(f'{prefix}_camera_info').perform(context)
        if image:           # given whole: whichever of the two names the node subscribes
            remappings += [(image_topic, image), (f'{image_topic}/compressed', image)]
            shown_images[f'{image_topic}/compressed'] = image
        if info:
            remappings.append((info_topic, info))

    lifecycle = _is_true(LaunchConfiguration('lifecycle').perform(context))
    node = dict(package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME, namespace=namespace,
                output='screen', parameters=[LaunchConfiguration('params_file'), overrides],
                remappings=remappings)
    if lifecycle:
        actions = _managed_detector(node, _is_true(LaunchConfiguration('autostart').perform(context)))
    else:
        actions = [Node(**node, arguments=[])]
    if rviz:
        layout = rviz_config(namespace, shown_images, str(overrides.get('output_frame', '')))
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2', output='log',
                            arguments=['-d', layout],
                            parameters=[{'use_sim_time': use_sim_time}]))
    return actions


def _managed_detector(node: dict, autostart: bool) -> list:
    """The detector as a launch_ros ``LifecycleNode``; with ``autostart`` also the events that
    configure it once launched and activate it when it reaches ``inactive``."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    detector = LifecycleNode(**node, arguments=[LIFECYCLE_FLAG])
    if not autostart:
        return [detector]

    def transition(transition_id: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(detector),
                                           transition_id=transition_id))
    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=detector, start_state='configuring', goal_state='inactive',
        entities=[transition(Transition.TRANSITION_ACTIVATE)]))
    return [activate_when_configured, detector, transition(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'detector.yaml']),
            description='ROS 2 parameter file (/**: ros__parameters:) for the detector'),
        DeclareLaunchArgument('namespace', default_value='',
                              description="namespace of the node: outputs on "
                                          "/<namespace>/sparsebev/...; '' = none"),
        DeclareLaunchArgument('lifecycle', default_value='false',
                              description='true: a managed (lifecycle) node that waits '
                                          'unconfigured for a lifecycle manager or `ros2 '
                                          'lifecycle set` (unless autostart:=true)'),
        DeclareLaunchArgument('autostart', default_value='false',
                              description='with lifecycle:=true: configure and activate the '
                                          'node from the launch (a plain node is always active)'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (true when playing a bag with --clock)'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='also start RViz (needs rviz2, else nothing starts; '
                                          'the compressed image displays need '
                                          'compressed_image_transport)'),
    ]
    for name, kind in OVERRIDES.items():
        arguments.append(DeclareLaunchArgument(
            name, default_value='', description=f"parameter '{name}' ({kind}); '' = the "
                                                "parameter file's"))
    for prefix, image_topic, info_topic in CAMERAS:
        arguments += [
            DeclareLaunchArgument(f'{prefix}_image', default_value='',
                                  description=f'image topic subscribed instead of {image_topic}'
                                              "[/compressed], given whole; '' = the file's"),
            DeclareLaunchArgument(f'{prefix}_camera_info', default_value='',
                                  description=f"CameraInfo topic instead of {info_topic}; '' = "
                                              "the file's"),
        ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_nodes)])

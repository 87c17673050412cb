"""Start the SparseBEV detector node, optionally with RViz.

    ros2 launch sparsebev_ros detector.launch.py                         # tiny demo model
    ros2 launch sparsebev_ros detector.launch.py preset:=r50_nuimg_704x256 \\
        checkpoint:=/models/sparsebev_r50_nuimg_704x256.pth rviz:=true use_sim_time:=true

Parameters come from ``params_file`` (default: the installed ``config/detector.yaml``);
``preset``, ``checkpoint`` and ``image_transport`` override it when given. The camera topics
default to the names ``sparsebev nuscenes-to-bag`` writes (``/CAM_FRONT/image_raw[/compressed]``,
``/CAM_FRONT/camera_info``, ...); the ``cam_*_image`` / ``cam_*_camera_info`` arguments remap
them to your driver's topics (give the image *base* topic; ``/compressed`` follows).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_context import LaunchContext
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'sparsebev_ros'
NODE_NAME = 'sparsebev'          # sparsebev_ros.params.NODE_NAME
EXECUTABLE = 'detector_node'     # setup.py console_scripts

# (launch argument prefix, image base topic, CameraInfo topic) in the model's camera order;
# the topics are the defaults of the node's `image_topics` / `camera_info_topics` parameters.
CAMERAS = (
    ('cam_front', '/CAM_FRONT/image_raw', '/CAM_FRONT/camera_info'),
    ('cam_front_right', '/CAM_FRONT_RIGHT/image_raw', '/CAM_FRONT_RIGHT/camera_info'),
    ('cam_front_left', '/CAM_FRONT_LEFT/image_raw', '/CAM_FRONT_LEFT/camera_info'),
    ('cam_back', '/CAM_BACK/image_raw', '/CAM_BACK/camera_info'),
    ('cam_back_left', '/CAM_BACK_LEFT/image_raw', '/CAM_BACK_LEFT/camera_info'),
    ('cam_back_right', '/CAM_BACK_RIGHT/image_raw', '/CAM_BACK_RIGHT/camera_info'),
)
# Arguments that override the parameter file only when set (empty = keep the file's value).
OVERRIDES = ('preset', 'checkpoint', 'image_transport')


def _is_true(text: str) -> bool:
    return text.strip().lower() in ('true', '1', 'yes', 'on')


def _nodes(context: LaunchContext) -> list:
    overrides = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    overrides = {name: value for name, value in overrides.items() if value}
    use_sim_time = _is_true(LaunchConfiguration('use_sim_time').perform(context))
    overrides['use_sim_time'] = use_sim_time

    remappings = []
    for prefix, image_topic, info_topic in CAMERAS:
        image = LaunchConfiguration(f'{prefix}_image').perform(context)
        info = LaunchConfiguration(f'{prefix}_camera_info').perform(context)
        remappings += [(image_topic, image), (f'{image_topic}/compressed', f'{image}/compressed'),
                       (info_topic, info)]

    detector = Node(package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME, output='screen',
                    parameters=[LaunchConfiguration('params_file'), overrides],
                    remappings=remappings)
    rviz = Node(package='rviz2', executable='rviz2', name='rviz2', output='log',
                arguments=['-d', PathJoinSubstitution([FindPackageShare(PACKAGE), 'config',
                                                       'sparsebev.rviz'])],
                parameters=[{'use_sim_time': use_sim_time}],
                condition=IfCondition(LaunchConfiguration('rviz')))
    return [detector, rviz]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'detector.yaml']),
            description='ROS 2 parameter file (/**: ros__parameters:) for the detector'),
        DeclareLaunchArgument('checkpoint', default_value='',
                              description="model checkpoint (.pth); '' = the parameter file's"),
        DeclareLaunchArgument('preset', default_value='',
                              description="model preset, e.g. r50_nuimg_704x256; '' = the parameter file's"),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (true when playing a bag with --clock)'),
        DeclareLaunchArgument('image_transport', default_value='',
                              description="'raw' (sensor_msgs/Image) or 'compressed' "
                                          "(CompressedImage); '' = the parameter file's"),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='also start RViz with config/sparsebev.rviz'),
    ]
    for prefix, image_topic, info_topic in CAMERAS:
        arguments += [
            DeclareLaunchArgument(f'{prefix}_image', default_value=image_topic,
                                  description=f'image base topic remapped onto {image_topic}'),
            DeclareLaunchArgument(f'{prefix}_camera_info', default_value=info_topic,
                                  description=f'CameraInfo topic remapped onto {info_topic}'),
        ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_nodes)])

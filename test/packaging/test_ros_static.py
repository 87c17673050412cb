"""Static checks of the ROS packaging that CI cannot run for real (no ROS install here):
package.xml, the launch file, the parameter file, the RViz layout and setup.py's data files.

The launch file and package.xml are read as data (``ast``, ``catkin_pkg``), never executed.
"""
from __future__ import annotations

import ast
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

from imports import imports_of, top_level_names
from sparsebev_core.geometry import CAMERA_NAMES
from sparsebev_ros import params

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / 'launch' / 'detector.launch.py'
RVIZ_FILE = ROOT / 'config' / 'sparsebev.rviz'
PARAMS_FILE = ROOT / 'config' / 'detector.yaml'

# import name -> ROS package that provides it (Python modules of ROS packages we may import;
# the module tf2_ros is installed by tf2_ros_py, geometry2/tf2_ros_py/setup.py)
ROS_MODULES = {
    'rclpy': 'rclpy', 'rcl_interfaces': 'rcl_interfaces', 'builtin_interfaces': 'builtin_interfaces',
    'std_msgs': 'std_msgs', 'std_srvs': 'std_srvs', 'sensor_msgs': 'sensor_msgs',
    'geometry_msgs': 'geometry_msgs', 'vision_msgs': 'vision_msgs',
    'visualization_msgs': 'visualization_msgs', 'diagnostic_msgs': 'diagnostic_msgs',
    'tf2_ros': 'tf2_ros_py', 'tf2_msgs': 'tf2_msgs', 'message_filters': 'message_filters',
    'cv_bridge': 'cv_bridge', 'launch': 'launch', 'launch_ros': 'launch_ros',
    'ament_index_python': 'ament_index_python', 'lifecycle_msgs': 'lifecycle_msgs',
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def message_type_packages(path: Path) -> set[str]:
    """Packages named in ``'pkg/msg/Type'`` string literals (message factories import them)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = re.fullmatch(r'([a-z][a-z0-9_]*)/(msg|srv)/[A-Z]\w*', node.value)
            if m:
                found.add(m.group(1))
    return found


def ros_dependencies_of_code() -> dict[str, set[str]]:
    """ROS package -> files that need it, over sparsebev_ros/*.py and the launch file."""
    needed: dict[str, set[str]] = {}
    for path in sorted((ROOT / 'sparsebev_ros').rglob('*.py')) + [LAUNCH_FILE]:
        for module in top_level_names(path) | message_type_packages(path):
            if module in ROS_MODULES:
                needed.setdefault(ROS_MODULES[module], set()).add(path.name)
    return needed


def launch_module() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), str(LAUNCH_FILE))


def launch_constant(name: str):
    """Value of a module-level constant assignment in the launch file."""
    for node in launch_module().body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f'{LAUNCH_FILE.name} has no constant {name}')


def declared_launch_arguments() -> dict[str, ast.Call]:
    """``DeclareLaunchArgument`` calls by argument name; f-string names are expanded over
    the loop over ``CAMERAS`` they sit in."""
    cameras = launch_constant('CAMERAS')
    declared: dict[str, ast.Call] = {}
    for node in ast.walk(launch_module()):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'DeclareLaunchArgument':
            first = node.args[0]
            if isinstance(first, ast.Constant):
                declared[first.value] = node
            elif isinstance(first, ast.JoinedStr):
                template = ''.join(v.value if isinstance(v, ast.Constant) else '{prefix}'
                                   for v in first.values)
                for prefix, _, _ in cameras:
                    declared[template.format(prefix=prefix)] = node
    return declared


def setup_kwargs() -> dict:
    """The keyword arguments setup.py passes to ``setuptools.setup`` (run with setup mocked)."""
    with mock.patch('setuptools.setup') as setup:
        cwd = Path.cwd()
        try:
            os.chdir(ROOT)
            runpy.run_path(str(ROOT / 'setup.py'), run_name='__main__')
        finally:
            os.chdir(cwd)
    return setup.call_args.kwargs


# --------------------------------------------------------------------------------------------
# package.xml
# --------------------------------------------------------------------------------------------
def test_package_xml_parses_and_lists_every_ros_dependency_the_code_imports():
    catkin_pkg = pytest.importorskip('catkin_pkg.package')
    package = catkin_pkg.parse_package(str(ROOT / 'package.xml'))
    package.validate()
    assert package.name == 'sparsebev_ros'
    assert any(e.tagname == 'build_type' and e.content == 'ament_python' for e in package.exports)
    run_deps = {d.name for d in package.exec_depends + package.build_export_depends
                + package.buildtool_depends}
    run_deps |= {d.name for d in getattr(package, 'depends', [])}
    needed = ros_dependencies_of_code()
    assert {'rclpy', 'tf2_ros_py', 'vision_msgs'} <= set(needed), \
        'the scan of the node found no ROS imports: is node.py there?'
    missing = {pkg: sorted(files) for pkg, files in needed.items() if pkg not in run_deps}
    assert not missing, f'package.xml lacks <exec_depend> for {missing}'
    launch_needs = {'launch', 'launch_ros'}
    assert launch_needs <= run_deps
    assert 'rviz2' not in run_deps, 'RViz is optional (headless robots): do not depend on it'


def test_package_xml_version_matches_setup_py():
    catkin_pkg = pytest.importorskip('catkin_pkg.package')
    package = catkin_pkg.parse_package(str(ROOT / 'package.xml'))
    assert package.version == setup_kwargs()['version']


# --------------------------------------------------------------------------------------------
# launch file
# --------------------------------------------------------------------------------------------
def test_launch_file_declares_the_documented_arguments():
    declared = declared_launch_arguments()
    for name in ('params_file', 'checkpoint', 'preset', 'use_sim_time', 'image_transport', 'rviz',
                 'namespace', 'device', 'precision', 'score_threshold', 'output_frame',
                 'world_frame', 'base_frame', 'use_projection_matrix', 'lifecycle', 'autostart'):
        assert name in declared or name in launch_constant('OVERRIDES'), \
            f'launch argument {name} is not declared'
    for camera in CAMERA_NAMES:
        assert f'{camera.lower()}_image' in declared
        assert f'{camera.lower()}_camera_info' in declared


@pytest.mark.usefixtures('needs_torch')
def test_launch_remaps_default_to_the_parameter_defaults_in_camera_order():
    cameras = launch_constant('CAMERAS')
    defaults = params.defaults()
    assert [prefix for prefix, _, _ in cameras] == [c.lower() for c in CAMERA_NAMES]
    assert [image for _, image, _ in cameras] == defaults.image_topics
    assert [info for _, _, info in cameras] == defaults.camera_info_topics
    # a camera topic given whole replaces whichever name the node subscribes
    assert params.transport_topic(defaults.image_topics[0], 'compressed') == \
        defaults.image_topics[0] + '/compressed'


def test_launch_overrides_name_real_parameters_and_the_installed_node():
    for name, kind in launch_constant('OVERRIDES').items():
        assert name in params.PARAMS_BY_NAME, f'launch overrides unknown parameter {name}'
        assert params.PARAMS_BY_NAME[name].type == kind, f'launch converts {name} to {kind}'
    assert launch_constant('NODE_NAME') == params.NODE_NAME
    assert launch_constant('PACKAGE') == 'sparsebev_ros'
    scripts = setup_kwargs()['entry_points']['console_scripts']
    executable = launch_constant('EXECUTABLE')
    assert f'{executable} = sparsebev_ros.node:main' in scripts


class _Recorded:
    """A launch action or substitution of the fakes below: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context):
        return context[self.args[0]]


class _PackageNotFoundError(KeyError):
    pass


class _LifecycleNode(_Recorded):
    pass


class _Transition:
    TRANSITION_CONFIGURE, TRANSITION_ACTIVATE = 1, 3       # lifecycle_msgs/msg/Transition


def fake_launch_modules(installed: frozenset = frozenset({'sparsebev_ros', 'rviz2'})) -> dict:
    """Recording stand-ins for the ``launch`` / ``launch_ros`` / ``ament_index_python`` names
    the launch file uses (those packages are not installable without ROS), with these packages
    installed."""
    import types
    modules = {name: types.ModuleType(name) for name in (
        'launch', 'launch.actions', 'launch.launch_context',
        'launch.substitutions', 'launch_ros', 'launch_ros.actions', 'launch_ros.substitutions',
        'ament_index_python', 'ament_index_python.packages', 'launch.events',
        'launch_ros.event_handlers', 'launch_ros.events', 'launch_ros.events.lifecycle',
        'lifecycle_msgs', 'lifecycle_msgs.msg')}

    def get_package_prefix(package: str) -> str:
        if package not in installed:
            raise _PackageNotFoundError(package)
        return f'/opt/ros/jazzy/{package}'

    modules['ament_index_python.packages'].PackageNotFoundError = _PackageNotFoundError
    modules['ament_index_python.packages'].get_package_prefix = get_package_prefix
    modules['launch'].LaunchDescription = _Recorded
    modules['launch.actions'].DeclareLaunchArgument = _Recorded
    modules['launch.actions'].OpaqueFunction = _Recorded
    modules['launch.launch_context'].LaunchContext = dict
    modules['launch.substitutions'].LaunchConfiguration = _LaunchConfiguration
    modules['launch.substitutions'].PathJoinSubstitution = _Recorded
    modules['launch_ros.actions'].Node = _Recorded
    modules['launch_ros.substitutions'].FindPackageShare = _Recorded
    modules['launch.actions'].EmitEvent = _Recorded
    modules['launch.actions'].RegisterEventHandler = _Recorded
    modules['launch.events'].matches_action = lambda action: ('matches_action', action)
    modules['launch_ros.actions'].LifecycleNode = _LifecycleNode
    modules['launch_ros.event_handlers'].OnStateTransition = _Recorded
    modules['launch_ros.events.lifecycle'].ChangeState = _Recorded
    modules['lifecycle_msgs.msg'].Transition = _Transition
    return modules


def run_launch_file(installed: frozenset = frozenset({'sparsebev_ros', 'rviz2'}),
                    **arguments: str) -> tuple[list, dict]:
    """(declared argument actions, {executable: Node kwargs}) for ``ros2 launch ... k:=v``."""
    declared, actions = launched_actions(installed, **arguments)
    return declared, {a.kwargs['executable']: a.kwargs for a in actions if 'executable' in a.kwargs}


def launched_actions(installed: frozenset = frozenset({'sparsebev_ros', 'rviz2'}),
                     **arguments: str) -> tuple[list, list]:
    """(declared argument actions, the actions the launch file makes) for ``k:=v``."""
    with mock.patch.dict(sys.modules, fake_launch_modules(installed)):
        namespace = runpy.run_path(str(LAUNCH_FILE))
        description = namespace['generate_launch_description']()
        actions = description.args[0]
        declared = [a for a in actions if 'default_value' in a.kwargs]
        context = {a.args[0]: a.kwargs['default_value'] for a in declared}
        context.update(arguments)
        opaque = [a for a in actions if a not in declared]
        assert len(opaque) == 1
        return declared, opaque[0].kwargs['function'](context)


def test_rviz_without_rviz2_fails_before_any_node_is_made():
    """Tier 2 runs this for real (test/ros2/test_launch.py): the review saw the detector
    started, the launch fail on rviz2, and the detector left running with parent 1."""
    with pytest.raises(RuntimeError, match="rviz:=true but the package 'rviz2' is not installed "
                                           r"\(apt install ros-\$ROS_DISTRO-rviz2\); nothing "
                                           'was started'):
        run_launch_file(installed=frozenset({'sparsebev_ros'}), rviz='true')
    _, nodes = run_launch_file(installed=frozenset({'sparsebev_ros'}))     # no RViz asked
    assert list(nodes) == ['detector_node']


@pytest.mark.usefixtures('needs_torch')
def test_launch_file_runs_and_passes_only_the_given_overrides():
    _, nodes = run_launch_file()
    detector = nodes['detector_node']
    assert detector['package'] == 'sparsebev_ros' and detector['name'] == params.NODE_NAME
    assert detector['namespace'] == ''
    params_file, overrides = detector['parameters']
    assert overrides == {'use_sim_time': False}          # nothing else overrides the file
    assert detector['remappings'] == []                  # the file's topics
    assert detector['arguments'] == []                   # a plain node
    assert 'rviz2' not in nodes                          # RViz only with rviz:=true

    _, nodes = run_launch_file(preset='r50_nuimg_704x256', checkpoint='/m.pth',
                               use_sim_time='true', device='cuda:0', precision='fp16',
                               score_threshold='0.25', output_frame='map', world_frame='odom',
                               base_frame='base_footprint', use_projection_matrix='true',
                               namespace='perception', lifecycle='true',
                               cam_back_image='/car/back/image_rect/compressed',
                               cam_back_camera_info='/car/back/info')
    detector = nodes['detector_node']
    given = detector['parameters'][1]
    assert given == {'preset': 'r50_nuimg_704x256', 'checkpoint': '/m.pth', 'device': 'cuda:0',
                     'precision': 'fp16', 'score_threshold': 0.25, 'output_frame': 'map',
                     'world_frame': 'odom', 'base_frame': 'base_footprint',
                     'use_projection_matrix': True, 'use_sim_time': True}
    params.validate({k: v for k, v in given.items() if k != 'use_sim_time'})
    assert detector['namespace'] == 'perception'
    from sparsebev_ros.node import LIFECYCLE_FLAG
    assert detector['arguments'] == [LIFECYCLE_FLAG] == [launch_constant('LIFECYCLE_FLAG')]
    remaps = dict(detector['remappings'])
    # given whole: no /compressed appended, whichever transport the node subscribes
    assert remaps['/CAM_BACK/image_raw'] == '/car/back/image_rect/compressed'
    assert remaps['/CAM_BACK/image_raw/compressed'] == '/car/back/image_rect/compressed'
    assert remaps['/CAM_BACK/camera_info'] == '/car/back/info'
    assert '/CAM_FRONT/image_raw' not in remaps


def test_lifecycle_autostart_configures_on_launch_and_activates_once_inactive():
    """Tier 2 runs it for real (test/ros2/test_launch.py): the node reaches ``active``."""
    _, actions = launched_actions(lifecycle='true')
    assert [type(a) for a in actions] == [_LifecycleNode]           # waits for a manager
    _, actions = launched_actions(lifecycle='true', autostart='true')
    handler, detector, configure = actions
    assert type(detector) is _LifecycleNode and detector.kwargs['name'] == params.NODE_NAME
    from sparsebev_ros.node import LIFECYCLE_FLAG
    assert detector.kwargs['arguments'] == [LIFECYCLE_FLAG]
    assert configure.kwargs['event'].kwargs == {
        'lifecycle_node_matcher': ('matches_action', detector),
        'transition_id': _Transition.TRANSITION_CONFIGURE}
    (on_inactive,) = handler.args
    assert on_inactive.kwargs['target_lifecycle_node'] is detector
    assert (on_inactive.kwargs['start_state'], on_inactive.kwargs['goal_state']) == \
        ('configuring', 'inactive')
    (activate,) = on_inactive.kwargs['entities']
    assert activate.kwargs['event'].kwargs['transition_id'] == _Transition.TRANSITION_ACTIVATE
    # a plain node is active anyway: autostart changes nothing there
    _, plain = launched_actions(autostart='true')
    assert [type(a) for a in plain] == [_Recorded] and plain[0].kwargs['arguments'] == []


def test_launch_arguments_with_bad_values_are_refused_by_name():
    with pytest.raises(ValueError, match='score_threshold'):
        run_launch_file(score_threshold='high')
    with pytest.raises(ValueError, match='use_projection_matrix'):
        run_launch_file(use_projection_matrix='maybe')


def test_rviz_layout_follows_the_namespace_and_the_camera_topics():
    _, nodes = run_launch_file(rviz='true', namespace='/perception/', use_sim_time='true',
                               cam_front_image='/car/front/compressed', output_frame='map')
    rviz = nodes['rviz2']
    assert rviz['parameters'] == [{'use_sim_time': True}]
    path = Path(rviz['arguments'][rviz['arguments'].index('-d') + 1])
    try:
        layout = yaml.safe_load(path.read_text())
    finally:
        path.unlink()
    topics = {d['Class']: [] for d in layout['Visualization Manager']['Displays']}
    for d in layout['Visualization Manager']['Displays']:
        if isinstance(d.get('Topic'), dict):
            topics[d['Class']].append(d['Topic']['Value'])
    assert topics['rviz_default_plugins/MarkerArray'] == ['/perception/sparsebev/markers']
    assert topics['vision_msgs_rviz_plugins/Detection3DArray'] == \
        ['/perception/sparsebev/detections']
    assert '/car/front/compressed' in topics['rviz_default_plugins/Image']
    assert '/CAM_FRONT/image_raw/compressed' not in topics['rviz_default_plugins/Image']
    assert '/CAM_BACK/image_raw/compressed' in topics['rviz_default_plugins/Image']
    assert layout['Visualization Manager']['Global Options']['Fixed Frame'] == 'map'


def test_launch_file_references_files_that_exist():
    text = LAUNCH_FILE.read_text()
    for name in re.findall(r"'config',\s*'([^']+)'", text):
        assert (ROOT / 'config' / name).is_file(), f'launch file refers to config/{name}'
    assert "'sparsebev.rviz'" in text and "'detector.yaml'" in text
    compile(text, str(LAUNCH_FILE), 'exec')


# --------------------------------------------------------------------------------------------
# parameter file, RViz, setup.py
# --------------------------------------------------------------------------------------------
@pytest.mark.usefixtures('needs_torch')
def test_config_yaml_validates_against_the_parameter_schema():
    loaded = params.load_yaml(PARAMS_FILE)
    data = yaml.safe_load(PARAMS_FILE.read_text())
    written = params.parameters_from_yaml(data)
    # an empty map is a comment: rcl refuses `name: {}` followed by more keys (tier 2 parses it)
    empty_maps = {p.name for p in params.PARAMS if p.keys and not p.default}
    assert empty_maps == {'score_thresholds'}
    assert all(f'    # {name}: {{<key>: <value>, ...}}' in PARAMS_FILE.read_text() for name in empty_maps)
    assert set(written) | empty_maps == set(params.PARAMS_BY_NAME), \
        f'config/detector.yaml should list every parameter; missing ' \
        f'{sorted(set(params.PARAMS_BY_NAME) - set(written))}'
    assert loaded.image_topics == params.defaults().image_topics


@pytest.mark.usefixtures('needs_torch')
def test_rviz_layout_shows_six_cameras_tf_markers_and_detections():
    layout = yaml.safe_load(RVIZ_FILE.read_text())
    displays = layout['Visualization Manager']['Displays']
    by_class: dict[str, list] = {}
    for d in displays:
        by_class.setdefault(d['Class'], []).append(d)
    assert 'rviz_default_plugins/TF' in by_class
    marker_topics = [d['Topic']['Value'] for d in by_class['rviz_default_plugins/MarkerArray']]
    assert marker_topics == [params.MARKERS_TOPIC]
    detection_topics = [d['Topic']['Value']
                        for d in by_class['vision_msgs_rviz_plugins/Detection3DArray']]
    assert detection_topics == [params.DETECTIONS_TOPIC]
    image_topics = sorted(d['Topic']['Value'] for d in by_class['rviz_default_plugins/Image'])
    assert image_topics == sorted(params.transport_topic(t, 'compressed')
                                  for t in params.defaults().image_topics)
    assert layout['Visualization Manager']['Global Options']['Fixed Frame'] == \
        params.defaults().output_frame


def test_setup_py_installs_launch_config_and_ament_resource():
    kwargs = setup_kwargs()
    data_files = {dest: sorted(files) for dest, files in kwargs['data_files']}
    assert 'resource/sparsebev_ros' in data_files['share/ament_index/resource_index/packages']
    assert (ROOT / 'resource' / 'sparsebev_ros').is_file()
    assert 'package.xml' in data_files['share/sparsebev_ros']
    assert 'launch/detector.launch.py' in data_files['share/sparsebev_ros/launch']
    assert {'config/detector.yaml', 'config/sparsebev.rviz'} <= \
        set(data_files['share/sparsebev_ros/config'])
    cfg = (ROOT / 'setup.cfg').read_text()
    assert 'install_scripts=$base/lib/sparsebev_ros' in cfg     # where `ros2 run` looks


def test_setup_py_passes_no_option_setuptools_warns_about():
    """setuptools >= 72 warns "Unknown distribution option: 'tests_require'" on stderr, and
    colcon reports every package with stderr output."""
    assert 'tests_require' not in setup_kwargs()


def test_setup_py_reads_without_importing_torch_unless_it_builds():
    """colcon reads setup.py several times for its metadata (and pip for egg_info): those must
    not import torch (seconds each) nor look for CUDA; only a building command may."""
    for argv, env in ((['egg_info'], {}), ([], {}), (['build'], {'SPARSEBEV_NO_CUDA': '1'})):
        code = ('import runpy, sys\nfrom unittest import mock\n'
                f'sys.argv[1:] = {argv!r}\n'
                'with mock.patch("setuptools.setup"):\n'
                '    runpy.run_path("setup.py", run_name="__main__")\n'
                'print("torch" in sys.modules)')
        result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                                text=True, timeout=120, env={**os.environ, **env})
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[-1] == 'False', f'setup.py {argv} imported torch'
        assert not result.stderr, f'setup.py {argv} wrote to stderr: {result.stderr}'


def test_only_node_py_imports_the_ros_client_libraries():
    client_libraries = {'rclpy', 'tf2_ros', 'message_filters', 'cv_bridge'}
    for path in sorted((ROOT / 'sparsebev_ros').rglob('*.py')):
        if path.name != 'node.py':
            assert not top_level_names(path) & client_libraries, f'{path.name} imports ROS'
    for path in sorted((ROOT / 'sparsebev_core').rglob('*.py')):
        assert not top_level_names(path) & (client_libraries | set(ROS_MODULES)), \
            f'{path.relative_to(ROOT)} imports ROS'
    at_import_time = {imp.module.split('.')[0]
                      for imp in imports_of(ROOT / 'sparsebev_ros' / 'node.py')
                      if not imp.lazy and not imp.typing_only}
    assert not at_import_time & client_libraries, 'node.py must import ROS inside functions'


def test_node_module_imports_without_ros_and_main_says_what_is_missing():
    code = ('import sys; sys.modules["rclpy"] = None; import sparsebev_ros.node as n; '
            'sys.exit(n.main([]))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr
    assert 'needs ROS 2 (rclpy)' in result.stderr and 'sparsebev replay' in result.stderr


def test_installed_executables_use_the_python3_on_path(tmp_path):
    """colcon runs ``<its own python> setup.py ... install`` (colcon_core/task/python/build.py);
    an apt colcon would write ``#!/usr/bin/python3`` and miss torch in a venv. With setup.cfg's
    ``[build_scripts] executable`` the script runs the ``python3`` first on PATH."""
    (tmp_path / 'pkg').mkdir()
    (tmp_path / 'pkg' / '__init__.py').write_text('def main():\n    pass\n')
    (tmp_path / 'setup.py').write_text(
        "from setuptools import setup\n"
        "setup(name='sparsebev_ros', version='0.1', packages=['pkg'],\n"
        "      entry_points={'console_scripts': ['detector_node = pkg:main']})\n")
    (tmp_path / 'setup.cfg').write_text((ROOT / 'setup.cfg').read_text())     # ours, verbatim
    prefix = tmp_path / 'install'
    subprocess.run([sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', '.',
                    'build', '--build-base', 'build', 'install', '--prefix', str(prefix),
                    '--record', 'install.log', '--single-version-externally-managed'],
                   cwd=tmp_path, check=True, capture_output=True, timeout=120)
    script = prefix / 'lib' / 'sparsebev_ros' / 'detector_node'          # where ros2 run looks
    assert script.read_text().splitlines()[0] == '#!/usr/bin/env python3'

"""The node's run-time dependencies: declared in package.xml with rosdep keys that exist (or
documented as a pip install), and checked at start-up so a missing one stops the node with a
message naming it instead of failing every frame."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sparsebev_core.errors import MissingDependencyError
from sparsebev_ros.dependencies import (NODE_DEPENDENCIES, check_node_dependencies,
                                        missing_dependencies)

ROOT = Path(__file__).resolve().parents[2]

# Non-ROS rosdep keys this package may declare, each present in ros/rosdistro
# rosdep/python.yaml (HEAD 8468e88, 2026-08-22; checked there by name for ubuntu noble and jammy).
KNOWN_PYTHON_ROSDEP_KEYS = {'python3-numpy', 'python3-yaml', 'python3-pil', 'python3-opencv',
                            'python3-scipy', 'python3-tqdm', 'python3-pytest'}
# Keys that exist there too but that the package deliberately does not declare (README says why):
# apt python3-torch (the distribution's CPU build), pip torch+torchvision, and the pip keys
# rosdep would install as root into the system Python.
EXISTING_UNDECLARED_KEYS = {'python3-torch', 'python3-pytorch-pip', 'python3-simplejpeg-pip',
                            'python3-onnxruntime-pip', 'python3-onnxruntime-gpu-pip'}


def package_dependencies() -> set[str]:
    catkin_pkg = pytest.importorskip('catkin_pkg.package')
    package = catkin_pkg.parse_package(str(ROOT / 'package.xml'))
    return {d.name for d in package.exec_depends + package.test_depends}


def test_package_xml_declares_every_rosdep_dependency_of_the_node():
    declared = package_dependencies()
    wanted = {d.rosdep for d in NODE_DEPENDENCIES if d.rosdep}
    assert wanted <= declared, f'package.xml lacks {sorted(wanted - declared)}'


def test_package_xml_uses_only_rosdep_keys_that_exist_and_no_unused_or_optional_ones():
    declared = package_dependencies()
    python_keys = {name for name in declared if name.startswith('python3-')}
    assert python_keys <= KNOWN_PYTHON_ROSDEP_KEYS, \
        f'not rosdep keys: {sorted(python_keys - KNOWN_PYTHON_ROSDEP_KEYS)}'
    # cv_bridge is not imported anywhere; RViz is optional on a headless robot
    assert not declared & ({'cv_bridge', 'rviz2'} | EXISTING_UNDECLARED_KEYS)


def test_the_pip_dependencies_name_the_rosdep_keys_that_exist_and_the_docs_say_why_not_used():
    """The review found 'no rosdep key' for torch and simplejpeg: false (rosdistro has
    python3-torch, python3-pytorch-pip, python3-simplejpeg-pip)."""
    readme = (ROOT / 'README.md').read_text()
    package_xml = (ROOT / 'package.xml').read_text()
    for dep in NODE_DEPENDENCIES:
        if dep.rosdep:
            continue
        assert dep.undeclared_keys, f'{dep.module}: which rosdep keys exist, and why not used?'
        assert set(dep.undeclared_keys) <= EXISTING_UNDECLARED_KEYS
        for key in dep.undeclared_keys:
            assert f'`{key}`' in readme, f'README does not say why {key} is not used'
            assert key in package_xml, f'package.xml does not say why {key} is not declared'
    for text, where in ((readme, 'README'), (package_xml, 'package.xml')):
        assert 'no rosdep key' not in text, f'{where} says a rosdep key does not exist'


def test_the_tf2_ros_module_is_declared_as_tf2_ros_py_with_its_apt_package():
    """``import tf2_ros`` comes from tf2_ros_py; the package tf2_ros is C++ only (its
    CMakeLists installs no Python), so a ros_core image + rosdep lacked the module."""
    assert 'tf2_ros_py' in package_dependencies()
    assert 'tf2_ros' not in package_dependencies()
    tf2 = [d for d in NODE_DEPENDENCIES if d.module == 'tf2_ros']

    def importer(name: str) -> object:
        raise ModuleNotFoundError(f"No module named '{name}'")

    with pytest.raises(MissingDependencyError, match=r'rosdep key tf2_ros_py \(apt install '
                                                     r'ros-\$ROS_DISTRO-tf2-ros-py'):
        check_node_dependencies('compressed', tf2, importer)


def test_ros2_launch_verb_is_declared():
    """README documents ``ros2 launch``: the verb comes from ros2launch (in ros_core, not in a
    bare install)."""
    assert 'ros2 launch sparsebev_ros' in (ROOT / 'README.md').read_text()
    assert 'ros2launch' in package_dependencies()


def test_every_pip_only_dependency_is_in_the_readme_install_line():
    readme = (ROOT / 'README.md').read_text()
    pip_lines = [line for line in readme.splitlines() if 'pip install' in line]
    for dep in NODE_DEPENDENCIES:
        if not dep.rosdep:
            package = dep.pip.split()[0]
            assert any(package in line for line in pip_lines), \
                f'README does not say to pip install {package}'


@pytest.mark.usefixtures('needs_torch')
def test_all_dependencies_import_here_except_ros():
    missing = {dep.module for dep, _ in missing_dependencies()}
    ros = {d.module for d in NODE_DEPENDENCIES if d.rosdep and not d.rosdep.startswith('python3-')}
    assert missing <= ros, f'not importable in the test venv: {sorted(missing - ros)}'


def test_a_missing_module_stops_start_up_with_its_name_and_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'simplejpeg', None)       # import simplejpeg -> ImportError
    non_ros = [d for d in NODE_DEPENDENCIES if d.module in ('numpy', 'yaml', 'simplejpeg')]
    with pytest.raises(MissingDependencyError) as err:
        check_node_dependencies('compressed', non_ros)
    text = str(err.value)
    assert 'missing simplejpeg' in text and 'pip install simplejpeg' in text
    assert 'decoding JPEG' in text
    # raw images need no JPEG decoder
    check_node_dependencies('raw', non_ros)


def test_a_missing_ros_package_is_named_with_its_apt_package():
    vision = [d for d in NODE_DEPENDENCIES if d.module == 'vision_msgs']

    def importer(name: str) -> object:
        raise ModuleNotFoundError(f"No module named '{name}'")

    with pytest.raises(MissingDependencyError, match=r'ros-\$ROS_DISTRO-vision-msgs'):
        check_node_dependencies('compressed', vision, importer)

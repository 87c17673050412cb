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

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.colcon          # among the checks `colcon test` runs (test/conftest.py)

# Non-ROS rosdep keys this package may use, each present in ros/rosdistro rosdep/python.yaml
# (checked there by name). `python3-torch` is NOT one of them.
KNOWN_PYTHON_ROSDEP_KEYS = {'python3-numpy', 'python3-yaml', 'python3-pil', 'python3-opencv',
                            'python3-scipy', 'python3-tqdm', 'python3-pytest'}


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
    assert not declared & {'cv_bridge', 'rviz2', 'python3-torch'}


def test_every_pip_only_dependency_is_in_the_readme_install_line():
    readme = (ROOT / 'README.md').read_text()
    pip_lines = [line for line in readme.splitlines() if 'pip install' in line]
    for dep in NODE_DEPENDENCIES:
        if not dep.rosdep:
            package = dep.pip.split()[0]
            assert any(package in line for line in pip_lines), \
                f'README does not say to pip install {package}'


def test_all_dependencies_import_here_except_ros():
    missing = {dep.module for dep, _ in missing_dependencies()}
    ros = {d.module for d in NODE_DEPENDENCIES if d.rosdep and not d.rosdep.startswith('python3-')}
    assert missing <= ros, f'not importable in the test venv: {sorted(missing - ros)}'


def test_a_missing_module_stops_start_up_with_its_name_and_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'simplejpeg', None)       # import simplejpeg -> ImportError
    non_ros = [d for d in NODE_DEPENDENCIES if not d.rosdep or d.rosdep.startswith('python3-')]
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

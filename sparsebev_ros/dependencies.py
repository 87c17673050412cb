"""What the detector node imports at run time, and the start-up check that every one is there.

A module that is missing when the first frame arrives would fail every frame while the node
stays up publishing nothing; :func:`check_node_dependencies` imports them all before the node
starts and raises one :class:`MissingDependencyError` naming each missing package and how to
install it. :data:`NODE_DEPENDENCIES` is also the list ``package.xml`` and the README are
checked against (``test/packaging/test_ros_dependencies.py``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Sequence

from sparsebev_core.errors import MissingDependencyError


@dataclass(frozen=True)
class Dependency:
    """One module the node imports.

    ``rosdep`` is the key in ``package.xml`` (a ROS package or a rosdep key that exists in
    ros/rosdistro); '' means it is not declared there and ``pip`` is documented instead.
    ``undeclared_keys`` are the rosdep keys that do exist for such a pip dependency and why
    they are not declared (README "Build with colcon" says the same).
    """
    module: str
    needed_for: str
    rosdep: str = ''
    pip: str = ''
    only_for_transport: str = ''     # '' = always; 'compressed' = only with CompressedImage
    undeclared_keys: tuple[str, ...] = ()

    def install_hint(self) -> str:
        if self.rosdep and not self.pip:
            key = self.rosdep
            apt = f"ros-$ROS_DISTRO-{key.replace('_', '-')}" if not key.startswith('python3-') \
                else key
            return f'rosdep key {key} (apt install {apt}, or rosdep install --from-paths src)'
        return f'pip install {self.pip}'


NODE_DEPENDENCIES: tuple[Dependency, ...] = (
    # ROS packages (rosdep resolves them; `source /opt/ros/$ROS_DISTRO/setup.bash` first)
    Dependency('rclpy', 'the node', 'rclpy'),
    Dependency('rcl_interfaces', 'parameter descriptors', 'rcl_interfaces'),
    Dependency('builtin_interfaces', 'message stamps', 'builtin_interfaces'),
    Dependency('std_msgs', 'headers', 'std_msgs'),
    Dependency('std_srvs', 'the ~/reset service', 'std_srvs'),
    Dependency('sensor_msgs', 'camera images and CameraInfo', 'sensor_msgs'),
    Dependency('geometry_msgs', 'poses in the outputs', 'geometry_msgs'),
    Dependency('vision_msgs', '~/detections (Detection3DArray)', 'vision_msgs'),
    Dependency('visualization_msgs', '~/markers (MarkerArray)', 'visualization_msgs'),
    Dependency('diagnostic_msgs', '/diagnostics and the latency topics', 'diagnostic_msgs'),
    # the Python module tf2_ros comes from the package tf2_ros_py (tf2_ros is the C++ library)
    Dependency('tf2_ros', 'camera extrinsics and ego poses', 'tf2_ros_py'),
    # Python packages with rosdep keys
    Dependency('numpy', 'everything', 'python3-numpy'),
    Dependency('yaml', 'parameter files', 'python3-yaml'),
    Dependency('PIL', 'the official bicubic resize of the network input', 'python3-pil'),
    Dependency('cv2', 'undistorting raw images with lens distortion (distorted_images)',
               'python3-opencv'),
    # pip, not declared although keys exist: python3-torch is the distribution's CPU build and
    # python3-pytorch-pip does not pick the CUDA build (and adds torchvision); every *-pip key
    # makes rosdep run pip as root into the system Python -- outside the venv with torch, and
    # refused on Ubuntu 24.04 (PEP 668) unless PIP_BREAK_SYSTEM_PACKAGES=1.
    Dependency('torch', 'the model', pip='torch (the build for your CUDA version, '
               'https://pytorch.org/get-started/locally/)',
               undeclared_keys=('python3-torch', 'python3-pytorch-pip')),
    Dependency('simplejpeg', 'decoding JPEG CompressedImage (libjpeg-turbo, the official '
               'decoder)', pip='simplejpeg', only_for_transport='compressed',
               undeclared_keys=('python3-simplejpeg-pip',)),
)


AUTOWARE_DEPENDENCY = Dependency('autoware_perception_msgs',
                                 '~/objects (publish_autoware_objects)',
                                 'autoware_perception_msgs')
"""Optional: only with ``publish_autoware_objects`` (not in package.xml)."""


def node_dependencies(image_transport: str, autoware_objects: bool) -> tuple[Dependency, ...]:
    """What the node imports for these parameters."""
    return tuple(d for d in NODE_DEPENDENCIES
                 if not d.only_for_transport or d.only_for_transport == image_transport) \
        + ((AUTOWARE_DEPENDENCY,) if autoware_objects else ())


def missing_dependencies(image_transport: str = 'compressed',
                         dependencies: Sequence[Dependency] = NODE_DEPENDENCIES,
                         importer: Callable[[str], object] = importlib.import_module
                         ) -> list[tuple[Dependency, str]]:
    """``(dependency, import error)`` for every module that does not import."""
    missing = []
    for dep in dependencies:
        if dep.only_for_transport and dep.only_for_transport != image_transport:
            continue
        try:
            importer(dep.module)
        except ImportError as exc:          # also a broken install (missing .so, ...)
            missing.append((dep, str(exc)))
    return missing


def check_node_dependencies(image_transport: str = 'compressed',
                            dependencies: Sequence[Dependency] = NODE_DEPENDENCIES,
                            importer: Callable[[str], object] = importlib.import_module) -> None:
    """Import everything the node needs; raise MissingDependencyError naming what is missing."""
    missing = missing_dependencies(image_transport, dependencies, importer)
    if missing:
        lines = [f'  {dep.module} (for {dep.needed_for}): {dep.install_hint()}  [{error}]'
                 for dep, error in missing]
        names = ', '.join(dep.module for dep, _ in missing)
        raise MissingDependencyError(f'the detector node cannot start: missing {names}\n'
                                     + '\n'.join(lines))

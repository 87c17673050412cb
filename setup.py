"""Build script: an ament_python ROS 2 package that also installs the ROS-free sparsebev_core
and the sparsebev_cli layer above both (the ``sparsebev`` command and the demo).

``colcon build`` on a ROS machine and ``pip install -e .`` on a plain one both use this file.
The CUDA sampling extension is added by ``sparsebev_core/csrc/build_ext.py`` when a CUDA
toolkit and a CUDA-enabled torch are present, and skipped with a message otherwise; only for a
command that builds (colcon reads this file several times for its metadata, pip for egg_info:
those never look for CUDA or import torch).
"""
import os
import sys
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'sparsebev_ros'
BUILD_COMMANDS = {'build', 'build_ext', 'install', 'develop', 'bdist_wheel', 'bdist_egg',
                  'editable_wheel'}


def cuda_extension_kwargs():
    """ext_modules/cmdclass for the CUDA op, or {} when it cannot be built here (or nothing is
    built by this call)."""
    if not BUILD_COMMANDS & set(sys.argv[1:]):
        return {}
    try:
        from sparsebev_core.csrc.build_ext import extension_kwargs
    except ImportError:
        return {}
    return extension_kwargs()


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=['sparsebev_core', 'sparsebev_core.*', 'sparsebev_ros', 'sparsebev_ros.*',
                                    'sparsebev_cli', 'sparsebev_cli.*']),
    package_data={'sparsebev_core': ['csrc/*.cu', 'csrc/*.cpp', 'csrc/*.h', 'weights/*.pth'],
                  'sparsebev_ros': ['msg/*.msg', 'msg/autoware_perception_msgs/*.msg']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        (os.path.join('share', PACKAGE, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', PACKAGE, 'config'), glob('config/*.yaml') + glob('config/*.rviz')),
    ],
    python_requires='>=3.10',
    install_requires=[
        'numpy>=1.22,<2',          # nuscenes-devkit 1.2 requires numpy < 2
        'torch>=2.1',
        'scipy',
        'tqdm',
        'pyyaml',
        'pillow',
        'simplejpeg',
        'opencv-python-headless',
        'matplotlib<3.11',
        'rosbags>=0.10',
        'nuscenes-devkit>=1.1',
        'tensorboard',
    ],
    extras_require={
        'test': ['pytest', 'catkin_pkg', 'mcap-ros2-support', 'pandas<3', 'motmetrics'],
        # the nuScenes tracking metrics (nuscenes-devkit's TrackingEval: sparsebev_core/engine/
        # tracking_eval.py, bench/tracking.py); pandas 2, which the devkit's tracking code was
        # written against
        'tracking': ['pandas<3', 'motmetrics'],
        # the mmdet3d route (sparsebev_core.integrations.mmdet3d, docs/mmdet3d.md); the core never
        # imports these. mmcv itself (with its compiled ops) comes from your mmdet3d install.
        'mmdet3d': ['mmengine>=0.10.4,<0.11', 'mmdet>=3.0,<3.4', 'mmdet3d>=1.1,<1.5'],
        # ONNX export / onnxruntime (docs/sampling_op.md). Pinned so that one resolver run
        # installs them beside numpy<2: ml_dtypes 0.6 (pulled by onnx >= 1.19) needs numpy>=2.
        'onnx': ['onnx==1.23.2', 'onnxruntime==1.32.0', 'ml_dtypes==0.5.4'],
    },
    zip_safe=True,
    maintainer='sparsebev_ros developers',
    maintainer_email='sparsebev-ros@example.org',
    description='SparseBEV camera-only 3D object detection for ROS 2, with offline nuScenes tools',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'sparsebev = sparsebev_cli.cli:main',
            'detector_node = sparsebev_ros.node:main',
        ],
    },
    **cuda_extension_kwargs(),
)

"""What a ROS machine has after ``rosdep install``: package.xml's dependencies, and none of the
pip installs setup.py lists. :func:`declared_only_env` makes such a Python out of one with
everything (``declared_only/sitecustomize.py`` hides the rest), for running ``colcon test`` as
that machine would."""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HIDING_SITE = Path(__file__).resolve().parent / 'declared_only'

# pip distribution (setup.py install_requires / extras) -> the top-level module it installs
DIST_MODULES = {
    'numpy': 'numpy', 'torch': 'torch', 'scipy': 'scipy', 'tqdm': 'tqdm', 'pyyaml': 'yaml',
    'pillow': 'PIL', 'simplejpeg': 'simplejpeg', 'opencv-python-headless': 'cv2',
    'matplotlib': 'matplotlib', 'rosbags': 'rosbags', 'nuscenes-devkit': 'nuscenes',
    'tensorboard': 'tensorboard', 'pytest': 'pytest', 'catkin_pkg': 'catkin_pkg',
    'mcap-ros2-support': 'mcap_ros2', 'mmengine': 'mmengine', 'mmdet': 'mmdet',
    'mmdet3d': 'mmdet3d', 'onnx': 'onnx', 'onnxruntime': 'onnxruntime', 'ml_dtypes': 'ml_dtypes',
    'pandas': 'pandas', 'motmetrics': 'motmetrics',
}
# rosdep key in package.xml -> the module it installs
KEY_MODULES = {'python3-numpy': 'numpy', 'python3-yaml': 'yaml', 'python3-pil': 'PIL',
               'python3-opencv': 'cv2', 'python3-scipy': 'scipy', 'python3-tqdm': 'tqdm',
               'python3-pytest': 'pytest'}
COLCON_BRINGS = {'catkin_pkg'}       # colcon-ros depends on it


def setup_py_distributions() -> set[str]:
    """Every distribution setup.py's install_requires and extras_require name (read with ast:
    running setup.py may import torch)."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, 'id', '') == 'setup')
    kwargs = {k.arg: k.value for k in call.keywords if k.arg}
    requirements = list(ast.literal_eval(kwargs['install_requires']))
    for extra in ast.literal_eval(kwargs['extras_require']).values():
        requirements += extra
    return {re.split(r'[<>=!\[ ;]', r, maxsplit=1)[0].lower() for r in requirements}


def undeclared_modules() -> set[str]:
    """Modules setup.py's pip distributions install that package.xml does not declare."""
    import xml.etree.ElementTree as ElementTree
    package = ElementTree.parse(ROOT / 'package.xml').getroot()
    declared = {KEY_MODULES[e.text] for e in package.iter() if e.text in KEY_MODULES}
    modules = {DIST_MODULES[d] for d in setup_py_distributions()}
    return modules - declared - COLCON_BRINGS | {'mmcv'}


def declared_only_env(env: dict | None = None) -> dict:
    """``env`` (default os.environ) for a Python in which the undeclared modules are missing."""
    env = dict(os.environ if env is None else env)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(HIDING_SITE), env.get('PYTHONPATH')]))
    env['SPARSEBEV_HIDE_MODULES'] = ','.join(sorted(undeclared_modules()))
    return env

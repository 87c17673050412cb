"""``colcon test`` runs pytest in this package with ``--junit-prefix=sparsebev_ros``; without
care it would run the whole ML suite (minutes of training and parity checks) and, on a ROS
machine with only package.xml's dependencies (no torch, rosbags, nuscenes-devkit: pip installs),
abort on the first module that cannot be imported. Under colcon only ``test/packaging/`` (the
ROS packaging, parameter and dependency checks) is collected -- the other modules are not even
imported -- unless ``SPARSEBEV_ALL_TESTS=1``. Plain ``pytest test`` is unaffected."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PACKAGE = 'sparsebev_ros'
PACKAGING_TESTS = Path(__file__).resolve().parent / 'packaging'


def run_by_colcon(config: pytest.Config) -> bool:
    """pytest was started by ``colcon test`` (it always passes ``--junit-prefix=<package>``)."""
    return config.getoption('junitprefix', None) == PACKAGE


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under colcon: nothing outside test/packaging/ is collected (or imported)."""
    if not run_by_colcon(config) or os.environ.get('SPARSEBEV_ALL_TESTS'):
        return None
    path = collection_path.resolve()
    if path == PACKAGING_TESTS or PACKAGING_TESTS in path.parents:
        return None
    if path.is_dir() and path in PACKAGING_TESTS.parents:     # on the way down to it
        return None
    return True


@pytest.fixture(scope='module')
def one_torch_thread():
    """One torch thread for a module: the tiny model's operations are too small for intra-op
    threads, and on a shared 2-core machine two OpenMP threads made such tests ~6x slower."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='module')
def tiny():
    """The tiny preset's model with seeded random weights, in eval mode, and its config."""
    import torch

    from sparsebev_core.model.detector import build_model
    from sparsebev_core.recipe.presets import get_preset
    torch.manual_seed(0)
    cfg = get_preset('tiny')
    return build_model(cfg).eval(), cfg


def pytest_report_header(config: pytest.Config) -> list[str]:
    if run_by_colcon(config) and not os.environ.get('SPARSEBEV_ALL_TESTS'):
        return ['colcon test: only test/packaging/ runs (SPARSEBEV_ALL_TESTS=1 for all)']
    return []

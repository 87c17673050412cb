"""``colcon test`` runs pytest in this package with ``--junit-prefix=sparsebev_ros``; without
care it would run the whole ML suite (minutes of training and parity checks). Under colcon only
the tests marked ``colcon`` (the ROS packaging, parameter and dependency checks) run, unless
``SPARSEBEV_ALL_TESTS=1`` or an explicit ``-m`` expression asks for more. Plain
``pytest test`` is unaffected."""
from __future__ import annotations

import os

import pytest

PACKAGE = 'sparsebev_ros'


def run_by_colcon(config: pytest.Config) -> bool:
    """pytest was started by ``colcon test`` (it always passes ``--junit-prefix=<package>``)."""
    return config.getoption('junitprefix', None) == PACKAGE


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if not run_by_colcon(config) or os.environ.get('SPARSEBEV_ALL_TESTS') or config.option.markexpr:
        return
    keep = [item for item in items if item.get_closest_marker('colcon')]
    deselected = [item for item in items if not item.get_closest_marker('colcon')]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep


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
        return ["colcon test: only the tests marked 'colcon' run (SPARSEBEV_ALL_TESTS=1 for all)"]
    return []

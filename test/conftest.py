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


def pytest_report_header(config: pytest.Config) -> list[str]:
    if run_by_colcon(config) and not os.environ.get('SPARSEBEV_ALL_TESTS'):
        return ["colcon test: only the tests marked 'colcon' run (SPARSEBEV_ALL_TESTS=1 for all)"]
    return []

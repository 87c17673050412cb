"""The packaging checks are what ``colcon test`` runs (test/conftest.py), also on a ROS machine
with only package.xml's dependencies: a check that needs a pip-only dependency skips there."""
import pytest


@pytest.fixture()
def needs_torch():
    """Skip unless torch (a pip install package.xml does not declare) is importable."""
    pytest.importorskip('torch', reason='needs torch, a pip install that package.xml does not '
                                        'declare (README "Build with colcon")')

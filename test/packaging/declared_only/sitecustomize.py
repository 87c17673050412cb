"""A Python with only package.xml's dependencies, made from one with everything: put this
folder first on PYTHONPATH and every top-level module named in ``SPARSEBEV_HIDE_MODULES``
(comma-separated) fails to import as if it were not installed. Used to run ``colcon test``
as a ROS machine after ``rosdep install`` would (test/packaging/test_colcon_selection.py)."""
import os
import sys

HIDDEN = frozenset(filter(None, os.environ.get('SPARSEBEV_HIDE_MODULES', '').split(',')))


class _HideUndeclared:
    """A meta-path finder that refuses the hidden top-level modules."""

    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named '{name}' (hidden: package.xml does not "
                                      'declare it)', name=name)
        return None


if HIDDEN:
    sys.meta_path.insert(0, _HideUndeclared())

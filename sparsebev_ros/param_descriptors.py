"""What ``ros2 param describe`` shows for each parameter, from the one schema (``params.py``).

A ROS parameter descriptor carries the type, the description, ``read_only``, a closed
``floating_point_range`` / ``integer_range`` and free ``additional_constraints`` text (what
``ros2 param describe`` and rqt_reconfigure show). :func:`ros_parameters` derives them from the
schema's validators: :class:`~sparsebev_ros.params.InRange` gives the range (an open lower
bound, which ROS ranges cannot express, is the range's end plus a constraint text, and the
schema's check still refuses it), :class:`~sparsebev_ros.params.OneOf` the allowed words, a
map parameter (:class:`~sparsebev_ros.params.MapOf`) one optional ROS parameter per key.
Nothing here imports ROS: the node turns each :class:`RosParameter` into an
``rcl_interfaces/ParameterDescriptor``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .params import PARAMS, InRange, MapOf, OneOf, Param, Validator, nested_name

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


@dataclass(frozen=True)
class RosParameter:
    """One declared ROS parameter and its descriptor's content.

    ``type`` is the schema's type name (``float`` for a map's entries); ``optional`` entries are
    declared without a value (unset = not given); ``schema_name`` is the schema parameter it
    belongs to (the map's name for ``<map>.<key>``).
    """
    name: str
    schema_name: str
    type: str
    description: str
    read_only: bool
    additional_constraints: str = ''
    floating_point_range: tuple[float, float] | None = None
    integer_range: tuple[int, int] | None = None
    optional: bool = False


def _range_fields(check: Validator | None, type_name: str) -> dict:
    """Range and constraint text of a scalar's validator."""
    if isinstance(check, OneOf):
        return {'additional_constraints': 'one of ' + ', '.join(map(repr, check.choices))}
    if not isinstance(check, InRange) or type_name not in ('int', 'float'):
        return {}
    lo, hi = check.lo, check.hi
    text = f'> {lo}' if check.lo_open else ''
    if type_name == 'int':
        bounds = (INT64_MIN if lo is None else int(lo), INT64_MAX if hi is None else int(hi))
        return {'integer_range': bounds, 'additional_constraints': text}
    bounds_f = (float('-inf') if lo is None else float(lo), float('inf') if hi is None else float(hi))
    return {'floating_point_range': bounds_f, 'additional_constraints': text}


def ros_parameters(p: Param) -> list[RosParameter]:
    """The ROS parameters of one schema parameter (one, or one per key of a map)."""
    read_only = not p.runtime
    if isinstance(p.check, MapOf):
        return [RosParameter(nested_name(p, key), p.name, 'float',
                             f'{p.name} for {key}: {p.description}', read_only,
                             optional=True, **_range_fields(p.check.values, 'float'))
                for key in p.check.keys]
    return [RosParameter(p.name, p.name, p.type, p.description, read_only,
                         **_range_fields(p.check, p.type))]


def all_ros_parameters() -> list[RosParameter]:
    """Every ROS parameter the node declares, in schema order."""
    return [rp for p in PARAMS for rp in ros_parameters(p)]

"""Parameter descriptors (``ros2 param describe``) come from the one schema: ranges, read-only,
allowed words, one optional entry per key of a map. Tier 2 reads them back from the running
node (test/ros2/test_node_lifecycle.py)."""
import math

import pytest

from sparsebev_core.geometry import CLASS_NAMES
from sparsebev_ros.param_descriptors import RosParameter, all_ros_parameters, ros_parameters
from sparsebev_ros.params import PARAMS, PARAMS_BY_NAME, RUNTIME_PARAMS, InRange, ParameterError, validate

BY_NAME = {rp.name: rp for rp in all_ros_parameters()}


def test_ranges_read_only_and_constraints_follow_the_schema():
    assert BY_NAME['score_threshold'] == RosParameter(
        'score_threshold', 'score_threshold', 'float', PARAMS_BY_NAME['score_threshold'].description,
        read_only=False, floating_point_range=(0.0, 1.0))
    assert BY_NAME['max_detections'].integer_range == (1, 10000)
    assert BY_NAME['max_detections'].read_only
    assert BY_NAME['precision'].additional_constraints == "one of 'fp32', 'fp16', 'bf16'"
    # ROS ranges are closed: an open lower bound is the range's end plus a constraint text
    assert BY_NAME['sync_window'].floating_point_range == (0.0, 10.0)
    assert BY_NAME['sync_window'].additional_constraints == '> 0.0'
    assert BY_NAME['camera_names'].floating_point_range is None     # lists have no ROS range
    assert {rp.name for rp in BY_NAME.values() if not rp.read_only} == \
        {'score_threshold', 'classes', 'publish_markers', 'marker_style'} | \
        {f'score_thresholds.{c}' for c in CLASS_NAMES}


def test_a_map_parameter_is_one_optional_typed_entry_per_key():
    entries = ros_parameters(PARAMS_BY_NAME['score_thresholds'])
    assert [rp.name for rp in entries] == [f'score_thresholds.{c}' for c in CLASS_NAMES]
    assert all(rp.optional and rp.type == 'float' and rp.floating_point_range == (0.0, 1.0)
               and rp.schema_name == 'score_thresholds' for rp in entries)
    assert 'score_thresholds' not in BY_NAME                  # the map itself is no ROS parameter


def test_every_schema_parameter_is_declared_and_every_range_is_the_validators():
    assert {rp.schema_name for rp in BY_NAME.values()} == {p.name for p in PARAMS}
    assert set(RUNTIME_PARAMS) == {rp.schema_name for rp in BY_NAME.values() if not rp.read_only}
    checked = 0
    for p in PARAMS:
        if not isinstance(p.check, InRange) or p.type not in ('int', 'float'):
            continue
        (rp,) = ros_parameters(p)
        lo, hi = rp.integer_range or rp.floating_point_range
        step = 1 if p.type == 'int' else 1e-6 * max(1.0, abs(hi))
        # min_cameras is also checked against the rig's size: a rig big enough
        rig = {'camera_names': [f'CAM{i}' for i in range(1001)]} if p.name == 'min_cameras' else {}
        validate({p.name: hi, **rig})                          # the range's ends are the schema's
        with pytest.raises(ParameterError, match=f"'{p.name}' must be <= "):
            validate({p.name: hi + step, **rig})
        if rp.additional_constraints == f'> {lo}':
            with pytest.raises(ParameterError, match=f"'{p.name}' must be > "):
                validate({p.name: lo, **rig})
        elif not math.isinf(lo):
            validate({p.name: lo, **rig})
        checked += 1
    assert checked >= 12

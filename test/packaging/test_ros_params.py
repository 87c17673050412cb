"""One parameter schema: defaults, validation with clear messages, config/detector.yaml, README."""
import re
from pathlib import Path

import pytest
import yaml

from sparsebev_core.geometry import CAMERA_NAMES, nuscenes_lidar_to_ego
from sparsebev_ros.params import (PARAMS, PARAMS_BY_NAME, RUNTIME_PARAMS, ParameterError, as_dict,
                                  declarations, defaults, group_nested, load_yaml,
                                  markdown_table, parameters_from_yaml, to_yaml,
                                  undeclared_notice, validate, with_runtime_changes)

ROOT = Path(__file__).resolve().parents[2]
# validation checks `preset` against the presets, which import torch
pytestmark = pytest.mark.usefixtures('needs_torch')


def test_defaults_are_valid_and_follow_the_nuscenes_topic_layout():
    p = defaults()
    assert p.subscribed_image_topics[0] == '/CAM_FRONT/image_raw/compressed'
    assert p.camera_info_topics == [f'/{c}/camera_info' for c in CAMERA_NAMES]
    assert validate({'image_transport': 'raw'}).subscribed_image_topics[3] == '/CAM_BACK/image_raw'
    # the default model frame is the nuScenes LIDAR_TOP calibration
    assert abs(p.T_base_model - nuscenes_lidar_to_ego()).max() < 1e-12
    # every default has a type rclpy can infer (no empty lists)
    assert all(not (isinstance(d, list) and not d) for _, d, _ in declarations())


@pytest.mark.parametrize('name, value, message', [
    ('score_threshold', 1.5, "'score_threshold' must be <= 1.0"),
    ('device', 'gpu', "'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ('image_transport', 'theora', "'image_transport' must be one of 'raw', 'compressed'"),
    ('classes', ['car', 'dog'], "'classes' has unknown classes ['dog']"),
    ('classes', [], "'classes' must name at least one class"),
    ('image_topics', ['/a'] * 5, "'image_topics' has 5 topics but camera_names has 6 cameras"),
    ('camera_names', ['CAM_A', 'CAM_A'], "'camera_names' repeats ['CAM_A']"),
    ('camera_names', [], "'camera_names' must name at least one camera"),
    ('min_cameras', 7, "'min_cameras' is 7 but the rig has only 6 cameras"),
    ('min_cameras', 0, "'min_cameras' must be >= 1"),
    ('queue_size', 'ten', "'queue_size': must be an integer"),
    ('queue_size', 0, "'queue_size' must be >= 1"),
    ('publish_markers', 'yes', "'publish_markers': must be true or false"),
    ('sync_window', 0.0, "'sync_window' must be > 0.0"),
    ('preset', 'r49', "'preset' must be one of"),
    ('model_rotation_xyzw', [0, 0, 0, 2], "'model_rotation_xyzw' must be a unit quaternion"),
    ('world_frame', '', "'world_frame' must not be empty"),
    # a leading '/' (ROS 1): real tf2 raises InvalidArgumentException on every lookup
    ('world_frame', '/map', "'world_frame' must not start with '/' (tf2 refuses such frame "
                            "ids and every lookup would fail): use 'map'"),
    ('base_frame', '/base_link', "'base_frame' must not start with '/'"),
    ('output_frame', '//odom', "'output_frame' must not start with '/'"),
    ('model_frame', '/lidar_top', "'model_frame' must not start with '/'"),
    ('anchor_camera', 'CAM_TOP', "'anchor_camera' must be one of"),
])
def test_invalid_values_fail_with_a_message_naming_the_parameter(name, value, message):
    with pytest.raises(ParameterError) as err:
        validate({name: value})
    assert message in str(err.value)


def test_a_rig_of_other_cameras_names_its_topics_and_anchor():
    p = validate({'camera_names': ['front', 'left', 'right']})
    assert p.image_topics == ['/front/image_raw', '/left/image_raw', '/right/image_raw']
    assert p.camera_info_topics[2] == '/right/camera_info'
    assert p.anchor_camera == 'front' and p.anchor_index == 0
    assert validate({'camera_names': ['a', 'b'], 'anchor_camera': 'b'}).anchor_index == 1
    with pytest.raises(ParameterError, match="'anchor_camera' must be one of camera_names"):
        validate({'camera_names': ['a', 'b'], 'anchor_camera': 'CAM_FRONT'})


def test_unknown_parameters_are_refused():
    with pytest.raises(ParameterError, match='unknown parameter.*slopp'):
        validate({'slopp': 0.1})


def test_config_file_validates_and_lists_every_parameter():
    path = ROOT / 'config' / 'detector.yaml'
    params = load_yaml(path)
    section = yaml.safe_load(path.read_text())['/**']['ros__parameters']
    # every parameter but an empty map (a comment there: rcl refuses `name: {}`)
    assert sorted(section) == sorted(p.name for p in PARAMS if not (p.keys and not p.default))
    assert as_dict(params) == as_dict(validate(section))


def test_yaml_sections_merge_like_ros2_and_bad_layouts_are_explained(tmp_path):
    data = {'/**': {'ros__parameters': {'slop': 0.05, 'preset': 'tiny'}},
            'sparsebev': {'ros__parameters': {'slop': 0.07}}}
    assert parameters_from_yaml(data) == {'slop': 0.07, 'preset': 'tiny'}
    with pytest.raises(ParameterError, match='ros__parameters'):
        parameters_from_yaml({'/**': {'slop': 0.05}})
    with pytest.raises(ParameterError, match="no '/\\*\\*' or 'sparsebev' section"):
        parameters_from_yaml({'other_node': {'ros__parameters': {}}})
    bad = tmp_path / 'bad.yaml'
    bad.write_text("/**:\n  ros__parameters:\n    score_threshold: high\n")
    with pytest.raises(ParameterError, match="bad.yaml: parameter 'score_threshold': must be a number"):
        load_yaml(bad)
    with pytest.raises(ParameterError, match='does not exist'):
        load_yaml(tmp_path / 'missing.yaml')


def test_generated_yaml_round_trips():
    p = validate({'classes': ['car', 'pedestrian'], 'output_frame': 'map', 'sync_window': 0.05,
                  'score_thresholds': {'pedestrian': 0.2, 'traffic_cone': 0.45}})
    again = validate(parameters_from_yaml(yaml.safe_load(to_yaml(p))))
    assert as_dict(again) == as_dict(p)
    assert as_dict(validate(parameters_from_yaml(yaml.safe_load(to_yaml())))) == as_dict(defaults())


def test_per_class_score_thresholds_are_a_map_of_known_classes_to_scores():
    """One ROS parameter per class (``score_thresholds.<class>``, as rclpy names a YAML map's
    entries); a YAML file holds them as a nested map."""
    assert defaults().score_thresholds == {}
    p = validate({'score_thresholds': {'pedestrian': 0.2, 'car': 1}})
    assert p.score_thresholds == {'pedestrian': 0.2, 'car': 1.0}
    for value, message in (({'dog': 0.2}, "has unknown keys ['dog']"),
                           ({'car': 1.2}, "entry 'car' must be <= 1.0"),
                           ({'car': float('nan')}, "entry 'car' must be a finite number"),
                           ({'car': 'high'}, 'must map to numbers'),
                           (0.2, 'must be a map')):
        with pytest.raises(ParameterError, match=re.escape(message)):
            validate({'score_thresholds': value})
    # rclpy's flat names are gathered into the map, on top of the current one while running
    flat = {'score_thresholds.car': 0.6, 'score_threshold': 0.4, 'use_sim_time': True,
            'qos_overrides./tf.subscription.depth': 5, 'score_thresholds.dog': 0.1}
    assert group_nested(flat) == {'score_thresholds': {'car': 0.6}, 'score_threshold': 0.4}
    assert group_nested({'score_thresholds.car': 0.6}, p) == \
        {'score_thresholds': {'pedestrian': 0.2, 'car': 0.6}}
    assert p.score_thresholds == {'pedestrian': 0.2, 'car': 1.0}      # not changed in place
    q = with_runtime_changes(p, group_nested({'score_thresholds.bus': 0.5}, p))
    assert q.score_thresholds == {'pedestrian': 0.2, 'car': 1.0, 'bus': 0.5}
    nested = parameters_from_yaml(yaml.safe_load(
        '/**:\n  ros__parameters:\n    score_thresholds:\n      pedestrian: 0.25\n'))
    assert validate(nested).score_thresholds == {'pedestrian': 0.25}


def test_readme_parameter_table_is_the_generated_one():
    table = markdown_table()
    assert all(f'`{p.name}`' in table for p in PARAMS)
    assert table in (ROOT / 'README.md').read_text()


def test_the_schema_is_generated_from_the_dataclass_fields():
    from dataclasses import fields

    from sparsebev_ros.params import DetectorParams
    assert [p.name for p in PARAMS] == [f.name for f in fields(DetectorParams)]
    assert {p.type for p in PARAMS} <= {'bool', 'int', 'float', 'str', 'list[str]', 'list[float]',
                                       'dict[str, float]'}
    assert PARAMS_BY_NAME['score_threshold'].default == DetectorParams().score_threshold == 0.3
    assert as_dict(defaults()) == as_dict(DetectorParams())


def test_preset_is_checked_against_the_real_preset_names():
    from sparsebev_core.recipe.presets import PRESET_NAMES
    for name in PRESET_NAMES:
        validate({'preset': name})
    with pytest.raises(ParameterError, match='must be one of'):
        validate({'preset': 'r50'})


def test_only_the_runtime_parameters_change_while_running_and_bad_values_change_nothing():
    p = defaults()
    assert RUNTIME_PARAMS == ('score_threshold', 'score_thresholds', 'classes', 'publish_markers',
                              'marker_style')
    q = with_runtime_changes(p, {'score_threshold': 0.5, 'classes': ['car']})
    assert (q.score_threshold, q.classes) == (0.5, ['car'])
    assert (p.score_threshold, p.classes) == (0.3, ['all'])           # the original is untouched
    with pytest.raises(ParameterError, match="'marker_style' must be one of"):
        with_runtime_changes(p, {'marker_style': 'spheres'})
    with pytest.raises(ParameterError, match='preset cannot change while the node runs'):
        with_runtime_changes(p, {'preset': 'r50_nuimg_704x256', 'score_threshold': 0.1})
    with pytest.raises(ParameterError, match='unknown parameter'):
        with_runtime_changes(p, {'score_treshold': 0.1})
    assert '(settable while running)' in markdown_table()


def test_overrides_the_node_does_not_declare_are_named_with_the_likely_meant_one():
    """The node's WARN for overrides it does not declare (a shared ``/**`` file carries other
    nodes' keys): each is named, a near-miss of ours with what was probably meant."""
    text = undeclared_notice(['robot_description_package', 'score_treshold'])
    assert 'robot_description_package,' in text                    # foreign: named, no guess
    assert "score_treshold (did you mean 'score_threshold'?)" in text
    assert 'shared /** parameter file' in text and 'keeps its default' in text

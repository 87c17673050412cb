"""The synthetic generator writes a dataset the real nuscenes-devkit loads and evaluates."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from nuscenes import NuScenes
from nuscenes.eval.detection.config import config_factory
from nuscenes.eval.detection.evaluate import DetectionEval
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.utils.splits import create_splits_scenes
from PIL import Image

from sparsebev_cli import cli
from sparsebev_core.attributes import official_attribute
from sparsebev_core.data.synthetic import scenes
from sparsebev_core.data.synthetic.world import CLASS_COLOR
from sparsebev_core.geometry import CAMERA_NAMES, CLASS_NAMES, invert_transform, \
    nuscenes_lidar_to_ego, transform_from_quat
from sparsebev_core.rig import NUSCENES_CAMERAS

IMAGE_WH = (200, 113)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('synthetic')
    return scenes.make_synthetic(root, num_scenes=2, seed=3, keyframes_per_scene=4,
                                    image_size=IMAGE_WH, progress=False)


@pytest.fixture(scope='module')
def nusc(dataset) -> NuScenes:
    return NuScenes(version='v1.0-mini', dataroot=str(dataset), verbose=False)


def _pose(record: dict) -> np.ndarray:
    return transform_from_quat(record['rotation'], record['translation'])


def test_calibration_is_the_parity_fixture_rig():
    sys.path.insert(0, str(Path(__file__).parent / 'parity'))
    try:
        import inputs
    finally:
        sys.path.pop(0)
    assert NUSCENES_CAMERAS == inputs.CAMERAS


def test_lidar_calibration_is_the_one_in_geometry(nusc):
    sensor = {s['token']: s['channel'] for s in nusc.sensor}
    lidar = [c for c in nusc.calibrated_sensor if sensor[c['sensor_token']] == 'LIDAR_TOP']
    assert lidar
    for record in lidar:
        np.testing.assert_array_equal(_pose(record), nuscenes_lidar_to_ego())


def test_devkit_loads_scenes_named_from_the_mini_splits(nusc):
    splits = create_splits_scenes()
    names = sorted(s['name'] for s in nusc.scene)
    assert len(names) == 2
    assert sum(n in splits['mini_train'] for n in names) == 1
    assert sum(n in splits['mini_val'] for n in names) == 1
    for scene in nusc.scene:
        assert scene['nbr_samples'] == 4
        sample = nusc.get('sample', scene['first_sample_token'])
        assert set(sample['data']) == set(CAMERA_NAMES) | {'LIDAR_TOP'}


def test_cameras_run_at_12hz_with_keyframes_every_sixth_frame(nusc, dataset):
    scene = nusc.scene[0]
    sample = nusc.get('sample', scene['first_sample_token'])
    for channel in CAMERA_NAMES:
        sd = nusc.get('sample_data', sample['data'][channel])
        assert sd['prev'] == ''                                # chain starts at the scene start
        stamps, keys = [], []
        while True:
            stamps.append(sd['timestamp'])
            keys.append(sd['is_key_frame'])
            img = Image.open(dataset / sd['filename'])
            assert img.size == IMAGE_WH
            if not sd['next']:
                break
            sd = nusc.get('sample_data', sd['next'])
        dt = np.diff(stamps) * 1e-6
        assert np.all(np.abs(dt - 1 / 12) < 0.01), dt
        assert np.flatnonzero(keys).tolist() == list(range(0, len(keys), 6))
        # camera keyframes fire within 30 ms of the LIDAR_TOP keyframe stamp
        for k_sd in (nusc.get('sample_data', t) for t in nusc.field2token('sample_data', 'channel', channel)):
            if k_sd['is_key_frame']:
                assert abs(k_sd['timestamp'] - nusc.get('sample', k_sd['sample_token'])['timestamp']) < 30000


def test_intrinsics_are_nuscenes_scaled_to_the_image(nusc):
    sample = nusc.sample[0]
    cs = nusc.get('calibrated_sensor', nusc.get('sample_data', sample['data']['CAM_FRONT'])['calibrated_sensor_token'])
    K = np.array(cs['camera_intrinsic'])
    K_full = np.array(NUSCENES_CAMERAS['CAM_FRONT']['intrinsic'])
    np.testing.assert_allclose(K[0], K_full[0] * IMAGE_WH[0] / 1600)
    np.testing.assert_allclose(K[1], K_full[1] * IMAGE_WH[1] / 900)


def _class_of_colour(rgb: np.ndarray) -> str:
    """Class whose rendered face colours come nearest: a shaded class colour (side and top
    faces), the same lightened towards white (front faces) or darkened (edges)."""
    shades = np.linspace(0.2, 1.2, 41)[:, None]
    best, best_d = '', np.inf
    for name in CLASS_NAMES:
        c = np.asarray(CLASS_COLOR[name], np.float64)
        candidates = np.concatenate([shades * c, 0.55 * shades * c + 0.45 * 255.0])
        d = np.min(np.linalg.norm(candidates - np.asarray(rgb, np.float64), axis=1))
        if d < best_d:
            best, best_d = name, d
    return best


def test_fully_visible_annotations_project_onto_pixels_of_their_class(nusc, dataset):
    """Tables and images agree: calibration, ego pose at the camera stamp, box pose."""
    checked, correct = 0, 0
    for sample in nusc.sample:
        for ann_token in sample['anns']:
            ann = nusc.get('sample_annotation', ann_token)
            if ann['visibility_token'] != '4':
                continue
            centre = np.append(np.array(ann['translation']), 1.0)        # global, gravity centre
            for channel in CAMERA_NAMES:
                sd = nusc.get('sample_data', sample['data'][channel])
                cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
                T_world_cam = _pose(nusc.get('ego_pose', sd['ego_pose_token'])) @ _pose(cs)
                p = invert_transform(T_world_cam) @ centre
                if p[2] < 2.0:
                    continue
                uv = np.array(cs['camera_intrinsic']) @ p[:3]
                u, v = uv[:2] / uv[2]
                if not (2 <= u < IMAGE_WH[0] - 2 and 2 <= v < IMAGE_WH[1] - 2):
                    continue
                img = np.asarray(Image.open(dataset / sd['filename']).convert('RGB'))
                name = category_to_detection_name(ann['category_name'])
                checked += 1
                correct += _class_of_colour(img[int(round(v)), int(round(u))]) == name
    assert checked >= 20
    assert correct / checked > 0.9, (correct, checked)


def test_world_frames_show_the_world_objects_where_their_boxes_project():
    """The in-memory stream (``stream.world_frames``): each camera posed at its own stamp,
    the objects of the world at that stamp drawn where their centres project."""
    from sparsebev_core.data.synthetic.stream import CAMERA_STEP, RIG_T0, world_frames
    from sparsebev_core.image import decode_image
    width, height = 400, 225                          # world_frames' default, the demo's size
    frames = world_frames(2, seed=3)
    world, _ = scenes.scene_world(3, 0, 2)
    checked, correct = 0, 0
    for k, frame in enumerate(frames):
        assert frame.stamp == RIG_T0 + 0.5 * k
        assert [view.name for view in frame.cameras] == list(CAMERA_NAMES)
        for i, view in enumerate(frame.cameras):
            t = 0.5 * k + CAMERA_STEP * i
            assert view.stamp == pytest.approx(RIG_T0 + t)
            np.testing.assert_allclose(view.T_world_ego, world.T_world_ego(t))
            img = decode_image(view.image)
            assert img.shape == (height, width, 3)
            T_cam_world = invert_transform(view.T_world_ego @ view.T_ego_cam)
            for box, label in zip(world.boxes_world(t), world.objects.labels):
                centre = np.array([box[0], box[1], box[2] + box[5] / 2, 1.0])   # gravity centre
                p = T_cam_world @ centre
                if not 3.0 < p[2] < 12.0:               # near: rarely occluded
                    continue
                u, v = (view.K @ p[:3])[:2] / p[2]
                if 2 <= u < width - 2 and 2 <= v < height - 2:
                    checked += 1
                    correct += _class_of_colour(img[int(round(v)), int(round(u))]) == \
                        CLASS_NAMES[label]
    assert checked >= 10
    assert correct / checked > 0.8, (correct, checked)


def test_devkit_velocity_matches_the_world_motion(nusc):
    """Moving objects keep their speed: prev/next annotations give the lane speed."""
    speeds = []
    for ann in nusc.sample_annotation:
        v = nusc.box_velocity(ann['token'])
        if np.all(np.isfinite(v)):
            speeds.append(np.hypot(v[0], v[1]))
            attrs = [nusc.get('attribute', t)['name'] for t in ann['attribute_tokens']]
            if any(a.endswith('moving') or a == 'cycle.with_rider' for a in attrs):
                assert speeds[-1] > 0.2
            elif attrs:
                assert speeds[-1] < 0.2
    assert max(speeds) > 2.0 and min(speeds) < 1e-6


def test_annotation_attributes_follow_the_official_rule(nusc):
    """The generator and the submission writer share ``attributes.official_attribute``."""
    checked = 0
    for ann in nusc.sample_annotation:
        v = nusc.box_velocity(ann['token'])
        if not np.all(np.isfinite(v)):
            continue
        name = category_to_detection_name(ann['category_name'])
        attrs = [nusc.get('attribute', t)['name'] for t in ann['attribute_tokens']]
        rule = official_attribute(name, float(np.hypot(v[0], v[1])))
        assert attrs == ([rule] if rule else []), (name, attrs, rule)
        checked += 1
    assert checked >= 20


def test_devkit_detection_eval_scores_ground_truth_as_perfect(nusc, tmp_path):
    val = set(create_splits_scenes()['mini_val'])
    results = {}
    for sample in nusc.sample:
        if nusc.get('scene', sample['scene_token'])['name'] not in val:
            continue
        boxes = []
        for ann_token in sample['anns']:
            ann = nusc.get('sample_annotation', ann_token)
            if ann['num_lidar_pts'] == 0:
                continue
            attrs = [nusc.get('attribute', t)['name'] for t in ann['attribute_tokens']]
            boxes.append(dict(
                sample_token=sample['token'], translation=ann['translation'], size=ann['size'],
                rotation=ann['rotation'], velocity=list(np.nan_to_num(nusc.box_velocity(ann_token)[:2])),
                detection_name=category_to_detection_name(ann['category_name']),
                detection_score=0.9, attribute_name=attrs[0] if attrs else ''))
        results[sample['token']] = boxes
    meta = dict(use_camera=True, use_lidar=False, use_radar=False, use_map=False, use_external=False)
    path = tmp_path / 'results.json'
    path.write_text(json.dumps(dict(meta=meta, results=results)))
    ev = DetectionEval(nusc, config_factory('detection_cvpr_2019'), str(path), 'mini_val',
                       str(tmp_path / 'eval'), verbose=False)
    metrics, _ = ev.evaluate()
    m = metrics.serialize()
    assert m['mean_ap'] > 0.99 and m['nd_score'] > 0.99, m


def test_generation_is_deterministic_from_the_seed(tmp_path):
    kw = dict(num_scenes=1, keyframes_per_scene=2, image_size=(64, 36), progress=False)
    a = scenes.make_synthetic(tmp_path / 'a', seed=7, **kw)
    b = scenes.make_synthetic(tmp_path / 'b', seed=7, **kw)
    c = scenes.make_synthetic(tmp_path / 'c', seed=8, **kw)
    for table in ('sample_annotation', 'sample_data', 'ego_pose'):
        ta = (a / 'v1.0-mini' / f'{table}.json').read_text()
        assert ta == (b / 'v1.0-mini' / f'{table}.json').read_text()
        assert ta != (c / 'v1.0-mini' / f'{table}.json').read_text()
    files = sorted(p.relative_to(a) for p in (a / 'samples').rglob('*.jpg'))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_cli_make_synthetic_writes_a_loadable_dataset(tmp_path, capsys):
    rc = cli.main(['make-synthetic', str(tmp_path / 'out'), '--scenes', '1', '--keyframes', '2',
                   '--size', '64', '36', '--seed', '1'])
    assert rc == 0
    assert 'wrote 1 synthetic scene' in capsys.readouterr().out
    nusc = NuScenes(version='v1.0-mini', dataroot=str(tmp_path / 'out'), verbose=False)
    assert [s['name'] for s in nusc.scene] == ['scene-0103']


def test_bad_scene_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match='num_scenes'):
        scenes.make_synthetic(tmp_path, num_scenes=11, progress=False)


def _footprints_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two BEV rectangles (4, 2)."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            normal = np.array([-edge[1], edge[0]])
            pa, pb = a @ normal, b @ normal
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_objects_never_intersect_while_they_move(seed):
    """Painter's-algorithm occlusion and the annotations assume disjoint boxes."""
    from sparsebev_core.data.synthetic.world import make_world
    from sparsebev_core.geometry import box_corners
    world = make_world(np.random.default_rng([seed, 0]), duration=19.5)
    assert set(world.objects.labels.tolist()) == set(range(len(CLASS_NAMES)))
    for t in np.linspace(0.0, 19.5, 9):
        boxes = world.boxes_world(t)
        feet = box_corners(boxes[:, :7])[:, :4, :2]                         # (N, 4, 2)
        for i in range(len(boxes)):
            near = np.flatnonzero(np.hypot(*(boxes[:, :2] - boxes[i, :2]).T) < 15.0)
            for j in near[near > i]:
                assert not _footprints_overlap(feet[i], feet[j]), (t, i, j)

"""``sparsebev demo`` end to end on a short unseen synthetic scene, and its scoring path."""
import json

import numpy as np
import pytest
from PIL import Image

from sparsebev_cli.demo import command as demo
from sparsebev_core.data.infos import detection_ground_truth
from sparsebev_core.errors import UsageError
from sparsebev_core.loading import bundled_checkpoint
from sparsebev_core.engine.evaluate import class_ranges
from sparsebev_core.geometry import (CLASS_NAMES, gravity_to_bottom_center, invert_transform,
                                     transform_boxes, transform_from_quat)

KEYFRAMES = 4                       # 2 Hz: a 1.5 s scene, 19 camera frames at 12 Hz
BUNDLED_WEIGHTS = bundled_checkpoint('tiny')
# mAP on this reduced unseen scene (demo seed, 4 keyframes), re-measured 2026-12-07: the shipped
# tiny_synthetic.pth (stage 4, docs/demo_model.md) reaches 0.403 / NDS 0.496 on an Intel Xeon
# (stage 3 0.315 / 0.409 there; stage 2 0.183 / 0.276, the same on that Xeon and an AMD EPYC;
# stage 1 0.184 / 0.255; the earlier 10-epoch model 0.086); random weights 0.000. The bound is
# about half of it: room for CPU / library numeric differences, far above what an untrained or
# mis-wired model reaches. Re-measure when the weights change.
MIN_BUNDLED_MAP = 0.2


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo') / 'demo_output'
    options = demo.DemoOptions(out_dir=out, keyframes=KEYFRAMES, device='cpu', progress=False)
    report = demo.run_demo(options, log=lambda text: None)
    return report


def test_demo_writes_every_output_and_each_is_readable(demo_run):
    from rosbags.highlevel import AnyReader
    report = demo_run
    assert report.keyframes == KEYFRAMES and report.keyframes_detected == KEYFRAMES

    with AnyReader([report.input_bag]) as reader:
        topics = {c.topic: c.msgcount for c in reader.connections}
    assert topics['/CAM_FRONT/image_raw/compressed'] == (KEYFRAMES - 1) * 6 + 1
    with AnyReader([report.output_bag]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        detections = [reader.deserialize(raw, conn.msgtype) for conn, _, raw in
                      reader.messages([c for c in reader.connections
                                       if c.topic == '/sparsebev/detections'])]
    assert counts['/sparsebev/detections'] == counts['/sparsebev/markers'] == \
        topics['/CAM_FRONT/image_raw/compressed']                    # one per synced frame
    assert all(d.header.frame_id == 'base_link' for d in detections)

    assert [p.name for p in report.pictures] == [f'keyframe_{i:02d}.png' for i in range(KEYFRAMES)]
    for path in report.pictures:
        with Image.open(path) as picture:
            assert picture.size[0] > 1000 and picture.mode == 'RGB'
    with Image.open(report.animation) as animation:
        assert animation.n_frames == KEYFRAMES

    metrics = json.loads(report.metrics_json.read_text())
    assert set(metrics['mean_dist_aps']) == set(CLASS_NAMES)
    assert 0.0 <= metrics['mean_ap'] <= 1.0 and 0.0 <= metrics['nd_score'] <= 1.0
    assert metrics['num_samples'] == KEYFRAMES and metrics['num_gt_boxes'] > 20
    text = (report.out_dir / 'metrics.txt').read_text()
    assert 'mAP' in text and 'NDS' in text and 'pedestrian' in text
    submission = json.loads((report.out_dir / 'evaluation' / 'results_nusc.json').read_text())
    assert len(submission['results']) == KEYFRAMES


def test_ground_truth_fed_back_as_predictions_scores_perfectly(demo_run):
    """The scoring path (model frame -> world, sizes, yaw, bottom/gravity centre) is exact."""
    from nuscenes.nuscenes import NuScenes
    report = demo_run
    nusc = NuScenes(version='v1.0-mini', dataroot=str(report.out_dir / 'dataset'), verbose=False)
    keyframes = demo.scene_keyframes(nusc, report.scene)
    ranges = class_ranges()
    reference = []
    for k in keyframes:
        # the poses the pipeline used: CAM_FRONT keyframe ego pose and the lidar calibration
        sample = nusc.get('sample', k.sample_token)
        cam = nusc.get('sample_data', sample['data']['CAM_FRONT'])
        lidar = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
        pose = nusc.get('ego_pose', cam['ego_pose_token'])
        calib = nusc.get('calibrated_sensor', lidar['calibrated_sensor_token'])
        k.frame = type('PoseOnly', (), dict(
            T_world_ego=transform_from_quat(pose['rotation'], pose['translation']),
            T_ego_model=transform_from_quat(calib['rotation'], calib['translation'])))()
        gt_world, labels = detection_ground_truth(nusc, k.sample_token)
        T_model_world = invert_transform(k.frame.T_world_ego @ k.frame.T_ego_model)
        k.boxes = gravity_to_bottom_center(transform_boxes(gt_world, T_model_world))
        k.scores, k.labels = np.linspace(0.9, 0.5, len(labels)), labels
        # classes the devkit will count: ground truth within the class range of the ego
        ego_xy = transform_boxes(gt_world, invert_transform(k.frame.T_world_ego))[:, :2]
        in_range = np.hypot(*ego_xy.T) <= np.array([ranges[CLASS_NAMES[i]] for i in labels])
        reference.append(labels[in_range])
    metrics = demo.evaluate_keyframes(nusc, keyframes, CLASS_NAMES, report.out_dir / 'perfect')
    present = {CLASS_NAMES[i] for i in np.concatenate(reference)}
    assert len(present) >= 5
    for name in present:
        assert metrics['mean_dist_aps'][name] > 0.99, name
        errors = metrics['label_tp_errors'][name]
        assert errors['trans_err'] < 1e-3 and errors['scale_err'] < 1e-3, (name, errors)
        if name != 'traffic_cone':
            assert errors['orient_err'] < 1e-3, (name, errors)
        if name not in ('traffic_cone', 'barrier'):   # planar velocity through the ~0.7 deg
            assert errors['vel_err'] < 1e-2, (name, errors)   # lidar tilt: mm/s, not exact


def test_demo_command_runs_on_a_nuscenes_root(demo_run, tmp_path, capsys):
    """The real-data path (``--nuscenes ROOT --scene NAME``) on the demo's nuScenes-format
    dataset, first second only, through the ``sparsebev`` command line."""
    from sparsebev_cli.cli import main
    out = tmp_path / 'real'
    code = main(['demo', '--nuscenes', str(demo_run.out_dir / 'dataset'), '--scene', demo_run.scene,
                 '--max-seconds', '0.6', '--out', str(out), '--device', 'cpu', '--no-progress',
                 '--no-gif'])
    printed = capsys.readouterr().out
    assert code == 0
    assert f'SparseBEV demo on {demo_run.scene}: 2/2 keyframes' in printed
    assert 'mAP' in printed and str(out / 'metrics.txt') in printed
    assert (out / 'summary.txt').read_text().startswith(f'SparseBEV demo on {demo_run.scene}')
    assert sorted(p.name for p in (out / 'keyframes').iterdir()) == ['keyframe_00.png', 'keyframe_01.png']
    assert not (out / 'dataset').exists() and not (out / 'keyframes.gif').exists()
    with pytest.raises(UsageError, match='--scene is required'):
        demo.run_demo(out_dir=out, nuscenes_root=str(demo_run.out_dir / 'dataset'), progress=False)


def test_bundled_model_detects_objects_in_the_unseen_scene(demo_run):
    if BUNDLED_WEIGHTS is None:
        pytest.skip('no bundled tiny weights in sparsebev_core/weights yet (made by '
                    'python -m sparsebev_cli.demo.train_model); the demo runs with random weights')
    assert demo_run.metrics['mean_ap'] >= MIN_BUNDLED_MAP
    assert demo_run.metrics['nd_score'] > demo_run.metrics['mean_ap'] * 0.5


def test_the_tiny_memory_recipe_starts_from_the_tiny_weights_where_names_and_shapes_match():
    """``train_model --init-from``: every tensor of the same name and shape is copied, the
    others (1-frame mixing, 64 query boxes, the memory attention) keep their initialisation."""
    import torch

    from sparsebev_cli.demo.train_model import init_matching
    from sparsebev_core.model.detector import build_model
    from sparsebev_core.recipe.presets import get_preset

    torch.manual_seed(0)
    model = build_model(get_preset('tiny_memory'))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shipped = torch.load(BUNDLED_WEIGHTS, map_location='cpu', weights_only=True)['state_dict']
    copied, _ = init_matching(model, BUNDLED_WEIGHTS)
    after = model.state_dict()
    same = [k for k in after if k in shipped and shipped[k].shape == after[k].shape]
    assert copied == len(same) > 0.7 * len(after)
    assert all(torch.equal(after[k], shipped[k].to(after[k].dtype)) for k in same)
    assert all(torch.equal(after[k], before[k]) for k in after if k not in same)
    assert 'pts_bbox_head.init_query_bbox.weight' not in same

"""Replay on real rosbag2 files (sqlite3 and MCAP) written and read with rosbags.

Detectors here are stand-ins unless a test says otherwise: ``PerfectDriveDetector`` and
``DatasetTruthDetector`` return ground truth (NOT SparseBEV) so that the geometry of the ROS
layer can be checked to the centimetre; ``test_cli_replay_runs_the_tiny_model_end_to_end``
runs the real (randomly initialised) tiny SparseBEV.
"""
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from ros_scene import (PerfectDriveDetector, T_world_ego, invert_transform, truth_in, write_drive)
from sparsebev_core.frame import Detections
from sparsebev_core.geometry import CAMERA_NAMES
from sparsebev_ros.bags.replay import replay
from sparsebev_ros.codecs import stamp_to_ns
from sparsebev_ros.params import DETECTIONS_TOPIC, MARKERS_TOPIC, validate


def read_topic(bag, topic):
    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(conns)]


def topics(bag):
    with AnyReader([Path(bag)]) as reader:
        return {c.topic: c.msgcount for c in reader.connections}


@pytest.mark.parametrize('storage, distro', [('sqlite3', 'humble'), ('mcap', 'jazzy')])
def test_replay_writes_one_detection_array_per_synced_frame(tmp_path, storage, distro):
    bag = write_drive(tmp_path / 'in', storage, num_frames=8, distro=distro)
    report = replay(bag.path, tmp_path / 'out', validate({}), PerfectDriveDetector(),
                    storage=storage, progress=False, distro=distro)
    assert report.stats.synced == 8 and report.stats.published == 8 and not report.stats.skipped
    dets = read_topic(tmp_path / 'out', DETECTIONS_TOPIC)
    markers = read_topic(tmp_path / 'out', MARKERS_TOPIC)
    assert [stamp_to_ns(m.header.stamp) for _, m in dets] == bag.anchor_stamps
    assert all(m.header.frame_id == 'base_link' and len(m.detections) == 2 for _, m in dets)
    assert len(markers) == 8 and all(m.markers[0].action == 3 for _, m in markers)
    # every input message is in the output bag as well
    counts_in, counts_out = topics(bag.path), topics(tmp_path / 'out')
    assert all(counts_out[t] == n for t, n in counts_in.items())
    assert report.messages['/CAM_FRONT/image_raw/compressed'] == 8


def test_mcap_output_decodes_with_an_independent_reader(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    bag = write_drive(tmp_path / 'in', 'mcap', num_frames=3)
    replay(bag.path, tmp_path / 'out', validate({}), PerfectDriveDetector(), storage='mcap', progress=False)
    files = list((tmp_path / 'out').glob('*.mcap'))
    with open(files[0], 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        dets = [m.decoded_message for m in reader.iter_decoded_messages(topics=[DETECTIONS_TOPIC])]
    assert len(dets) == 3
    assert dets[0].detections[0].results[0].hypothesis.class_id == 'car'
    assert dets[0].header.stamp.sec * 10**9 + dets[0].header.stamp.nanosec == bag.anchor_stamps[0]


def test_replay_boxes_land_on_the_truth_of_the_drive(tmp_path):
    """Perfect stand-in detector (closed-form truth in the model frame): published boxes in
    base_link and in odom (the world frame) must match the truth at the anchor stamp."""
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=5)
    for frame, name in (('base_link', 'out_base'), ('odom', 'out_odom')):
        replay(bag.path, tmp_path / name, validate({'output_frame': frame}), PerfectDriveDetector(),
               progress=False)
        for _, msg in read_topic(tmp_path / name, DETECTIONS_TOPIC):
            stamp = stamp_to_ns(msg.header.stamp)
            T_world_out = T_world_ego(stamp) if frame == 'base_link' else np.eye(4)
            truth = truth_in(invert_transform(T_world_out))
            for d, box in zip(msg.detections, truth):
                c = d.bbox.center.position
                assert (c.x, c.y, c.z) == pytest.approx((box[0], box[1], box[2] + box[5] / 2), abs=0.01)
                assert (d.bbox.size.x, d.bbox.size.y, d.bbox.size.z) == pytest.approx(box[3:6])


def test_frames_wait_for_late_tf_up_to_tf_timeout(tmp_path):
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=4, tf_delay_ns=40_000_000)
    report = replay(bag.path, tmp_path / 'ok', validate({'tf_timeout': 0.1}), PerfectDriveDetector(),
                    progress=False)
    assert report.stats.published == 4 and not report.stats.skipped
    report = replay(bag.path, tmp_path / 'late', validate({'tf_timeout': 0.01, 'min_cameras': 6}),
                    PerfectDriveDetector(), progress=False)
    assert report.stats.skipped['tf_extrapolation'] >= 3
    # with the default min_cameras the cameras whose ego pose is not there yet are missing
    report = replay(bag.path, tmp_path / 'degraded', validate({'tf_timeout': 0.01}),
                    PerfectDriveDetector(), progress=False)
    assert report.stats.degraded >= 3 and report.stats.published == 4
    assert all(key.endswith('/tf_extrapolation') for key in report.stats.missing_cameras)


def test_raw_bgr8_images_replay_like_compressed(tmp_path):
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=3, transport='raw')
    det = PerfectDriveDetector()
    report = replay(bag.path, tmp_path / 'out', validate({'image_transport': 'raw'}), det, progress=False)
    assert report.stats.published == 3
    assert det.frames[0].cameras[0].image.shape == (36, 64, 3)


def test_wrong_transport_names_the_missing_topics(tmp_path):
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=2)
    lines = []
    report = replay(bag.path, tmp_path / 'out', validate({'image_transport': 'raw'}),
                    PerfectDriveDetector(), progress=False, log=lines.append)
    assert report.stats.synced == 0 and '/CAM_FRONT/image_raw' in report.missing_topics
    assert any('check image_transport' in line for line in lines)


def test_missing_camera_image_means_a_degraded_frame_or_none_below_min_cameras(tmp_path):
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=6, skip_camera={2: 4})
    det = PerfectDriveDetector()
    report = replay(bag.path, tmp_path / 'out', validate({}), det, progress=False)
    stamps = [stamp_to_ns(m.header.stamp) for _, m in read_topic(tmp_path / 'out', DETECTIONS_TOPIC)]
    assert stamps == bag.anchor_stamps and report.stats.published == 6
    assert report.stats.degraded == 1
    assert report.stats.missing_cameras == {'CAM_BACK_LEFT/late': 1}   # waited sync_max_wait
    assert [f.missing_cameras for f in det.frames][2] == {'CAM_BACK_LEFT': 'late'}
    assert 'degraded frames (published without some cameras): 1' in report.summary()
    report = replay(bag.path, tmp_path / 'all', validate({'min_cameras': 6}),
                    PerfectDriveDetector(), progress=False)
    stamps = [stamp_to_ns(m.header.stamp) for _, m in read_topic(tmp_path / 'all', DETECTIONS_TOPIC)]
    assert stamps == bag.anchor_stamps[:2] + bag.anchor_stamps[3:]
    assert report.stats.published == 5 and report.stats.skipped == {'late': 1}


def test_bag_loop_resets_memory_and_keeps_publishing(tmp_path):
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=8, time_jump_at=5)
    det = PerfectDriveDetector()
    report = replay(bag.path, tmp_path / 'out', validate({}), det, progress=False)
    assert report.stats.published == 8
    assert det.resets == ['time_backwards'] and report.stats.resets == {'time_backwards': 1}
    assert 'time_backwards: 1' in report.summary()


def test_the_real_detector_owns_the_time_rules_and_the_replay_counts_its_key(tmp_path):
    """The tiny SparseBEV (bundled weights) built from the parameters: ``max_time_gap`` goes to
    the detector, which resets on the bag loop and on the gap; the replay summary counts the
    detector's keys, once each."""
    from sparsebev_ros.pipeline import build_detector
    params = validate({'preset': 'tiny', 'device': 'cpu', 'max_time_gap': 0.2})
    detector = build_detector(params, log=lambda text: None)
    assert detector.max_time_gap == 0.2
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=4, time_jump_at=2)  # 0 1 0 1
    report = replay(bag.path, tmp_path / 'out', params, detector, progress=False)
    assert report.stats.published == 4
    assert dict(report.stats.resets) == {'time_backwards': 1}
    assert detector.last_step.reset_reason == ''
    detector.reset()                                         # a new bag: start afresh
    bag = write_drive(tmp_path / 'gap', 'sqlite3', num_frames=4, skip_camera={1: 0, 2: 0})
    report = replay(bag.path, tmp_path / 'out_gap', params, detector, progress=False)
    assert report.stats.published == 2                       # frames 1 and 2 lack CAM_FRONT
    assert dict(report.stats.resets) == {'time_gap': 1}      # 0 -> 3: 0.25 s > 0.2 s
    assert 'time_gap: 1' in report.summary()


def test_camera_late_beyond_max_diff_is_skipped_and_resets(tmp_path):
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=5, late_camera={2: (5, 60_000_000)})
    det = PerfectDriveDetector()
    # a window wider than max_camera_time_diff lets the late image into its set: the guard
    # skips that frame and resets the memory; the other frames are published
    report = replay(bag.path, tmp_path / 'out', validate({'sync_window': 0.1,
                                                          'max_camera_time_diff': 0.08}),
                    det, progress=False)
    assert report.stats.skipped['camera_time_spread'] == 1 and det.resets == ['camera_time_spread']
    assert report.published_stamps == [bag.anchor_stamps[i] for i in (0, 1, 3, 4)]
    # the default window (0.06 s) leaves the late image out: a degraded frame, no reset
    det = PerfectDriveDetector()
    report = replay(bag.path, tmp_path / 'default', validate({}), det, progress=False)
    assert report.published_stamps == bag.anchor_stamps and det.resets == []
    assert report.stats.missing_cameras == {'CAM_BACK_RIGHT/no_image': 1}
    assert report.sets_over_window == 0 and report.max_set_spread_ns <= 60_000_000


def test_corrupt_image_and_size_change_in_a_bag(tmp_path):
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=6, corrupt={1: 2}, size_change_at=4)
    det = PerfectDriveDetector()
    report = replay(bag.path, tmp_path / 'out', validate({}), det, progress=False)
    assert report.stats.missing_cameras == {'CAM_FRONT_LEFT/decode_error': 1}   # degraded
    assert det.resets == ['image_size_changed'] and report.stats.published == 6
    assert 'CAM_FRONT_LEFT/decode_error: 1' in report.summary()
    det = PerfectDriveDetector()
    report = replay(bag.path, tmp_path / 'all', validate({'min_cameras': 6}), det, progress=False)
    assert report.stats.skipped == {'decode_error': 1}
    assert det.resets == ['image_size_changed'] and report.stats.published == 5
    assert 'decode_error: 1' in report.summary()


def test_no_tf_means_no_detections_never_an_identity_pose(tmp_path):
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=3, with_tf=False)
    det = PerfectDriveDetector()
    report = replay(bag.path, tmp_path / 'out', validate({}), det, progress=False)
    assert report.stats.published == 0 and report.stats.skipped['tf_unavailable'] == 3
    assert det.frames == [] and DETECTIONS_TOPIC not in topics(tmp_path / 'out') or \
        topics(tmp_path / 'out')[DETECTIONS_TOPIC] == 0


# ---------------------------------------------------------------------------------------------
# synthetic nuScenes-format scene -> nuscenes-to-bag -> replay
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    from nuscenes.nuscenes import NuScenes
    from sparsebev_core.data.synthetic.scenes import make_synthetic
    root = make_synthetic(tmp_path_factory.mktemp('syn'), num_scenes=1, keyframes_per_scene=3,
                          image_size=(200, 112), progress=False)
    return NuScenes(version='v1.0-mini', dataroot=str(root), verbose=False)


class DatasetTruthDetector:
    """Stand-in for a perfect model (NOT SparseBEV): at keyframes returns the dataset's
    world-frame annotations in the dataset's LIDAR_TOP frame at the CAM_FRONT stamp (the
    dataset's own ego pose and calibration, not the frame's); nothing between keyframes."""

    def __init__(self, nusc):
        from pyquaternion import Quaternion
        self.truth = {}
        for sample in nusc.sample:
            sd = nusc.get('sample_data', sample['data']['CAM_FRONT'])
            ego = nusc.get('ego_pose', sd['ego_pose_token'])
            lidar_sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
            cs = nusc.get('calibrated_sensor', lidar_sd['calibrated_sensor_token'])
            boxes = []
            for ann_token in sample['anns']:
                box = nusc.get_box(ann_token)
                box.translate(-np.array(ego['translation']))
                box.rotate(Quaternion(ego['rotation']).inverse)
                box.translate(-np.array(cs['translation']))
                box.rotate(Quaternion(cs['rotation']).inverse)
                w, l, h = box.wlh
                boxes.append([*box.center[:2], box.center[2] - h / 2, l, w, h,
                              box.orientation.yaw_pitch_roll[0], 0.0, 0.0])
            self.truth[sd['timestamp']] = np.array(boxes).reshape(-1, 9)
        self.resets = []

    def step(self, frame):
        boxes = self.truth.get(int(frame.key) // 1000, np.zeros((0, 9)))
        return Detections(boxes, np.full(len(boxes), 0.9), np.zeros(len(boxes), np.int64), frame.stamp)

    def reset(self, reason=''):
        self.resets.append(reason)


@pytest.mark.parametrize('output_frame, model_frame, storage',
                         [('base_link', '', 'sqlite3'), ('odom', 'LIDAR_TOP', 'mcap')])
def test_synthetic_scene_bag_detections_land_on_ground_truth(tmp_path, synthetic, output_frame,
                                                             model_frame, storage):
    from pyquaternion import Quaternion
    from sparsebev_ros.bags.from_nuscenes import write_scene
    nusc = synthetic
    scene = nusc.scene[0]['name']
    counts = write_scene(nusc, scene, tmp_path / 'in', storage, progress=False)
    assert counts['images'] == 6 * counts['camera_info'] // 6 and counts['tf_static'] == 1
    params = validate({'output_frame': output_frame, 'model_frame': model_frame, 'score_threshold': 0.5})
    report = replay(tmp_path / 'in', tmp_path / 'out', params, DatasetTruthDetector(nusc),
                    storage=storage, progress=False)
    n_frames = counts['images'] // 6
    assert report.stats.synced == n_frames and report.stats.published == n_frames, report.summary()
    by_stamp = {stamp_to_ns(m.header.stamp): m for _, m in read_topic(tmp_path / 'out', DETECTIONS_TOPIC)}
    checked = 0
    for sample in nusc.sample:
        sd = nusc.get('sample_data', sample['data']['CAM_FRONT'])
        msg = by_stamp[sd['timestamp'] * 1000]
        ego = nusc.get('ego_pose', sd['ego_pose_token'])
        assert len(msg.detections) == len(sample['anns']) > 0
        for d, ann_token in zip(msg.detections, sample['anns']):
            box = nusc.get_box(ann_token)
            if output_frame == 'base_link':
                box.translate(-np.array(ego['translation']))
                box.rotate(Quaternion(ego['rotation']).inverse)
            c = d.bbox.center.position
            assert np.abs(np.array([c.x, c.y, c.z]) - box.center).max() < 0.01
            q = d.bbox.center.orientation
            yaw = 2 * np.arctan2(q.z, q.w)
            assert abs(np.angle(np.exp(1j * (yaw - box.orientation.yaw_pitch_roll[0])))) < 0.01
            assert (d.bbox.size.x, d.bbox.size.y, d.bbox.size.z) == pytest.approx(
                (box.wlh[1], box.wlh[0], box.wlh[2]), abs=1e-6)
            checked += 1
    assert checked > 0


@pytest.mark.parametrize('preset', ['tiny', 'tiny_memory'])
def test_cli_replay_runs_the_tiny_model_end_to_end(tmp_path, capsys, preset):
    """The real SparseBEV tiny preset and its SparseBEV++ twin (bundled demo weights on a drive
    they never saw: only the plumbing is checked) through `sparsebev replay`; only the
    SparseBEV++ model, which tracks, fills ``Detection3D.id`` and shows IDs in the markers."""
    from sparsebev_cli.cli import main
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=3)
    rc = main(['replay', bag.path, str(tmp_path / 'out'), '--preset', preset, '--device', 'cpu',
               '-p', 'score_threshold:=0.0', '-p', 'max_detections:=5', '--no-progress',
               '--storage', 'mcap'])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert 'published: 3' in out and 'latency detector' in out
    dets = read_topic(tmp_path / 'out', DETECTIONS_TOPIC)
    assert len(dets) == 3 and all(len(m.detections) == 5 for _, m in dets)
    # Detection3D.id only from a model that tracks (SparseBEV++), as vision_msgs asks
    ids = [[d.id for d in m.detections] for _, m in dets]
    texts = [m.text for _, msg in read_topic(tmp_path / 'out', MARKERS_TOPIC) for m in msg.markers
             if m.ns == 'labels']
    if preset == 'tiny':
        assert all(i == '' for frame in ids for i in frame)
        assert texts and not any(t.startswith('#') for t in texts)
    else:
        assert all(i.isdigit() and int(i) >= 1 for frame in ids for i in frame)
        for _, m in dets:                   # one ID per query: equal IDs, one box (two classes)
            centres = {}
            for d in m.detections:
                c = d.bbox.center.position
                assert centres.setdefault(d.id, (c.x, c.y, c.z)) == (c.x, c.y, c.z)
        assert texts and all(t.startswith('#') for t in texts)


def test_cli_nuscenes_to_bag_writes_the_node_topics(tmp_path, synthetic, capsys):
    from sparsebev_cli.cli import main
    scene = synthetic.scene[0]['name']
    rc = main(['nuscenes-to-bag', '--root', synthetic.dataroot, '--scene', scene,
               str(tmp_path / 'bag'), '--storage', 'mcap'])
    assert rc == 0 and 'images' in capsys.readouterr().out
    counts = topics(tmp_path / 'bag')
    n = counts['/CAM_FRONT/image_raw/compressed']
    assert n > 0 and all(counts[f'/{c}/camera_info'] == counts[f'/{c}/image_raw/compressed']
                         for c in ('CAM_FRONT', 'CAM_BACK_LEFT'))
    assert counts['/tf_static'] == 1 and counts['/tf'] >= n
    static = read_topic(tmp_path / 'bag', '/tf_static')[0][1]
    assert {t.child_frame_id for t in static.transforms} == {
        'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT',
        'CAM_BACK_RIGHT', 'LIDAR_TOP'}
    with AnyReader([tmp_path / 'bag']) as reader:
        qos = [c.ext.offered_qos_profiles for c in reader.connections if c.topic == '/tf_static'][0]
    assert 'TRANSIENT_LOCAL' in str(qos[0].durability)
    capsys.readouterr()
    assert main(['nuscenes-to-bag', '--root', synthetic.dataroot, '--scene', 'scene-9999',
                 str(tmp_path / 'bag2')]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "scene 'scene-9999' is not in" in err[0] and scene in err[0]


def test_cli_replay_reports_bad_parameters_and_missing_bags(tmp_path, capsys):
    from sparsebev_cli.cli import main
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=1)
    def error_line(argv, code):
        capsys.readouterr()
        assert main(argv) == code
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith('sparsebev replay: error: '), lines
        return lines[0]

    # bad input: exit 1, one line on stderr
    assert "parameter 'sync_window' must be > 0.0" in error_line(
        ['replay', bag.path, str(tmp_path / 'out'), '-p', 'sync_window:=-1'], 1)
    assert 'does not exist' in error_line(['replay', str(tmp_path / 'nothing'),
                                           str(tmp_path / 'out')], 1)
    assert 'already exists' in error_line(['replay', bag.path, bag.path], 1)
    # usage: exit 2 (ours and argparse's)
    assert 'NAME:=VALUE' in error_line(['replay', bag.path, str(tmp_path / 'out'), '-p', 'slop'], 2)
    assert main(['replay', bag.path]) == 2 and 'out_bag' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_config_file_parameter_builds_the_detector_from_an_official_config(tmp_path):
    """``config_file`` replaces ``preset``: the 196-query variant config builds a 196-query
    detector that loads a checkpoint of that shape (and refuses the 100-query bundled one)."""
    import torch

    from sparsebev_core.checkpoints.official import CheckpointMismatchError
    from sparsebev_core.recipe.presets import model_config
    from sparsebev_core.model.detector import build_model
    from sparsebev_ros.pipeline import build_detector
    config = Path(__file__).parent / 'data' / 'official_configs' / 'tiny_196q.py'
    weights = tmp_path / 'variant.pth'
    torch.save(dict(state_dict=build_model(model_config(config_file=str(config))).state_dict()),
               weights)
    params = validate({'config_file': str(config), 'checkpoint': str(weights), 'device': 'cpu'})
    detector = build_detector(params, log=lambda text: None)
    assert detector.cfg.head.num_queries == 196 and detector.cfg.name == 'tiny_196q'
    bundled = validate({'config_file': str(config), 'checkpoint': str(
        Path(__file__).parents[1] / 'sparsebev_core' / 'weights' / 'tiny_synthetic.pth'),
        'device': 'cpu'})
    with pytest.raises(CheckpointMismatchError, match='init_query_bbox'):
        build_detector(bundled, log=lambda text: None)


def test_config_file_of_a_recurrent_model_runs_in_replay(tmp_path):
    """``config_file`` of a SparseBEV++ model (the official v2 format, written by
    ``export_official_config`` for the tiny_memory preset) builds the recurrent detector the
    node and replay run; a bag replays through it with the state carried from frame to frame."""
    import torch

    from sparsebev_core.model.detector import build_model
    from sparsebev_core.recipe.official_write import export_official_config
    from sparsebev_core.recipe.presets import get_preset
    from sparsebev_ros.pipeline import build_detector
    config = tmp_path / 'tiny_memory_v2.py'
    config.write_text(export_official_config(get_preset('tiny_memory')))
    weights = tmp_path / 'tiny_memory.pth'
    torch.manual_seed(0)
    torch.save(dict(state_dict=build_model(get_preset('tiny_memory')).state_dict()), weights)
    params = validate({'config_file': str(config), 'checkpoint': str(weights), 'device': 'cpu'})
    detector = build_detector(params, log=lambda text: None)
    assert detector.recurrent and detector.cfg.name == 'tiny_memory_v2'
    assert detector.cfg.head.memory == get_preset('tiny_memory').head.memory
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=3)
    report = replay(bag.path, tmp_path / 'out', params, detector, progress=False)
    assert report.stats.published == 3
    assert int(detector.recurrent_state.memory_rows[0]) == 3 * detector.cfg.head.memory.len_per_frame


# ------------------------------------------------------------------ degraded frames, any rig
def lossy_jitter(seed: int, lossy_camera: int = 5, loss: float = 0.2, jitter_ms: float = 5.0):
    """``jitter_ns(frame, camera)`` (+-jitter_ms, fixed per image) and ``drop(frame, camera)``
    (``loss`` of ``lossy_camera``'s images) for ``write_drive``."""
    rng = np.random.default_rng(seed)
    jitter = rng.integers(-int(jitter_ms * 1e6), int(jitter_ms * 1e6) + 1, (10_000, 6))
    lost = rng.random(10_000) < loss
    return (lambda f, i: int(jitter[f, i])), (lambda f, i: i == lossy_camera and bool(lost[f])), lost


def test_a_lossy_jittery_camera_degrades_its_frames_and_every_anchor_is_published(tmp_path):
    """12 Hz, CAM_BACK_RIGHT loses 20% of its images, every stamp jitters +-5 ms: each anchor
    frame is published, exactly the frames without that camera are degraded, and no camera set
    spans more than sync_window."""
    frames = 48
    jitter, drop, lost = lossy_jitter(seed=3)
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=frames, jitter_ns=jitter, drop=drop)
    det = PerfectDriveDetector()
    report = replay(bag.path, tmp_path / 'out', validate({}), det, progress=False)
    assert report.published_stamps == bag.anchor_stamps
    assert report.stats.degraded == int(lost[:frames].sum()) > 0
    assert set(report.stats.missing_cameras) <= {'CAM_BACK_RIGHT/late', 'CAM_BACK_RIGHT/no_image'}
    assert [bool(f.missing_cameras) for f in det.frames] == list(lost[:frames])
    assert report.sets_over_window == 0 and report.max_set_spread_ns <= 60_000_000


def test_a_camera_topic_gone_for_a_stretch_runs_the_tiny_model_without_ever_sampling_it(tmp_path):
    """The real tiny SparseBEV through replay: CAM_BACK's images are missing for frames 3..8;
    detections continue on every frame, each of those frames is reported degraded, and the
    head is given valid_views False for CAM_BACK in exactly those frames (current and history),
    so no sampling point reads it."""
    from sparsebev_ros.pipeline import build_detector
    params = validate({'preset': 'tiny', 'device': 'cpu', 'score_threshold': 0.0})
    detector = build_detector(params, log=lambda text: None)
    stretch = range(3, 9)
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=12,
                      drop=lambda f, i: i == 3 and f in stretch)
    seen = []

    def on_result(result):
        step = detector.last_step
        seen.append((result.detections.missing_cameras, step.keys,
                     step.valid_views.reshape(len(step.keys), 6)))

    report = replay(bag.path, tmp_path / 'out', params, detector, progress=False,
                    on_result=on_result)
    assert report.published_stamps == bag.anchor_stamps and report.stats.published == 12
    assert report.stats.degraded == len(stretch)
    assert 'degraded frames (published without some cameras): 6' in report.summary()
    degraded_keys = {str(bag.anchor_stamps[f]) for f in stretch}
    for f, (missing, keys, valid) in enumerate(seen):
        assert bool(missing) == (f in stretch) and set(missing) <= {'CAM_BACK'}
        for key, row in zip(keys, valid):          # every frame the head read, its own valid set
            assert row.tolist() == [True, True, True, key not in degraded_keys, True, True]
    assert any(not row[3] for _, keys, valid in seen[9:] for row in valid)   # history remembers


def test_a_recurrent_model_replays_degraded_frames_without_sampling_the_missing_camera(tmp_path):
    """tiny_memory through replay with CAM_BACK gone for frames 3..5: every frame is published,
    those three degraded, the head told valid_views False for CAM_BACK exactly there, and the
    recurrent state carried through them (no reset: the memory keeps filling)."""
    from sparsebev_ros.pipeline import build_detector
    params = validate({'preset': 'tiny_memory', 'device': 'cpu', 'score_threshold': 0.0})
    detector = build_detector(params, log=lambda text: None)
    stretch = range(3, 6)
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=8,
                      drop=lambda f, i: i == 3 and f in stretch)
    seen = []

    def on_result(result):
        step = detector.last_step
        seen.append((step.valid_views.tolist(), int(detector.recurrent_state.memory_rows[0]),
                     bool(step.outputs['propagation_used'][0]), step.reset_reason))

    report = replay(bag.path, tmp_path / 'out', params, detector, progress=False,
                    on_result=on_result)
    assert report.stats.published == 8 and report.stats.degraded == len(stretch)
    chunk, limit = detector.cfg.head.memory.len_per_frame, detector.cfg.head.memory.memory_len
    for f, (valid, rows, propagated, reset) in enumerate(seen):
        assert valid == [True, True, True, f not in stretch, True, True]
        assert rows == min((f + 1) * chunk, limit) and propagated == (f > 0) and reset == ''
    assert not report.stats.resets


def test_replay_of_a_five_camera_rig_with_its_own_topics(tmp_path):
    """``camera_names`` is the rig: five cameras, topics /<name>/image_raw, the bag's sixth
    camera is simply not subscribed."""
    names = list(CAMERA_NAMES[:5])
    det = PerfectDriveDetector()
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=4)
    report = replay(bag.path, tmp_path / 'out', validate({'camera_names': names}), det,
                    progress=False)
    assert report.stats.published == 4 and not report.stats.degraded
    assert all(f.camera_names == tuple(names) for f in det.frames)

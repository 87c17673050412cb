"""Info records built from the nuScenes tables of a synthetic dataset."""
from __future__ import annotations

import numpy as np
import pytest
from nuscenes import NuScenes
from pyquaternion import Quaternion

from sparsebev_cli import cli
from sparsebev_core.data import infos as infos_mod
from sparsebev_core.data.synthetic.scenes import make_synthetic
from sparsebev_core.geometry import CAMERA_NAMES, CLASS_NAMES
from sparsebev_core.image import decode_image

KEYFRAMES = 4


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp('syn'), num_scenes=2, seed=5,
                          keyframes_per_scene=KEYFRAMES, image_size=(200, 113), progress=False)


@pytest.fixture(scope='module')
def nusc(root):
    return NuScenes('v1.0-mini', str(root), verbose=False)


@pytest.fixture(scope='module')
def prepared(root):
    rc = cli.main(['prepare-nuscenes', '--root', str(root), '--version', 'v1.0-mini'])
    assert rc == 0
    return {split: infos_mod.load_infos(infos_mod.info_path(root, 'v1.0-mini', split))[0]
            for split in ('train', 'val')}


def test_prepare_writes_one_sorted_info_file_per_mini_split(prepared, nusc):
    for split, infos in prepared.items():
        assert len(infos) == KEYFRAMES
        stamps = [i['timestamp'] for i in infos]
        assert stamps == sorted(stamps)
        assert len({i['scene_name'] for i in infos}) == 1
    names = {prepared['train'][0]['scene_name'], prepared['val'][0]['scene_name']}
    assert names == {s['name'] for s in nusc.scene}


def test_cameras_carry_their_own_stamp_pose_and_calibration(prepared, nusc):
    info = prepared['val'][1]
    sample = nusc.get('sample', info['token'])
    assert [c['name'] for c in info['cams']] == list(CAMERA_NAMES)
    for cam in info['cams']:
        sd = nusc.get('sample_data', sample['data'][cam['name']])
        pose = nusc.get('ego_pose', sd['ego_pose_token'])
        assert cam['stamp'] == sd['timestamp'] / 1e6
        np.testing.assert_allclose(cam['T_world_ego'][:3, 3], pose['translation'])
        np.testing.assert_allclose(cam['T_world_ego'][:3, :3],
                                   Quaternion(pose['rotation']).rotation_matrix, atol=1e-12)
    # cameras fire at different instants, so their ego poses differ from the LIDAR_TOP one
    assert not np.allclose(info['cams'][3]['T_world_ego'], info['T_world_ego'])


def test_sweeps_walk_five_frames_back_along_each_camera_chain(prepared, nusc):
    infos = prepared['train']
    assert infos[0]['sweeps'] == []                       # scene start
    for info in infos[1:]:
        assert len(info['sweeps']) == infos_mod.NUM_SWEEPS
        for c, cam in enumerate(CAMERA_NAMES):
            token, stamp = info['cams'][c]['token'], info['cams'][c]['stamp']
            for entry in info['sweeps']:
                token = nusc.get('sample_data', token)['prev']
                assert entry[c]['token'] == token and entry[c]['name'] == cam
                assert stamp - entry[c]['stamp'] == pytest.approx(1 / 12, abs=8e-3)   # 12 Hz
                stamp = entry[c]['stamp']


def test_sweep_entry_repeats_when_a_camera_chain_ends(nusc):
    """Official quirk: the whole previous entry is repeated once any camera has no prev."""
    sample = nusc.sample[2]                               # third keyframe of the first scene
    sd_token = sample['data']['CAM_BACK']
    for _ in range(3):
        sd_token = nusc.get('sample_data', sd_token)['prev']
    record = nusc.get('sample_data', sd_token)
    saved, record['prev'] = record['prev'], ''
    try:
        sweeps = infos_mod.sweep_chain(nusc, sample)
    finally:
        record['prev'] = saved
    assert len(sweeps) == 5
    assert [e[3]['token'] for e in sweeps[:3]][-1] == sd_token
    assert sweeps[3] == sweeps[2] and sweeps[4] == sweeps[2] and sweeps[1] != sweeps[2]


def test_gt_boxes_agree_with_the_devkit_boxes_in_the_lidar_frame(prepared, nusc):
    checked = 0
    for info in prepared['val']:
        _, boxes, _ = nusc.get_sample_data(info['lidar_token'])
        assert len(boxes) == len(info['gt_boxes'])
        for box, gt, token in zip(boxes, info['gt_boxes'], info['ann_tokens']):
            assert box.token == token
            np.testing.assert_allclose(gt[:3], box.center, atol=1e-9)
            np.testing.assert_allclose(gt[3:6], box.wlh[[1, 0, 2]], atol=1e-9)
            assert abs(np.angle(np.exp(1j * (gt[6] - box.orientation.yaw_pitch_roll[0])))) < 1e-6
            v = nusc.box_velocity(token)
            if np.all(np.isfinite(v)):
                lidar_sd = nusc.get('sample_data', info['lidar_token'])
                pose = nusc.get('ego_pose', lidar_sd['ego_pose_token'])
                cs = nusc.get('calibrated_sensor', lidar_sd['calibrated_sensor_token'])
                v_l = Quaternion(cs['rotation']).inverse.rotate(
                    Quaternion(pose['rotation']).inverse.rotate(np.array([v[0], v[1], 0.0])))
                np.testing.assert_allclose(gt[7:9], v_l[:2], atol=1e-9)
                checked += 1
    assert checked > 10


def test_labels_names_and_valid_flags(prepared):
    info = prepared['val'][2]
    for name, label in zip(info['gt_names'], info['gt_labels']):
        assert CLASS_NAMES[label] == name
    np.testing.assert_array_equal(info['valid_flag'],
                                  info['num_lidar_pts'] + info['num_radar_pts'] > 0)
    assert info['valid_flag'].any() and not info['valid_flag'].all()


def test_frame_from_info_gives_a_core_frame_with_jpeg_bytes(prepared, root):
    info = prepared['val'][1]
    frame = infos_mod.frame_from_info(info, root)
    assert frame.stamp == info['timestamp'] and frame.key == info['token']
    assert [v.name for v in frame.cameras] == list(CAMERA_NAMES)
    assert decode_image(frame.cameras[0].image).shape == (113, 200, 3)
    past = infos_mod.frame_from_info(info, root, cams=info['sweeps'][0],
                                     stamp=info['sweeps'][0][0]['stamp'], key='past')
    assert past.cameras[0].stamp < frame.cameras[0].stamp


def test_loading_a_foreign_pickle_names_the_fix(tmp_path):
    import pickle
    path = tmp_path / 'nuscenes_infos_val_sweep.pkl'
    path.write_bytes(pickle.dumps({'infos': [], 'metadata': {'version': 'v1.0-trainval'}}))
    with pytest.raises(ValueError, match='prepare-nuscenes'):
        infos_mod.load_infos(path)
    with pytest.raises(FileNotFoundError, match='prepare-nuscenes'):
        infos_mod.load_infos(tmp_path / 'missing.pkl')


def test_an_info_file_is_replaced_whole_or_not_at_all(tmp_path):
    """save_infos writes under a temporary name of its own and moves it into place: a write
    that fails (here an unpicklable record) leaves the old file whole and no temporary file;
    ranks that build the same file at once never read a half-written one."""
    import pickle

    from sparsebev_core.data.infos import load_infos, save_infos
    path = save_infos(tmp_path / 'infos.pkl', [dict(token='a', timestamp=0.0)], version='v')
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_infos(path, [dict(token='b', timestamp=1.0, bad=lambda: None)], version='v')
    assert [r['token'] for r in load_infos(path)[0]] == ['a']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['infos.pkl']

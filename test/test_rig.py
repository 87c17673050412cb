"""Any camera rig through ``Frame`` -> ``StreamingDetector``: N = 1, 5, 6 cameras, different
image sizes in one rig, missing cameras that are never sampled, and the rig YAML file.

The model is the tiny preset with random weights (what is checked is shapes, geometry and
which views are read, not detection quality).
"""
import numpy as np
import pytest
import torch
import yaml

from sparsebev_core.frame import CameraView, Frame, InvalidFrameError
from sparsebev_core.geometry import CAMERA_NAMES, make_transform, quat_to_rot
from sparsebev_core.image import resize_crop
from sparsebev_core.model.decoder import compute_time_diff
from sparsebev_core.resets import RIG_CHANGED
from sparsebev_core.rig import Rig, RigCamera, RigError, load_rig, make_rig, nuscenes_rig, rig_to_dict
from sparsebev_core.streaming.detector import StreamingDetector
from sparsebev_core.streaming.options import StreamingOptions

T0 = 1533151603.5


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def stream(tiny) -> StreamingDetector:
    model, cfg = tiny
    return StreamingDetector(model, cfg,
                             options=StreamingOptions(score_threshold=0.0, max_detections=20))


def five_camera_rig(image_wh=(640, 480)) -> Rig:
    """Five cameras 72 degrees apart, all of one size."""
    cameras = []
    for i in range(5):
        yaw = np.deg2rad(72 * i)
        # optical axes: z forward = (cos yaw, sin yaw, 0), x right, y down
        z = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        x = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        y = np.cross(z, x)
        T = make_transform(np.stack([x, y, z], axis=1), [1.0 * np.cos(yaw), np.sin(yaw), 1.6])
        w, h = image_wh
        K = np.array([[w / 2, 0, w / 2], [0, w / 2, h / 2], [0, 0, 1.0]])
        cameras.append(RigCamera(f'cam{i}', image_wh, K, T))
    return make_rig(cameras)


def ego_pose(t: float) -> np.ndarray:
    return make_transform(quat_to_rot([1, 0, 0, 0]), [5.0 * (t - T0), 0.0, 0.0])


def rig_frame(rig: Rig, stamp: float, seed: int = 0, missing: dict | None = None) -> Frame:
    """One frame of ``rig`` driving at 5 m/s; ``missing``: camera index -> reason."""
    rng = np.random.default_rng(seed)
    views = []
    for i, cam in enumerate(rig.cameras):
        if missing and i in missing:
            views.append(CameraView.absent(cam.name, missing[i], stamp, cam.K, cam.T_base_cam))
            continue
        w, h = cam.image_wh
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        views.append(CameraView(image, cam.K, cam.T_base_cam, stamp + 0.004 * i,
                                ego_pose(stamp + 0.004 * i), cam.name))
    return Frame(views, stamp, ego_pose(stamp), np.eye(4))


# ------------------------------------------------------------------ N cameras
@pytest.mark.parametrize('rig', [
    nuscenes_rig((400, 225), ['CAM_FRONT']),
    five_camera_rig(),
    nuscenes_rig((400, 225)),
], ids=['N1', 'N5', 'N6'])
def test_any_number_of_cameras_runs_through_the_detector(tiny, rig):
    detector = stream(tiny)
    for k in range(3):
        det = detector.step(rig_frame(rig, T0 + 0.5 * k, seed=k))
        assert det.boxes.shape[1] == 9 and np.isfinite(det.boxes).all() and not det.degraded
    n, t = len(rig.cameras), detector.num_frames
    step = detector.last_step
    assert step.lidar2img.shape == (t * n, 4, 4) and step.valid_views.shape == (t * n,)
    assert detector.feature_slots.levels[0].shape[1] == n
    assert step.keys[:3] == [f'{T0 + 1.0:.6f}', f'{T0 + 0.5:.6f}', f'{T0:.6f}']


def test_each_camera_is_resized_by_the_official_rule_for_its_own_size(tiny):
    rig = make_rig([RigCamera('wide', (1600, 900), np.array([[800, 0, 800], [0, 800, 450], [0, 0, 1.0]]),
                              np.eye(4)),
                    RigCamera('small', (320, 240), np.array([[160, 0, 160], [0, 160, 120], [0, 0, 1.0]]),
                              make_transform(quat_to_rot([0, 0, 0, 1]), [0, 0, 0]))])
    detector = stream(tiny)
    frame = rig_frame(rig, T0)
    detector.step(frame)
    entry = detector._cache[frame.key]
    for cam, view in zip(entry.cameras, frame.cameras):
        _, ida = resize_crop(view.image, detector.input_hw)
        np.testing.assert_array_equal(cam.ida, ida)
    assert not np.allclose(entry.cameras[0].ida, entry.cameras[1].ida)


def test_a_frame_of_another_rig_resets_the_memory(tiny):
    detector = stream(tiny)
    detector.step(rig_frame(nuscenes_rig((400, 225)), T0))
    det = detector.step(rig_frame(five_camera_rig(), T0 + 0.5))
    assert det.reset_reason == RIG_CHANGED and detector.last_step.keys == [f'{T0 + 0.5:.6f}'] * 4


# ------------------------------------------------------------------ missing cameras
def test_a_missing_camera_is_never_sampled_and_the_history_keeps_its_own_valid_set(tiny):
    rig = nuscenes_rig((400, 225))
    detector = stream(tiny)
    detector.step(rig_frame(rig, T0, seed=0))
    det = detector.step(rig_frame(rig, T0 + 0.5, seed=1, missing={3: 'late'}))
    assert det.missing_cameras == {'CAM_BACK': 'late'} and det.degraded
    valid = detector.last_step.valid_views.reshape(4, 6)
    assert not valid[0, 3] and valid[0].sum() == 5 and valid[1:].all()
    # its slot holds zeros, never a black or a stale image's features
    slot = detector.last_step.slots[0]
    assert all(float(level[slot, 3].abs().max()) == 0.0 for level in detector.feature_slots.levels)

    # never sampled: noise in the missing camera's features changes nothing, even with the
    # projection of the real CAM_BACK (that of the history frame) in its lidar2img ...
    step = detector.last_step
    lidar2img = step.lidar2img.copy()
    lidar2img[3] = step.lidar2img[6 + 3]
    args = (torch.tensor(step.slots), torch.from_numpy(lidar2img)[None],
            compute_time_diff(step.timestamps[None], 6))
    mask = torch.from_numpy(step.valid_views)[None]
    levels = detector.feature_slots.levels
    before = detector.runtime.run_head(levels, *args, valid_views=mask)
    unmasked_before = detector.runtime.run_head(levels, *args)
    with torch.inference_mode():                      # the cache buffers are inference tensors
        for level in levels:
            level[slot, 3] = torch.randn_like(level[slot, 3]) * 100
    after = detector.runtime.run_head(levels, *args, valid_views=mask)
    assert torch.equal(before['all_cls_scores'], after['all_cls_scores'])
    assert torch.equal(before['all_bbox_preds'], after['all_bbox_preds'])
    # ... while without the mask the same noise is read (the check can fail)
    unmasked_after = detector.runtime.run_head(levels, *args)
    assert not torch.equal(unmasked_before['all_bbox_preds'], unmasked_after['all_bbox_preds'])

    # the next frame is complete; the history keeps frame 1's own valid set
    detector.step(rig_frame(rig, T0 + 1.0, seed=2))
    valid = detector.last_step.valid_views.reshape(4, 6)
    assert valid[0].all() and not valid[1, 3] and valid[1].sum() == 5 and valid[2].all()


def test_a_complete_stream_takes_the_official_path_without_a_mask(tiny):
    seen = []

    class Recording:
        def __init__(self, runtime):
            self.runtime, self.device = runtime, runtime.device
            self.legacy_yaw_convention = runtime.legacy_yaw_convention

        def encode(self, images):
            return self.runtime.encode(images)

        def run_head(self, cache_levels, slots, lidar2img, time_diff, **extra):
            seen.append(extra.get('valid_views'))
            return self.runtime.run_head(cache_levels, slots, lidar2img, time_diff, **extra)

    model, cfg = tiny
    from sparsebev_core.streaming.runtime import EagerRuntime
    detector = StreamingDetector(Recording(EagerRuntime(model)), cfg)
    rig = nuscenes_rig((400, 225))
    detector.step(rig_frame(rig, T0))
    detector.step(rig_frame(rig, T0 + 0.5, missing={0: 'decode_error'}))
    assert seen[0] is None and seen[1].dtype == torch.bool and seen[1].shape == (1, 24)


def test_a_frame_without_any_camera_image_is_refused(tiny):
    rig = nuscenes_rig((400, 225), ['CAM_FRONT', 'CAM_BACK'])
    with pytest.raises(InvalidFrameError, match='no camera image at all'):
        stream(tiny).step(rig_frame(rig, T0, missing={0: 'late', 1: 'no_image'}))


def test_frame_accepts_any_named_cameras_and_refuses_none_or_duplicates():
    rig = five_camera_rig()
    frame = rig_frame(rig, T0, missing={2: 'late'})
    assert frame.camera_names == rig.names and frame.missing_cameras == {'cam2': 'late'}
    assert frame.valid_views.tolist() == [True, True, False, True, True]
    assert rig_frame(nuscenes_rig(), T0).camera_names == CAMERA_NAMES
    with pytest.raises(InvalidFrameError, match='at least one camera'):
        Frame([], T0, np.eye(4), np.eye(4))
    views = list(frame.cameras)
    views[1] = views[0]
    with pytest.raises(InvalidFrameError, match='unique'):
        Frame(views, T0, np.eye(4), np.eye(4))


# ------------------------------------------------------------------ the rig file
def test_rig_file_round_trips_and_defaults_to_the_first_camera_as_anchor(tmp_path):
    rig = five_camera_rig((640, 480))
    path = tmp_path / 'rig.yaml'
    path.write_text(yaml.safe_dump(rig_to_dict(rig)))
    again = load_rig(path)
    assert again.names == rig.names and again.anchor == 'cam0'
    for a, b in zip(again.cameras, rig.cameras):
        assert a.image_wh == b.image_wh
        np.testing.assert_allclose(a.K, b.K)
        np.testing.assert_allclose(a.T_base_cam, b.T_base_cam, atol=1e-12)


@pytest.mark.parametrize('edit, words', [
    (lambda d: d.update(cameras=[]), 'at least one camera'),
    (lambda d: d['cameras'][1].update(name='cam0'), 'unique; repeated: cam0'),
    (lambda d: d['cameras'][0].update(image_size=[640]), 'image_size'),
    (lambda d: d['cameras'][0].update(image_size=[4, 4]), '8..8192'),
    (lambda d: d['cameras'][0].update(intrinsics=[0, 1, 2, 3]), 'positive focal'),
    (lambda d: d['cameras'][0].update(rotation_wxyz=[1, 1, 0, 0]), 'unit quaternion'),
    (lambda d: d['cameras'][0].pop('translation'), 'missing translation'),
    (lambda d: d['cameras'][0].update(colour='red'), 'unknown colour'),
    (lambda d: d.update(anchor='CAM_TOP'), "anchor 'CAM_TOP' is not one of"),
    (lambda d: d.update(speed=3), 'unknown key(s) speed'),
])
def test_a_bad_rig_file_names_the_file_and_the_field(tmp_path, edit, words):
    data = rig_to_dict(five_camera_rig())
    edit(data)
    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RigError) as err:
        load_rig(path)
    assert words in str(err.value) and str(path) in str(err.value)
    with pytest.raises(RigError, match='does not exist'):
        load_rig(tmp_path / 'none.yaml')
    (tmp_path / 'broken.yaml').write_bytes(b'cameras: [\x00')           # not YAML (nor UTF-8 text)
    with pytest.raises(RigError, match='rig file .*broken.yaml is not valid YAML'):
        load_rig(tmp_path / 'broken.yaml')

"""Multi-frame samples: official frame selection, projections that land on the objects."""
from __future__ import annotations

import numpy as np
import pytest

from sparsebev_core.data.dataset import NuScenesMultiFrameDataset, build_dataset, collate
from sparsebev_core.data.infos import info_path, load_infos
from sparsebev_core.data.synthetic.scenes import make_synthetic
from sparsebev_core.data.synthetic.world import CLASS_COLOR
from sparsebev_core.geometry import CLASS_NAMES, project_points
from sparsebev_core.recipe.frame_layout import FrameLayoutError, frame_offsets
from sparsebev_core.recipe.presets import PRESET_NAMES, get_preset
from test_frame_layout import with_frames

KEYFRAMES = 6


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp('syn'), num_scenes=2, seed=11,
                          keyframes_per_scene=KEYFRAMES, progress=False)


@pytest.fixture(scope='module')
def cfg():
    return get_preset('tiny')


@pytest.fixture(scope='module')
def val_set(root, cfg):
    return build_dataset(cfg, root, version='v1.0-mini', split='val')


@pytest.fixture(scope='module')
def train_infos(root, cfg):
    build_dataset(cfg, root, version='v1.0-mini', split='train')      # writes the info file
    return load_infos(info_path(root, 'v1.0-mini', 'train'))[0]


def _keyframe_tokens(frame):
    return [c['token'] for c in frame]


def test_build_dataset_prepares_missing_infos_and_picks_the_mode(val_set, root, cfg):
    assert info_path(root, 'v1.0-mini', 'val').exists()
    assert not val_set.training and len(val_set) == KEYFRAMES
    assert build_dataset(cfg, root, version='v1.0-mini', split='train').training


def test_test_mode_uses_the_previous_keyframes_clamped_at_the_scene_start(val_set):
    infos = val_set.infos
    frames = val_set.select_frames(0)                                   # scene start
    assert all(_keyframe_tokens(f) == _keyframe_tokens(infos[0]['cams']) for f in frames)
    frames = val_set.select_frames(1)
    assert [_keyframe_tokens(f) for f in frames[1:]] == [_keyframe_tokens(infos[0]['cams'])] * 3
    frames = val_set.select_frames(4)
    assert [_keyframe_tokens(f) for f in frames] == [_keyframe_tokens(infos[k]['cams'])
                                                     for k in (4, 3, 2, 1)]


def test_scene_start_sample_repeats_the_current_frame_with_zero_time_difference(val_set):
    s = val_set[0]
    t = s['timestamps'].numpy().reshape(4, 6)
    assert np.all(t == t[0])
    assert np.all(s['lidar2img'].numpy().reshape(4, 6, 4, 4) == s['lidar2img'].numpy()[:6])


def test_train_mode_spaces_frames_4_to_8_camera_frames_apart(train_infos, cfg, root):
    ds = NuScenesMultiFrameDataset(train_infos, root, cfg, training=True, load_images=False)
    seen = set()
    for seed in range(40):
        np.random.seed(seed)
        frames = ds.select_frames(KEYFRAMES - 1)                        # 25 entries of history
        stamps = np.array([f[0]['stamp'] for f in frames])
        gaps = -np.diff(stamps) * 12                                     # in camera frames
        assert np.allclose(gaps, gaps[0], atol=0.15)
        seen.add(int(round(gaps[0])))
    assert seen == {4, 5, 6, 7, 8}
    np.random.seed(0)
    short = ds.select_frames(1)                                          # 6 entries: 4..6 -> 4..6?
    assert len(short) == 4 and short[1][0]['stamp'] < short[0][0]['stamp']


def _class_of_colour(rgb):
    shades = np.linspace(0.2, 1.2, 41)[:, None]
    best, best_d = '', np.inf
    for name in CLASS_NAMES:
        c = np.asarray(CLASS_COLOR[name], np.float64)
        cand = np.concatenate([shades * c, 0.55 * shades * c + 0.45 * 255.0])
        d = np.min(np.linalg.norm(cand - np.asarray(rgb, np.float64), axis=1))
        if d < best_d:
            best, best_d = name, d
    return best


def _hits(sample, info):
    """(hits, total): centres of boxes fully visible at the keyframe (visibility 4),
    projected into the keyframe images, that land on a pixel of the box's class."""
    images = sample['images'].numpy()                                   # [T*6, 3, H, W]
    H, W = images.shape[2:]
    boxes = sample['gt_boxes'].numpy()
    labels = sample['gt_labels'].numpy()
    visible = info['visibility'][sample['meta']['gt_index']] == 4
    ok = total = 0
    for f in [0]:
        for cam in range(6):
            m = f * 6 + cam
            uv, depth = project_points(sample['lidar2img'].numpy()[m], boxes[:, :3])
            for b in range(len(boxes)):
                if not visible[b]:
                    continue
                u, v = uv[b]
                if depth[b] < 3 or depth[b] > 25 or not (1 <= u < W - 1 and 1 <= v < H - 1):
                    continue
                total += 1
                ok += _class_of_colour(images[m, :, int(v), int(u)]) == CLASS_NAMES[labels[b]]
    return ok, total


def test_box_centres_project_onto_their_objects_in_the_current_frame(val_set):
    s = val_set[4]
    assert s['images'].shape == (24, 3, 96, 256) and not s['images'].dtype.is_floating_point
    ok, total = _hits(s, val_set.infos[4])
    assert total >= 8 and ok / total > 0.85, (ok, total)


def _past_hits(ds, compensate: bool):
    """Static objects fully visible at an earlier keyframe, projected into that keyframe's
    images (test mode: past frame f of sample k is keyframe k - f)."""
    ok = total = 0
    for k in range(3, len(ds)):
        s = ds[k]
        info = ds.infos[k]
        images = s['images'].numpy()
        lidar2img = s['lidar2img'].numpy()
        for f in (1, 2, 3):
            past = ds.infos[k - f]
            visible = {t for t, v in zip(past['instance_tokens'], past['visibility']) if v == 4}
            for b, box in enumerate(info['gt_boxes']):
                speed = np.hypot(*box[7:9])
                if info['instance_tokens'][b] not in visible or not speed < 0.05:
                    continue
                for cam in range(6):
                    m = (f if compensate else 0) * 6 + cam
                    uv, depth = project_points(lidar2img[m], box[None, :3])
                    u, v = uv[0]
                    if depth[0] < 3 or depth[0] > 25 or not (1 <= u < 255 and 1 <= v < 95):
                        continue
                    total += 1
                    ok += _class_of_colour(images[f * 6 + cam, :, int(v), int(u)]) == \
                        CLASS_NAMES[info['gt_labels'][b]]
    return ok, total


def test_ego_motion_in_lidar2img_keeps_static_objects_on_target_in_past_frames(val_set):
    ok, total = _past_hits(val_set, compensate=True)
    assert total >= 15 and ok / total > 0.85, (ok, total)
    # control: the current frame's matrices on the past images miss most of them
    ok_wrong, total_wrong = _past_hits(val_set, compensate=False)
    assert ok_wrong / max(total_wrong, 1) < 0.6 * ok / total, (ok_wrong, total_wrong)


def test_augmented_training_sample_stays_consistent(train_infos, cfg, root):
    """Resize / crop / flip and the BEV rotation / scale move images, matrices and boxes
    together."""
    ds = NuScenesMultiFrameDataset(train_infos, root, cfg, training=True)
    ok = total = 0
    flips = set()
    for seed in range(6):
        np.random.seed(seed)
        s = ds[4]
        flips.add(bool(s['meta']['ida'][0, 0] < 0))
        assert abs(s['meta']['bev_rotation']) <= 0.3925 and 0.95 <= s['meta']['bev_scale'] <= 1.05
        o, t = _hits(s, train_infos[4])
        ok, total = ok + o, total + t
    assert flips == {True, False}
    assert total >= 20 and ok / total > 0.85, (ok, total)


def test_future_layouts_order_past_and_future_frames(val_set, root, cfg):
    for layout in ('future_blocked', 'future_interleaved'):
        fcfg = with_frames(cfg, layout, past=2, future=2)
        ds = NuScenesMultiFrameDataset(val_set.infos, root, fcfg, training=False, load_images=False)
        t = [f[0]['stamp'] for f in ds.select_frames(2)]
        if layout == 'future_blocked':
            assert t[2] < t[1] < t[0] < t[3] < t[4]
        else:
            assert t[3] < t[1] < t[0] < t[2] < t[4]
        assert np.allclose(t[0] - t[1], 0.5, atol=0.01)                # keyframe spacing
        last = ds.select_frames(KEYFRAMES - 1)                           # scene end: no future
        assert last[-1] is last[0]


@pytest.mark.parametrize('name', PRESET_NAMES)
def test_frame_selection_follows_frame_offsets_for_every_preset(val_set, root, cfg, name):
    preset = get_preset(name)
    pcfg = with_frames(cfg, preset.frame_layout, preset.num_past_frames, preset.num_future_frames)
    ds = NuScenesMultiFrameDataset(val_set.infos, root, pcfg, training=False, load_images=False)
    index = 2                                           # 2 keyframes before it, 3 after
    t = np.array([f[0]['stamp'] for f in ds.select_frames(index)])
    offsets = np.array(frame_offsets(pcfg))
    assert len(t) == len(offsets) == pcfg.num_frames
    # test time: slot k holds the keyframe at offset k, clamped to the scene's first / last
    expected = 0.5 * np.clip(offsets, -index, KEYFRAMES - 1 - index)
    np.testing.assert_allclose(t - t[0], expected, atol=0.01)


def test_a_layout_that_does_not_fit_its_frame_counts_is_refused(val_set, root, cfg):
    bad = with_frames(cfg, 'past', cfg.num_past_frames, future=2)  # 'past' layout with future
    with pytest.raises(FrameLayoutError, match='future_blocked or future_interleaved'):
        NuScenesMultiFrameDataset(val_set.infos, root, bad, training=False, load_images=False)


def test_collate_stacks_a_batch(val_set):
    batch = collate([val_set[1], val_set[2]])
    assert batch['images'].shape == (2, 24, 3, 96, 256)
    assert batch['lidar2img'].dtype.is_floating_point and batch['lidar2img'].shape == (2, 24, 4, 4)
    assert str(batch['timestamps'].dtype) == 'torch.float64'
    assert len(batch['gt_boxes']) == 2 and batch['gt_boxes'][0].shape[1] == 9
    assert batch['meta'][0]['sample_token'] == val_set.infos[1]['token']

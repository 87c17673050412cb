"""StreamingDetector: feature cache, history selection, pose-based lidar2img, resets.

The central specification is ``test_stream_equals_offline_recompute``: stepping a stream of
frames gives the same head outputs as the official low-level forward over all T*6 images of
the same frames, with every lidar2img built independently (official row-vector convention).
"""
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from sparsebev_core.frame import CameraView, Detections, Frame, InvalidFrameError
from sparsebev_core.geometry import CAMERA_NAMES
from sparsebev_core.model.coder import decode_predictions
from sparsebev_core.recipe.config import ModelConfig
from sparsebev_core.errors import InputError
from sparsebev_core.recipe.frame_layout import FrameLayoutError
from sparsebev_core.recipe.presets import get_preset
from sparsebev_core.resets import EXPLICIT, TIME_BACKWARDS, TIME_GAP
from sparsebev_core.streaming.detector import StreamingDetector
from sparsebev_core.streaming.feature_cache import FeatureSlots
from sparsebev_core.streaming.history import select_history
from sparsebev_core.streaming.options import StreamingOptions, StreamingOptionsError
from sparsebev_core.streaming.runtime import EagerRuntime, Runtime

sys.path.insert(0, str(Path(__file__).parent / 'parity'))
import inputs as rig  # noqa: E402  (nuScenes calibration and an ego trajectory, numpy only)

ORIG_H, ORIG_W = 225, 400          # synthetic cameras: nuScenes 1600x900 scaled by 1/4
T0 = 1533151603.547590             # nuScenes-like absolute time (s)


# ------------------------------------------------------------------------------ fixtures
def _camera_calibration(name: str) -> tuple[np.ndarray, np.ndarray]:
    cal = rig.CAMERAS[name]
    K = np.asarray(cal['intrinsic'], np.float64).copy()
    K[:2] *= ORIG_W / 1600.0                                        # 1/4 scale
    return K, rig.make_T(rig.quat_to_rot(cal['rotation']), cal['translation'])


T_EGO_LIDAR = rig.make_T(rig.quat_to_rot(rig.LIDAR_TOP['rotation']), rig.LIDAR_TOP['translation'])


def _images(seed: int) -> list[np.ndarray]:
    """Six blocky RGB images (structure at several scales so features differ per frame)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, ORIG_H // 15 + 1, ORIG_W // 16 + 1, 3), dtype=np.uint8)
    images = []
    for c in range(6):
        up = cv2.resize(coarse[c], (ORIG_W, ORIG_H), interpolation=cv2.INTER_NEAREST)
        noise = rng.integers(-20, 21, (ORIG_H, ORIG_W, 3))
        images.append(np.clip(up.astype(int) + noise, 0, 255).astype(np.uint8))
    return images


def make_frame(index: int, stamp: float, seed: int = 0, encode: bool = False,
               key: str = '') -> Frame:
    """Frame ``index`` of a drive at 5 m/s with a slight left turn; cameras fire with offsets."""
    cameras = []
    for c, (name, image) in enumerate(zip(CAMERA_NAMES, _images(1000 * seed + index))):
        cam_stamp = stamp + rig.CAM_TIME_OFFSETS[c]
        K, T_ego_cam = _camera_calibration(name)
        data = cv2.imencode('.jpg', image[:, :, ::-1])[1].tobytes() if encode else image
        cameras.append(CameraView(data, K, T_ego_cam, cam_stamp,
                                  rig.ego_pose(cam_stamp - T0, 400.0, 900.0, 0.3), name))
    return Frame(cameras, stamp, rig.ego_pose(stamp - T0, 400.0, 900.0, 0.3), T_EGO_LIDAR,
                 key=key)


def keyframe_stamps(n: int, seed: int = 0) -> list[float]:
    """2 Hz keyframes with +-20 ms jitter (nuScenes-like)."""
    jitter = np.random.default_rng(seed).uniform(-0.02, 0.02, n)
    return [T0 + 0.5 * i + jitter[i] for i in range(n)]


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def detector(tiny, **kwargs) -> StreamingDetector:
    model, cfg = tiny
    kwargs.setdefault('score_threshold', 0.0)        # random weights: keep the top-k boxes
    kwargs.setdefault('max_detections', 30)
    return StreamingDetector(model, cfg, options=StreamingOptions(**kwargs))


# ------------------------------------------------------------- the independent offline path
def official_lidar2img(cur: Frame, past_cam: CameraView, ida: np.ndarray) -> np.ndarray:
    """lidar2img in the official info/loader convention (row vectors, transposed rotations).

    sensor2global_rotation = R_s2e^T R_e2g^T and sensor2global_translation = t_s2e R_e2g^T
    + t_e2g as ``gen_sweep_info.py`` stores them; a current-lidar point q (row) reaches the
    past camera as (q R_l2g + t_l2g - t_s2g) R_s2g^T.
    """
    def row_pose(T_ego_sensor, T_world_ego):
        R_s2e, t_s2e = T_ego_sensor[:3, :3], T_ego_sensor[:3, 3]
        R_e2g, t_e2g = T_world_ego[:3, :3], T_world_ego[:3, 3]
        return R_s2e.T @ R_e2g.T, t_s2e @ R_e2g.T + t_e2g

    R_l2g, t_l2g = row_pose(cur.T_ego_model, cur.T_world_ego)
    R_s2g, t_s2g = row_pose(past_cam.T_ego_cam, past_cam.T_world_ego)
    lidar2cam = np.eye(4)
    lidar2cam[:3, :3] = (R_l2g @ R_s2g.T).T
    lidar2cam[:3, 3] = (t_l2g - t_s2g) @ R_s2g.T
    viewpad = np.eye(4)
    viewpad[:3, :3] = past_cam.K
    return ida @ viewpad @ lidar2cam


def official_test_image(image: np.ndarray, final_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """RandomTransformImage at test time, written out: PIL bicubic resize, bottom crop."""
    fH, fW = final_hw
    H, W = image.shape[:2]
    r = max(fH / H, fW / W)
    new_w, new_h = int(W * r), int(H * r)
    left, top = int(max(0, new_w - fW) / 2), new_h - fH
    out = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC)
                     .crop((left, top, left + fW, top + fH)))
    ida = np.eye(4)
    ida[0, 0] = ida[1, 1] = r
    ida[0, 2], ida[1, 2] = -left, -top
    return out, ida


def offline_inputs(frames: list[Frame], cfg: ModelConfig, current: Frame | None = None):
    """images [1, T*6, 3, H, W], lidar2img [1, T*6, 4, 4], stamps [1, T*6] for ``frames``
    (frame 0 = current), recomputed from scratch."""
    current = current or frames[0]
    images, lidar2img, stamps = [], [], []
    for frame in frames:
        for cam in frame.cameras:
            pixels = cam.image if isinstance(cam.image, np.ndarray) else \
                cv2.imdecode(np.frombuffer(cam.image, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
            net_image, ida = official_test_image(np.ascontiguousarray(pixels), cfg.input_size)
            images.append(torch.tensor(net_image).permute(2, 0, 1))
            lidar2img.append(official_lidar2img(current, cam, ida))
            stamps.append(cam.stamp)
    return (torch.stack(images)[None],
            torch.tensor(np.stack(lidar2img), dtype=torch.float32)[None],
            torch.tensor(stamps, dtype=torch.float64)[None])


# ------------------------------------------------------------------------- the specification
def test_stream_equals_offline_recompute(tiny):
    model, cfg = tiny
    T = cfg.num_frames
    frames = [make_frame(i, s, encode=(i % 2 == 1)) for i, s in enumerate(keyframe_stamps(6))]
    stream = detector(tiny)
    for i, frame in enumerate(frames):
        detections = stream.step(frame)
        history = [frames[max(i - k, 0)] for k in range(T)]          # official: previous
        assert stream.last_step.keys == [f.key for f in history]      # keyframes, clamped
        images, lidar2img, stamps = offline_inputs(history, cfg)
        np.testing.assert_allclose(stream.last_step.lidar2img, lidar2img[0].numpy(),
                                   rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(stream.last_step.timestamps, stamps[0].numpy())
        with torch.no_grad():
            offline = model(images, lidar2img, stamps)
        for name in ('all_cls_scores', 'all_bbox_preds'):
            torch.testing.assert_close(stream.last_step.outputs[name], offline[name],
                                       rtol=1e-4, atol=1e-4)
        expected = model.decode(offline, score_threshold=0.0, max_num=30)[0]
        np.testing.assert_allclose(detections.boxes, expected['boxes'].numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(detections.scores, expected['scores'].numpy(), atol=1e-5)
        np.testing.assert_array_equal(detections.labels, expected['labels'].numpy())
        assert detections.stamp == frame.stamp and len(detections) == 30
        assert {'preprocess', 'backbone', 'head', 'postprocess'} <= set(detections.timings)

    # the comparison is sensitive to the geometry: past cameras projected with their own
    # (stale) reference pose instead of the current one give different outputs
    ida = official_test_image(np.zeros((ORIG_H, ORIG_W, 3), np.uint8), cfg.input_size)[1]
    stale = torch.tensor(np.stack([official_lidar2img(f, cam, ida) for f in history
                                   for cam in f.cameras]), dtype=torch.float32)[None]
    with torch.no_grad():
        wrong = model(images, stale, stamps)
    assert (wrong['all_bbox_preds'] - stream.last_step.outputs['all_bbox_preds']).abs().max() > 1e-2


def test_backbone_runs_on_the_current_six_images_only(tiny):
    model, cfg = tiny
    batches = []
    hook = model.img_backbone.register_forward_hook(lambda m, i, o: batches.append(i[0].shape[0]))
    try:
        stream = detector(tiny)
        for i, s in enumerate(keyframe_stamps(3)):
            stream.step(make_frame(i, s))
        stream.step(make_frame(2, keyframe_stamps(3)[2]))           # same key again: cached
    finally:
        hook.remove()
    assert batches == [6, 6, 6]


def test_cold_start_duplicates_current_frame_with_zero_time_diff(tiny):
    model, cfg = tiny
    frame = make_frame(0, T0)
    stream = detector(tiny)
    stream.step(frame)
    record = stream.last_step
    assert record.keys == [frame.key] * cfg.num_frames
    stamps = record.timestamps.reshape(cfg.num_frames, 6)
    np.testing.assert_array_equal(stamps, np.repeat(stamps[:1], cfg.num_frames, axis=0))
    l2i = record.lidar2img.reshape(cfg.num_frames, 6, 4, 4)
    np.testing.assert_array_equal(l2i, np.repeat(l2i[:1], cfg.num_frames, axis=0))
    # second frame: slot 1 = the first frame, the older slots duplicate it (oldest available)
    second = make_frame(1, T0 + 0.5)
    stream.step(second)
    assert stream.last_step.keys == [second.key] + [frame.key] * (cfg.num_frames - 1)


# ------------------------------------------------------------------------- history selection
def test_history_selection_takes_previous_keyframes_at_2hz():
    stamps = keyframe_stamps(12, seed=3)
    for i in range(len(stamps)):
        chosen = select_history(stamps[:i], stamps[i], 7, 0.5)
        assert chosen == [max(i - k, 0) if i > 0 else None for k in range(1, 8)]


def test_history_selection_on_a_12hz_stream_takes_every_sixth_frame():
    stamps = [T0 + k / 12.0 + 0.002 * math.sin(k) for k in range(60)]
    chosen = select_history(stamps[:59], stamps[59], 7, 0.5)
    assert chosen == [59 - 6 * k for k in range(1, 8)]
    # slower than 2 Hz (1.5 Hz): still one frame back per slot
    stamps = [T0 + k / 1.5 for k in range(5)]
    assert select_history(stamps[:4], stamps[4], 3, 0.5) == [3, 2, 1]


def test_history_selection_never_puts_a_newer_frame_in_an_older_slot():
    rng = np.random.default_rng(0)
    for _ in range(200):
        past = list(T0 + np.sort(rng.uniform(-4.0, 0.0, rng.integers(0, 20))))
        rng.shuffle(past)
        chosen = select_history(past, T0, 7, 0.5)
        chosen_stamps = [T0 if c is None else past[c] for c in chosen]
        assert all(b <= a for a, b in zip([T0] + chosen_stamps, chosen_stamps))
        if past:
            assert chosen_stamps[0] < T0
        for previous, stamp in zip(chosen_stamps, chosen_stamps[1:]):
            if stamp == previous:                            # a duplicated slot only when
                assert stamp == min(past, default=T0)        # no older frame is left


def test_cache_keeps_only_frames_that_can_still_be_chosen(tiny):
    model, cfg = tiny
    stream = detector(tiny, max_detections=5)
    stamps = [T0 + k / 6.0 for k in range(11)]                        # 6 Hz stream
    for k, s in enumerate(stamps):
        stream.step(make_frame(k, s))
        oldest_used = min(float(key) for key in stream.last_step.keys)
        assert all(float(key) >= oldest_used for key in stream.cached_keys)
    assert stream.last_step.keys == [f'{stamps[k]:.6f}' for k in (10, 7, 4, 1)]
    assert stream.cached_keys == [f'{stamps[k]:.6f}' for k in range(1, 11)]   # 0 evicted


# ---------------------------------------------------------------------------------- resets
def test_reset_when_time_goes_backwards(tiny):
    stream = detector(tiny, max_detections=5)
    for i, s in enumerate(keyframe_stamps(3)):
        stream.step(make_frame(i, s))
    loop = make_frame(0, keyframe_stamps(1)[0] - 0.1, seed=1)        # bag loops
    stream.step(loop)
    assert stream.last_step.reset_reason == TIME_BACKWARDS
    assert 'backwards' in stream.last_step.reset_detail
    assert stream.last_step.keys == [loop.key] * 4 and stream.cached_keys == [loop.key]


def test_reset_on_a_gap_longer_than_max_time_gap(tiny):
    stream = detector(tiny, max_detections=5, max_time_gap=1.0)
    stream.step(make_frame(0, T0))
    stream.step(make_frame(1, T0 + 0.9))                               # under the limit
    assert stream.last_step.reset_reason == '' and len(set(stream.last_step.keys)) == 2
    late = make_frame(2, T0 + 2.0)
    detections = stream.step(late)
    assert stream.last_step.reset_reason == detections.reset_reason == TIME_GAP
    assert 'max_time_gap' in stream.last_step.reset_detail == detections.reset_detail
    assert stream.last_step.keys == [late.key] * 4


def test_explicit_reset_forgets_history(tiny):
    stream = detector(tiny, max_detections=5)
    stream.step(make_frame(0, T0))
    stream.reset()
    frame = make_frame(1, T0 + 0.5)
    assert stream.step(frame).reset_reason == EXPLICIT
    assert stream.last_step.reset_reason == EXPLICIT and stream.last_step.keys == [frame.key] * 4
    assert stream.step(make_frame(2, T0 + 1.0)).reset_reason == ''
    assert stream.last_step.reset_reason == ''


# ---------------------------------------------------------------------------- bad input
def test_future_presets_are_rejected_with_a_pointer_to_offline_eval(tiny):
    model, _ = tiny
    cfg = get_preset('vov99_dd3d_1600x640_trainval_future')
    with pytest.raises(FrameLayoutError, match='future frames.*sparsebev eval --mode offline') \
            as refused:
        StreamingDetector(model, cfg)
    assert isinstance(refused.value, InputError)             # one line and exit 1 in commands


def test_corrupt_image_raises_and_leaves_the_memory_intact(tiny):
    stream = detector(tiny, max_detections=5)
    first = make_frame(0, T0)
    stream.step(first)
    broken = make_frame(1, T0 + 0.5, encode=True)
    broken.cameras[3].image = broken.cameras[3].image[:200]             # truncated JPEG
    with pytest.raises(InvalidFrameError, match='CAM_BACK.*JPEG'):
        stream.step(broken)
    good = make_frame(2, T0 + 1.0)
    stream.step(good)
    assert stream.last_step.reset_reason == ''
    assert stream.last_step.keys == [good.key] + [first.key] * 3


@pytest.mark.parametrize('field, words', [
    ('frame_pose_none', 'T_world_ego is missing'),
    ('camera_pose_nan', 'T_world_ego must be a finite'),
    ('extrinsic_scaled', 'not a rigid transform'),
    ('focal_zero', 'focal'),
    ('duplicate_camera_name', 'names must be unique'),
])
def test_bad_geometry_is_reported_never_assumed(tiny, field, words):
    frame = make_frame(0, T0)
    if field == 'frame_pose_none':
        frame.T_world_ego = None
    elif field == 'camera_pose_nan':
        frame.cameras[2].T_world_ego = np.full((4, 4), np.nan)
    elif field == 'extrinsic_scaled':
        frame.cameras[0].T_ego_cam = frame.cameras[0].T_ego_cam * 2.0
    elif field == 'focal_zero':
        frame.cameras[4].K = np.zeros((3, 3))
    else:
        frame.cameras[1].name = 'CAM_BACK'
    with pytest.raises(InvalidFrameError, match=words):
        detector(tiny).step(frame)


def test_reduced_precision_changes_the_outputs_slightly(tiny):
    frame = make_frame(0, T0)
    outputs = {}
    for precision in ('fp32', 'fp16'):
        stream = detector(tiny, precision=precision, max_detections=5)
        stream.step(frame)
        outputs[precision] = stream.last_step.outputs['all_bbox_preds']
    assert outputs['fp16'].dtype == torch.float32                    # outputs are float32
    difference = (outputs['fp16'] - outputs['fp32']).abs().max()
    assert 0 < difference < 0.1
    with pytest.raises(StreamingOptionsError, match='precision'):
        detector(tiny, precision='int8')


def test_parallel_and_fast_preprocessing_keep_the_pixels(tiny):
    frame = make_frame(0, T0, encode=True)
    records = {}
    for name, options in (('serial', {}), ('threads', dict(preprocess_workers=3)),
                          ('torch', dict(resize_method='torch'))):
        stream = detector(tiny, max_detections=5, **options)
        stream.step(frame)
        records[name] = stream.last_step.outputs['all_cls_scores']
    assert torch.equal(records['serial'], records['threads'])
    torch.testing.assert_close(records['torch'], records['serial'], rtol=0, atol=5e-2)
    with pytest.raises(ValueError, match='resize_method'):
        detector(tiny, resize_method='lanczos')


def test_12hz_stream_at_a_keyframe_equals_offline_over_the_previous_keyframes(tiny):
    model, cfg = tiny
    stamps = [T0 + k / 12.0 for k in range(19)]                       # 1.5 s of a 12 Hz rig
    frames = [make_frame(k, s) for k, s in enumerate(stamps)]
    stream = detector(tiny, max_detections=5)
    for frame in frames:
        stream.step(frame)
    history = [frames[18 - 6 * k] for k in range(cfg.num_frames)]    # keyframes 0.5 s apart
    assert stream.last_step.keys == [f.key for f in history]
    images, lidar2img, stamps_t = offline_inputs(history, cfg)
    with torch.no_grad():
        offline = model(images, lidar2img, stamps_t)
    torch.testing.assert_close(stream.last_step.outputs['all_bbox_preds'],
                               offline['all_bbox_preds'], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------- the runtime seam
def test_gathered_slots_equal_the_concatenating_path_bit_for_bit(tiny):
    """The head reading the T chosen frames from the cache slots (index_select) and taking the
    time differences from outside gives exactly what the previous path gave: each frame's
    features from its own backbone run, concatenated frame-major, through ``forward_head``
    with the float64 stamps."""
    model, cfg = tiny
    stream = detector(tiny)
    stamps = [T0 + k / 6.0 for k in range(9)]                        # 6 Hz: slots get reused
    frames = [make_frame(k, s, encode=(k % 3 == 0)) for k, s in enumerate(stamps)]
    features_of = {}
    with torch.inference_mode():
        for frame in frames:
            images, _ = stream.camera_inputs.prepare(frame)          # the same pixels [6, 3, H, W]
            features_of[frame.key] = [f[0] for f in model.extract_features(images[None])]
            stream.step(frame)
            record = stream.last_step
            concatenated = [torch.cat([features_of[key][level] for key in record.keys])[None]
                            for level in range(cfg.head.num_levels)]     # [1, T*6, C, h, w]
            expected = model.forward_head(concatenated, torch.from_numpy(record.lidar2img)[None],
                                          torch.from_numpy(record.timestamps)[None])
            for name in ('all_cls_scores', 'all_bbox_preds'):
                assert torch.equal(record.outputs[name], expected[name]), name
    assert len(set(record.slots)) == cfg.num_frames                  # T distinct frames


def test_each_frame_is_written_once_into_stable_buffers(tiny):
    """In steady state a step writes one slot (the new frame's) and leaves the buffers where
    they were: no per-step concatenation or reallocation of cached features."""
    model, cfg = tiny
    stream = detector(tiny, max_detections=5)
    stamps = keyframe_stamps(8)
    for k in range(cfg.num_frames + 1):
        stream.step(make_frame(k, stamps[k]))
    slots = stream.feature_slots
    assert slots.capacity == cfg.num_frames + 1                     # 2 Hz: never grown
    for k in range(cfg.num_frames + 1, 8):
        before = [level.clone() for level in slots.levels]
        pointers = [level.data_ptr() for level in slots.levels]
        stream.step(make_frame(k, stamps[k]))
        new_slot = stream.last_step.slots[0]
        assert [level.data_ptr() for level in slots.levels] == pointers
        for level, old in zip(slots.levels, before):
            changed = [s for s in range(slots.capacity) if not torch.equal(level[s], old[s])]
            assert changed == [new_slot]
        assert slots.num_used == len(stream.cached_keys) == cfg.num_frames
    before = [level.clone() for level in slots.levels]
    stream.step(make_frame(7, stamps[7]))                           # the same frame again
    assert all(torch.equal(level, old) for level, old in zip(slots.levels, before))


def test_cache_buffers_grow_by_doubling_up_to_the_cap(tiny):
    model, cfg = tiny
    stream = detector(tiny, max_detections=5, max_cached_frames=7)
    capacities = []
    for k in range(14):                                             # 12 Hz: 3 * 6 + 1 frames wanted
        stream.step(make_frame(k, T0 + k / 12.0))
        capacities.append(stream.feature_slots.capacity)
        assert stream.feature_slots.num_used == len(stream.cached_keys) <= 7
    assert capacities[0] == cfg.num_frames + 1 and max(capacities) == 7 + 1
    assert sorted(set(capacities)) == [cfg.num_frames + 1, 7 + 1]   # 5, then min(10, 8)
    stream.reset()
    assert stream.feature_slots.num_used == 0 and stream.feature_slots.capacity == 8   # kept


def test_feature_slots_store_release_and_refuse_bad_shapes():
    slots = FeatureSlots(max_slots=3)
    frame = [torch.full((6, 4, 2, 3), 1.0), torch.full((6, 4, 1, 2), 1.0)]
    assert slots.levels == [] and slots.capacity == 0
    a = slots.store(frame)
    b = slots.store([f * 2 for f in frame])
    c = slots.store([f * 3 for f in frame])
    assert (a, b, c) == (0, 1, 2) and slots.capacity == 3            # 1 -> 2 -> min(4, 3)
    assert [tuple(level.shape) for level in slots.levels] == [(3, 6, 4, 2, 3), (3, 6, 4, 1, 2)]
    assert torch.equal(slots.levels[1][b], frame[1] * 2)
    with pytest.raises(RuntimeError, match='all 3 feature slots are in use'):
        slots.store(frame)
    slots.release(b)
    with pytest.raises(ValueError, match='not in use'):
        slots.release(b)
    assert slots.store([f * 4 for f in frame]) == b and torch.equal(slots.levels[0][b], frame[0] * 4)
    assert torch.equal(slots.levels[0][c], frame[0] * 3)             # untouched by the others
    with pytest.raises(ValueError, match='do not fit'):
        slots.store([torch.zeros(6, 4, 2, 2), frame[1]])


class CountingRuntime:
    """A runtime of our own: wraps the eager one, counts the calls and records the slots."""

    def __init__(self, inner: EagerRuntime):
        self.inner = inner
        self.device = inner.device
        self.legacy_yaw_convention = inner.legacy_yaw_convention
        self.encoded = 0
        self.heads: list[list[int]] = []

    def encode(self, images):
        assert images.dtype == torch.uint8 and images.shape[:2] == (6, 3)
        self.encoded += 1
        return self.inner.encode(images)

    def run_head(self, cache_levels, slots, lidar2img, time_diff):
        assert slots.dtype == torch.int64 and time_diff.dtype == torch.float32
        self.heads.append(slots.tolist())
        return self.inner.run_head(cache_levels, slots, lidar2img, time_diff)


def test_any_runtime_with_the_two_calls_plugs_into_the_streaming_logic(tiny):
    model, cfg = tiny
    runtime = CountingRuntime(EagerRuntime(model))
    assert isinstance(runtime, Runtime)
    plugged = StreamingDetector(runtime, cfg,
                                options=StreamingOptions(score_threshold=0.0, max_detections=10))
    reference = detector(tiny, max_detections=10)
    frames = [make_frame(k, s) for k, s in enumerate(keyframe_stamps(5))]
    for frame in frames + [frames[-1]]:                              # the last one twice: cached
        ours, theirs = plugged.step(frame), reference.step(frame)
        np.testing.assert_array_equal(ours.boxes, theirs.boxes)
        np.testing.assert_array_equal(ours.scores, theirs.scores)
        assert plugged.last_step.keys == reference.last_step.keys
    assert runtime.encoded == len(frames) and len(runtime.heads) == len(frames) + 1
    assert runtime.heads[-1] == plugged.last_step.slots
    with pytest.raises(TypeError, match='neither a SparseBEV model nor a runtime'):
        StreamingDetector(object(), cfg)
    with pytest.raises(StreamingOptionsError, match='own precision'):
        StreamingDetector(runtime, cfg, options=StreamingOptions(precision='fp16'))


def test_decoding_is_one_function_for_the_head_and_the_stream(tiny):
    model, cfg = tiny
    stream = detector(tiny, score_threshold=0.0, max_detections=7)
    frame = make_frame(0, T0)
    detections = stream.step(frame)
    outputs = stream.last_step.outputs
    decoded = decode_predictions(outputs['all_cls_scores'][-1:], outputs['all_bbox_preds'][-1:],
                                 cfg.head, score_threshold=0.0, max_num=7)[0]   # L = 1 is enough
    via_head = model.decode(outputs, score_threshold=0.0, max_num=7)[0]
    for name in ('boxes', 'scores', 'labels', 'query_index'):
        assert torch.equal(decoded[name], via_head[name])
    expected = Detections.from_decoded(decoded, frame.stamp, cfg.class_names)
    np.testing.assert_array_equal(detections.boxes, expected.boxes)
    assert detections.boxes.dtype == np.float64 and detections.scores.dtype == np.float32
    assert detections.labels.dtype == np.int64 and len(detections) == 7


def test_a_failing_head_or_a_reused_key_leaks_no_slot(tiny):
    model, cfg = tiny

    class FailsOnce(CountingRuntime):
        fail = False

        def run_head(self, *args):
            if self.fail:
                self.fail = False
                raise RuntimeError('out of memory')
            return super().run_head(*args)

    runtime = FailsOnce(EagerRuntime(model))
    stream = StreamingDetector(runtime, cfg, options=StreamingOptions(max_detections=5))
    stamps = keyframe_stamps(4)
    stream.step(make_frame(0, stamps[0]))
    stream.step(make_frame(1, stamps[1]))
    runtime.fail = True
    with pytest.raises(RuntimeError, match='out of memory'):
        stream.step(make_frame(2, stamps[2]))
    assert stream.feature_slots.num_used == len(stream.cached_keys) == 2
    stream.step(make_frame(3, stamps[3], key='same'))
    stream.step(make_frame(4, stamps[3] + 0.5, key='same'))          # same key, new stamp
    assert stream.cached_keys.count('same') == 1
    assert stream.feature_slots.num_used == len(stream.cached_keys)

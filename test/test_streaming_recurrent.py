"""StreamingDetector with a recurrent SparseBEV++ model (``tiny_memory``): the state carried by
the streaming layer, the runtime seam's fixed-shape head call, the resets and their two rules,
missing cameras, the memory a stream holds.

The central check is ``test_a_stream_equals_the_model_call_with_the_state_carried``: stepping
frames gives what the official-form model call gives (``forward_recurrent`` with the
variable-form state and the ego motion from the frames' poses), within float rounding of the
masked fixed-shape memory.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sparsebev_core.frame import CameraView, Frame
from sparsebev_core.model.detector import build_model
from sparsebev_core.model.recurrent_state import EgoMotion
from sparsebev_core.recipe.presets import get_preset
from sparsebev_core.resets import EXPLICIT, RIG_CHANGED, TIME_BACKWARDS, TIME_GAP
from sparsebev_core.streaming.detector import StreamingDetector
from sparsebev_core.streaming.options import StreamingOptions, StreamingOptionsError
from sparsebev_core.streaming.runtime import EagerRuntime
from test_streaming import keyframe_stamps, make_frame

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def tiny_v2():
    """tiny_memory, seeded random weights with moving queries, eval mode."""
    torch.manual_seed(0)
    cfg = get_preset('tiny_memory')
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.pts_bbox_head.init_query_bbox.weight[:, 8:10].uniform_(-2, 2)
    return model, cfg


def detector_for(tiny_v2, **options) -> StreamingDetector:
    model, cfg = tiny_v2
    return StreamingDetector(model, cfg, options=StreamingOptions(**options))


def model_pose(frame: Frame) -> np.ndarray:
    return frame.T_world_ego @ frame.T_ego_model


def memory_rows(detector: StreamingDetector) -> int:
    return int(detector.recurrent_state.memory_rows[0])


def test_a_stream_equals_the_model_call_with_the_state_carried(tiny_v2):
    model, cfg = tiny_v2
    detector = detector_for(tiny_v2, score_threshold=0.0)
    frames = [make_frame(i, t) for i, t in enumerate(keyframe_stamps(5))]
    state = previous = None
    for frame in frames:
        detections = detector.step(frame)
        record = detector.last_step
        images, _ = detector.camera_inputs.prepare(frame)
        with torch.no_grad():
            features = model.extract_features(images[None])
            motion = None if previous is None else EgoMotion.from_poses(
                previous.stamp, frame.stamp, model_pose(previous)[None], model_pose(frame)[None])
            expected, state = model.forward_recurrent(
                features, torch.from_numpy(record.lidar2img)[None], state, motion)
        out = record.outputs
        assert record.keys == [frame.key] and record.lidar2img.shape == (6, 4, 4)
        assert out['propagation_used'].tolist() == [previous is not None]
        torch.testing.assert_close(out['all_cls_scores'], expected['all_cls_scores'], atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(out['all_bbox_preds'], expected['all_bbox_preds'], atol=2e-5, rtol=1e-5)
        assert torch.equal(out['propagated_index'], expected['propagated_index'])
        carried = detector.recurrent_state
        assert memory_rows(detector) == state.memory_rows_used
        torch.testing.assert_close(carried.memory_bbox[:, :state.memory_rows_used], state.memory_bbox,
                                   atol=2e-5, rtol=1e-5)
        assert len(detections.scores) == cfg.head.max_num and detections.reset_reason == ''
        previous = frame
    assert detector.cached_keys == []                       # no feature cache


def test_the_stream_holds_a_fixed_size_state_and_no_features(tiny_v2):
    _, cfg = tiny_v2
    detector = detector_for(tiny_v2)
    m, c = cfg.head.memory, cfg.head.embed_dims
    expected = 4 * ((m.num_propagated + m.memory_len) * (c + 10)) + 8          # float32 + int64
    sizes = []
    for i, t in enumerate(keyframe_stamps(6)):
        detector.step(make_frame(i, t))
        sizes.append(detector.held_bytes())
        state = detector.recurrent_state
        assert state.memory_feat.shape == (1, m.memory_len, c)
    assert sizes == [expected] * 6
    assert detector.feature_slots is None
    assert [memory_rows(detector)] == [m.memory_len]


@pytest.mark.parametrize('rule', ['clear', 'official'])
def test_resets_clear_the_state_or_keep_it_by_the_named_rule(tiny_v2, rule):
    """Ours ('clear'): every reset forgets the propagated queries, the memory queue and the
    previous pose, like v1's feature cache. 'official': the state survives every reset, and
    only the 2 s time gate drops the propagated queries (docs/official_model.md 13.7)."""
    _, cfg = tiny_v2
    chunk, limit = cfg.head.memory.len_per_frame, cfg.head.memory.memory_len
    detector = detector_for(tiny_v2, recurrent_reset=rule, max_time_gap=2.0)
    stamps = keyframe_stamps(3)
    for i, t in enumerate(stamps):
        detector.step(make_frame(i, t))
    assert memory_rows(detector) == 3 * chunk
    keep = rule == 'official'

    def rows_after(reset_key: str, used: bool, frame: Frame) -> None:
        before = memory_rows(detector)
        detections = detector.step(frame)
        assert detections.reset_reason == reset_key                 # reported under both rules
        assert memory_rows(detector) == (min(before + chunk, limit) if keep else chunk)
        assert detector.last_step.outputs['propagation_used'].tolist() == [keep and used]

    t = stamps[-1]
    rows_after(TIME_GAP, False, make_frame(3, t + 2.5))             # over the gap and the gate
    rows_after(TIME_BACKWARDS, True, make_frame(4, t + 2.0))         # 0.5 s back: the gate passes
    detector.reset()
    rows_after(EXPLICIT, True, make_frame(5, t + 2.5))
    five = make_frame(6, t + 3.0)
    renamed = Frame([dataclasses.replace(c, name=f'cam{k}') for k, c in enumerate(five.cameras)],
                    five.stamp, five.T_world_ego, five.T_ego_model)
    rows_after(RIG_CHANGED, True, renamed)                           # no camera axis in the state


def test_a_missing_camera_is_never_sampled(tiny_v2):
    """A degraded frame (CameraView.absent) runs with valid_views: its result is the model
    call in which that camera's features are anything at all, masked."""
    model, _ = tiny_v2
    detector = detector_for(tiny_v2)
    stamps = keyframe_stamps(2)
    first = make_frame(0, stamps[0])
    detector.step(first)
    start = detector.recurrent_state
    full = make_frame(1, stamps[1])
    cams = list(full.cameras)
    cams[2] = CameraView.absent(cams[2].name, 'dropped', cams[2].stamp, cams[2].K, cams[2].T_ego_cam)
    degraded = Frame(cams, full.stamp, full.T_world_ego, full.T_ego_model)
    detections = detector.step(degraded)
    record = detector.last_step
    assert detections.missing_cameras == {cams[2].name: 'dropped'}
    assert record.valid_views.tolist() == [True, True, False, True, True, True]

    images, _ = detector.camera_inputs.prepare(full)              # the camera's real image ...
    with torch.no_grad():
        features = model.extract_features(images[None])
        for level in features:
            level[:, 2] = 1e3                                      # ... or garbage: never read
        motion = EgoMotion.from_poses(first.stamp, full.stamp, model_pose(first)[None],
                                      model_pose(full)[None])
        valid = torch.tensor([[True, True, False, True, True, True]])
        expected, _ = model.forward_recurrent(features, torch.from_numpy(record.lidar2img)[None],
                                              start, motion, valid_views=valid)
    torch.testing.assert_close(record.outputs['all_cls_scores'], expected['all_cls_scores'],
                               atol=2e-5, rtol=1e-5)


def test_runtimes_and_options_that_cannot_run_a_recurrent_model_are_refused(tiny_v2):
    model, cfg = tiny_v2

    class FeatureCacheOnly:                 # a v1 runtime: encode + run_head, no recurrent call
        device = torch.device('cpu')
        legacy_yaw_convention = False

        def encode(self, images):
            raise AssertionError('never called')

        def run_head(self, cache_levels, slots, lidar2img, time_diff, valid_views=None):
            raise AssertionError('never called')

    with pytest.raises(StreamingOptionsError, match='run_recurrent_head'):
        StreamingDetector(FeatureCacheOnly(), cfg)
    with pytest.raises(StreamingOptionsError, match='compile_head'):
        StreamingDetector(model, cfg, options=StreamingOptions(compile_head=True))
    with pytest.raises(StreamingOptionsError, match='recurrent_reset'):
        StreamingOptions(recurrent_reset='never')
    assert isinstance(StreamingDetector(EagerRuntime(model), cfg).runtime, EagerRuntime)


def test_reduced_precision_keeps_a_float32_state(tiny_v2):
    model, cfg = tiny_v2
    detector = StreamingDetector(EagerRuntime(model, 'cpu', 'bf16'), cfg)
    for i, t in enumerate(keyframe_stamps(2)):
        detector.step(make_frame(i, t))
    state = detector.recurrent_state
    assert all(t.dtype == torch.float32 for t in state.tensors())
    assert detector.last_step.outputs['all_cls_scores'].dtype == torch.float32

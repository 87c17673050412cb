"""Streaming-video training of the recurrent presets (SparseBEV++, docs/training.md "Streaming
training"): the segment walk, the state carried from step to step (in time order, detached,
cleared at segment starts), the augmented poses, and a kill + resume that equals an
uninterrupted run.

A small in-memory video (random pixels, a vehicle driving straight at 10 m/s, boxes fixed in
the world) isolates the training loop; test_train_stream_synthetic.py runs the real data,
``torchrun`` and learning.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from camera_rigs import ring_lidar2img
from sparsebev_core import geometry
from sparsebev_core.data.segments import SegmentError, SegmentWalk, scene_segments
from sparsebev_core.devices import DistInfo
from sparsebev_core.engine.train import TrainOptions, set_random_seed, train
from sparsebev_core.engine.train_data import StreamPlan
from sparsebev_core.engine.train_state import LATEST, TrainingCheckpointError
from sparsebev_core.recipe.presets import get_preset

pytestmark = pytest.mark.usefixtures('one_torch_thread')

FRAME_PERIOD = 0.5              # s between keyframes
SPEED = 10.0                    # m/s along the world x axis


# ----------------------------------------------------------------------------- the segment walk
def infos_of(scenes: dict[str, int], shuffled: bool = True) -> list[dict]:
    """Info records (scene_token, timestamp) of scenes with the given frame counts; scenes
    overlap in time and the records are not in time order, to show that neither matters."""
    infos = [dict(scene_token=name, timestamp=100.0 + FRAME_PERIOD * k, token=f'{name}-{k}')
             for name, count in scenes.items() for k in range(count)]
    if shuffled:
        infos = [infos[i] for i in np.random.default_rng(0).permutation(len(infos))]
    return infos


def test_scenes_are_cut_into_time_ordered_segments():
    infos = infos_of({'a': 5, 'b': 4, 'c': 1})
    segments = scene_segments(infos, 2)
    frames = [[infos[i]['token'] for i in seg] for seg in segments]
    assert sorted(frames) == sorted([['a-0', 'a-1', 'a-2'], ['a-3', 'a-4'],   # ceil(5 / 2) = 3
                                     ['b-0', 'b-1'], ['b-2', 'b-3'], ['c-0']])
    assert scene_segments(infos, 1) and len(scene_segments(infos, 1)) == 3
    with pytest.raises(SegmentError, match='seq_split_num'):
        scene_segments(infos, 0)


def test_every_slot_walks_whole_segments_in_order_and_slots_never_share_a_draw():
    infos = infos_of({'a': 5, 'b': 4, 'c': 6, 'd': 3})
    segments = scene_segments(infos, 2)                                     # 8 segments
    walk = SegmentWalk(segments, num_slots=3, seed=7)
    steps = {slot: [s for _, s in zip(range(40), walk.steps(slot))] for slot in range(3)}
    for slot, walked in steps.items():
        k = 0
        while k < len(walked):
            assert walked[k].segment_start
            segment = next(seg for seg in segments if seg[0] == walked[k].index)
            chunk = [s.index for s in walked[k:k + len(segment)]]
            assert chunk == segment[:len(chunk)]                            # frame by frame, in time
            assert not any(s.segment_start for s in walked[k + 1:k + len(segment)])
            k += len(segment)
    draws = [list(zip(range(12), walk.segment_order(slot))) for slot in range(3)]
    order = SegmentWalk(segments, num_slots=1, seed=7).segment_order(0)
    endless = [next(order) for _ in range(36)]
    for slot in range(3):                                                   # slot s: draws s, s+3, ...
        assert [seg for _, seg in draws[slot]] == endless[slot::3]
    other_seed = [s for _, s in zip(range(12), SegmentWalk(segments, 3, seed=8).segment_order(0))]
    assert other_seed != [seg for _, seg in draws[0]]                       # the seed shuffles


def test_a_walk_restarted_at_any_iteration_continues_where_it_was():
    segments = scene_segments(infos_of({'a': 5, 'b': 4, 'c': 6}), 2)
    walk = SegmentWalk(segments, num_slots=2, seed=3)
    full = [s for _, s in zip(range(30), walk.batches([0, 1]))]
    for start in (0, 1, 4, 7, 13):
        again = [s for _, s in zip(range(30 - start), walk.batches([0, 1], start))]
        assert again == full[start:]


def test_too_few_segments_for_the_batch_is_a_typed_error():
    with pytest.raises(SegmentError, match='2 segments cannot feed a global batch of 3'):
        SegmentWalk(scene_segments(infos_of({'a': 4}), 2), num_slots=3)


def test_the_r50_memory_recipe_runs_the_official_iteration_count():
    """docs/official_model.md 13.5: 60 x (28130 // 16) = 105,480 iterations of a total batch of
    16 (2 per process on 8 GPUs), the cosine over all of them."""
    cfg = get_preset('r50_nuimg_704x256_memory')
    train_cfg = cfg.train
    assert (train_cfg.epochs, train_cfg.total_batch_size, train_cfg.seq_split_num) == (60, 16, 2)
    assert (train_cfg.lr, train_cfg.weight_decay, train_cfg.lr_by_epoch) == (4e-4, 1e-3, False)
    assert (train_cfg.warmup_iters, train_cfg.min_lr_ratio, train_cfg.grad_clip) == (500, 1e-3, 35.0)

    class NuScenesTrainSize(torch.utils.data.Dataset):          # 700 scenes, 28130 keyframes
        infos = [dict(scene_token=f'scene-{i % 700}', timestamp=float(i)) for i in range(28130)]

        def __len__(self):
            return len(self.infos)

    plans = [StreamPlan(NuScenesTrainSize(), 2, 2, DistInfo(rank=r, world_size=8), seed=0)
             for r in (0, 7)]
    assert train_cfg.epochs * plans[0].iters_per_epoch == 105_480
    assert list(plans[0].slots) == [0, 1] and list(plans[1].slots) == [14, 15]


# ----------------------------------------------------------------------------- augmented poses
def test_the_pose_carries_the_bev_augmentation(tmp_path):
    """What the state warp is formed from (model -> world) moves with the BEV augmentation,
    so that world points project to the same pixels and GT boxes stay where they are in the
    world, whatever rotation and scale a frame draws (the official code multiplies the
    augmentation into ego_pose / ego_pose_inv)."""
    from sparsebev_core.data.dataset import build_dataset
    from sparsebev_core.data.synthetic.scenes import make_synthetic
    from sparsebev_core.engine.train_data import seeded_rngs

    root = make_synthetic(tmp_path / 'syn', num_scenes=2, seed=1, keyframes_per_scene=2,
                          progress=False)
    plain_cfg = get_preset('tiny_memory')
    plain_cfg.train.rot_range, plain_cfg.train.scale_range = (0.0, 0.0), (1.0, 1.0)
    samples = []
    for cfg in (get_preset('tiny_memory'), plain_cfg):
        dataset = build_dataset(cfg, root, version='v1.0-mini', split='train', load_images=False)
        with seeded_rngs(11):                        # the same image augmentation for both
            samples.append(dataset[1])
    augmented, plain = samples
    assert augmented['meta']['bev_rotation'] != 0.0 and plain['meta']['bev_rotation'] == 0.0
    assert not torch.allclose(augmented['model_pose'], plain['model_pose'])
    world_to_pixels = [s['lidar2img'].double() @ torch.linalg.inv(s['model_pose']) for s in samples]
    torch.testing.assert_close(world_to_pixels[0], world_to_pixels[1], rtol=1e-5, atol=1e-4)
    centres = [s['model_pose'][:3, :3] @ s['gt_boxes'][:, :3].double().T + s['model_pose'][:3, 3:]
               for s in samples]
    assert len(plain['gt_boxes']) > 0
    torch.testing.assert_close(centres[0], centres[1], rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- the training loop
class Video(torch.utils.data.Dataset):
    """Scenes of ``frames`` keyframes each, 0.5 s apart, the vehicle driving +x at 10 m/s past
    two boxes fixed in the world; random pixels from the global RNGs (as an augmenting dataset
    would draw them). ``infos`` as the nuScenes dataset has them."""

    def __init__(self, cfg, scenes: int = 2, frames: int = 6):
        self.cfg, self.frames = cfg, frames
        self.infos = [dict(scene_token=f'scene-{s}', timestamp=1000.0 * s + FRAME_PERIOD * k,
                           token=f'{s}-{k}') for s in range(scenes) for k in range(frames)]
        self.lidar2img = ring_lidar2img(cfg.input_size)         # [6, 4, 4]
        self.world_boxes = np.array([[30.0, 4.0, 0.8, 4.0, 2.0, 1.5, 0.1, 0.0, 0.0],
                                     [20.0, -6.0, 0.9, 0.8, 0.8, 1.7, 1.0, 0.0, 0.0]])

    def __len__(self):
        return len(self.infos)

    def pose(self, index: int) -> np.ndarray:
        k = index % self.frames                                  # keyframe in its scene
        return geometry.make_transform(np.eye(3), [SPEED * FRAME_PERIOD * k, 0.0, 0.0])

    def __getitem__(self, index):
        h, w = self.cfg.input_size
        boxes = self.world_boxes.copy()
        boxes[:, 0] -= self.pose(index)[0, 3]                    # in this frame's model frame
        return {'images': torch.randint(0, 256, (6, 3, h, w), dtype=torch.uint8),
                'lidar2img': self.lidar2img, 'timestamps': np.full(6, self.infos[index]['timestamp']),
                'gt_boxes': boxes.astype(np.float32), 'gt_labels': np.array([0, 8]),
                'stamp': self.infos[index]['timestamp'], 'model_pose': self.pose(index)}


def tiny_memory_cfg():
    cfg = get_preset('tiny_memory')
    cfg.train.warmup_iters = 3
    cfg.train.total_batch_size = 2
    return cfg


def run(cfg, dataset, work_dir, model=None, **options):
    set_random_seed(0, deterministic=True)
    from sparsebev_core.model.detector import build_model
    model = model or build_model(cfg)
    options = dict(dict(epochs=1, seed=0, deterministic=True, progress=False, tensorboard=False),
                   **options)
    summary = train(cfg, dataset, TrainOptions(work_dir=str(work_dir), **options),
                    torch.device('cpu'), model=model)
    return model, summary


def record_recurrent_calls(model) -> list[dict]:
    """Wrap ``model.forward`` to record the state and motion of every call and the next state."""
    calls = []
    forward = model.forward

    def spy(*args, **kwargs):
        outputs, next_state = forward(*args, **kwargs)
        calls.append(dict(state=kwargs['state'], motion=kwargs['motion'], next_state=next_state,
                          used=outputs['propagation_used']))
        return outputs, next_state
    model.forward = spy
    return calls


def test_training_steps_walk_time_ordered_segments_carrying_a_detached_state(tmp_path):
    """Each slot's frames come in time order, one per step; its state is the (detached) state
    its previous frame returned inside a segment and empty at a segment start: nothing of one
    segment leaks into the next (a leak fails the memory_rows and zero checks at the starts)."""
    from sparsebev_core.model.detector import build_model
    cfg = tiny_memory_cfg()
    video = Video(cfg, scenes=2, frames=5)                            # segments of 3 and 2 frames
    model = build_model(cfg)
    calls = record_recurrent_calls(model)
    _, summary = run(cfg, video, tmp_path, model=model, epochs=2)
    assert summary['finished'] and len(calls) == 10                    # 2 epochs of 10 // 2
    plan = StreamPlan(video, cfg.train.seq_split_num, 2, DistInfo(), seed=0).batches(0, 10)
    chunk, limit = cfg.head.memory.len_per_frame, cfg.head.memory.memory_len
    frames_in_segment = [0, 0]
    starts = 0
    for step, (call, items) in enumerate(zip(calls, plan)):
        state, motion = call['state'], call['motion']
        assert all(not t.requires_grad and t.grad_fn is None for t in state.tensors())
        for slot, (index, _, _, segment_start) in enumerate(items):
            if segment_start:
                starts += 1
                frames_in_segment[slot] = 0
                assert state.memory_rows[slot] == 0, f'step {step}: memory leaked into a new segment'
                assert all(not t[slot].any() for t in state.tensors())
                assert not call['used'][slot]                         # padding queries
                continue
            previous = calls[step - 1]['next_state']
            assert previous.memory_rows[slot] == state.memory_rows[slot] == \
                min(frames_in_segment[slot] * chunk, limit)
            for mine, before in zip(state.tensors(), previous.tensors()):
                assert torch.equal(mine[slot], before[slot])          # carried as returned
            assert call['used'][slot]
            assert motion.elapsed[slot] == pytest.approx(FRAME_PERIOD)   # the next frame in time
            moved = torch.eye(4)
            moved[0, 3] = -SPEED * FRAME_PERIOD                       # previous -> current frame
            torch.testing.assert_close(motion.prev_to_current[slot], moved)
            previous_index = plan[step - 1][slot][0]
            assert index == previous_index + 1 and \
                video.infos[index]['scene_token'] == video.infos[previous_index]['scene_token']
        frames_in_segment = [n + 1 for n in frames_in_segment]
    assert starts >= 4                                                # both slots changed segments


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    cfg = tiny_memory_cfg()
    model, summary = run(cfg, Video(cfg), tmp_path_factory.mktemp('full'))
    return cfg, model, summary


def assert_same_parameters(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f'parameters differ after resume: {different[:5]}'


def test_a_run_stopped_inside_a_segment_resumes_to_the_same_parameters(uninterrupted, tmp_path):
    cfg, full_model, summary = uninterrupted
    assert summary['finished'] and summary['position'].global_iteration == 6
    _, first = run(cfg, Video(cfg), tmp_path, max_iters=4)           # segments of 3: mid-segment
    saved = torch.load(tmp_path / LATEST, weights_only=True)
    assert saved['stream'][0]['memory_rows'].tolist() == [16, 16]     # one frame into segment 2
    resumed, second = run(cfg, Video(cfg), tmp_path, resume='auto')
    assert second['finished'] and second['position'].global_iteration == 6
    assert_same_parameters(full_model, resumed)
    assert summary['loss_history'][4:] == second['loss_history']


def test_resuming_without_the_carried_state_diverges(uninterrupted, tmp_path):
    """Guards the test above: the saved state is what makes the resumed steps equal."""
    cfg, full_model, _ = uninterrupted
    run(cfg, Video(cfg), tmp_path, max_iters=4)
    saved = torch.load(tmp_path / LATEST, weights_only=False)
    for key in ('propagated_feat', 'propagated_bbox', 'memory_feat', 'memory_bbox'):
        saved['stream'][0][key] = torch.zeros_like(saved['stream'][0][key])
    torch.save(saved, tmp_path / 'forgotten.pth')
    other, _ = run(cfg, Video(cfg), tmp_path / 'other', resume=str(tmp_path / 'forgotten.pth'))
    sa, sb = full_model.state_dict(), other.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)
    del saved['stream']
    torch.save(saved, tmp_path / 'no_stream.pth')
    with pytest.raises(TrainingCheckpointError, match='no streaming state'):
        run(cfg, Video(cfg), tmp_path / 'third', resume=str(tmp_path / 'no_stream.pth'))

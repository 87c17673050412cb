"""The nuScenes tracking metrics wrapper (``engine.tracking_eval``, the devkit's ``TrackingEval``)
on a small synthetic scene: the ground truth submitted as tracks scores AMOTA 1 with no ID
switch, and the same tracks with two objects' IDs swapped halfway count switches and lose AMOTA;
plus the greedy baseline tracker (``engine.greedy_tracker``) on constant-velocity objects.
The devkit's tracking code needs pandas and motmetrics (the ``test`` and ``tracking`` extras)."""
from __future__ import annotations

import numpy as np
import pytest

from sparsebev_core.data.synthetic.scenes import make_synthetic
from sparsebev_core.engine.evaluate import boxes_to_submission, write_submission
from sparsebev_core.engine.greedy_tracker import GreedyTracker
from sparsebev_core.engine.tracking_eval import run_tracking_eval, tracking_names, tracking_records
from sparsebev_core.errors import InputError

VERSION, EVAL_SET = 'v1.0-mini', 'mini_val'      # one synthetic scene: a mini_val one


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """One scene of 6 keyframes (images of 16x9 pixels: only the tables matter here)."""
    return make_synthetic(tmp_path_factory.mktemp('track'), num_scenes=1, seed=3,
                          keyframes_per_scene=6, image_size=(16, 9), progress=False)


@pytest.fixture(scope='module')
def ground_truth_tracks(scene):
    """The devkit's own ground-truth tracks of the scene as a submission (score 1): per sample,
    the boxes the evaluation keeps (in range, with points)."""
    from nuscenes import NuScenes
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.tracking.data_classes import TrackingBox

    config = config_factory('tracking_nips_2019')      # (also sets the devkit's class list)
    nusc = NuScenes(version=VERSION, dataroot=str(scene), verbose=False)
    gt = load_gt(nusc, EVAL_SET, TrackingBox)
    gt = filter_eval_boxes(nusc, add_center_dist(nusc, gt), config.class_range)
    results = {token: [dict({k: np.asarray(v).tolist() for k, v in box.serialize().items()},
                            tracking_score=1.0) for box in gt[token]]
               for token in gt.sample_tokens}
    assert sum(len(r) for r in results.values()) > 20
    return results


def score(results: dict, scene, path) -> dict:
    return run_tracking_eval(write_submission(results, path / 'results.json'), EVAL_SET, path,
                             VERSION, scene)


def test_perfect_tracks_score_amota_one_without_id_switches(scene, ground_truth_tracks, tmp_path):
    summary = score(ground_truth_tracks, scene, tmp_path)
    assert summary['amota'] == pytest.approx(1.0) and summary['ids'] == 0
    assert summary['amotp'] == pytest.approx(0.0, abs=1e-6)


def test_swapped_ids_count_switches_and_lower_amota(scene, ground_truth_tracks, tmp_path):
    tokens = list(ground_truth_tracks)                 # the scene's samples, in time order
    cars = [r['tracking_id'] for r in ground_truth_tracks[tokens[0]] if r['tracking_name'] == 'car']
    first, second = next((a, b) for a in cars for b in cars if a != b and all(
        {a, b} <= {r['tracking_id'] for r in ground_truth_tracks[t]} for t in tokens))
    swap = {first: second, second: first}
    swapped = {t: [dict(r, tracking_id=swap.get(r['tracking_id'], r['tracking_id'])) if k >= 3
                   else r for r in ground_truth_tracks[t]] for k, t in enumerate(tokens)}
    summary = score(swapped, scene, tmp_path)
    assert summary['ids'] == 2 and summary['amota'] < 1.0


def test_an_empty_submission_is_a_clear_error(scene, ground_truth_tracks, tmp_path):
    with pytest.raises(InputError, match='nothing to score'):
        score({t: [] for t in ground_truth_tracks}, scene, tmp_path)


def test_tracking_records_keep_the_tracking_classes_with_their_ids():
    boxes = np.array([[10.0, 0, -1, 4, 2, 1.5, 0, 1, 0], [5.0, 5, -1, 0.5, 0.5, 1, 0, 0, 0],
                      [0.0, 8, -1, 0.7, 0.7, 1.7, 0, 0, 0]])
    records = boxes_to_submission(boxes, [0.9, 0.5, 0.4], [0, 9, 8], 's', np.eye(4), np.eye(4),
                                  track_ids=np.array([7, 8, 9]))
    tracked = tracking_records(records)
    assert [(r['tracking_name'], r['tracking_id']) for r in tracked] == [('car', '7'), ('pedestrian', '9')]
    assert tracked[0]['tracking_score'] == pytest.approx(0.9) and 'barrier' not in tracking_names()


def test_greedy_tracker_follows_constant_velocity_objects_and_starts_new_tracks():
    tracker = GreedyTracker()
    # two cars 3 m apart driving side by side at 10 m/s, a pedestrian standing between them
    velocity = np.array([[10.0, 0.0], [10.0, 0.0], [0.0, 0.0]])
    names = ['car', 'car', 'pedestrian']
    ids = []
    for k in range(5):
        t = 0.5 * k
        centres = np.array([[5 * k, 0.0], [5 * k, 3.0], [20.0, 1.5]])
        order = [2, 0, 1] if k % 2 else [0, 1, 2]            # detections come in any order
        step = tracker.step(t, centres[order], velocity[order], [names[i] for i in order])
        ids.append(step[np.argsort(order)].tolist())
    assert all(frame == ids[0] for frame in ids) and sorted(ids[0]) == [1, 2, 3]
    tracker.reset()
    assert tracker.step(3.0, np.array([[25.0, 0.0]]), np.array([[10.0, 0.0]]), ['car']).tolist() == [4]

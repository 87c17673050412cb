"""Detection with cameras dropped: the bundled demo model on the demo scene (docs/rigs.md).

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/camera_dropout.py --out /tmp/dropout

Generates the demo scene (``sparsebev demo``'s seed and length), steps its keyframes through
``StreamingDetector`` (the bundled ``tiny`` weights) once with all six cameras, once per
camera dropped for the whole scene, and once with a random camera dropped in 30% of the
frames; a dropped camera is a missing view (``CameraView.absent``: never sampled). For each
run: devkit mAP / NDS over the scene, and the recall of ground-truth boxes whose centre
projects into a camera that remained (a detection of the same class within 2 m, BEV), for
the same boxes with all cameras and with the drop.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def project_into(centre_world: np.ndarray, view, image_wh: tuple[int, int]) -> bool:
    """True when a world point lies in front of the camera and inside its image."""
    from sparsebev_core.geometry import invert_transform
    T_cam_world = invert_transform(view.T_world_ego @ view.T_ego_cam)
    p = T_cam_world[:3, :3] @ centre_world + T_cam_world[:3, 3]
    if p[2] <= 0.5:
        return False
    u, v, w = view.K @ p
    return 0 <= u / w < image_wh[0] and 0 <= v / w < image_wh[1]


def recall(gt: list, predictions: list, visible: list) -> tuple[int, int]:
    """(found, total) over the GT boxes flagged ``visible`` (same class within 2 m, BEV)."""
    found = total = 0
    for (boxes, labels), (pred_xy, pred_labels), vis in zip(gt, predictions, visible):
        for box, label, seen in zip(boxes, labels, vis):
            if not seen:
                continue
            total += 1
            same = pred_labels == label
            if same.any() and np.min(np.linalg.norm(pred_xy[same] - box[:2], axis=1)) < 2.0:
                found += 1
    return found, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='camera_dropout_output')
    parser.add_argument('--keyframes', type=int, default=20)
    args = parser.parse_args(argv)

    import torch
    from nuscenes.nuscenes import NuScenes

    from sparsebev_cli.demo.command import DEMO_SEED
    from sparsebev_core.data.infos import detection_ground_truth, frame_from_info, sample_info
    from sparsebev_core.data.synthetic.scenes import make_synthetic
    from sparsebev_core.engine.evaluate import boxes_to_submission, evaluate_samples
    from sparsebev_core.frame import CameraView, Frame
    from sparsebev_core.geometry import CAMERA_NAMES, transform_boxes
    from sparsebev_core.loading import load_detector
    from sparsebev_core.recipe.presets import get_preset
    from sparsebev_core.streaming.options import StreamingOptions

    torch.set_num_threads(1)
    out = Path(args.out)
    root = out / 'dataset'
    if not (root / 'synthetic.json').is_file():
        make_synthetic(root, num_scenes=1, seed=DEMO_SEED, keyframes_per_scene=args.keyframes,
                       progress=False)
    nusc = NuScenes(version='v1.0-mini', dataroot=str(root), verbose=False)
    samples = sorted(nusc.sample, key=lambda s: s['timestamp'])
    infos = [sample_info(nusc, s, with_annotations=False) for s in samples]
    frames = [frame_from_info(info, root) for info in infos]
    image_wh = tuple(json.loads((root / 'synthetic.json').read_text())['image_size'])
    gt = [detection_ground_truth(nusc, s['token']) for s in samples]

    def run(drop: list[int | None]) -> tuple[dict, list]:
        # decoding by the recipe (cfg.head: the official 0.05 threshold and top-300)
        detector = load_detector(get_preset('tiny'), None, 'cpu', StreamingOptions(),
                                 log=lambda text: None)
        results, predictions = {}, []
        for frame, info, d in zip(frames, infos, drop):
            views = list(frame.cameras)
            if d is not None:
                v = views[d]
                views[d] = CameraView.absent(v.name, 'dropped', v.stamp, v.K, v.T_ego_cam)
            det = detector.step(Frame(views, frame.stamp, frame.T_world_ego, frame.T_ego_model,
                                      key=frame.key))
            results[info['token']] = boxes_to_submission(
                det.boxes, det.scores, det.labels, info['token'], frame.T_ego_model,
                frame.T_world_ego, detector.cfg.class_names)
            world = transform_boxes(det.boxes, frame.T_world_ego @ frame.T_ego_model) \
                if len(det.boxes) else np.zeros((0, 9))
            predictions.append((world[:, :2], det.labels))
        metrics = evaluate_samples(nusc, results, out / 'eval')
        return metrics, predictions

    n = len(frames)
    rng = np.random.default_rng(0)
    conditions = [('all six cameras', [None] * n)]
    conditions += [(f'{name} dropped', [c] * n) for c, name in enumerate(CAMERA_NAMES)]
    random_drop = [int(rng.integers(6)) if rng.random() < 0.3 else None for _ in range(n)]
    conditions.append((f'random camera in 30% of frames ({sum(d is not None for d in random_drop)}'
                       f'/{n})', random_drop))
    base_metrics, base_predictions = run([None] * n)
    rows = ['| cameras | mAP | NDS | recall of GT seen by the remaining cameras: all six / this run |',
            '|---|---|---|---|']
    for label, drop in conditions:
        metrics, predictions = (base_metrics, base_predictions) if drop == [None] * n else run(drop)
        visible = []
        for frame, (boxes, _), d in zip(frames, gt, drop):
            visible.append([any(project_into(b[:3], v, image_wh) for c, v in enumerate(frame.cameras)
                                if c != d) for b in boxes])
        f_all, total = recall(gt, base_predictions, visible)
        f_run, _ = recall(gt, predictions, visible)
        rows.append(f"| {label} | {metrics['mean_ap']:.3f} | {metrics['nd_score']:.3f} | "
                    f'{f_all}/{total} = {f_all / max(total, 1):.2f} / {f_run}/{total} = '
                    f'{f_run / max(total, 1):.2f} |')
        print(rows[-1], flush=True)
    (out / 'table.md').write_text('\n'.join(rows) + '\n')
    print('\n'.join(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())

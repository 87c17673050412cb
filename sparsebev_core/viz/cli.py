"""``sparsebev viz``: predictions on the six cameras + BEV, and sampling points (PNG files).

For the first ``--samples`` keyframes of a split: run the model (offline, all frames through
the backbone; a recurrent SparseBEV++ model streams the keyframes scene by scene in time order,
carrying its state), keep boxes scoring >= ``--score``, and write

* ``bbox_%04d.png``: the six original camera images (2 x 3: FRONT_LEFT FRONT FRONT_RIGHT /
  BACK_RIGHT BACK BACK_LEFT) with the boxes projected, plus a BEV panel; ``--gt`` adds the
  ground truth in white;
* ``sp_%04d.png`` with ``--sampling-points``: the sampling points of the confident queries
  of decoder stage ``--stage`` in the first ``--frames`` frames, over the network inputs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def visualize(model, cfg, infos, data_root, out_dir, num_samples: int = 4, score: float = 0.3,
              with_gt: bool = False, sampling_points: bool = False, stage: int = -1,
              num_frames: int = 3, device: str = 'cpu') -> list[Path]:
    """Write the pictures of the first ``num_samples`` infos; returns the written paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import torch

    from ..data.dataset import NuScenesMultiFrameDataset
    from ..data.infos import scenes_in_time_order, stream_scenes
    from ..geometry import compose_lidar2img, gravity_to_bottom_center
    from ..image import decode_image
    from .draw import detections_figure
    from .sampling_points import SamplingPointRecorder, sampling_points_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    stream = None
    if model.is_recurrent:                     # keyframes in time order, the state carried
        from ..streaming.detector import StreamingDetector
        detector = StreamingDetector(model, cfg, device=device)
        infos = scenes_in_time_order(infos)
        stream = stream_scenes(detector, infos, data_root)
    dataset = NuScenesMultiFrameDataset(infos, data_root, cfg, training=False)
    written = []
    for index in range(min(num_samples, len(dataset))):
        sample = dataset[index]
        info = infos[index]
        with torch.inference_mode(), SamplingPointRecorder(model) as recorder:
            if stream is not None:
                next(stream)
                outputs = detector.last_step.outputs
            else:
                outputs = model(sample['images'][None].to(device), sample['lidar2img'][None].to(device),
                                sample['timestamps'][None].to(device))
        det = model.decode(outputs)[0]
        keep = det['scores'].cpu().numpy() >= score
        boxes = det['boxes'].cpu().double().numpy()[keep]
        labels = det['labels'].cpu().numpy()[keep]

        images = [decode_image((Path(data_root) / c['filename']).read_bytes()) for c in info['cams']]
        lidar2img = [compose_lidar2img(c['K'], c['T_ego_cam'], c['T_world_ego'],
                                       info['T_world_ego'], info['T_ego_model']) for c in info['cams']]
        gt = gt_labels = None
        if with_gt and 'gt_boxes' in info:
            sel = info['valid_flag'] & (info['gt_labels'] >= 0)
            gt = gravity_to_bottom_center(info['gt_boxes'][sel])
            gt_labels = info['gt_labels'][sel]
        fig = detections_figure(images, lidar2img, boxes, labels, gt_boxes=gt, gt_labels=gt_labels,
                                class_names=cfg.class_names,
                                title=f'{info["scene_name"]} sample {info["token"][:8]}: '
                                      f'{len(boxes)} boxes with score >= {score}')
        path = out_dir / f'bbox_{index:04d}.png'
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

        if sampling_points:
            record = recorder.records[stage]
            scores = outputs['all_cls_scores'][stage][0].sigmoid().max(-1).values.cpu().numpy()
            queries = np.flatnonzero(scores > score)
            if len(queries) == 0:
                queries = np.argsort(-scores)[:3]          # nothing confident: the best three
            net_images = sample['images'].permute(0, 2, 3, 1).numpy()        # [T*6, H, W, 3]
            fig = sampling_points_figure(net_images, record, queries.tolist(), num_frames,
                                         title=f'sampling points of {len(queries)} queries '
                                               f'(stage {stage % len(recorder.records)})')
            path = out_dir / f'sp_{index:04d}.png'
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev viz``."""
    from ..cli_common import add_device_argument, add_model_arguments
    add_model_arguments(parser, 'r50_nuimg_704x256', checkpoint='required')
    parser.add_argument('--data', default='data/nuscenes', help='nuScenes dataset root')
    parser.add_argument('--version', default='v1.0-mini', choices=('v1.0-trainval', 'v1.0-mini'))
    parser.add_argument('--split', default='val')
    parser.add_argument('--out', default='outputs', help='folder for the PNG files')
    parser.add_argument('--samples', type=int, default=4, help='number of keyframes to draw')
    parser.add_argument('--score', type=float, default=0.3, help='score threshold')
    parser.add_argument('--gt', action='store_true', help='also draw the ground truth (white)')
    parser.add_argument('--sampling-points', action='store_true',
                        help='also draw the sampling points of the confident queries')
    parser.add_argument('--stage', type=int, default=-1, help='decoder stage for the points')
    parser.add_argument('--frames', type=int, default=3, help='frames shown with the points')
    add_device_argument(parser)


def main(args: argparse.Namespace) -> int:
    """Load the model and the split, draw, list the files."""
    from ..cli_common import model_config_from_args
    from ..data.dataset import build_dataset
    from ..devices import resolve_device
    from ..loading import load_model

    device = resolve_device(args.device)
    loaded = load_model(model_config_from_args(args), args.checkpoint)
    model, cfg = loaded.model, loaded.cfg
    infos = build_dataset(cfg, args.data, version=args.version, split=args.split,
                          training=False, load_images=False).infos
    paths = visualize(model, cfg, infos, args.data, args.out, args.samples, args.score,
                      args.gt, args.sampling_points, args.stage, args.frames, device)
    for p in paths:
        print(f'wrote {p}')
    return 0

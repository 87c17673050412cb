"""Multi-frame nuScenes samples with the official frame selection and augmentation.

``NuScenesMultiFrameDataset[i]`` is one keyframe and T - 1 earlier (and, for the future
presets, later) camera frames (docs/official_model.md 5.2 / 5.3):

* the "prev" list of a keyframe is ``[s1..s5, KF(t-1), s1..s5 of t-1, KF(t-2), ...]``
  (official ``collect_sweeps``, up to 60 entries, stopping at the scene start), so entry
  ``6k - 1`` is always keyframe ``t - k``;
* scene start (empty list): the current frame is repeated (time differences 0);
* test: entries ``6(k+1) - 1``, clamped to the list, i.e. the previous keyframes;
* train: a random interval in [4, 8] camera frames (smaller when history is short), or all
  entries padded with the last one when there are no more than T - 1;
* future layouts (``cfg.num_future_frames > 0``): one interval (6 at test, U{4..8} in
  training) for past and future, placed in the slots of ``frame_layout.frame_offsets``
  (``future_blocked`` = [cur, past..., future...], ``future_interleaved`` = [cur, past1,
  next1, past2, next2, ...]). Unlike the official code
  the future walk stops at the end of the scene (the official one runs into the next scene).

Every ``lidar2img`` is ``geometry.compose_lidar2img`` of the camera's own pose and the
keyframe's LIDAR_TOP pose (the same function the streaming detector and the ROS node use),
then the shared image transform (``ida``) and, in training, the BEV rotation / scale.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import transforms as T
from ..geometry import compose_lidar2img
from ..recipe.config import ModelConfig
from ..recipe.frame_layout import frame_offsets
from .infos import DataFileError, info_path, load_infos, resolve_split

HISTORY_LIMIT = 60          # entries collected into the past / future (official into_past)
TEST_INTERVAL = 6           # camera frames between selected frames at test time (= keyframes)
TRAIN_INTERVAL = (4, 8)


class NuScenesMultiFrameDataset(Dataset):
    """Samples ``{images, lidar2img, timestamps, gt_boxes, gt_labels, meta}`` (see
    :meth:`__getitem__`) from info records.

    Args:
        infos: records from :func:`infos.load_infos` (sorted by time).
        data_root: dataset root (image paths in the infos are relative to it).
        cfg: model config (input size, frames, layout, train augmentation).
        training: random frame spacing and augmentation, GT filtered by valid flag.
        load_images: False skips decoding (geometry-only samples, ``images`` is None).
        resize_method: ``'pil'`` (official pixels) or ``'cv2'`` (see ``image.py``).
    """

    def __init__(self, infos: Sequence[dict], data_root: str | Path, cfg: ModelConfig,
                 training: bool = False, load_images: bool = True, resize_method: str = 'pil'):
        self.infos = list(infos)
        self.data_root = Path(data_root)
        self.cfg = cfg
        self.training = training
        self.load_images = load_images
        self.resize_method = resize_method
        self.num_past = int(cfg.num_past_frames)
        self.num_future = int(cfg.num_future_frames)
        frame_offsets(cfg)                   # raises FrameLayoutError for a layout that does not fit
        self.index_of = {info['token']: i for i, info in enumerate(self.infos)}

    def __len__(self) -> int:
        return len(self.infos)

    # ---------------------------------------------------------------- frame selection
    def prev_list(self, index: int) -> list[list[dict]]:
        """Past camera entries, newest first (official ``collect_sweeps``)."""
        out: list[list[dict]] = []
        i = index
        while len(out) < HISTORY_LIMIT:
            info = self.infos[i]
            if not info['sweeps'] or info['prev'] not in self.index_of:
                break
            out.extend(info['sweeps'])
            i = self.index_of[info['prev']]
            out.append(self.infos[i]['cams'])
        return out

    def next_list(self, index: int) -> list[list[dict]]:
        """Future camera entries, oldest first, within the scene."""
        out: list[list[dict]] = []
        info = self.infos[index]
        while len(out) < HISTORY_LIMIT and info['next'] in self.index_of:
            info = self.infos[self.index_of[info['next']]]
            out.extend(info['sweeps'][::-1])
            out.append(info['cams'])
        return out

    def select_frames(self, index: int) -> list[list[dict]]:
        """The T frames of a sample (frame 0 = the keyframe), six camera records each, in
        the slot order of :func:`frame_layout.frame_offsets`."""
        current = self.infos[index]['cams']
        prev = self.prev_list(index)
        if self.num_future == 0:
            past, future = self._pick_past(prev, current), []
        else:
            interval = TEST_INTERVAL if not self.training else \
                int(np.random.randint(TRAIN_INTERVAL[0], TRAIN_INTERVAL[1] + 1))
            past = self._pick(prev, interval, self.num_past, current)
            future = self._pick(self.next_list(index), interval, self.num_future, current)
        return [current if k == 0 else past[-k - 1] if k < 0 else future[k - 1]
                for k in frame_offsets(self.cfg)]

    def _pick_past(self, prev: list[list[dict]], current: list[dict]) -> list[list[dict]]:
        n = self.num_past
        if n == 0 or not prev:               # one frame (the recurrent presets) or a scene start
            return [current] * n
        if not self.training:
            return self._pick(prev, TEST_INTERVAL, n, current)
        if len(prev) <= n:
            return list(prev) + [prev[-1]] * (n - len(prev))
        max_interval = min(len(prev) // n, TRAIN_INTERVAL[1])
        min_interval = min(max_interval, TRAIN_INTERVAL[0])
        interval = int(np.random.randint(min_interval, max_interval + 1))
        return self._pick(prev, interval, n, current)

    @staticmethod
    def _pick(entries: list[list[dict]], interval: int, n: int, current: list[dict]
              ) -> list[list[dict]]:
        if not entries:
            return [current] * n
        return [entries[min((k + 1) * interval - 1, len(entries) - 1)] for k in range(n)]

    # ---------------------------------------------------------------- sample
    def __getitem__(self, index: int) -> dict:
        """One sample.

        Returns a dict with ``images`` uint8 ``[T*N, 3, H, W]`` RGB (N cameras of the infos;
        None without images), ``lidar2img`` float32 ``[T*N, 4, 4]``, ``timestamps`` float64
        ``[T*N]`` (s),
        ``gt_boxes`` float32 ``[K, 9]`` gravity centre ``[x, y, z_c, dx, dy, dz, yaw, vx, vy]``
        in the (augmented) model frame, ``gt_labels`` int64 ``[K]``, the keyframe's ``stamp``
        (float, s) and ``model_pose`` float64 ``[4, 4]`` (the augmented model frame -> world:
        ``T_world_ego @ T_ego_model @ R^-1 @ S^-1``, what the recurrent presets' ego motion is
        formed from, docs/training.md) and ``meta``
        (sample/scene token, ``T_world_ego`` / ``T_ego_model`` of the keyframe, file names,
        ``ida`` (of the first camera's size; ``idas`` per image), BEV augmentation,
        ``gt_index``: the info annotation of each GT box).
        """
        info = self.infos[index]
        cfg = self.cfg
        frames = self.select_frames(index)
        cams = [cam for frame in frames for cam in frame]                    # T*N, frame-major
        # one image augmentation per image size (the official single draw for a rig of one
        # size); each camera gets the ida of its own size
        sizes = [_image_hw(c, self.data_root) for c in cams]
        augs: dict[tuple[int, int], T.ImageAug] = {}
        for hw in sizes:
            if hw not in augs:
                augs[hw] = T.sample_image_aug(hw, tuple(cfg.input_size), self.training,
                                              tuple(cfg.train.resize_lim), cfg.train.flip)
        orig_hw = sizes[0]
        ida = augs[orig_hw].ida()
        lidar2img = np.stack([compose_lidar2img(c['K'], c['T_ego_cam'], c['T_world_ego'],
                                                info['T_world_ego'], info['T_ego_model'],
                                                augs[hw].ida())
                              for c, hw in zip(cams, sizes)])                 # [T*N, 4, 4]
        timestamps = np.array([c['stamp'] for c in cams], dtype=np.float64)  # [T*6]

        if 'gt_boxes' in info:
            boxes, labels, gt_index = T.filter_gt(info['gt_boxes'], info['gt_labels'],
                                                  info['valid_flag'], tuple(cfg.head.pc_range))
        else:
            boxes, labels, gt_index = np.zeros((0, 9)), np.zeros((0,), np.int64), np.zeros(0, int)
        bev = (0.0, 1.0)
        model_pose = info['T_world_ego'] @ info['T_ego_model']               # [4, 4] model -> world
        if self.training:
            bev = T.sample_bev_aug(tuple(cfg.train.rot_range), tuple(cfg.train.scale_range))
            lidar2img, boxes = T.apply_bev_aug(lidar2img, boxes, *bev)
            model_pose = model_pose @ T.bev_aug_inverse(*bev)                  # the augmented frame

        images = None
        if self.load_images:
            images = torch.from_numpy(np.stack([self._load(c, augs[hw])
                                                for c, hw in zip(cams, sizes)]))  # [T*N, H, W, 3]
            images = images.permute(0, 3, 1, 2).contiguous()                         # [T*6, 3, H, W]
        return dict(
            images=images,
            lidar2img=torch.from_numpy(lidar2img.astype(np.float32)),
            timestamps=torch.from_numpy(timestamps),
            gt_boxes=torch.from_numpy(boxes.astype(np.float32)).reshape(-1, 9),
            gt_labels=torch.from_numpy(labels.astype(np.int64)),
            stamp=float(info['timestamp']),
            model_pose=torch.from_numpy(np.asarray(model_pose, np.float64)),
            meta=dict(sample_token=info['token'], scene_token=info['scene_token'],
                      timestamp=info['timestamp'], T_world_ego=info['T_world_ego'],
                      T_ego_model=info['T_ego_model'],
                      filenames=[c['filename'] for c in cams], ida=ida,
                      idas=[augs[hw].ida() for hw in sizes],
                      bev_rotation=bev[0], bev_scale=bev[1], orig_hw=orig_hw,
                      gt_index=gt_index),
        )

    def _load(self, cam: dict, aug: T.ImageAug) -> np.ndarray:
        from ..image import decode_image
        path = self.data_root / cam['filename']
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DataFileError(f'camera image {path} is missing (listed in the infos of '
                                f'{self.data_root}); is --data the dataset root?') from None
        return T.apply_image_aug(decode_image(data), aug, self.resize_method)


def _image_hw(cam: dict, root: Path) -> tuple[int, int]:
    """(H, W) of a camera image: from the tables, else read from the file header."""
    if cam.get('height') and cam.get('width'):
        return int(cam['height']), int(cam['width'])
    from PIL import Image
    with Image.open(root / cam['filename']) as im:
        return im.height, im.width


def collate(samples: Sequence[dict]) -> dict:
    """Stack samples: ``images [B, T*6, 3, H, W]``, ``lidar2img [B, T*6, 4, 4]``,
    ``timestamps [B, T*6]``; ``gt_boxes`` / ``gt_labels`` / ``meta`` stay lists."""
    images = [s['images'] for s in samples]
    return dict(
        images=torch.stack(images) if images[0] is not None else None,
        lidar2img=torch.stack([s['lidar2img'] for s in samples]),
        timestamps=torch.stack([s['timestamps'] for s in samples]),
        gt_boxes=[s['gt_boxes'] for s in samples],
        gt_labels=[s['gt_labels'] for s in samples],
        meta=[s['meta'] for s in samples],
    )


def build_dataset(cfg: ModelConfig, data_root: str | Path, version: str = 'v1.0-trainval',
                  split: str = 'train', training: bool | None = None,
                  info_file: str | Path | None = None, **kwargs) -> NuScenesMultiFrameDataset:
    """Dataset of one split; builds the info file with ``prepare-nuscenes`` when missing.

    ``split``: ``train``/``val`` (``mini_train``/``mini_val`` for v1.0-mini) or any devkit
    split name. ``training`` defaults to True for training splits.
    """
    split = resolve_split(version, split)
    path = Path(info_file) if info_file else info_path(data_root, version, split)
    if info_file is None and not path.exists():
        from .prepare import prepare_nuscenes
        print(f'{path} not found: building it (sparsebev prepare-nuscenes)')
        prepare_nuscenes(data_root, version, splits=(split,))
    infos, _ = load_infos(path)
    if training is None:
        training = split in ('train', 'mini_train', 'train_detect', 'train_track')
    return NuScenesMultiFrameDataset(infos, data_root, cfg, training=training, **kwargs)

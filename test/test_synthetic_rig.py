"""``make-synthetic --rig FILE``: synthetic scenes of any camera rig, read back by the devkit,
the info files and the dataset, run by the tiny model unchanged, and trained on (loss falls).

The rigs are small (five 160x120 cameras, one 200x112 front camera) to keep CI short; the
code path is the same for five 640x480 cameras.
"""
import numpy as np
import pytest
import torch
import yaml

from sparsebev_core.geometry import make_transform
from sparsebev_core.rig import RigCamera, load_rig, make_rig, nuscenes_rig, rig_to_dict


def five_cameras(wh=(160, 120)):
    cameras = []
    for i in range(5):
        yaw = np.deg2rad(72 * i)
        z = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        x = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        K = np.array([[wh[0] / 2, 0, wh[0] / 2], [0, wh[0] / 2, wh[1] / 2], [0, 0, 1.0]])
        cameras.append(RigCamera(f'CAM_{i}', wh, K,
                                 make_transform(np.stack([x, np.cross(z, x), z], axis=1),
                                                [np.cos(yaw), np.sin(yaw), 1.6])))
    return make_rig(cameras)


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def five_camera_root(tmp_path_factory):
    from sparsebev_core.data.synthetic.scenes import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp('rig5'), num_scenes=2, seed=5,
                          keyframes_per_scene=8, progress=False, rig=five_cameras())


def test_the_cli_renders_a_rig_file_with_its_names_and_sizes(tmp_path):
    from nuscenes.nuscenes import NuScenes

    from sparsebev_cli.cli import main
    rig = make_rig([nuscenes_rig((200, 112), ['CAM_FRONT']).cameras[0],
                    RigCamera('REAR_WIDE', (96, 64), np.array([[40, 0, 48], [0, 40, 32], [0, 0, 1.0]]),
                              make_transform(np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0.0]]), [0, 0, 1.5]))])
    rig_file = tmp_path / 'rig.yaml'
    rig_file.write_text(yaml.safe_dump(rig_to_dict(rig)))
    assert main(['make-synthetic', str(tmp_path / 'data'), '--rig', str(rig_file), '--scenes', '1',
                 '--keyframes', '2']) == 0
    nusc = NuScenes(version='v1.0-mini', dataroot=str(tmp_path / 'data'), verbose=False)
    cameras = [s['channel'] for s in nusc.sensor if s['modality'] == 'camera']
    assert cameras == ['CAM_FRONT', 'REAR_WIDE']
    sizes = {(sd['channel'], sd['width'], sd['height']) for sd in nusc.sample_data
             if sd['fileformat'] == 'jpg'}
    assert sizes == {('CAM_FRONT', 200, 112), ('REAR_WIDE', 96, 64)}
    assert load_rig(tmp_path / 'data' / 'rig.yaml').names == ('CAM_FRONT', 'REAR_WIDE')
    from PIL import Image
    sd = next(sd for sd in nusc.sample_data if sd['channel'] == 'REAR_WIDE')
    with Image.open(tmp_path / 'data' / sd['filename']) as image:
        assert image.size == (96, 64)

    # the rig scene as a bag (topics /<name>/...) and replayed with the rig file
    scene = nusc.scene[0]['name']
    assert main(['nuscenes-to-bag', '--root', str(tmp_path / 'data'), '--scene', scene,
                 str(tmp_path / 'bag')]) == 0
    assert main(['replay', str(tmp_path / 'bag'), str(tmp_path / 'out'), '--rig', str(rig_file),
                 '--no-progress', '--device', 'cpu']) == 0
    from rosbags.highlevel import AnyReader
    with AnyReader([tmp_path / 'out']) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts['/REAR_WIDE/image_raw/compressed'] == counts['/sparsebev/detections'] == 7


def test_the_tiny_model_runs_unchanged_on_a_rig_dataset(five_camera_root):
    from nuscenes.nuscenes import NuScenes

    from sparsebev_core.data.infos import frame_from_info, sample_info
    from sparsebev_core.loading import load_detector
    from sparsebev_core.recipe.presets import get_preset
    nusc = NuScenes(version='v1.0-mini', dataroot=str(five_camera_root), verbose=False)
    samples = sorted(nusc.sample, key=lambda s: s['timestamp'])[:3]
    detector = load_detector(get_preset('tiny'), None, 'cpu', log=lambda text: None)
    for sample in samples:
        info = sample_info(nusc, sample, with_annotations=False)
        assert [c['name'] for c in info['cams']] == [f'CAM_{i}' for i in range(5)]
        assert all(len(entry) == 5 for entry in info['sweeps'])
        frame = frame_from_info(info, five_camera_root)
        det = detector.step(frame)
        assert np.isfinite(det.boxes).all()
    assert detector.last_step.lidar2img.shape == (4 * 5, 4, 4)


def test_training_on_a_five_camera_rig_makes_the_loss_fall(five_camera_root, tmp_path):
    from sparsebev_core.data.dataset import build_dataset
    from sparsebev_core.engine.train import TrainOptions, train
    from sparsebev_core.engine.train_data import attach_image_augmentations
    from sparsebev_core.model.detector import build_model
    from sparsebev_core.recipe.presets import get_preset

    torch.manual_seed(0)
    cfg = get_preset('tiny')
    dataset = build_dataset(cfg, five_camera_root, version='v1.0-mini', split='train')
    sample = dataset[0]
    assert sample['images'].shape[0] == cfg.num_frames * 5
    model = build_model(cfg)
    attach_image_augmentations(model, cfg)
    summary = train(cfg, dataset, TrainOptions(work_dir=str(tmp_path), epochs=6, max_iters=24,
                                               progress=False, tensorboard=False),
                    torch.device('cpu'), model=model)
    history = summary['loss_history']
    assert len(history) == 24 and all(map(torch.isfinite, torch.tensor(history)))
    first, last = sum(history[:4]) / 4, sum(history[-4:]) / 4
    assert last < 0.8 * first, f'loss did not fall clearly: {first:.2f} -> {last:.2f}'

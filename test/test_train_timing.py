"""``sparsebev timing``: warm-up excluded, per-stage breakdown, official vs end-to-end FPS."""
import argparse
import io

import numpy as np
import pytest
from PIL import Image

from sparsebev_core.data.synthetic import stream
from sparsebev_core.engine import timing
from sparsebev_core.frame import CameraView, Detections, Frame
from sparsebev_core.recipe.presets import get_preset
from sparsebev_core.rig import nuscenes_rig


def jpeg_bytes():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((9, 16, 3), np.uint8)).save(buf, format='JPEG')
    return buf.getvalue()


def encoded_frame(stamp):
    cams = [CameraView(jpeg_bytes(), np.eye(3), np.eye(4), stamp, np.eye(4), name)
            for name in ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
                         'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')]
    return Frame(cams, stamp, np.eye(4), np.eye(4))


class ScriptedDetector:
    """Reports fixed stage timings: sample i takes (i + 1) ms in every model stage."""
    device, cfg = 'cpu', get_preset('tiny')

    def __init__(self):
        self.steps, self.resets, self.decoded = 0, 0, []

    def reset(self, reason=''):
        self.resets += 1

    def step(self, frame):
        self.decoded.append(all(isinstance(c.image, np.ndarray) for c in frame.cameras))
        self.steps += 1
        ms = float(self.steps)
        return Detections(np.zeros((0, 9)), np.zeros(0), np.zeros(0, np.int64),
                          timings={'preprocess': 0.0, 'backbone': ms, 'head': ms, 'postprocess': ms})


def test_warmup_is_not_counted_and_fps_is_per_sample():
    detector = ScriptedDetector()
    report = timing.measure(detector, [encoded_frame(1.0), encoded_frame(1.5)], samples=3,
                            warmup=2, progress=False)
    assert detector.steps == 5 and report.samples == 3
    assert report.stages['backbone'] == [3.0, 4.0, 5.0]            # steps 3..5 counted
    assert report.official_fps() == pytest.approx(1e3 * 3 / (3 * (3 + 4 + 5)))
    assert all(detector.decoded)                                    # the detector got RGB arrays
    assert report.end_to_end_fps() < report.official_fps()          # decoding costs time
    assert detector.resets == 3                                     # each pass over the list


def test_timing_command_on_a_synthetic_scene(tmp_path, capsys):
    from sparsebev_core.data.synthetic.scenes import make_synthetic
    data = make_synthetic(tmp_path / 'syn', num_scenes=1, keyframes_per_scene=3, progress=False)
    args = argparse.Namespace(preset='tiny', config=None, checkpoint=None, data=str(data),
                              version='v1.0-mini',
                              device='cpu', samples=3, warmup=1, precision='fp32')
    assert timing.main(args) == 0
    out = capsys.readouterr().out
    for stage in timing.STAGES:
        line = next(l for l in out.splitlines() if l.startswith(stage))
        assert float(line.split()[1]) >= 0.0
    assert '3 samples after 1 warm-up' in out
    fps = [float(l.rsplit(':', 1)[1]) for l in out.splitlines() if l.startswith('FPS')]
    assert len(fps) == 2 and fps[0] > fps[1] > 0


@pytest.mark.parametrize('preset', ['tiny', 'tiny_memory'])
def test_compare_times_baseline_and_fast_path_on_the_same_frames(tmp_path, capsys, preset):
    from sparsebev_core.data.synthetic.scenes import make_synthetic
    from sparsebev_core.ops import get_backend
    data = make_synthetic(tmp_path / 'syn', num_scenes=1, keyframes_per_scene=3, progress=False)
    args = argparse.Namespace(preset=preset, config=None, checkpoint=None, data=str(data),
                              version='v1.0-mini', device='cpu', samples=3, warmup=1,
                              precision='fp32', num_queries=16, compare=True,
                              fast_precision='bf16', compile_head=False)
    assert timing.main(args) == 0
    out = capsys.readouterr().out
    assert 'baseline: eager fp32, torch sampling' in out and 'precision bf16' in out
    rows = {line.split('|')[1].strip(): line.split('|')[2:-1] for line in out.splitlines()
            if line.startswith('| ') and 'stage' not in line}
    assert set(timing.STAGES) < set(rows)
    for cells in rows.values():
        base_median, base_p99, fast_median, fast_p99 = (float(c) for c in cells[:4])
        assert 0 <= base_median <= base_p99 and 0 <= fast_median <= fast_p99
    step = rows['model step (backbone + head + postprocess)']
    assert float(step[0]) > 0 and step[4].strip().endswith('x')
    assert get_backend() == 'auto'                       # the global switch is restored
    held = next(line for line in out.splitlines() if 'temporal memory held' in line)
    megabytes = float(held.split('between steps: ')[1].split(' MB')[0])
    assert megabytes > 0                                 # feature cache or recurrent state


def test_compare_table_speedup_is_the_ratio_of_medians():
    base, fast = timing.TimingReport(preset='tiny'), timing.TimingReport(preset='tiny')
    for i in range(5):
        for stage in timing.STAGES:
            base.stages[stage].append(4.0 + i)
            fast.stages[stage].append(1.0 + i / 4)
    table = timing.compare_table(base, fast, timing.FastPath())
    head_row = next(l for l in table.splitlines() if l.startswith('| head |'))
    assert head_row.split('|')[-2].strip() == f'{6.0 / 1.5:.2f}x'


def test_rig_frames_need_no_devkit_and_time(capsys):
    frames = stream.rig_frames(3)
    assert len(frames) == 3 and all(len(f.cameras) == 6 for f in frames)
    assert isinstance(frames[0].cameras[0].image, bytes)
    decoded = timing.decode_frame(frames[0])
    assert decoded.cameras[5].image.shape == (*stream.RIG_HW, 3)
    rig = nuscenes_rig()                                     # the nuScenes cameras, posed per stamp
    for camera, view in zip(rig.cameras, frames[1].cameras):
        assert view.name == camera.name and np.array_equal(view.K, camera.K)
        assert np.array_equal(view.T_ego_cam, camera.T_base_cam)
        assert np.array_equal(view.T_world_ego, stream.rig_T_world_ego(view.stamp))
    args = argparse.Namespace(preset='tiny', config=None, checkpoint=None, data='rig',
                              version='v1.0-mini', device='cpu', samples=2, warmup=0,
                              precision='fp32', num_queries=None, compare=False)
    assert timing.main(args) == 0
    assert '2 samples after 0 warm-up' in capsys.readouterr().out

"""One bad message never ends a replay: bag mutations (the fault probe's cases, rows 1-3, 8-9,
13-17, 19 of docs/bad_input.md) replayed to the end, every rejection counted with its reason,
every frame the fault does not touch published.

The bags are the small closed-form drive of ``ros_scene.write_drive`` (8 frames, 64x36 JPEGs),
rewritten message by message; the detector is the ground-truth stand-in (not SparseBEV).
"""
from __future__ import annotations

import dataclasses as dc
import math
from pathlib import Path

import numpy as np
import pytest

from fault_cases import jpeg_claiming, png_claiming, rewrite_bag, stamp_ns, with_stamp
from ros_scene import FRAME_PERIOD_NS, T0_NS, PerfectDriveDetector, write_drive
from sparsebev_ros.bags.files import BagReadError, BagWriteError, partial_path
from sparsebev_ros.bags.replay import replay
from sparsebev_ros.params import validate

NUM_FRAMES = 8
BAD_FRAME = 3


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    return write_drive(tmp_path_factory.mktemp('base') / 'bag', 'sqlite3', num_frames=NUM_FRAMES)


def frame_of(ns: int) -> int:
    return (ns - T0_NS) // FRAME_PERIOD_NS


def is_image(topic: str) -> bool:
    return '/image_raw' in topic


def run(tmp_path, base, mutate, **params):
    """Replay the mutated bag with ``min_cameras=6`` unless given: a fault of one camera skips
    its frame (the degraded-frame rule, min_cameras < 6, is tested in test_ros_replay.py)."""
    bag = rewrite_bag(base.path, tmp_path / 'in', mutate)
    lines: list[str] = []
    det = PerfectDriveDetector()
    report = replay(bag, tmp_path / 'out', validate({'min_cameras': 6, **params}), det,
                    progress=False, log=lines.append)
    assert (tmp_path / 'out' / 'metadata.yaml').is_file() and not partial_path(tmp_path / 'out').exists()
    return report, det, lines


def published_frames(report) -> list[int]:
    return [frame_of(s) for s in report.published_stamps]


def all_but(*frames: int) -> list[int]:
    return [f for f in range(NUM_FRAMES) if f not in frames]


# ------------------------------------------------------------------ /tf and /tf_static
def _replace_transform(msg, **changes):
    tr = msg.transforms[0]
    new = dc.replace(tr.transform, **{k: dc.replace(getattr(tr.transform, k), **v) for k, v in changes.items()})
    return dc.replace(msg, transforms=[dc.replace(tr, transform=new)] + list(msg.transforms[1:]))


TF_FAULTS = {
    'nan_quaternion': (dict(rotation=dict(x=math.nan)), 'nan_or_inf'),
    'inf_translation': (dict(translation=dict(y=math.inf)), 'nan_or_inf'),
    'quaternion_norm_2': (dict(rotation=dict(x=0.0, y=0.0, z=0.0, w=2.0)), 'quaternion_not_unit'),
    'zero_quaternion': (dict(rotation=dict(x=0.0, y=0.0, z=0.0, w=0.0)), 'quaternion_not_unit'),
}


@pytest.mark.parametrize('fault', sorted(TF_FAULTS))
def test_one_bad_dynamic_transform_is_rejected_and_replay_goes_on(tmp_path, base, fault):
    changes, reason = TF_FAULTS[fault]
    done = []

    def mutate(items):
        for item in items:
            if item[0] == '/tf' and frame_of(stamp_ns(item[3].transforms[0])) == BAD_FRAME and not done:
                item[3] = _replace_transform(item[3], **changes)
                done.append(item)
        return items
    report, det, lines = run(tmp_path, base, mutate)
    assert done and report.tf_invalid == {reason: 1}
    # the lookup interpolates between the neighbouring poses: every frame is published
    assert published_frames(report) == all_but()
    assert 'TF transforms rejected as invalid: 1' in report.summary()
    assert any('rejected a /tf transform' in line for line in lines)


def test_a_nan_static_transform_is_rejected_and_counted(tmp_path, base):
    def mutate(items):
        for item in items:
            if item[0] == '/tf_static':
                item[3] = _replace_transform(item[3], translation=dict(x=math.nan))
        return items
    report, det, lines = run(tmp_path, base, mutate)
    assert report.tf_invalid == {'nan_or_inf': 1}
    # CAM_FRONT has no extrinsics: no frame can be built, each skip says why; no crash
    assert report.stats.published == 0
    assert report.stats.skipped['tf_unavailable'] == NUM_FRAMES


# ------------------------------------------------------------------ images
def _replace_image(items, frame: int, camera_topic: str, data: bytes, fmt: str):
    hit = 0
    for item in items:
        if item[0] == camera_topic and frame_of(stamp_ns(item[3])) == frame:
            item[3] = dc.replace(item[3], format=fmt, data=np.frombuffer(data, np.uint8))
            hit += 1
    assert hit == 1
    return items


@pytest.mark.parametrize('name, data, fmt, reason', [
    ('png_60000x60000', png_claiming(60000, 60000), 'png', 'image_too_large'),
    ('jpeg_65000x65000', jpeg_claiming(65000, 65000), 'jpeg', 'image_too_large'),
    ('png_8000x8000_in_1kb', png_claiming(8000, 8000, b'\x01' * 900), 'png', 'decode_error'),
])
def test_image_headers_claiming_huge_sizes_skip_one_frame_fast(tmp_path, base, name, data, fmt, reason):
    assert len(data) < 2000
    report, det, lines = run(tmp_path, base, lambda items: _replace_image(
        items, BAD_FRAME, '/CAM_FRONT_RIGHT/image_raw/compressed', data, fmt))
    assert dict(report.stats.skipped) == {reason: 1}
    assert published_frames(report) == all_but(BAD_FRAME)
    assert max(report.stats.latency['assemble'].values()) < 1000          # no seconds-long decode


def test_a_stricter_max_image_pixels_skips_every_frame_with_the_reason(tmp_path, base):
    report, det, lines = run(tmp_path, base, lambda items: items, max_image_pixels=64 * 35)
    assert dict(report.stats.skipped) == {'image_too_large': NUM_FRAMES}
    assert any('max_image_pixels' in line for line in lines)


def test_a_message_that_does_not_deserialize_is_skipped_and_counted(tmp_path, base):
    def mutate(items):
        for item in items:
            if item[0] == '/CAM_BACK/image_raw/compressed' and frame_of(stamp_ns(item[3])) == BAD_FRAME:
                item[3] = b'\x00\x01\x00\x00\xff\xff\xff\x7f'          # CDR header + absurd length
        return items
    report, det, lines = run(tmp_path, base, mutate)
    assert report.undecodable == {'/CAM_BACK/image_raw/compressed': 1}
    assert published_frames(report) == all_but(BAD_FRAME)
    assert report.stats.skipped == {'late': 1}          # its set waited, then went without it
    assert 'could not be deserialized: 1' in report.summary()


# ------------------------------------------------------------------ topics, stretches, stamps
def test_a_missing_camera_topic_is_reported_and_counted(tmp_path, base):
    report, det, lines = run(tmp_path, base, lambda items: [
        x for x in items if not x[0].startswith('/CAM_BACK/image')])
    assert report.missing_topics == ['/CAM_BACK/image_raw/compressed']
    assert any('/CAM_BACK/image_raw/compressed is not in' in line and 'warning' not in line
               for line in lines)
    assert report.stats.published == 0 and report.stats.skipped == {'late': NUM_FRAMES}
    summary = report.summary()
    assert 'topics not in the bag' in summary and f'late: {NUM_FRAMES}' in summary
    # the default min_cameras (1): every frame goes ahead without CAM_BACK, reported
    report, det, lines = run(tmp_path / 'degraded', base, lambda items: [
        x for x in items if not x[0].startswith('/CAM_BACK/image')], min_cameras=1)
    assert report.stats.published == NUM_FRAMES == report.stats.degraded
    assert report.stats.missing_cameras == {'CAM_BACK/late': NUM_FRAMES}


def test_images_missing_for_a_stretch_are_counted_as_lost_frames(tmp_path, base):
    stretch = (2, 3, 4)
    report, det, lines = run(tmp_path, base, lambda items: [
        x for x in items if not (x[0].startswith('/CAM_FRONT_LEFT/image') and frame_of(stamp_ns(x[3])) in stretch)])
    assert published_frames(report) == all_but(*stretch)
    assert sum(report.stats.skipped.values()) == len(stretch)
    assert set(report.stats.skipped) <= {'late', 'no_image'}
    assert report.fewest_images == ('CAM_FRONT_LEFT', NUM_FRAMES - len(stretch))
    assert 'CAM_FRONT_LEFT with 5' in report.summary()


def test_an_old_image_set_delivered_again_is_dropped_not_a_reset(tmp_path, base):
    def mutate(items):
        again = [list(x) for x in items if is_image(x[0]) and frame_of(stamp_ns(x[3])) == BAD_FRAME]
        cut = max(i for i, x in enumerate(items) if is_image(x[0]) and frame_of(stamp_ns(x[3])) == BAD_FRAME + 1)
        t = items[cut][2]
        return items[:cut + 1] + [[tp, mt, t + 1 + k, m] for k, (tp, mt, _, m) in enumerate(again)] + items[cut + 1:]
    report, det, lines = run(tmp_path, base, mutate)
    assert published_frames(report) == all_but()                       # once each, in order
    # the synchroniser drops the images of an emitted set (the pipeline's stale-set rule, for
    # a set delivered twice, is test_stale_rule_drops_one_repeat_but_a_restarted_source_resets)
    assert report.sync_counts['duplicate'] == 6 and not report.stats.skipped
    assert det.resets == [] and not report.stats.resets


def test_images_stamped_zero_are_skipped_never_given_the_latest_pose(tmp_path, base):
    report, det, lines = run(tmp_path, base, lambda items: [
        [tp, mt, t, with_stamp(m, 0) if is_image(tp) else m] for tp, mt, t, m in items])
    assert report.stats.published == 0 and det.frames == []
    assert report.sync_counts['zero_stamp'] == 6 * NUM_FRAMES      # dropped before any set


def test_one_camera_stamped_zero_skips_only_its_frame(tmp_path, base):
    report, det, lines = run(tmp_path, base, lambda items: [
        [tp, mt, t, with_stamp(m, 0) if tp.startswith('/CAM_BACK/image') and frame_of(stamp_ns(m)) == BAD_FRAME else m]
        for tp, mt, t, m in items])
    assert report.sync_counts['zero_stamp'] == 1 and sum(report.stats.skipped.values()) == 1
    assert published_frames(report) == all_but(BAD_FRAME)


# ------------------------------------------------------------------ CameraInfo
def _map_info(items, frame: int, fn):
    for item in items:
        if item[0] == '/CAM_FRONT/camera_info' and frame_of(stamp_ns(item[3])) == frame:
            item[3] = fn(item[3])
    return items


@pytest.mark.parametrize('k22', [-1.0, 1e-310, 0.0, math.nan])
def test_camera_info_with_unusable_k22_skips_its_frame(tmp_path, base, k22):
    def fn(m):
        k = np.array(m.k, np.float64)
        k[8] = k22
        return dc.replace(m, k=k)
    report, det, lines = run(tmp_path, base, lambda items: _map_info(items, BAD_FRAME, fn))
    assert dict(report.stats.skipped) == {'zero_camera_info': 1}
    assert published_frames(report) == all_but(BAD_FRAME)


def test_camera_info_with_k22_two_is_normalised(tmp_path, base):
    report, det, lines = run(tmp_path, base, lambda items: _map_info(
        items, BAD_FRAME, lambda m: dc.replace(m, k=np.array(m.k, np.float64) * 2.0)))
    assert published_frames(report) == all_but()
    Ks = [f.cameras[0].K for f in det.frames]
    np.testing.assert_allclose(Ks[BAD_FRAME], Ks[0])


def test_nan_distortion_refuses_the_camera_with_the_reason(tmp_path, base):
    """NaN coefficients cannot be undistorted (sparsebev_ros/undistort.py): that camera is
    missing as ``unsupported_distortion``, with min_cameras 6 its frame is skipped."""
    report, det, lines = run(tmp_path, base, lambda items: _map_info(
        items, BAD_FRAME, lambda m: dc.replace(m, d=np.array([math.nan, 0, 0, 0, 0], np.float64))))
    assert published_frames(report) == all_but(BAD_FRAME)
    assert dict(report.stats.skipped) == {'unsupported_distortion': 1}
    assert any('non-finite coefficients' in line for line in lines)


# ------------------------------------------------------------------ bag files
def test_a_bag_loop_still_resets_instead_of_dropping(tmp_path):
    bag = write_drive(tmp_path / 'in', 'sqlite3', num_frames=8, time_jump_at=5)
    det = PerfectDriveDetector()
    report = replay(bag.path, tmp_path / 'out', validate({}), det, progress=False)
    assert report.stats.published == 8 and det.resets == ['time_backwards']
    assert not report.stats.skipped


def _bag_file(folder: Path) -> Path:
    return next(p for p in folder.iterdir() if p.suffix in ('.db3', '.mcap'))


@pytest.mark.parametrize('case', ['empty_folder', 'no_such_bag', 'bad_metadata', 'truncated_sqlite',
                                  'zeroed_sqlite', 'empty_mcap', 'mcap_cut_in_its_header'])
def test_corrupt_bags_raise_one_typed_error_naming_the_bag(tmp_path, case):
    src = tmp_path / 'in'
    if case == 'empty_folder':
        src.mkdir()
    elif case != 'no_such_bag':
        write_drive(src, 'mcap' if 'mcap' in case else 'sqlite3', num_frames=3)
        f = _bag_file(src)
        data = f.read_bytes()
        if case == 'bad_metadata':
            (src / 'metadata.yaml').write_text('rosbag2_bagfile_information: [unclosed\n')
        elif case.startswith('truncated'):
            f.write_bytes(data[:len(data) // 2])
        elif case == 'mcap_cut_in_its_header':
            f.write_bytes(data[:20])
        elif case == 'zeroed_sqlite':
            f.write_bytes(data[:100] + b'\x00' * (len(data) - 100))
        elif case == 'empty_mcap':
            f.write_bytes(b'')
    with pytest.raises(BagReadError, match=str(src)):
        replay(src, tmp_path / 'out', validate({}), PerfectDriveDetector(), progress=False)
    assert not (tmp_path / 'out').exists() and not partial_path(tmp_path / 'out').exists()


def test_a_truncated_mcap_replays_the_frames_of_its_intact_part(tmp_path):
    bag = write_drive(tmp_path / 'in', 'mcap', num_frames=NUM_FRAMES)
    f = _bag_file(tmp_path / 'in')
    data = f.read_bytes()
    f.write_bytes(data[:int(len(data) * 0.6)])
    lines: list[str] = []
    report = replay(bag.path, tmp_path / 'out', validate({}), PerfectDriveDetector(), progress=False,
                    log=lines.append)
    assert 0 < report.salvaged and 'intact messages' in report.summary()
    assert any('cannot read bag' in line and str(tmp_path / 'in') in line for line in lines)
    published = published_frames(report)
    assert published == list(range(len(published))) and 2 <= len(published) < NUM_FRAMES


class _FullDiskWriter:
    """Wraps a rosbags writer; ``write`` fails with ENOSPC after ``budget`` bytes."""

    def __init__(self, writer, budget: int):
        self.writer, self.budget = writer, budget

    def __getattr__(self, name):
        return getattr(self.writer, name)

    def write(self, conn, log_ns, data):
        self.budget -= len(data)
        if self.budget < 0:
            raise OSError(28, 'No space left on device')
        self.writer.write(conn, log_ns, data)


def test_a_full_disk_leaves_no_half_written_output_and_the_rerun_works(tmp_path, base, monkeypatch):
    import sparsebev_ros.bags.replay as replay_module
    real_open = replay_module.open_writer
    monkeypatch.setattr(replay_module, 'open_writer',
                        lambda path, storage: _FullDiskWriter(real_open(path, storage), 20_000))
    with pytest.raises(BagWriteError, match='No space left.*partial output was removed'):
        replay(base.path, tmp_path / 'out', validate({}), PerfectDriveDetector(), progress=False)
    assert not (tmp_path / 'out').exists() and not partial_path(tmp_path / 'out').exists()
    monkeypatch.setattr(replay_module, 'open_writer', real_open)
    report = replay(base.path, tmp_path / 'out', validate({}), PerfectDriveDetector(), progress=False)
    assert report.stats.published == NUM_FRAMES


def test_a_leftover_of_a_killed_run_does_not_block_the_next(tmp_path, base):
    leftover = partial_path(tmp_path / 'out')
    (leftover / 'out').mkdir(parents=True)
    (leftover / 'out' / 'out_0.db3').write_bytes(b'half')
    report = replay(base.path, tmp_path / 'out', validate({}), PerfectDriveDetector(), progress=False)
    assert report.stats.published == NUM_FRAMES and not leftover.exists()


def test_output_path_problems_are_typed_errors(tmp_path, base):
    (tmp_path / 'exists').mkdir()
    with pytest.raises(BagWriteError, match='already exists'):
        replay(base.path, tmp_path / 'exists', validate({}), PerfectDriveDetector(), progress=False)
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(BagWriteError, match='is a file'):
        replay(base.path, tmp_path / 'afile' / 'out', validate({}), PerfectDriveDetector(), progress=False)



# ------------------------------------------------------------------ the stale-set rule itself
def test_stale_rule_drops_one_repeat_but_a_restarted_source_resets():
    from test_ros_frames import frame_images, pipeline
    pipe, det = pipeline()
    outcomes = [getattr(pipe.process(frame_images(f)), 'reason', 'published') for f in (0, 1, 2, 1, 3)]
    assert outcomes == ['published'] * 3 + ['stale_frame', 'published'] and det.resets == []
    # a short loop replayed without a TF hint: its first set is taken as stale, the second
    # (later than that one, still in the past) shows the source restarted
    outcomes = [getattr(pipe.process(frame_images(f)), 'reason', 'published') for f in (0, 1, 2)]
    assert outcomes == ['stale_frame', 'published', 'published'] and det.resets == ['time_backwards']
    # with the hint (replay: TF stamps went back) nothing is lost
    pipe.clock_jumped_back()
    assert getattr(pipe.process(frame_images(0)), 'reason', 'published') == 'published'


def test_the_replay_command_exits_1_when_a_missing_topic_left_nothing_to_publish(tmp_path, base, capsys):
    from sparsebev_cli import cli
    bag = rewrite_bag(base.path, tmp_path / 'in', lambda items: [
        x for x in items if not x[0].startswith('/CAM_BACK/image')])
    assert cli.main(['replay', bag, str(tmp_path / 'out'), '--preset', 'tiny', '--no-progress',
                     '-p', 'min_cameras:=6']) == 1
    captured = capsys.readouterr()
    assert 'warning: topic /CAM_BACK/image_raw/compressed is not in' in captured.err
    assert 'warning: warning' not in captured.err
    assert 'no frame was published (/CAM_BACK/image_raw/compressed not in the bag)' in captured.err
    assert f'late: {NUM_FRAMES}' in captured.out


def test_nuscenes_to_bag_refuses_an_existing_output_before_reading_tables(tmp_path):
    import argparse
    from sparsebev_ros.bags import from_nuscenes
    (tmp_path / 'out').mkdir()
    args = argparse.Namespace(out_bag=str(tmp_path / 'out'), root=str(tmp_path / 'no_data'),
                              scene='scene-0061', version='v1.0-mini', storage='sqlite3',
                              world_frame='map', base_frame='base_link', max_seconds=None)
    with pytest.raises(BagWriteError, match='already exists'):
        from_nuscenes.main(args)

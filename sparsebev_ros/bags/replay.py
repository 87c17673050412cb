"""``sparsebev replay IN_BAG OUT_BAG``: the node's pipeline over a rosbag2 file, without ROS.

Reads a rosbag2 (sqlite3 or MCAP) with ``rosbags.highlevel.AnyReader``; ``/tf`` and
``/tf_static`` go into :class:`~sparsebev_ros.tf_buffer.TfBuffer`, CameraInfos into the
pipeline, images through :class:`~sparsebev_ros.camera_sync.AnchorSynchronizer` (one camera
set per anchor image, polled on the bag's log time; a camera that is late beyond
``sync_max_wait`` or has no image within ``sync_window`` is missing from its set) into
:class:`~sparsebev_ros.pipeline.Pipeline` (the same code the node runs). The output bag holds
every input message unchanged plus ``/sparsebev/detections`` and ``/sparsebev/markers`` (the
node's topics), so RViz or Foxglove can play it. A synced set waits for TF the way the node
waits up to ``tf_timeout``: until ``/tf`` has reached its newest image stamp, or until the bag
clock has moved ``tf_timeout`` past the moment it was synced.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sparsebev_core.errors import UsageError

from ..camera_sync import CameraSet, synchronizer_for
from ..codecs import header_stamp_ns, seconds_to_ns
from ..frames import tf_buffer_lookup
from ..messages import RosbagsMessages, ros2_typestore
from ..params import (DETECTIONS_TOPIC, MARKERS_TOPIC, DetectorParams, ParameterError,
                      read_yaml_values, validate)
from ..pipeline import Pipeline, PipelineResult, PipelineStats
from ..tf_buffer import InvalidArgumentException, TfBuffer
from .files import (BagReadError, atomic_output_dir, iter_messages, open_bag_reader,
                    read_error_types, salvage_mcap)
from .from_nuscenes import STORAGES, BagExistsError, open_writer


@dataclass
class ReplayReport:
    """What happened during a replay."""
    stats: PipelineStats
    messages: Counter = field(default_factory=Counter)          # per input topic
    missing_topics: list[str] = field(default_factory=list)
    published_stamps: list[int] = field(default_factory=list)   # header stamps of detections
    tf_rejected: int = 0                                        # older than the cache: time jump
    tf_invalid: Counter = field(default_factory=Counter)        # per reason, e.g. 'nan_or_inf'
    undecodable: Counter = field(default_factory=Counter)       # per topic: corrupt messages
    clock_jumps: int = 0                                        # TF stamps of a frame went back
    sync_lost: int = 0                                          # anchor images never in a set
    fewest_images: tuple[str, int] = ('', 0)                    # (camera, images) if incomplete
    anchor_images: int = 0                                      # images of the anchor camera
    sync_counts: Counter = field(default_factory=Counter)       # AnchorSynchronizer.counts
    max_set_spread_ns: int = 0                                  # widest emitted camera set
    sets_over_window: int = 0                                   # sets spanning > sync_window (0)
    salvaged: int = 0                                           # truncated MCAP: intact messages
    wall_s: float = 0.0

    def summary(self) -> str:
        lines = [] if not self.salvaged else [
            f'input bag damaged: replayed only its {self.salvaged} intact messages']
        lines += [f'input messages: {sum(self.messages.values())} '
                 f'({", ".join(f"{t}: {n}" for t, n in sorted(self.messages.items()))})']
        if self.missing_topics:
            lines.append('topics not in the bag (no frame can sync without them): '
                         + ', '.join(self.missing_topics))
        if self.sync_lost:
            lines.append(f'anchor images lost before sync: {self.sync_lost}')
        if self.fewest_images[0]:
            camera, count = self.fewest_images
            lines.append(f'fewest images: {camera} with {count}')
        lines.append(f'camera sets: {self.stats.synced} from {self.anchor_images} anchor images, '
                     f'widest {self.max_set_spread_ns / 1e6:.1f} ms, {self.sets_over_window} over '
                     'the window' + ''.join(f'\n  {k}: {v}' for k, v in sorted(self.sync_counts.items())))
        lines.append(self.stats.summary())
        if self.tf_rejected:
            lines.append(f'TF messages rejected as older than the 10 s cache: {self.tf_rejected}')
        if self.tf_invalid:
            lines.append(f'TF transforms rejected as invalid: {sum(self.tf_invalid.values())}'
                         + ''.join(f'\n  {k}: {v}' for k, v in sorted(self.tf_invalid.items())))
        if self.undecodable:
            lines.append(f'messages that could not be deserialized: {sum(self.undecodable.values())}'
                         + ''.join(f'\n  {k}: {v}' for k, v in sorted(self.undecodable.items())))
        lines.append(f'wall time: {self.wall_s:.1f} s')
        return '\n'.join(lines)


class _TfGate:
    """Synced image sets waiting for TF, released in order (the node's ``tf_timeout`` wait)."""

    def __init__(self, tf_timeout: float):
        self.timeout_ns = seconds_to_ns(tf_timeout)
        self.pending: deque = deque()             # (synced_log_ns, newest image stamp, images)
        self.newest_tf_ns = 0

    def add(self, log_ns: int, images: CameraSet) -> None:
        newest = max(s for s in images.stamps_ns if s is not None)
        self.pending.append((log_ns, newest, images))

    def ready(self, now_ns: int | None) -> list[tuple[int, CameraSet]]:
        """Sets whose TF has arrived or whose wait is over (all of them when ``now_ns`` is None)."""
        out = []
        while self.pending:
            synced_ns, newest_stamp, images = self.pending[0]
            if now_ns is not None and self.newest_tf_ns < newest_stamp and \
                    now_ns - synced_ns < self.timeout_ns:
                break
            self.pending.popleft()
            out.append((synced_ns if now_ns is None else max(now_ns, synced_ns), images))
        return out


class _TfFeed:
    """/tf and /tf_static into the buffer, as tf2's listener: an invalid transform is logged,
    counted and dropped (the rest of its message is kept); data older than the cache means
    time jumped back (a bag loop): the buffer is cleared and refilled."""

    def __init__(self, tf: TfBuffer, gate: _TfGate, on_jump: Callable[[], None],
                 report: 'ReplayReport', warn: Callable[[str, str], None]):
        self.tf, self.gate, self.on_jump, self.report, self.warn = tf, gate, on_jump, report, warn
        self.newest: dict[str, int] = {}          # child frame -> newest dynamic stamp

    def __call__(self, msg: Any, static: bool) -> None:
        for transform in msg.transforms:
            try:
                self._one(transform, static)
            except InvalidArgumentException as exc:
                self.report.tf_invalid[exc.reason] += 1
                self.warn(f'tf/{exc.reason}', f'rejected a {"/tf_static" if static else "/tf"} '
                          f'transform: {exc}')

    def _one(self, transform: Any, static: bool) -> None:
        stamp = header_stamp_ns(transform)
        child = str(transform.child_frame_id).lstrip('/')
        if self.tf.set_transform_msg(transform, static=static):
            if not static:
                if stamp < self.newest.get(child, stamp):
                    self.report.clock_jumps += 1
                    self.on_jump()
                self.newest[child] = stamp
                self.gate.newest_tf_ns = max(self.gate.newest_tf_ns, stamp)
            return
        # more than the cache length older than the newest data: time jumped back (bag loop)
        self.report.tf_rejected += 1
        self.report.clock_jumps += 1
        self.on_jump()
        self.tf.clear()
        self.newest.clear()
        self.tf.set_transform_msg(transform, static=static)
        self.newest[child] = stamp
        self.gate.newest_tf_ns = stamp


def replay(in_bag: str | Path, out_bag: str | Path, params: DetectorParams, detector: Any,
           storage: str = 'sqlite3', progress: bool = True,
           log: Callable[[str], None] = print, distro: str = 'humble',
           on_result: Callable[[PipelineResult], None] | None = None) -> ReplayReport:
    """Run the pipeline over ``in_bag`` and write ``out_bag``; returns the report.

    ``on_result`` sees every published :class:`PipelineResult` (the demo draws from it).
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    in_path = Path(in_bag)
    store = ros2_typestore(distro)
    tf = TfBuffer()
    pipeline = Pipeline(params, detector, tf_buffer_lookup(tf), RosbagsMessages(store), log=log)
    report = ReplayReport(stats=pipeline.stats)
    image_topics = params.subscribed_image_topics
    info_topics = list(params.camera_info_topics)
    inputs = set(image_topics) | set(info_topics) | {'/tf', '/tf_static'}
    sync = synchronizer_for(params)
    gate = _TfGate(params.tf_timeout)

    def clock_jumped_back() -> None:      # a bag loop: old stamps are new data again
        pipeline.clock_jumped_back()
        sync.clear()
    feed_tf = _TfFeed(tf, gate, clock_jumped_back, report, pipeline.warn)
    last_log_ns = [0]

    def add_sets(sets: list[CameraSet], log_ns: int | None) -> None:
        if log_ns is not None:
            last_log_ns[0] = log_ns
        for camera_set in sets:
            report.max_set_spread_ns = max(report.max_set_spread_ns, camera_set.spread_ns)
            report.sets_over_window += int(camera_set.spread_ns > sync.window_ns)
            gate.add(last_log_ns[0], camera_set)

    with contextlib.ExitStack() as stack:
        reader = _open_input(in_path, store, report, log, stack)
        tmp_out = stack.enter_context(atomic_output_dir(out_bag))
        report.missing_topics = _missing_topics(reader, image_topics, info_topics, in_path, log)
        writer = open_writer(tmp_out, storage)
        try:
            copies = _copy_connections(reader, writer, store)
            det_conn = writer.add_connection(DETECTIONS_TOPIC, 'vision_msgs/msg/Detection3DArray',
                                             typestore=store)
            marker_conn = writer.add_connection(MARKERS_TOPIC, 'visualization_msgs/msg/MarkerArray',
                                                typestore=store) if params.publish_markers else None

            def run(ready: list[tuple[int, CameraSet]]) -> None:
                for log_ns, camera_set in ready:
                    result = pipeline.process(camera_set.messages, camera_set.missing)
                    if not isinstance(result, PipelineResult):
                        continue
                    for conn, msg in ((det_conn, result.detections_msg), (marker_conn, result.markers_msg)):
                        if conn is not None and msg is not None:
                            writer.write(conn, log_ns, store.serialize_cdr(msg, msg.__msgtype__))
                    report.published_stamps.append(result.stamp_ns)
                    if on_result is not None:
                        on_result(result)

            bar = tqdm(total=sum(c.msgcount for c in reader.connections), desc='replay',
                       unit='msg', disable=not progress)
            for conn, log_ns, raw in iter_messages(reader, in_path):
                bar.update(1)
                if conn.topic in copies:
                    writer.write(copies[conn.topic], log_ns, raw)
                if conn.topic not in inputs:
                    continue
                report.messages[conn.topic] += 1
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except read_error_types() as exc:          # one corrupt message: count, go on
                    report.undecodable[conn.topic] += 1
                    pipeline.warn(f'undecodable/{conn.topic}', f'cannot deserialize a '
                                  f'{conn.msgtype} on {conn.topic}: {exc}')
                    continue
                if conn.topic in ('/tf', '/tf_static'):
                    feed_tf(msg, conn.topic == '/tf_static')
                elif conn.topic in info_topics:
                    pipeline.on_camera_info(info_topics.index(conn.topic), msg)
                else:
                    camera = image_topics.index(conn.topic)
                    report.anchor_images += int(camera == params.anchor_index)
                    add_sets(sync.add(msg, camera, header_stamp_ns(msg), log_ns), log_ns)
                add_sets(sync.poll(log_ns), log_ns)
                run(gate.ready(log_ns))
            add_sets(sync.flush(), None)
            run(gate.ready(None))
            bar.close()
        finally:
            writer.close()
    report.sync_counts = Counter(sync.counts)
    _count_sync_losses(report, image_topics, params.camera_names)
    report.wall_s = time.perf_counter() - t_start
    return report


def _open_input(in_path: Path, store: Any, report: ReplayReport, log: Callable[[str], None],
                stack: contextlib.ExitStack) -> Any:
    """The input reader; a truncated MCAP bag is replaced by a copy of its intact part."""
    try:
        return stack.enter_context(open_bag_reader(in_path, store))
    except BagReadError as exc:
        if not (in_path.is_dir() and any(in_path.glob('*.mcap'))):
            raise
        salvage = Path(stack.enter_context(tempfile.TemporaryDirectory())) / 'intact'
        try:
            report.salvaged = salvage_mcap(in_path, salvage, store)
        except BagReadError:
            raise exc from None
        log(f'{exc}; replaying the {report.salvaged} intact messages of its readable part')
        return stack.enter_context(open_bag_reader(salvage, store))


def _count_sync_losses(report: ReplayReport, image_topics: list[str], names: list[str]) -> None:
    """Anchor images that never became a camera set (e.g. sync state cleared by a bag loop)."""
    received = [report.messages.get(t, 0) for t in image_topics]
    report.sync_lost = max(0, report.anchor_images - report.stats.synced)
    if min(received) < max(received):
        i = received.index(min(received))
        report.fewest_images = (names[i], received[i])


def _missing_topics(reader: Any, image_topics: list[str], info_topics: list[str], path: Path,
                    log: Callable[[str], None]) -> list[str]:
    """Subscribed topics the bag does not have, each with a warning (and a transport hint)."""
    topics = {c.topic for c in reader.connections}
    missing = [t for t in image_topics + info_topics if t not in topics]
    for t in missing:
        hint = ''
        if t in image_topics:
            other = sorted(x for x in topics if x.startswith(t.rsplit('/compressed', 1)[0]))
            hint = f' (the bag has {", ".join(other)}: check image_transport)' if other else ''
        log(f'topic {t} is not in {path}{hint}; no frame can sync without it')
    return missing


def _copy_connections(reader: Any, writer: Any, store: Any) -> dict[str, Any]:
    """An output connection per input topic (same type, serialization and offered QoS), except
    the detector outputs of an earlier run, which this run replaces."""
    copies: dict[str, Any] = {}
    for c in reader.connections:
        if c.topic in copies or c.topic in (DETECTIONS_TOPIC, MARKERS_TOPIC):
            continue
        ext = getattr(c, 'ext', None)
        copies[c.topic] = writer.add_connection(
            c.topic, c.msgtype, typestore=getattr(reader, 'typestore', store),
            serialization_format=getattr(ext, 'serialization_format', 'cdr'),
            offered_qos_profiles=getattr(ext, 'offered_qos_profiles', ()) or ())
    return copies


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev replay``."""
    from sparsebev_core.cli_common import add_model_arguments
    parser.add_argument('in_bag', help='input rosbag2 folder (sqlite3 or MCAP)')
    parser.add_argument('out_bag', help='output rosbag2 folder (must not exist)')
    parser.add_argument('--params', default=None,
                        help='ROS 2 parameter YAML (/**: ros__parameters:), e.g. config/detector.yaml')
    parser.add_argument('--rig', default=None, metavar='FILE',
                        help='rig YAML (sparsebev_core.rig): sets camera_names and anchor_camera '
                             '(topics /<name>/image_raw, /<name>/camera_info unless given)')
    add_model_arguments(parser, None, checkpoint_help='overrides the checkpoint parameter',
                        preset_help='overrides the preset parameter')
    parser.add_argument('--device', default=None,
                        help="overrides the device parameter (whose default is 'auto'): "
                             "'auto', 'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='override one parameter (YAML value), as `ros2 run --ros-args -p`')
    parser.add_argument('--storage', choices=STORAGES, default='sqlite3', help='output storage')
    parser.add_argument('--distro', choices=('humble', 'jazzy'), default='humble',
                        help='message definitions for types the input bag does not define')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def params_from_args(args: argparse.Namespace) -> DetectorParams:
    """Parameters from --params, then --rig, then --preset/--checkpoint/--device/-p overrides."""
    import yaml
    values: dict[str, Any] = {}
    if args.params:                                  # checked on its own: errors name the file
        values = dict(read_yaml_values(args.params))
    if getattr(args, 'rig', None):
        from sparsebev_core.rig import load_rig
        rig = load_rig(args.rig)
        values.update(camera_names=list(rig.names), anchor_camera=rig.anchor)
    for name, value in (('preset', args.preset), ('checkpoint', args.checkpoint),
                        ('device', args.device), ('config_file', getattr(args, 'config', None))):
        if value is not None:
            values[name] = value
    for item in args.param:
        if ':=' not in item:
            raise UsageError(f"-p expects NAME:=VALUE, got '{item}'")
        name, text = item.split(':=', 1)
        try:
            values[name.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ParameterError(f"-p {item}: the value is not valid YAML "
                                 f"({str(exc).splitlines()[0]}); quote strings, write lists "
                                 "as [a, b]") from None
    return validate(values)


def main(args: argparse.Namespace) -> int:
    """Replay the bag; exit code 1 when frames synced but none was published."""
    from ..pipeline import build_detector
    if not Path(args.in_bag).exists():             # before the model loads
        raise BagReadError(f'input bag {args.in_bag} does not exist')
    if Path(args.out_bag).exists():
        raise BagExistsError(f'output bag {args.out_bag} already exists; remove it or choose '
                             'another name')
    params = params_from_args(args)
    detector = build_detector(params, log=lambda text: print(f'warning: {text}', file=sys.stderr))
    report = replay(args.in_bag, args.out_bag, params, detector, storage=args.storage,
                    progress=not args.no_progress, distro=args.distro,
                    log=lambda text: print(f'warning: {text}', file=sys.stderr))
    print(report.summary())
    print(f'wrote {args.out_bag} ({args.storage}): {report.stats.published} Detection3DArray on '
          f'{DETECTIONS_TOPIC}' + (f' and MarkerArray on {MARKERS_TOPIC}' if params.publish_markers else ''))
    missing_images = [t for t in report.missing_topics if t in params.subscribed_image_topics]
    if not report.stats.published and (report.stats.synced or missing_images):
        print('error: no frame was published' + (f' ({", ".join(missing_images)} not in the bag)'
                                                 if missing_images else ''), file=sys.stderr)
        return 1
    return 0

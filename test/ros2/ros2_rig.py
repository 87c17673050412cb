"""Test-side ROS 2 actors for tier 2 (real rclpy): a camera rig, an output listener, a small
``ros2 bag play``, and an executor-in-a-thread. Imported by the tests in this folder only."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

import numpy as np
import pytest
import rclpy
import simplejpeg
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from sparsebev_core.geometry import CAMERA_NAMES
from sparsebev_core.rig import NUSCENES_CAMERAS, nuscenes_rig
from sparsebev_ros import codecs
from sparsebev_ros.params import PARAMS_BY_NAME, camera_info_topic, image_topic

IMAGE_WH = (400, 225)                       # nuScenes 1600x900 / 4, what `tiny` expects
CAMERA_OFFSETS = (0.0, 0.008, -0.008, 0.025, -0.017, 0.017)   # s, per-camera trigger offsets
WORLD_FRAME = PARAMS_BY_NAME['world_frame'].default   # the rig's ego poses: the node's default
PERIOD = 0.1                                # s between frames (10 Hz)
T0 = 1_700_000_000.0                        # s, first anchor stamp
SPEED = 5.0                                 # m/s along the world x axis
MAX_DETECTIONS = 12
# The rig publishes under /rig so that the bag test (default topics) reaches only its own node.
RIG_IMAGE_TOPICS = ['/rig' + image_topic(c) for c in CAMERA_NAMES]
RIG_INFO_TOPICS = ['/rig' + camera_info_topic(c) for c in CAMERA_NAMES]
WAIT = 60.0                                 # s, generous: 2 shared cores
# Why the real tf2_ros / launch / launch_ros are not here ('' = they are: built by
# scripts/ros2_tier2.sh from the archives in SPARSEBEV_ROS_UPSTREAM)
NO_UPSTREAM = os.environ.get('SPARSEBEV_TIER2_NO_UPSTREAM', '')
needs_upstream = pytest.mark.skipif(bool(NO_UPSTREAM), reason=f'needs the real ROS packages: '
                                                              f'{NO_UPSTREAM}')


def stamp(t: float) -> Time:
    sec, nanosec = codecs.ns_to_sec_nanosec(codecs.seconds_to_ns(t))
    return Time(sec=sec, nanosec=nanosec)


def transform(parent: str, child: str, t: float, xyz: Any, q_wxyz: Any) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = stamp(t), parent, child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = \
        (float(v) for v in xyz)
    r = msg.transform.rotation
    r.w, r.x, r.y, r.z = (float(v) for v in q_wxyz)
    return msg


class Rig:
    """Publishes what a camera rig + localisation would: images, CameraInfo, /tf, /tf_static."""

    def __init__(self, context: Any) -> None:
        self.node = rclpy.create_node('sparsebev_test_rig', context=context)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.image_pubs = [self.node.create_publisher(CompressedImage, topic + '/compressed',
                                                      reliable) for topic in RIG_IMAGE_TOPICS]
        self.info_pubs = [self.node.create_publisher(CameraInfo, topic, reliable)
                          for topic in RIG_INFO_TOPICS]
        self.tf_pub = self.node.create_publisher(TFMessage, '/tf', reliable)
        self.tf_static_pub = self.node.create_publisher(TFMessage, '/tf_static', latched)
        self.sent_tf: list[tuple[TransformStamped, bool]] = []     # (transform, static)
        self.sent_frames: list[list[CompressedImage]] = []
        rng = np.random.default_rng(0)
        self.jpegs = []
        for i in range(len(CAMERA_NAMES)):
            image = rng.integers(0, 255, (IMAGE_WH[1], IMAGE_WH[0], 3), dtype=np.uint8)
            image[: IMAGE_WH[1] // 2] = (120 + 20 * i, 160, 210)              # sky
            self.jpegs.append(simplejpeg.encode_jpeg(image, quality=80, colorspace='RGB'))

    def publish_static(self) -> None:
        transforms = [transform('base_link', f'{name.lower()}_optical', 0.0,
                                NUSCENES_CAMERAS[name]['translation'],
                                NUSCENES_CAMERAS[name]['rotation']) for name in CAMERA_NAMES]
        self.sent_tf += [(t, True) for t in transforms]
        self.tf_static_pub.publish(TFMessage(transforms=transforms))

    def publish_pose(self, t: float) -> None:
        pose = transform(WORLD_FRAME, 'base_link', t, (SPEED * (t - T0), 0.0, 0.0), (1.0, 0.0, 0.0, 0.0))
        self.sent_tf.append((pose, False))
        self.tf_pub.publish(TFMessage(transforms=[pose]))

    def publish_camera_infos(self) -> None:
        for name, pub in zip(CAMERA_NAMES, self.info_pubs):
            K = nuscenes_rig(IMAGE_WH).camera(name).K
            msg = CameraInfo(width=IMAGE_WH[0], height=IMAGE_WH[1], distortion_model='plumb_bob')
            msg.header.frame_id = f'{name.lower()}_optical'
            msg.k = [float(v) for v in K.reshape(-1)]
            msg.d = [0.0] * 5
            pub.publish(msg)

    def publish_images(self, t_anchor: float, cameras: range | list[int] = range(6)) -> None:
        frame = []
        for i in cameras:
            msg = CompressedImage(format='jpeg', data=self.jpegs[i])
            msg.header.stamp = stamp(t_anchor + CAMERA_OFFSETS[i])
            msg.header.frame_id = f'{CAMERA_NAMES[i].lower()}_optical'
            self.image_pubs[i].publish(msg)
            frame.append(msg)
        self.sent_frames.append(frame)

    def publish_frame(self, t_anchor: float, cameras: range | list[int] = range(6)) -> None:
        """Poses bracketing every camera stamp, CameraInfo, then the images."""
        self.publish_pose(t_anchor + PERIOD)
        self.publish_camera_infos()
        self.publish_images(t_anchor, cameras)


class Listener:
    """Records what the detector publishes."""

    def __init__(self, context: Any) -> None:
        self.node = rclpy.create_node('sparsebev_test_listener', context=context)
        self.lock = threading.Lock()
        self.detections: list[Detection3DArray] = []
        self.markers: list[MarkerArray] = []
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.subscriptions = [
            self.node.create_subscription(Detection3DArray, '/sparsebev/detections', self._on_det, qos),
            self.node.create_subscription(MarkerArray, '/sparsebev/markers', self._on_markers, qos)]
        self.reset_client = self.node.create_client(Trigger, '/sparsebev/reset')
        self.latency: list[DiagnosticArray] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(DiagnosticArray, '/sparsebev/latency', self.latency.append,
                                      qos)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, qos)

    def _on_det(self, msg: Detection3DArray) -> None:
        with self.lock:
            self.detections.append(msg)

    def _on_markers(self, msg: MarkerArray) -> None:
        with self.lock:
            self.markers.append(msg)

    def stamps_ns(self) -> list[int]:
        with self.lock:
            return [codecs.header_stamp_ns(m) for m in self.detections]


class IdleDetector:
    """A detector for tests that send no frame: the node builds no model (``detector=``)."""
    cfg = None

    def step(self, frame: Any) -> Any:
        raise AssertionError('no frame was sent')

    def reset(self, reason: str = '') -> None:
        pass


class Spinning:
    """Spin ``nodes`` in their own MultiThreadedExecutor thread; on exit stop the executor and
    wait for its callbacks before the nodes may be destroyed (no callback on a dead node)."""

    def __init__(self, context: Any, *nodes: Any) -> None:
        self.executor = MultiThreadedExecutor(num_threads=2, context=context)
        for node in nodes:
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)

    def __enter__(self) -> 'Spinning':
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.executor.shutdown(timeout_sec=30.0)
        self.thread.join(30.0)


def wait_for(condition: Callable[[], bool], timeout: float = WAIT, what: str = '') -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.02)


class BagPlayer:
    """A small ``ros2 bag play``: publishes a rosbag2's messages in log-time order with real
    rclpy publishers (CDR bytes deserialised by rclpy itself), latched topics latched."""

    def __init__(self, context: Any, bag: Any) -> None:
        import importlib

        from rclpy.serialization import deserialize_message
        from rosbags.highlevel import AnyReader
        self.node = rclpy.create_node('sparsebev_test_bag_player', context=context)
        self.messages: list[tuple[str, Any]] = []
        self.publishers: dict[str, Any] = {}
        with AnyReader([bag]) as reader:
            for conn in reader.connections:
                package, _, name = conn.msgtype.split('/')
                cls = getattr(importlib.import_module(f'{package}.msg'), name)
                latched = 'TRANSIENT_LOCAL' in str(conn.ext.offered_qos_profiles)
                qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                                 else DurabilityPolicy.VOLATILE)
                self.publishers[conn.topic] = (cls, self.node.create_publisher(cls, conn.topic, qos))
            for conn, _, raw in reader.messages():
                cls, _ = self.publishers[conn.topic]
                self.messages.append((conn.topic, deserialize_message(bytes(raw), cls)))

    def play(self, after_each_camera_set: Callable[[int], None]) -> None:
        """Publish everything; after every sixth image call ``after_each_camera_set(n_sets)``."""
        images = 0
        for topic, msg in self.messages:
            self.publishers[topic][1].publish(msg)
            if isinstance(msg, CompressedImage):
                images += 1
                if images % len(CAMERA_NAMES) == 0:
                    after_each_camera_set(images // len(CAMERA_NAMES))

"""STAND-IN for ``tf2_ros`` (tier-2 tests only; no wheel of tf2 exists on PyPI).

Not the ROS package: the subset of its Python API the detector node uses -- ``Buffer``,
``TransformListener`` and the lookup exceptions -- with the same names and signatures, backed
by ``sparsebev_ros.tf_buffer.TfBuffer`` (our re-implementation of tf2's cache and lookup
semantics, docs/ros2.md 3e). ``TransformListener`` subscribes the real ``/tf`` and
``/tf_static`` topics with tf2's QoS through rclpy. On a ROS install the real package is
imported instead (this directory is only on PYTHONPATH in ``scripts/ros2_tier2.sh``).
"""
from __future__ import annotations

import threading
import time as _time
from typing import Any

from sparsebev_ros import codecs as _codecs
from sparsebev_ros import tf_buffer as _tf

IS_STANDIN = True

TransformException = _tf.TransformException
LookupException = _tf.LookupException
ConnectivityException = _tf.ConnectivityException
ExtrapolationException = _tf.ExtrapolationException
InvalidArgumentException = _tf.InvalidArgumentException


def _to_ns(time_: Any) -> int:
    """rclpy Time, builtin_interfaces/Time or None -> ns (0 = latest)."""
    if time_ is None:
        return 0
    if hasattr(time_, 'nanoseconds'):
        return int(time_.nanoseconds)
    return _codecs.stamp_to_ns(time_)


def _timeout_s(timeout: Any) -> float:
    if timeout is None:
        return 0.0
    if hasattr(timeout, 'nanoseconds'):
        return timeout.nanoseconds / 1e9
    return float(timeout)


class Buffer:
    """``Buffer(cache_time=None, node=None)``: transforms with tf2 lookup semantics."""

    def __init__(self, cache_time: Any = None, node: Any = None) -> None:
        seconds = _tf.DEFAULT_CACHE_TIME if cache_time is None else _timeout_s(cache_time)
        self._buffer = _tf.TfBuffer(cache_time=seconds)
        self._new_data = threading.Condition()
        if node is not None:      # as tf2_ros: a jump back in time (a bag loop) clears the buffer
            from rclpy.clock import JumpThreshold
            from rclpy.duration import Duration
            threshold = JumpThreshold(min_forward=None, min_backward=Duration(seconds=-1),
                                      on_clock_change=True)
            self.jump_handle = node.get_clock().create_jump_callback(
                threshold, post_callback=lambda jump: self.clear())

    def set_transform(self, transform: Any, authority: str) -> bool:
        ok = self._buffer.set_transform_msg(transform, static=False)
        with self._new_data:
            self._new_data.notify_all()
        return ok

    def set_transform_static(self, transform: Any, authority: str) -> bool:
        ok = self._buffer.set_transform_msg(transform, static=True)
        with self._new_data:
            self._new_data.notify_all()
        return ok

    def clear(self) -> None:
        self._buffer.clear()

    def lookup_transform(self, target_frame: str, source_frame: str, time: Any,
                         timeout: Any = None) -> Any:
        """``geometry_msgs/TransformStamped`` of ``source_frame`` in ``target_frame`` at
        ``time``; waits up to ``timeout`` for the data, then raises the tf2 exception."""
        t_ns = _to_ns(time)
        deadline = _time.monotonic() + _timeout_s(timeout)
        while True:
            try:
                T = self._buffer.lookup_transform(target_frame, source_frame, t_ns)
                break
            except _tf.TransformException:
                remaining = deadline - _time.monotonic()
                if remaining <= 0:
                    raise
                with self._new_data:
                    self._new_data.wait(min(remaining, 0.05))
        return _transform_stamped(T, target_frame, source_frame, t_ns)

    def can_transform(self, target_frame: str, source_frame: str, time: Any,
                      timeout: Any = None) -> bool:
        try:
            self.lookup_transform(target_frame, source_frame, time, timeout)
            return True
        except _tf.TransformException:
            return False



def _transform_stamped(T: Any, target: str, source: str, stamp_ns: int) -> Any:
    from geometry_msgs.msg import TransformStamped
    msg = TransformStamped()
    sec, nanosec = _codecs.ns_to_sec_nanosec(stamp_ns)
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id, msg.child_frame_id = target, source
    translation, quat_xyzw = _codecs.matrix_to_translation_quat(T)
    tr, rot = msg.transform.translation, msg.transform.rotation
    tr.x, tr.y, tr.z = (float(v) for v in translation)
    rot.x, rot.y, rot.z, rot.w = (float(v) for v in quat_xyzw)
    return msg


class TransformListener:
    """``TransformListener(buffer, node, *, spin_thread=False, qos=None, static_qos=None)``:
    fills ``buffer`` from ``/tf`` (reliable, volatile, depth 100) and ``/tf_static`` (reliable,
    transient local, depth 100), as tf2_ros does."""

    def __init__(self, buffer: Buffer, node: Any, *, spin_thread: bool = False, qos: Any = None,
                 static_qos: Any = None) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage
        qos = qos or QoSProfile(depth=100, durability=DurabilityPolicy.VOLATILE,
                                history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        static_qos = static_qos or QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                              history=HistoryPolicy.KEEP_LAST,
                                              reliability=ReliabilityPolicy.RELIABLE)
        self.buffer = buffer
        self.node = node
        self.tf_sub = node.create_subscription(TFMessage, '/tf', self.callback, qos)
        self.tf_static_sub = node.create_subscription(TFMessage, '/tf_static', self.static_callback,
                                                      static_qos)

    def callback(self, data: Any) -> None:
        for transform in data.transforms:
            self._store(transform, static=False)

    def static_callback(self, data: Any) -> None:
        for transform in data.transforms:
            self._store(transform, static=True)

    def _store(self, transform: Any, static: bool) -> None:
        try:
            if static:
                self.buffer.set_transform_static(transform, 'default_authority')
            else:
                self.buffer.set_transform(transform, 'default_authority')
        except _tf.InvalidArgumentException as exc:     # tf2 logs and drops such transforms
            self.node.get_logger().error(f'invalid transform ignored: {exc}')

    def unregister(self) -> None:
        self.node.destroy_subscription(self.tf_sub)
        self.node.destroy_subscription(self.tf_static_sub)

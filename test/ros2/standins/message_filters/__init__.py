"""STAND-IN for ``message_filters`` (tier-2 tests only; no wheel of it exists on PyPI).

Not the ROS package: the subset of its Python API the detector node uses, with the same names
and call signatures, so that ``sparsebev_ros.node`` runs unchanged on a real rclpy. Grouping is
delegated to ``sparsebev_ros.sync.ApproximateTimeSynchronizer``, our re-implementation of the
documented message_filters algorithm (spec/ros2.md 3e); subscriptions are real rclpy ones.
On a ROS install the real package is imported instead (this directory is only on PYTHONPATH in
``scripts/ros2_tier2.sh``).
"""
from __future__ import annotations

from typing import Any, Callable

from sparsebev_ros import sync as _sync

IS_STANDIN = True


class SimpleFilter:
    """A source of messages with callbacks (``registerCallback`` / ``signalMessage``)."""

    def __init__(self) -> None:
        self.callbacks: dict[int, tuple[Callable[..., Any], tuple]] = {}

    def registerCallback(self, cb: Callable[..., Any], *args: Any) -> int:
        connection = len(self.callbacks)
        self.callbacks[connection] = (cb, args)
        return connection

    def signalMessage(self, *msg: Any) -> None:
        for cb, args in list(self.callbacks.values()):
            cb(*(msg + args))


class Subscriber(SimpleFilter):
    """``Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)``: a real rclpy subscription
    whose messages are passed to the registered callbacks."""

    def __init__(self, node: Any, msg_type: Any, topic: str, **kwargs: Any) -> None:
        super().__init__()
        kwargs.setdefault('qos_profile', 10)
        self.node = node
        self.topic = topic
        self.sub = node.create_subscription(msg_type, topic, self.callback, **kwargs)

    def callback(self, msg: Any) -> None:
        self.signalMessage(msg)

    def getTopic(self) -> str:
        return self.topic

    def __getattr__(self, key: str) -> Any:
        return getattr(self.sub, key)


class ApproximateTimeSynchronizer(SimpleFilter):
    """``ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=False)``."""

    def __init__(self, fs: list, queue_size: int, slop: float, allow_headerless: bool = False):
        super().__init__()
        self.queue_size = queue_size
        self.slop = slop
        self._sync = _sync.ApproximateTimeSynchronizer(len(fs), queue_size, slop,
                                                       allow_headerless=allow_headerless)
        self._sync.register_callback(self.signalMessage)
        self.input_connections = [f.registerCallback(self.add, index) for index, f in enumerate(fs)]

    def add(self, msg: Any, my_queue: Any = None, my_queue_index: int | None = None) -> None:
        # message_filters passes (msg, queue, index); here the callback arg is the index
        index = my_queue if my_queue_index is None else my_queue_index
        self._sync.add(msg, int(index))

# Type stubs for the subset of ros2/message_filters (Python) that sparsebev_ros.node uses.
from typing import Any, Callable

from rclpy.node import Node

class SimpleFilter:
    def registerCallback(self, cb: Callable[..., Any], *args: Any) -> int: ...
    def signalMessage(self, *msg: Any) -> None: ...

class Subscriber(SimpleFilter):
    node: Node
    sub: Any
    topic: str
    def __init__(self, node: Node, msg_type: Any, topic: str, **kwargs: Any) -> None: ...
    def getTopic(self) -> str: ...

class ApproximateTimeSynchronizer(SimpleFilter):
    def __init__(self, fs: list[Any], queue_size: int, slop: float,
                 allow_headerless: bool = ...) -> None: ...

"""The rclpy node ``sparsebev``: N cameras + CameraInfo + TF in, 3D boxes out.

Thin glue around :class:`sparsebev_ros.pipeline.Pipeline` (docs/ros2.md):

* one subscription per camera of ``camera_names`` (``Image`` or ``CompressedImage`` by
  ``image_transport``) feeding :class:`sparsebev_ros.camera_sync.AnchorSynchronizer` (the
  same code as replay: one camera set per anchor image, ``sync_window``, ``sync_max_wait``,
  ``queue_size``), polled on a steady-clock timer so that a set whose late camera never comes
  goes ahead without it; the latest ``CameraInfo`` of each camera; ``tf2_ros.Buffer`` +
  ``TransformListener``;
* each camera set goes into a one-slot :class:`LatestMailbox`; a worker thread takes the latest
  one, assembles the ``Frame`` (TF lookups at every image stamp, decoding), steps the streaming
  detector and publishes. When inference is slower than the cameras, older sets are replaced
  (dropped), never queued;
* outputs ``~/detections`` (``vision_msgs/Detection3DArray``), ``~/markers``
  (``visualization_msgs/MarkerArray``), ``~/latency`` (``diagnostic_msgs/DiagnosticArray``
  stamped with the frame's stamp, one key per stage in ms) and ``/diagnostics`` (1 Hz on a
  steady wall-clock timer, so it keeps reporting when a simulated /clock stops); service
  ``~/reset`` (``std_srvs/Trigger``) clears the temporal memory;
* every module it needs is imported at start-up (:mod:`sparsebev_ros.dependencies`); the same
  error on ``ERROR_STREAK`` frames in a row turns the diagnostics to ERROR with a log line that
  says what to do; ``score_threshold``, ``classes``, ``publish_markers`` and ``marker_style``
  can be set while running (the whole set validated, an invalid value refused with the reason,
  then applied between two frames: no callback ever waits for a frame,
  :mod:`sparsebev_ros.between_frames`);
* when the node's clock jumps back (``/clock`` of a bag played again or looped) the node clears
  the tf2 buffer itself (Humble's Python Buffer never does, some Jazzy releases fail to) and
  resets the temporal memory (``clock_jump``);
* the image, CameraInfo and output entities take ``qos_overrides`` parameters
  (``QoSOverridingOptions``: history, depth, reliability); overrides the node does not declare
  (a shared ``/**`` file) are ignored with a WARN;
* no inference while nobody subscribes to ``~/detections`` or ``~/markers``
  (``skip_when_no_subscribers``).

This is the only module that imports rclpy and tf2_ros, and only inside functions:
``import sparsebev_ros.node`` works without ROS.
"""
from __future__ import annotations

import array
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Sequence

from sparsebev_core.errors import MissingDependencyError
from sparsebev_core.geometry import CLASS_NAMES

from . import codecs
from .backpressure import LatestMailbox
from .between_frames import BetweenFrames
from .frames import Skip, TransformUnavailable, tf2_exception_reason
from .params import (NODE_NAME, PARAMS_BY_NAME, DetectorParams, ParameterError, group_nested,
                     undeclared_notice, validate, with_runtime_changes)
from .reasons import CLOCK_JUMP, EXPLICIT, NO_SUBSCRIBERS
from .statistics import (DEFAULT_ERROR_STREAK, ERROR, OK, WARN, ErrorStreak, NodeActivity,
                         error_key, node_health, streak_advice)

if TYPE_CHECKING:
    from rclpy.node import Node

    from .param_descriptors import RosParameter
    from .pipeline import Pipeline, PipelineResult

LATENCY_STAGES = ('assemble', 'detector', 'messages', 'total', 'end_to_end')
ERROR_STREAK = DEFAULT_ERROR_STREAK       # identical errors in a row before the ERROR diagnostic
EXECUTOR_THREADS = 4     # one per callback group that may run at once: the default one
                         # (parameter and lifecycle services, /clock), sensors, ~/reset and
                         # diagnostics, TF (tf2_ros' own reentrant group)
QOS_OVERRIDES = 'qos_overrides.'          # rclpy's prefix of QoSOverridingOptions parameters
QOS_POLICIES = ('history', 'depth', 'reliability')   # QoSOverridingOptions.with_default_policies()
CLOCK_JUMP_BACK_S = 1.0                   # a /clock jump back of more than this clears TF


def demo_weights_warning(params: DetectorParams, bundled: str | None) -> str | None:
    """The start-up WARN when the bundled synthetic-demo weights are loaded (else None)."""
    if params.checkpoint or not bundled:
        return None
    return (f'loading the bundled DEMO weights {bundled} (preset {params.preset!r}): they were '
            'trained on synthetic scenes only, boxes on real camera images are meaningless. '
            "Set 'preset' and 'checkpoint' to a real SparseBEV checkpoint for a real car.")


def _parameter_type(type_name: str) -> int:
    from rcl_interfaces.msg import ParameterType
    return {'bool': ParameterType.PARAMETER_BOOL, 'int': ParameterType.PARAMETER_INTEGER,
            'float': ParameterType.PARAMETER_DOUBLE, 'str': ParameterType.PARAMETER_STRING,
            'list[str]': ParameterType.PARAMETER_STRING_ARRAY,
            'list[float]': ParameterType.PARAMETER_DOUBLE_ARRAY}[type_name]


def _plain(value: Any) -> Any:
    """rclpy parameter values (``array.array`` for numeric arrays) as plain Python values."""
    return list(value) if isinstance(value, (array.array, tuple)) else value


def parameter_descriptor(rp: 'RosParameter') -> Any:
    """The ``rcl_interfaces/ParameterDescriptor`` of one ROS parameter (``param_descriptors``:
    ranges, read-only, constraints from the schema). Scalars and lists are dynamically typed
    (ints accepted for floats, checked by the schema); a map's entries are typed doubles."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    descriptor = ParameterDescriptor(name=rp.name, type=_parameter_type(rp.type),
                                     description=rp.description, read_only=rp.read_only,
                                     additional_constraints=rp.additional_constraints,
                                     dynamic_typing=not rp.optional)
    if rp.floating_point_range is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=rp.floating_point_range[0], to_value=rp.floating_point_range[1], step=0.0)]
    if rp.integer_range is not None:
        descriptor.integer_range = [IntegerRange(
            from_value=rp.integer_range[0], to_value=rp.integer_range[1], step=1)]
    return descriptor


def _declare(node: 'Node', rp: 'RosParameter') -> Any:
    """Declare one ROS parameter; its value (None: an optional entry left unset)."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.parameter import Parameter
    default = Parameter.Type.DOUBLE if rp.optional else \
        _plain(PARAMS_BY_NAME[rp.schema_name].default)
    try:
        return _plain(node.declare_parameter(rp.name, default, parameter_descriptor(rp)).value)
    except InvalidParameterTypeException:           # a typed entry given an integer (`0`)
        raise ParameterError(f"parameter '{rp.name}' must be a floating-point number "
                             '(write 0.0, not 0)') from None
    except InvalidParameterValueException as exc:   # the schema checked the values before
        raise ParameterError(f"parameter '{rp.name}': {exc}") from None


def declare_parameters(node: 'Node') -> DetectorParams:
    """Declare every parameter of :data:`sparsebev_ros.params.PARAMS` with its descriptor
    (``param_descriptors``: ranges, read-only unless it is a runtime one) and validate the
    values; raises ParameterError naming the bad one. The overrides are validated first, so
    that a bad value gets the schema's message rather than rclpy's range error (overrides
    this node does not declare are warned about: :func:`undeclared_overrides`)."""
    from .param_descriptors import all_ros_parameters
    overrides = getattr(node, '_parameter_overrides', {})
    validate(group_nested({name: _plain(p.value) for name, p in overrides.items()}))
    declared = {rp.name: _declare(node, rp) for rp in all_ros_parameters()}
    values = group_nested({name: v for name, v in declared.items() if v is not None})
    return validate(values)


def undeclared_overrides(node: 'Node', qos: bool = False) -> list[str]:
    """Parameter overrides given to ``node`` that it has not declared: rclpy ignores them
    silently. ``qos``: the ``qos_overrides.*`` ones (declared when an entity with
    ``QoSOverridingOptions`` is created: check after the entities exist), else the others."""
    overrides = getattr(node, '_parameter_overrides', {})   # rclpy keeps them private (Humble, Jazzy)
    return sorted(name for name in overrides if name.startswith(QOS_OVERRIDES) == qos
                  and not node.has_parameter(name))


def check_qos_overrides(node: 'Node') -> None:
    """Refuse, naming it, a ``qos_overrides`` value of a policy the node takes that rclpy
    would fail on when it creates the entity (an unknown reliability, a depth that is not a
    count): checked at start-up, so that configure and activate never fail half-way."""
    from rclpy.qos import HistoryPolicy, ReliabilityPolicy
    enums = {'history': HistoryPolicy, 'reliability': ReliabilityPolicy}
    for name, parameter in getattr(node, '_parameter_overrides', {}).items():
        policy, value = name.rsplit('.', 1)[-1], parameter.value
        if not name.startswith(QOS_OVERRIDES) or policy not in QOS_POLICIES:
            continue
        if policy == 'depth':
            valid = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            allowed = 'a count >= 0'
        else:
            choices = [m.name.lower() for m in enums[policy] if m.name != 'UNKNOWN']
            valid, allowed = isinstance(value, str) and value.lower() in choices, \
                'one of ' + ', '.join(choices)
        if not valid:
            raise ParameterError(f"parameter '{name}' must be {allowed} (got {value!r})")


def qos_overridable() -> Any:
    """``QoSOverridingOptions`` for an input or output entity: its history, depth and
    reliability can be overridden by ``qos_overrides.<topic>.<publisher|subscription>.<policy>``
    parameters (read at creation)."""
    from rclpy.qos_overriding_options import QoSOverridingOptions
    return QoSOverridingOptions.with_default_policies()


def input_qos(reliability: str, depth: int = 5) -> Any:
    """Camera/CameraInfo QoS: the sensor-data profile (best effort, keep last ``depth``), or
    reliable when ``qos_reliability`` says so (a best-effort subscriber also hears reliable
    publishers such as ``ros2 bag play``)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                      else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


class DetectorNode:
    """The detector node. ``DetectorNode().node`` is the rclpy node to add to an executor.

    Plain (``lifecycle=False``): configured and active once constructed. Managed
    (``lifecycle=True``, an ``rclpy.lifecycle.Node``): ``configure`` loads the model and warms
    it up, ``activate`` subscribes the cameras and starts inference, ``deactivate`` stops
    inference (the model stays loaded), ``cleanup`` frees the model and the GPU memory.
    Parameters are declared and validated, and the imports checked, at construction in both.

    Args:
        node_name: ROS node name (outputs are ``/<node_name>/detections`` etc.).
        detector: a ready ``step(frame)/reset(reason)`` detector; None builds one from the
            ``preset`` / ``checkpoint`` / ``device`` parameters.
        class_names: the detector's label names (default: those of ``detector.cfg`` or nuScenes).
        lifecycle: make a managed (lifecycle) node.
        **node_kwargs: passed to the rclpy node (``context``, ``parameter_overrides``, ...).

    Raises:
        ParameterError: a parameter is invalid (the node is destroyed again).
        MissingDependencyError: a module the node imports is missing.
    """

    def __init__(self, node_name: str = NODE_NAME, detector: Any = None,
                 class_names: Sequence[str] | None = None, lifecycle: bool = False,
                 **node_kwargs: Any) -> None:
        self._given_detector, self._given_class_names = detector, class_names
        self.lifecycle = lifecycle
        self.node = _managed_node(self, node_name, **node_kwargs) if lifecycle else \
            _plain_node(node_name, **node_kwargs)
        self._worker: threading.Thread | None = None
        self.configured = self.active = False
        self.mailbox: LatestMailbox[tuple[Any, ...]] = LatestMailbox()
        self.counters: Counter = Counter()
        self.error_streak = ErrorStreak(ERROR_STREAK)
        self._pipeline_lock = threading.Lock()
        self._between_frames = BetweenFrames(self._pipeline_lock, on_error=self._on_change_error)
        self._clock_jump: Any = None
        self._last_publish: float | None = None
        self._last_synced: float | None = None
        try:
            from .dependencies import check_node_dependencies, node_dependencies
            self.params = p = declare_parameters(self.node)
            check_qos_overrides(self.node)
            self.undeclared_parameters = undeclared_overrides(self.node)
            if self.undeclared_parameters:
                self._warn_log(undeclared_notice(self.undeclared_parameters))
            check_node_dependencies(p.image_transport,             # names a missing package
                                    node_dependencies(p.image_transport,
                                                      p.publish_autoware_objects))
            self.node.add_on_set_parameters_callback(self._on_set_parameters)
            # validate the whole set first, apply once every callback accepted it (Iron and
            # later; Humble has no post-set callback: there the on-set callback applies)
            self._apply_on_set = not hasattr(self.node, 'add_post_set_parameters_callback')
            if not self._apply_on_set:
                self.node.add_post_set_parameters_callback(self._on_parameters_set)
            if not lifecycle:
                self.configure()
                self.activate()
        except BaseException:
            self.node.destroy_node()
            raise

    # rclpy ties each logging call site to one severity ("Logger severity cannot be changed
    # between calls"): shared helpers such as ThrottledLogger log through these wrappers.
    def _warn_log(self, text: str) -> None:
        self.node.get_logger().warning(text)

    def _info_log(self, text: str) -> None:
        self.node.get_logger().info(text)

    # ------------------------------------------------------------------ configure
    def configure(self) -> None:
        """Load (and warm up) the detector, TF, the pipeline, publishers, ~/reset, diagnostics."""
        import tf2_ros
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.clock import Clock, ClockType, JumpThreshold
        from rclpy.duration import Duration
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_srvs.srv import Trigger
        from vision_msgs.msg import Detection3DArray
        from visualization_msgs.msg import MarkerArray

        from sparsebev_core.loading import bundled_checkpoint

        from .messages import ImportedMessages
        from .backpressure import ThrottledLogger
        from .pipeline import Pipeline, build_detector

        node, log, p = self.node, self.node.get_logger(), self.params
        if getattr(tf2_ros, 'IS_STANDIN', False):
            log.warning('tf2_ros is a test STAND-IN (test/ros2/standins), not the ROS package')

        detector, class_names = self._given_detector, self._given_class_names
        if detector is None:
            notice = demo_weights_warning(p, bundled_checkpoint(p.preset))
            detector = build_detector(p, log=self._warn_log)
            if notice:
                log.warning(notice)
            seconds = warm_up(detector, p.camera_names)
            log.info(f'model loaded and warmed up ({seconds:.1f} s for the first inference)')
        if class_names is None:
            cfg = getattr(detector, 'cfg', None)
            class_names = tuple(cfg.class_names) if cfg is not None else None
        self.detector = detector
        self.tf_buffer = tf2_ros.Buffer(node=node)
        self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, node, spin_thread=False)
        self.pipeline: Pipeline = Pipeline(p, detector, self._lookup, ImportedMessages(),
                                           log=self._warn_log,
                                           class_names=class_names or CLASS_NAMES)
        self._note = ThrottledLogger(self._info_log, p.warn_throttle)   # expected events
        # our own clear on a jump back (a replayed or looped bag): Humble's Python Buffer
        # registers none, and Jazzy's failed before tf2_ros_py 0.36.5 (docs/ros2.md)
        self._clock_jump = node.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(seconds=-CLOCK_JUMP_BACK_S),
                          on_clock_change=True),
            post_callback=self._on_clock_jump)

        # outputs: reliable, volatile (markers expire by their lifetime, nothing is latched)
        def output(msg_type: Any, topic: str) -> Any:
            return node.create_publisher(
                msg_type, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
                qos_overriding_options=qos_overridable())
        self.detections_pub = output(Detection3DArray, '~/detections')
        self.markers_pub = output(MarkerArray, '~/markers')
        self.latency_pub = output(DiagnosticArray, '~/latency')
        self.diagnostics_pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.objects_pub = None
        if p.publish_autoware_objects:
            from autoware_perception_msgs.msg import DetectedObjects
            self.objects_pub = output(DetectedObjects, '~/objects')
        services = MutuallyExclusiveCallbackGroup()
        self.reset_service = node.create_service(Trigger, '~/reset', self._on_reset,
                                                 callback_group=services)
        # wall clock: with use_sim_time a ROS-clock timer stops when /clock stops
        self.diagnostics_timer = node.create_timer(1.0, self._publish_diagnostics,
                                                   callback_group=services,
                                                   clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.configured = True

    # ------------------------------------------------------------------ activate / deactivate
    def activate(self) -> None:
        """Subscribe the cameras and CameraInfo and start the inference thread."""
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.clock import Clock, ClockType
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from .camera_sync import synchronizer_for

        node, p = self.node, self.params
        sensors = MutuallyExclusiveCallbackGroup()      # images, CameraInfo and the sync poll
        image_type = Image if p.image_transport == 'raw' else CompressedImage
        self.sync = synchronizer_for(p)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.image_subscribers = [
            node.create_subscription(image_type, topic, self._image_callback(i),
                                     input_qos(p.qos_reliability),   # one each: overrides edit it
                                     callback_group=sensors,
                                     qos_overriding_options=qos_overridable())
            for i, topic in enumerate(p.subscribed_image_topics)]
        # a set whose late camera never comes goes ahead at its deadline: poll on a steady clock
        period = max(0.005, min(0.02, p.sync_max_wait / 4 or 0.005))
        self.sync_timer = node.create_timer(period, self._poll_sync, callback_group=sensors,
                                            clock=self._steady)
        self.camera_info_subscriptions = [
            node.create_subscription(CameraInfo, topic, self._camera_info_callback(i),
                                     input_qos(p.qos_reliability),
                                     callback_group=sensors,
                                     qos_overriding_options=qos_overridable())
            for i, topic in enumerate(p.camera_info_topics)]
        unused_qos = undeclared_overrides(node, qos=True)    # every entity exists by now
        if unused_qos:
            node.get_logger().warning(
                f'ignoring QoS override(s) this node does not take: {", ".join(unused_qos)} '
                '(it takes qos_overrides.<topic as resolved>.<publisher|subscription>.<history|'
                'depth|reliability> of its image, CameraInfo and output topics)')
        self.mailbox = LatestMailbox()
        self._worker = threading.Thread(target=self._work, args=(self.mailbox,),
                                        name='sparsebev-inference', daemon=True)
        self._worker.start()
        self.active = True
        node.get_logger().info(f'listening to {p.image_transport} images on '
                               f'{", ".join(p.subscribed_image_topics)}; publishing '
                               f'{p.output_frame} boxes on {self.detections_pub.topic_name}')

    def deactivate(self) -> None:
        """Unsubscribe and stop the inference thread; the model stays loaded."""
        for subscriber in self.image_subscribers:
            self.node.destroy_subscription(subscriber)
        self.node.destroy_timer(self.sync_timer)
        for subscription in self.camera_info_subscriptions:
            self.node.destroy_subscription(subscription)
        self.image_subscribers, self.camera_info_subscriptions = [], []
        self.mailbox.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        self.active = False

    def cleanup(self) -> None:
        """Destroy the outputs, TF and the pipeline and free the model (and GPU memory)."""
        node = self.node
        for publisher in (self.detections_pub, self.markers_pub, self.latency_pub,
                          self.diagnostics_pub, self.objects_pub):
            if publisher is not None:
                node.destroy_publisher(publisher)
        node.destroy_service(self.reset_service)
        node.destroy_timer(self.diagnostics_timer)
        self._release_tf()
        self._between_frames.discard()             # meant for the pipeline that goes now
        del self.pipeline, self.detector, self.tf_listener, self.tf_buffer
        self.configured = False
        free_memory()

    def _release_tf(self) -> None:
        """Unregister what TF left on the node and its clock: the listener's subscriptions,
        our clock-jump callback, and the real Buffer's ``tf2_frames`` service and (Jazzy) its
        own jump callback, so that configure -> cleanup cycles leave nothing behind."""
        self.tf_listener.unregister()
        for handle in (self._clock_jump, getattr(self.tf_buffer, 'jump_handle', None)):
            if handle is not None:
                handle.unregister()
        self._clock_jump = None
        service = getattr(self.tf_buffer, 'srv', None)
        if service is not None:
            self.node.destroy_service(service)

    def _camera_info_callback(self, camera_index: int) -> Any:
        def callback(msg: Any) -> None:
            self.pipeline.on_camera_info(camera_index, msg)
        return callback

    def _lookup(self, target: str, source: str, stamp_ns: int) -> Any:
        """tf2 lookup as FrameAssembler wants it: 4x4 or TransformUnavailable (never identity)."""
        import tf2_ros
        from rclpy.duration import Duration
        from rclpy.time import Time
        try:
            transform = self.tf_buffer.lookup_transform(
                target, source, Time(nanoseconds=stamp_ns),
                timeout=Duration(nanoseconds=codecs.seconds_to_ns(self.params.tf_timeout)))
        except tf2_ros.TransformException as exc:
            raise TransformUnavailable(tf2_exception_reason(exc), str(exc)) from None
        return codecs.transform_to_matrix(transform)

    # ------------------------------------------------------------------ callbacks
    def has_subscribers(self) -> bool:
        """Someone listens to ``~/detections`` or ``~/markers``."""
        return (self.detections_pub.get_subscription_count()
                + self.markers_pub.get_subscription_count()) > 0

    def _image_callback(self, camera_index: int) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            now_ns = self._steady.now().nanoseconds
            for camera_set in self.sync.add(msg, camera_index, codecs.header_stamp_ns(msg), now_ns):
                self._on_synced(camera_set)
        return callback

    def _poll_sync(self) -> None:
        """Emit the camera sets whose wait for late cameras is over."""
        for camera_set in self.sync.poll(self._steady.now().nanoseconds):
            self._on_synced(camera_set)

    def _on_synced(self, camera_set: Any) -> None:
        """One camera set (``camera_sync.CameraSet``): hand it to the worker, newest wins."""
        self._last_synced = time.monotonic()
        if self.params.skip_when_no_subscribers and not self.has_subscribers():
            self.counters[NO_SUBSCRIBERS] += 1
            return
        if self.mailbox.put(camera_set):
            self._note('dropped', 'inference is slower than the cameras: working on the newest '
                       f'frame, {self.mailbox.dropped} older ones dropped so far')

    def _on_reset(self, request: Any, response: Any) -> Any:
        self.mailbox.clear()
        now = self._between_frames.request(lambda: self.pipeline.reset(EXPLICIT))
        self.node.get_logger().info('temporal memory reset (~/reset)')
        response.success = True
        response.message = ('temporal memory cleared' if now else 'temporal memory cleared '
                            'once the frame in flight is done') + \
            '; the next frame starts a new sequence'
        return response

    def _on_clock_jump(self, jump: Any) -> None:
        """The node's clock jumped back more than ``CLOCK_JUMP_BACK_S``, or ROS time was
        switched on or off: clear the tf2 buffer (it refuses data older than its newest minus
        10 s, so a replayed bag would find no pose again); on a jump back also drop the
        waiting camera set and reset the temporal memory (``clock_jump``). Runs in rclpy's
        /clock callback (the default group): never blocks, never raises."""
        from rclpy.clock import ClockChange
        if not self.configured:                # registered while configured only; a race
            return
        self.tf_buffer.clear()
        seconds = jump.delta.nanoseconds / 1e9
        if jump.clock_change in (ClockChange.ROS_TIME_ACTIVATED, ClockChange.ROS_TIME_DEACTIVATED):
            on = jump.clock_change == ClockChange.ROS_TIME_ACTIVATED
            self._info_log(f'ROS time switched {"on" if on else "off"}: TF buffer cleared')
            return
        if seconds < 0:
            self.mailbox.clear()
            self._between_frames.request(lambda: self.pipeline.reset(CLOCK_JUMP))
        self._info_log(f'clock jumped by {seconds:+.3f} s: TF buffer cleared'
                       + (', temporal memory reset' if seconds < 0 else ''))

    def _on_change_error(self, exc: Exception) -> None:
        self._warn_log(f'a change between frames failed: {type(exc).__name__}: {exc}')

    # ------------------------------------------------------------------ worker
    def _work(self, mailbox: LatestMailbox) -> None:
        """Inference loop (until ``mailbox`` is closed): nothing that happens to one frame may
        end it."""
        while not mailbox.closed:
            camera_set = mailbox.take(timeout=0.5)
            if camera_set is None:
                continue
            try:
                with self._pipeline_lock:
                    self._between_frames.apply_waiting()
                    result = self.pipeline.process(camera_set.messages, camera_set.missing)
                self._between_frames.settle()      # what callbacks asked for meanwhile
                if not isinstance(result, Skip):   # skips are counted and warned by the pipeline
                    self._publish(result)
                self.error_streak.success()
            except Exception as exc:
                self._on_frame_error(exc)

    def _on_frame_error(self, exc: Exception) -> None:
        """Count, warn (throttled) and, on ERROR_STREAK identical errors in a row, say so."""
        self.counters['error'] += 1
        key = error_key(exc)
        try:
            self.pipeline.warn(f'error/{type(exc).__name__}',
                               f'frame failed with {type(exc).__name__}: {exc}')
            if self.error_streak.record(key):
                self.node.get_logger().error(
                    f'the last {self.error_streak.limit} frames all failed with {key}; '
                    f'{streak_advice(key)}')
        except Exception:                          # even logging failed: diagnostics count it
            pass

    def _publish(self, result: 'PipelineResult') -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        from .messages import detected_objects, header
        self.detections_pub.publish(result.detections_msg)
        if result.markers_msg is not None:
            self.markers_pub.publish(result.markers_msg)
        if self.objects_pub is not None:
            self.objects_pub.publish(detected_objects(
                self.pipeline.factory, result.boxes, result.scores, result.labels,
                self.pipeline.class_names, result.stamp_ns, self.params.output_frame))
        now_ns = self.node.get_clock().now().nanoseconds
        timings = dict(result.timings, end_to_end=(now_ns - result.stamp_ns) / 1e6)
        # stamped with the frame's stamp, so that a bag lines the latencies up with the images
        latency = DiagnosticStatus(
            name=f'{self.node.get_name()}: latency', message='ms per stage',
            values=[KeyValue(key=f'{stage}_ms', value=f'{timings[stage]:.3f}')
                    for stage in LATENCY_STAGES if stage in timings])
        self.latency_pub.publish(DiagnosticArray(
            header=header(self.pipeline.factory, result.stamp_ns, self.params.output_frame),
            status=[latency]))
        self._last_publish = time.monotonic()

    # ------------------------------------------------------------------ runtime parameters
    def _on_set_parameters(self, parameters: list) -> Any:
        """``ros2 param set`` (on-set callback): validate our parameters of the set together
        (``classes`` also against the detector's); refuse with the reason, changing nothing.
        Applies nothing itself (``_on_parameters_set`` does, once every callback accepted the
        set), except on Humble, which has no post-set callback."""
        from rcl_interfaces.msg import SetParametersResult
        changes = _our_changes(parameters, self.params)
        if not changes:
            return SetParametersResult(successful=True)
        try:
            new = with_runtime_changes(self.params, changes)
            if self.configured:
                self.pipeline.check_output_params(new)
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if self._apply_on_set:
            self._adopt(new, changes)
        return SetParametersResult(successful=True)

    def _on_parameters_set(self, parameters: list) -> None:
        """Post-set callback: the set was accepted by every callback; apply it."""
        changes = _our_changes(parameters, self.params)
        if changes:
            try:
                self._adopt(with_runtime_changes(self.params, changes), changes)
            except ParameterError as exc:     # validated a moment ago: cannot happen
                self._warn_log(f'parameters {changes} not applied: {exc}')

    def _adopt(self, new: DetectorParams, changes: dict) -> None:
        """The node's parameters become ``new`` now, the pipeline's between two frames."""
        self.params = new
        if self.configured:
            self._between_frames.request(lambda: self.pipeline.set_output_params(new))
        self.node.get_logger().info(f'parameters changed: {changes}')

    # ------------------------------------------------------------------ diagnostics
    def diagnostic_status(self) -> Any:
        """One ``diagnostic_msgs/DiagnosticStatus``: the health rule (``statistics.node_health``)
        over the pipeline's counters and latencies and what the node saw lately."""
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
        sync = getattr(self, 'sync', None)
        health = node_health(
            self.pipeline.stats, self.error_streak, NodeActivity(
                now=time.monotonic(), last_publish=self._last_publish,
                last_synced=self._last_synced, has_subscribers=self.has_subscribers(),
                skip_when_no_subscribers=self.params.skip_when_no_subscribers,
                last_missing=self.pipeline.last_missing),
            counters=self.counters, dropped_by_mailbox=self.mailbox.dropped,
            sync_counts=sync.counts if sync is not None else None)
        level = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN,
                 ERROR: DiagnosticStatus.ERROR}[health.level]
        return DiagnosticStatus(level=level, name=f'{self.node.get_name()}: detector',
                                hardware_id=self.params.preset, message=health.message,
                                values=[KeyValue(key=k, value=str(v))
                                        for k, v in health.values.items()])

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        msg = DiagnosticArray(status=[self.diagnostic_status()])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.diagnostics_pub.publish(msg)

    # ------------------------------------------------------------------ teardown
    def destroy(self) -> None:
        """Stop inference, release TF and the model, and destroy the rclpy node."""
        if self.active:
            self.deactivate()
        self.mailbox.close()
        if self.configured:
            self.cleanup()
        self.node.destroy_node()


def _our_changes(parameters: list, base: DetectorParams) -> dict[str, Any]:
    """Our parameters in a set, by schema name, a map's ``<name>.<key>`` entries gathered on
    top of ``base``'s map (rclpy's own, use_sim_time and qos_overrides.*, are rclpy's
    business)."""
    return group_nested({p.name: _plain(p.value) for p in parameters}, base)


def _plain_node(node_name: str, **node_kwargs: Any) -> Any:
    from rclpy.node import Node
    return Node(node_name, **node_kwargs)


def _managed_node(owner: DetectorNode, node_name: str, **node_kwargs: Any) -> Any:
    """An ``rclpy.lifecycle.Node`` whose transitions call ``owner``'s configure/activate/..."""
    from rclpy.lifecycle import Node as LifecycleNode
    from rclpy.lifecycle import State, TransitionCallbackReturn

    def transition(step: Callable[[], None], what: str) -> TransitionCallbackReturn:
        try:
            step()
        except Exception as exc:            # a failed transition leaves the node where it was
            owner.node.get_logger().error(f'{what} failed: {type(exc).__name__}: {exc}')
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def shutdown() -> None:
        if owner.active:
            owner.deactivate()
        if owner.configured:
            owner.cleanup()

    class ManagedDetector(LifecycleNode):
        def on_configure(self, state: State) -> TransitionCallbackReturn:
            return transition(owner.configure, 'configure')

        def on_activate(self, state: State) -> TransitionCallbackReturn:
            return transition(owner.activate, 'activate')

        def on_deactivate(self, state: State) -> TransitionCallbackReturn:
            return transition(owner.deactivate, 'deactivate')

        def on_cleanup(self, state: State) -> TransitionCallbackReturn:
            return transition(owner.cleanup, 'cleanup')

        def on_shutdown(self, state: State) -> TransitionCallbackReturn:
            return transition(shutdown, 'shutdown')

    return ManagedDetector(node_name, **node_kwargs)


def warm_up(detector: Any, camera_names: Sequence[str] | None = None) -> float:
    """Run one blank frame through ``detector`` (the first inference allocates and compiles)
    and forget it; seconds it took. Detectors without ``input_hw`` are left alone."""
    input_hw = getattr(detector, 'input_hw', None)
    if input_hw is None:
        return 0.0
    import numpy as np

    from sparsebev_core.frame import CameraView, Frame
    from sparsebev_core.geometry import CAMERA_NAMES
    names = tuple(camera_names or CAMERA_NAMES)
    h, w = (int(v) for v in input_hw)
    K = np.array([[w / 2.0, 0.0, w / 2.0], [0.0, w / 2.0, h / 2.0], [0.0, 0.0, 1.0]])
    cameras = [CameraView(np.full((h, w, 3), 128, np.uint8), K, np.eye(4), 0.0, np.eye(4), name)
               for name in names]
    t0 = time.perf_counter()
    detector.step(Frame(cameras, 0.0, np.eye(4), np.eye(4), key='warm_up'))
    detector.reset('warm_up')
    return time.perf_counter() - t0


def free_memory() -> None:
    """Collect garbage and hand cached CUDA memory back to the driver."""
    import gc
    gc.collect()
    torch = sys.modules.get('torch')
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


LIFECYCLE_FLAG = '--lifecycle'


def main(args: Sequence[str] | None = None) -> int:
    """Entry point ``detector_node`` (``ros2 run sparsebev_ros detector_node [--lifecycle]``);
    with ``--lifecycle`` the node is a managed node that waits unconfigured."""
    try:
        import rclpy
        import rclpy.logging
        from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    except ImportError as exc:
        print(f'detector_node needs ROS 2 (rclpy): {exc}. Source your ROS 2 installation '
              '(e.g. `source /opt/ros/jazzy/setup.bash`), or run without ROS: '
              '`sparsebev replay IN_BAG OUT_BAG`.', file=sys.stderr)
        return 2
    from rclpy.utilities import remove_ros_args
    argv = list(args) if args is not None else sys.argv
    rclpy.init(args=argv)
    lifecycle = LIFECYCLE_FLAG in remove_ros_args(argv)
    logger = rclpy.logging.get_logger(NODE_NAME)
    detector_node = None
    try:
        try:
            detector_node = DetectorNode(lifecycle=lifecycle)
        except ParameterError as exc:
            logger.fatal(f'invalid parameters: {exc}')
            return 1
        except MissingDependencyError as exc:
            logger.fatal(str(exc))
            return 1
        except Exception as exc:          # checkpoint missing or mismatched, CUDA, ...
            logger.fatal(f'cannot start: {type(exc).__name__}: {exc}')
            return 1
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
        executor.add_node(detector_node.node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if detector_node is not None:
            detector_node.destroy()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())

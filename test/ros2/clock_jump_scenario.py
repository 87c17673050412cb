"""A bag played again without restarting the node, on sim time, against whichever ``tf2_ros``
is first on the path (test_real_tf2.py runs it with Jazzy's and with Humble's): detections at
T0 + 20 s, then ``/clock`` jumps back 20 s and the frame at T0 arrives with its poses. tf2
refuses data older than its newest minus 10 s (``TF_OLD_DATA``) unless the buffer was cleared
on the jump. Prints one JSON line: the tf2_ros file, whether the replayed frame was
published, the skips, and the resets counted for the replay."""
from __future__ import annotations

import json
import sys
import threading
import time

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock

from ros2_rig import (MAX_DETECTIONS, PERIOD, RIG_IMAGE_TOPICS, RIG_INFO_TOPICS, T0, WORLD_FRAME,
                      Listener, Rig, stamp, wait_for)
from sparsebev_ros import codecs
from sparsebev_ros.node import DetectorNode

LATE = T0 + 20.0


def main() -> int:
    import tf2_ros
    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = [Parameter('preset', value='tiny'), Parameter('device', value='cpu'),
                 Parameter('use_sim_time', value=True), Parameter('score_threshold', value=0.0),
                 Parameter('max_detections', value=MAX_DETECTIONS),
                 Parameter('tf_timeout', value=1.0), Parameter('world_frame', value=WORLD_FRAME),
                 Parameter('output_frame', value='base_link'),
                 Parameter('image_topics', value=RIG_IMAGE_TOPICS),
                 Parameter('camera_info_topics', value=RIG_INFO_TOPICS),
                 Parameter('qos_reliability', value='reliable')]
    detector = DetectorNode(node_name='sparsebev', context=context, parameter_overrides=overrides)
    rig, listener = Rig(context), Listener(context)
    clock = rig.node.create_publisher(Clock, '/clock', 10)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    for node in (detector.node, rig.node, listener.node):
        executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    published_after_jump = False
    try:
        wait_for(detector.has_subscribers, what='the listener')
        wait_for(lambda: all(p.get_subscription_count() for p in rig.image_pubs), what='cameras')
        rig.publish_static()
        wait_for(lambda: (rig.publish_camera_infos(), time.sleep(0.1),
                          all(m is not None for m in detector.pipeline.assembler.camera_infos))[-1],
                 what='the CameraInfos')

        stats = detector.pipeline.stats

        def play(t: float) -> bool:
            """The frame at ``t`` with its poses and /clock; True once detected, False once
            skipped."""
            skipped = sum(stats.skipped.values())
            clock.publish(Clock(clock=stamp(t)))
            time.sleep(0.3)                                   # the clock reaches the node
            rig.publish_pose(t - PERIOD)
            rig.publish_frame(t)
            expected = codecs.seconds_to_ns(t)
            wait_for(lambda: expected in listener.stamps_ns() or sum(stats.skipped.values()) > skipped,
                     60.0, f'the frame at {t} detected or skipped')
            return expected in listener.stamps_ns()

        assert play(LATE), f'the first pass was not detected: {dict(stats.skipped)}'
        resets_before = dict(stats.resets)
        published_after_jump = play(T0)                       # the bag again: /clock jumps back
        skipped = dict(stats.skipped)
        resets = {k: n - resets_before.get(k, 0) for k, n in stats.resets.items()
                  if n != resets_before.get(k, 0)}
    finally:       # executor thread ended before the nodes go (else an abort at exit)
        executor.shutdown(timeout_sec=30.0)
        spinner.join(30.0)
        detector.destroy()
        rig.node.destroy_node()
        listener.node.destroy_node()
        rclpy.shutdown(context=context)
    print(json.dumps({'tf2_ros': tf2_ros.__file__, 'published_after_jump': published_after_jump,
                      'skipped': skipped, 'resets': resets}))
    return 0


if __name__ == '__main__':
    sys.exit(main())

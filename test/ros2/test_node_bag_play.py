"""Tier 2: a ``sparsebev nuscenes-to-bag`` scene played into the node like ``ros2 bag play``."""
from __future__ import annotations

import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from vision_msgs.msg import Detection3DArray

from ros2_rig import WAIT, BagPlayer, Spinning, wait_for
from sparsebev_ros import codecs
from sparsebev_ros.node import DetectorNode

@pytest.mark.parametrize('preset', ['tiny', 'tiny_memory'])
def test_a_nuscenes_to_bag_scene_played_into_the_node_with_default_topics(tmp_path, preset):
    """The README workflow in miniature: `sparsebev nuscenes-to-bag` on a synthetic scene,
    played like `ros2 bag play` into a node with the default parameters' topics and frames:
    every camera set is synchronised and published, stamped with its CAM_FRONT stamp; the same
    with the SparseBEV++ twin of the tiny model (the recurrent state carried by the node)."""
    from nuscenes.nuscenes import NuScenes

    from sparsebev_core.data.synthetic.scenes import make_synthetic
    from sparsebev_ros.bags.from_nuscenes import write_scene

    context = rclpy.Context()
    rclpy.init(context=context)
    listener = rclpy.create_node('sparsebev_test_bag_listener', context=context)
    root = make_synthetic(tmp_path / 'synthetic', num_scenes=1, keyframes_per_scene=3,
                          image_size=(200, 112), progress=False)
    nusc = NuScenes(version='v1.0-mini', dataroot=str(root), verbose=False)
    write_scene(nusc, nusc.scene[0]['name'], tmp_path / 'bag')
    player = BagPlayer(context, tmp_path / 'bag')
    front_stamps = [codecs.header_stamp_ns(m) for t, m in player.messages
                    if t == '/CAM_FRONT/image_raw/compressed']

    node = DetectorNode(node_name='sparsebev_bag', context=context,
                        parameter_overrides=[Parameter('preset', value=preset),
                                             Parameter('device', value='cpu'),
                                             Parameter('score_threshold', value=0.0),
                                             Parameter('max_detections', value=3),
                                             Parameter('tf_timeout', value=2.0)])
    received: list[Detection3DArray] = []
    listener.create_subscription(Detection3DArray, '/sparsebev_bag/detections', received.append,
                                 QoSProfile(depth=100))
    try:
        with Spinning(context, node.node, player.node, listener):
            wait_for(node.has_subscribers, 20.0, 'the listener')
            wait_for(lambda: all(pub.get_subscription_count()
                                 for topic, (_, pub) in player.publishers.items()
                                 if topic.endswith('/compressed')), 20.0, 'the node to subscribe')
            stats = node.pipeline.stats
            player.play(lambda n: wait_for(
                lambda: stats.published + sum(stats.skipped.values()) >= n, WAIT,
                f'camera set {n} to be processed'))
            # As with `ros2 bag play`, the first images may beat their CameraInfo (other topic):
            # such sets are skipped; every later one must be published.
            assert set(stats.skipped) <= {'missing_camera_info'}, stats.summary()
            n_published = len(front_stamps) - sum(stats.skipped.values())
            assert n_published >= len(front_stamps) - 2, stats.summary()
            wait_for(lambda: len(received) >= n_published, 10.0, 'all detection arrays')
            assert [codecs.header_stamp_ns(m) for m in received] == front_stamps[-n_published:]
            assert {m.header.frame_id for m in received} == {'base_link'}
            assert all(len(m.detections) == 3 for m in received)
            detector = node.pipeline.detector
            if detector.recurrent:                  # the state went through every published set
                memory = detector.cfg.head.memory
                assert int(detector.recurrent_state.memory_rows[0]) == min(
                    stats.published * memory.len_per_frame, memory.memory_len)
    finally:
        node.destroy()
        player.node.destroy_node()
        listener.destroy_node()
        rclpy.shutdown(context=context)

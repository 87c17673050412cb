"""The ``sparsebev`` command and the demo: the layer above ``sparsebev_core`` (ROS-free model,
data, training, evaluation) and ``sparsebev_ros`` (pipeline, replay, node), which composes both.

Nothing in ``sparsebev_core`` imports from here or from ``sparsebev_ros`` (test_layers.py).
"""

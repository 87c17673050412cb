"""What the node says at start-up and when every frame fails (no ROS needed)."""
from __future__ import annotations

from sparsebev_core.loading import bundled_checkpoint
from sparsebev_ros.node import demo_weights_warning
from sparsebev_ros.statistics import streak_advice
from sparsebev_ros.params import defaults, validate


def test_the_bundled_demo_weights_are_announced_by_name():
    bundled = bundled_checkpoint('tiny')
    assert bundled is not None, 'the tiny demo weights are not shipped'
    text = demo_weights_warning(defaults(), bundled)
    assert text is not None and bundled in text and 'synthetic' in text
    assert "'checkpoint'" in text                              # says what to do


def test_no_warning_with_a_checkpoint_of_ones_own():
    assert demo_weights_warning(validate({'checkpoint': '/models/r50.pth'}),
                                bundled_checkpoint('tiny')) is None
    assert demo_weights_warning(defaults(), None) is None       # random weights: built warns


def test_error_streak_advice_names_what_to_do():
    assert 'install' in streak_advice("ModuleNotFoundError: No module named 'simplejpeg'")
    assert "'device'" in streak_advice('RuntimeError: CUDA error: an illegal memory access')
    assert 'restart' in streak_advice('ValueError: something else')

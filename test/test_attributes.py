"""The nuScenes attribute rule (``sparsebev_core.attributes``), case by case."""
from __future__ import annotations

import pytest

from sparsebev_core.attributes import official_attribute
from sparsebev_core.geometry import CLASS_NAMES


def test_official_attribute_rule():
    assert official_attribute('car', 3.0) == 'vehicle.moving'
    assert official_attribute('car', 0.1) == 'vehicle.parked'
    assert official_attribute('bus', 0.1) == 'vehicle.stopped'
    assert official_attribute('bus', 0.3) == 'vehicle.moving'
    assert official_attribute('bicycle', 1.0) == 'cycle.with_rider'
    assert official_attribute('motorcycle', 0.0) == 'cycle.without_rider'
    assert official_attribute('pedestrian', 1.0) == 'pedestrian.moving'
    assert official_attribute('pedestrian', 0.0) == 'pedestrian.standing'
    assert official_attribute('traffic_cone', 5.0) == ''
    assert official_attribute('trailer', 0.2) == 'vehicle.parked'      # 0.2 m/s is still at rest


@pytest.mark.parametrize('speed', [0.0, 5.0])
def test_every_detection_class_has_an_attribute_or_none(speed):
    for name in CLASS_NAMES:
        attr = official_attribute(name, speed)
        assert attr == '' or attr.split('.')[0] in ('vehicle', 'cycle', 'pedestrian')
        assert (attr == '') == (name in ('barrier', 'traffic_cone'))

"""The nuScenes attribute rule, written once: a box's attribute from its class and speed.

The official result formatting (mmdet3d ``NuScenesDataset._format_bbox``) gives every
detection an attribute: above 0.2 m/s vehicles are ``vehicle.moving`` and cycles
``cycle.with_rider``; at rest pedestrians are ``pedestrian.standing`` and buses
``vehicle.stopped``; every other case takes the class default (``DefaultAttribute``).
The evaluation's submission writer and the synthetic dataset's annotations both use
:func:`official_attribute`.
"""
from __future__ import annotations

MOVING_SPEED = 0.2          # m/s; faster than this counts as moving

# mmdet3d NuScenesDataset.DefaultAttribute
DEFAULT_ATTRIBUTE: dict[str, str] = {
    'car': 'vehicle.parked', 'pedestrian': 'pedestrian.moving', 'trailer': 'vehicle.parked',
    'truck': 'vehicle.parked', 'bus': 'vehicle.moving', 'motorcycle': 'cycle.without_rider',
    'construction_vehicle': 'vehicle.parked', 'bicycle': 'cycle.without_rider',
    'barrier': '', 'traffic_cone': '',
}


def official_attribute(name: str, speed: float) -> str:
    """Attribute the official formatting assigns to class ``name`` at ``speed`` (m/s); ''
    for classes without attributes (barrier, traffic_cone)."""
    if speed > MOVING_SPEED:
        if name in ('car', 'construction_vehicle', 'bus', 'truck', 'trailer'):
            return 'vehicle.moving'
        if name in ('bicycle', 'motorcycle'):
            return 'cycle.with_rider'
        return DEFAULT_ATTRIBUTE[name]
    if name == 'pedestrian':
        return 'pedestrian.standing'
    if name == 'bus':
        return 'vehicle.stopped'
    return DEFAULT_ATTRIBUTE[name]

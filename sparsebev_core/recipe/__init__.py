"""The recipe: what a SparseBEV model is, as plain data (never imports torch).

``config`` (the dataclasses), ``presets`` (the official settings by name), ``frame_layout``
(which frame each of the T slots holds), ``mmcv_reader`` (official config files read without
running them) and ``official`` (official config <-> ``ModelConfig``).
"""

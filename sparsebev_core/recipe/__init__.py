"""The recipe: what a SparseBEV model is, as plain data (never imports torch).

``config`` (the model config dataclasses), ``backbones`` (the backbone configs), ``presets``
(the official settings by name; ``model_config``), ``frame_layout`` (which frame each of the T
slots holds), ``mmcv_reader`` (official config files read without running them),
``official`` / ``official_write`` (official config -> ``ModelConfig`` and back; the format's
fixed values in ``official_fields``, each backbone's mapping in ``official_backbones``).
"""

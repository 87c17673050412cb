"""Custom ops of SparseBEV: the multi-scale multi-view sampling front end."""
from .gather_sampling import msmv_sampling_gather
from .msmv_sampling import (available_backends, get_backend, msmv_sampling, msmv_sampling_torch,
                            prefers_channels_last, register_backend, resolve_backend, set_backend)

__all__ = ['available_backends', 'get_backend', 'msmv_sampling', 'msmv_sampling_gather',
           'msmv_sampling_torch', 'prefers_channels_last', 'register_backend', 'resolve_backend',
           'set_backend']

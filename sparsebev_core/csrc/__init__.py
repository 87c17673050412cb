"""C++/CUDA sources of the msmv_sampling op (built by setup.py or ``python -m sparsebev_core.ops.build``)."""

"""sparsebev_core: SparseBEV (ICCV 2023) in plain PyTorch, with no ROS dependency."""
__version__ = '0.1.0'

"""sparsebev_ros: the ROS 2 layer around sparsebev_core."""

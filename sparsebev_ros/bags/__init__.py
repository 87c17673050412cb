"""The offline tools around rosbag2 files, without ROS: ``replay`` (a bag through the node's
pipeline into an output bag), ``from_nuscenes`` (a nuScenes or synthetic scene as a bag) and
``files`` (bags read and written safely). The live path (the node) never imports these."""

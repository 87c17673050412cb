#!/usr/bin/env bash
# Tier 2 (real rclpy on loopback) — filled in by the ROS layer work; nothing to run yet.
echo "ros2 tier 2: not set up yet"

"""Training, evaluation (nuscenes-devkit) and timing."""

"""nuScenes infos, multi-frame dataset, transforms and the synthetic nuScenes generator."""

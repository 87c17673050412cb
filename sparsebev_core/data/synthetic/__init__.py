"""Synthetic data without nuScenes: scenes in the nuScenes table layout (``scenes``: ``sparsebev
make-synthetic``), the world they show (``world``) and its rendering (``render``)."""

"""BEV plots, camera overlays and sampling-point pictures."""

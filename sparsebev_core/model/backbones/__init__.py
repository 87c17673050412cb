"""Image backbones (ResNet, VoVNet, EVA02) with official state-dict names."""

#!/usr/bin/env bash
# Download, here (with network), the wheels the GPU suite needs on a machine that cannot
# download anything: Python 3.12, x86-64 Linux, torch/numpy/opencv already installed there.
#
#   bash bench/gpu_wheels.sh [DIR]        # default DIR: .whl (git-ignored; carry it along)
#
# No dependency resolution (--no-deps): the list below is the closure of what the suite
# imports beyond torch, numpy and opencv (pytest, the ROS message layer of bench/pipeline.py,
# the build of the CUDA op). The nuscenes-devkit is not needed: timing uses `--data rig`.
set -euo pipefail
DIR=${1:-.whl}
mkdir -p "$DIR"
PACKAGES=(
  pytest iniconfig pluggy packaging pygments   # the GPU tests
  setuptools wheel ninja                       # pip install --no-build-isolation -e . (nvcc build)
  pillow tqdm pyyaml simplejpeg                # core: PIL resize baseline, progress, params, JPEG
  rosbags lz4 ruamel.yaml ruamel.yaml.clib apsw backports.zstd   # messages of bench/pipeline.py
)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -d "$DIR" "${PACKAGES[@]}"
du -sh "$DIR"

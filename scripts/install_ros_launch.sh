#!/usr/bin/env bash
# `ros2 launch`, `ros2 run`, `ros2 topic`, `ros2 param` ... for a venv with the ROS 2 wheels, and
# this checkout as a ROS 2 package in an overlay prefix (see docs/ros_install.md).
#
# Usage:   scripts/install_ros_launch.sh PATH/TO/VENV/bin/python
#
# 1. When `launch`, `launch_ros`, `ros2launch`, `ros2cli` and `composition_interfaces` are not
#    importable by that python (no ROS 2 distribution sourced) and the vendored upstream sources
#    exist (ROS2_LAUNCH_VENDOR, default ../shared/vendor/ros2_launch beside this checkout), they
#    are installed into the venv with the vendor's install_launch.sh (about 30 s, once; a stamp
#    with a fingerprint of the vendored tree makes a second run a no-op). With neither, it says
#    so and installs nothing: the launch tests then skip with that reason.
# 2. Always: (re)writes the overlay prefix <venv>/overlay (scripts/make_overlay.py), which makes
#    the package known to the ament index: `source .venv/overlay/setup.bash`.
#
# Environment: INSTALL_ROS_FORCE=1 re-installs the vendored sources; ROS2_LAUNCH_VENDOR=DIR.
set -euo pipefail
ME="install_ros_launch.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
[[ $# -eq 1 ]] || { echo "usage: $ME PATH/TO/VENV/bin/python" >&2; exit 2; }
PY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
[[ -x "$PY" ]] || { echo "$ME: ERROR: '$1' is not an executable python" >&2; exit 1; }
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE  # let the venv's bootstrapper set LD_LIBRARY_PATH for *this* venv
PREFIX="$(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$PY" -c 'import sys; print(sys.prefix)')"
VENDOR="${ROS2_LAUNCH_VENDOR:-$REPO/../shared/vendor/ros2_launch}"
STAMP="$PREFIX/share/composition_interfaces/install_ros_launch.stamp"

launch_importable() {
  # From / : the checkout's own launch/ folder must not pass for the `launch` package.
  (cd / && env -u LD_LIBRARY_PATH "$PY" -c \
    'import launch.actions, launch_ros.actions, ros2launch, ros2cli, ros2param, ros2topic, composition_interfaces.srv' \
    >/dev/null 2>&1)
}

if [[ -d "$VENDOR/src" && -f "$VENDOR/install_launch.sh" ]]; then
  VENDOR="$(cd "$VENDOR" && pwd)"
  FINGERPRINT="$(
    { cat "$VENDOR/install_launch.sh" "$VENDOR"/*.cmake 2>/dev/null
      (cd "$VENDOR/src" && find . \( -name build -o -name '*.egg-info' -o -name __pycache__ \) -prune \
         -o -type f -printf '%p %s\n' | LC_ALL=C sort); } | sha256sum | cut -d' ' -f1
  )"
else
  VENDOR=""; FINGERPRINT=""
fi

if [[ -z "${INSTALL_ROS_FORCE:-}" && -n "$FINGERPRINT" && -f "$STAMP" && "$(cat "$STAMP")" == "$FINGERPRINT" ]] \
   && launch_importable; then
  echo "$ME: launch + ros2cli (vendored) already installed in $PREFIX (up to date)"
elif [[ -z "${INSTALL_ROS_FORCE:-}" && ! -f "$STAMP" ]] && launch_importable; then
  echo "$ME: launch + ros2cli importable (a ROS 2 distribution): nothing to install"
elif [[ -n "$VENDOR" ]]; then
  echo "$ME: installing launch, launch_ros, ros2cli from $VENDOR into $PREFIX (about 30 s)"
  T0=$SECONDS
  LOG="$(mktemp "${TMPDIR:-/tmp}/install_ros_launch.XXXXXX.log")"
  # Build from a private copy: pip writes build/ and *.egg-info next to the sources, and the vendored
  # tree is shared (read-only for us, possibly used by others at the same time).
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/ros2_launch_src.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
  cp -r "$VENDOR/src/." "$WORK/"
  # --no-build-isolation builds with the venv's setuptools: before 70.1 it needs the `wheel` package
  if ! (cd / && "$PY" -c 'import setuptools.command.bdist_wheel' >/dev/null 2>&1 || "$PY" -c 'import wheel' >/dev/null 2>&1); then
    "$PY" -m pip install --disable-pip-version-check --no-input --progress-bar off "wheel>=0.43" >"$LOG" 2>&1 \
      || { tail -n 25 "$LOG" >&2; echo "$ME: ERROR: pip install wheel failed" >&2; exit 1; }
  fi
  find "$WORK" \( -name build -o -name '*.egg-info' \) -prune -type d -exec rm -rf {} +
  if ! JOBS="${INSTALL_ROS_JOBS:-2}" bash "$VENDOR/install_launch.sh" "$PY" "$WORK" >"$LOG" 2>&1; then
    tail -n 25 "$LOG" >&2
    echo "$ME: ERROR: the vendored install failed; full log: $LOG" >&2
    exit 1
  fi
  launch_importable || { tail -n 25 "$LOG" >&2; echo "$ME: ERROR: launch not importable after the install; log: $LOG" >&2; exit 1; }
  rm -f "$LOG"
  printf '%s\n' "$FINGERPRINT" >"$STAMP"
  echo "$ME: done in $((SECONDS - T0)) s"
elif launch_importable; then
  echo "$ME: launch + ros2cli importable (installed earlier; vendored sources not found now)"
else
  echo "$ME: no ROS 2 distribution and no vendored sources ($REPO/../shared/vendor/ros2_launch):" \
       "ros2 launch / ros2 CLI not installed (the launch tests will skip)"
fi

# 3. colcon (for `colcon build` of this package in a workspace), once. colcon-core pins setuptools < 80
#    and brings pytest plugins: it goes into its own folder <venv>/colcon (pip --target), and
#    <venv>/bin/colcon runs it with the venv's python, so the built nodes' shebang is the venv's
#    python (where rclpy is) and the venv's own packages stay untouched.
COLCON_PINS=("colcon-core==0.21.3" "colcon-ros==0.5.0" "colcon-python-setup-py==0.2.9" "colcon-bash==0.5.0")
COLCON_DIR="$PREFIX/colcon"
COLCON_STAMP="$COLCON_DIR/.pins"
if [[ -f "$COLCON_STAMP" && "$(cat "$COLCON_STAMP")" == "${COLCON_PINS[*]}" && -z "${INSTALL_ROS_FORCE:-}" ]]; then
  echo "$ME: colcon already installed in $COLCON_DIR (up to date)"
else
  echo "$ME: installing colcon into $COLCON_DIR"
  rm -rf "$COLCON_DIR"
  LOG="$(mktemp "${TMPDIR:-/tmp}/install_colcon.XXXXXX.log")"
  if ! "$PY" -m pip install --disable-pip-version-check --no-input --progress-bar off --target "$COLCON_DIR" \
       "${COLCON_PINS[@]}" >"$LOG" 2>&1; then
    tail -n 25 "$LOG" >&2; echo "$ME: ERROR: pip install of colcon failed; full log: $LOG" >&2; exit 1
  fi
  rm -f "$LOG"
  printf '%s\n' "${COLCON_PINS[*]}" >"$COLCON_STAMP"
fi
cat >"$PREFIX/bin/colcon" <<EOF_COLCON
#!/bin/sh
# Generated by scripts/install_ros_launch.sh: colcon from $COLCON_DIR, run by this venv's python.
PYTHONPATH="$COLCON_DIR\${PYTHONPATH:+:\$PYTHONPATH}" exec "$PREFIX/bin/python" -c 'import sys; sys.argv[0] = "colcon"; from colcon_core.command import main; sys.exit(main())' "\$@"
EOF_COLCON
chmod +x "$PREFIX/bin/colcon"

"$PY" "$HERE/make_overlay.py" "$PREFIX/overlay"

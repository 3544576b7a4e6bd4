"""The process environment rclpy needs, set before ``import rclpy`` (see docs/ros_install.md).

The ROS 2 wheels' bootstrapper (a ``.pth`` file) re-executes the venv's python once with
``LD_LIBRARY_PATH`` pointing at the ROS libraries, so normally only the middleware variables
below have to be set. When the bootstrapper did not run (for example because its guard variable
was inherited from another venv's process), the libraries are preloaded by absolute path with
``RTLD_GLOBAL`` so that ``import rclpy`` still resolves them.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import sysconfig

from mbrl_control import MbrlError

RMW_IMPLEMENTATION = "rmw_fastrtps_cpp"
MAX_DOMAIN_ID = 232  # Fast DDS port arithmetic allows 0..232
_PRELOADED: list[ctypes.CDLL] = []


def ensure_ros_env(domain_id: int | None = None, localhost_only: bool = True) -> None:
    """Set the middleware, discovery range and domain; make the ROS libraries loadable.

    Call before the first ``import rclpy`` of the process. ``localhost_only`` keeps DDS
    discovery on the loopback interface (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) unless
    the user already chose a range.
    """
    os.environ["RMW_IMPLEMENTATION"] = RMW_IMPLEMENTATION
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    if localhost_only:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(check_domain_id(domain_id))
    lib_dir = os.path.join(sys.prefix, "lib")
    search = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if lib_dir in search or "rclpy" in sys.modules:
        return  # the bootstrapper (or an earlier call) already made the libraries resolvable
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([lib_dir, *search])  # for child processes
    _preload_ros_libraries(lib_dir)


def check_domain_id(domain_id: int) -> int:
    """A valid ROS domain id, else an MbrlError."""
    if isinstance(domain_id, bool) or not isinstance(domain_id, int) or not 0 <= domain_id <= MAX_DOMAIN_ID:
        raise MbrlError(f"ROS domain id must be an integer in [0, {MAX_DOMAIN_ID}], got {domain_id!r}")
    return domain_id


def _preload_ros_libraries(lib_dir: str) -> None:
    """dlopen every ROS library (one copy of each vendored one), retrying until dependencies resolve."""
    vendored: dict[str, str] = {}
    platlib = sysconfig.get_paths()["platlib"]
    for path in sorted(glob.glob(os.path.join(platlib, "ros_*.libs", "*.so*"))):
        vendored.setdefault(os.path.basename(path), path)  # two copies of one library name abort at load
    pending = list(vendored.values()) + sorted(glob.glob(os.path.join(lib_dir, "lib*.so")))
    while pending:
        failed = []
        for path in pending:
            try:
                _PRELOADED.append(ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL))
            except OSError:
                failed.append(path)
        if len(failed) == len(pending):
            raise MbrlError(f"cannot load the ROS 2 libraries (run 'make setup'): {failed[0]}")
        pending = failed


def raise_priority(nice: int) -> int:
    """Ask the OS for scheduling niceness ``nice`` for every thread of this process; the niceness in effect.

    A control loop sharing the cores with other processes (a planner, a recorder, a build) needs the
    CPU when its tick is due. Linux keeps niceness per thread, so each thread running now is set
    (the DDS threads exist once rclpy is initialised) and threads started later inherit their
    creator's. Lowering it needs CAP_SYS_NICE (or root): without that nothing changes.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice >= current:
        return current
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: the calling thread (and the threads it starts) only
        threads = [0]
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
        except OSError:  # no privilege (PermissionError): leave it
            break
    return os.getpriority(os.PRIO_PROCESS, 0)

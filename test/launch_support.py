"""Helpers for the tests that run ``ros2 launch`` / ``ros2 run`` / the ``ros2`` CLI for real (holds no tests).

Availability: the ``ros2`` command and the ``launch`` packages, either from a ROS 2 distribution or
installed by ``make setup`` from ``../shared/vendor/ros2_launch``, plus the package in an ament
prefix (``make setup``'s overlay ``<venv>/overlay``, or a colcon install on AMENT_PREFIX_PATH).
Where neither a distribution nor the vendored sources exist, the tests skip with that reason;
where the vendored sources exist but were not installed, they fail (``make setup`` was skipped).

Processes: every launch runs in a new session (its own process group) with SIGINT at its default
disposition (a non-interactive parent may have it ignored), so a process-group signal reaches it
and every node, like a Ctrl-C in a terminal; a ``finally`` kills what is left of the group.
Domains: each test leases a ROS domain id in [200, 232] with an exclusive file lock, so parallel
pytest workers, other tests (domains 100-199) and other checkouts on the host never hear each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
VENDOR = REPO.parent / "shared" / "vendor" / "ros2_launch"
OVERLAY = Path(sys.prefix) / "overlay"
PACKAGE = "mbrl_control"
DOMAIN_RANGE = range(200, 233)
NODES_IN_SIM_LAUNCH = ("sim_node", "controller_node", "sysid_node")


def ros2_command() -> str | None:
    """The ``ros2`` CLI of this venv, else the one on PATH (a ROS 2 distribution)."""
    local = Path(sys.executable).parent / "ros2"
    if local.is_file():
        return str(local)
    from shutil import which

    return which("ros2")


def _launch_importable() -> bool:
    code = "import launch.actions, launch_ros.actions, ros2launch, ros2param, ros2topic"
    return subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, timeout=60).returncode == 0


def _package_prefixes() -> list[str]:
    """Ament prefixes that register the package: the overlay, then AMENT_PREFIX_PATH's."""
    found = []
    for prefix in [str(OVERLAY), *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]:
        if prefix and (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file():
            found.append(prefix)
    return found


def require_launch() -> str:
    """The ros2 command, or skip / fail the test with the reason."""
    ros2 = ros2_command()
    missing = None
    if ros2 is None or not _launch_importable():
        missing = "the ros2 CLI / launch packages"
    elif not _package_prefixes():
        missing = f"an ament prefix with {PACKAGE} (the overlay {OVERLAY})"
    if missing is None:
        return ros2
    if VENDOR.is_dir():
        pytest.fail(f"{missing} not installed although {VENDOR} exists: run 'make setup'")
    pytest.skip(f"no ROS 2 distribution and no vendored launch sources ({VENDOR}): {missing} unavailable")


@contextlib.contextmanager
def leased_domain() -> Iterator[int]:
    """A ROS domain id nobody else on this host uses while the test holds it."""
    lock_dir = Path(tempfile.gettempdir())
    start = os.getpid() % len(DOMAIN_RANGE)
    for i in range(len(DOMAIN_RANGE)):
        domain = DOMAIN_RANGE[(start + i) % len(DOMAIN_RANGE)]
        handle = open(lock_dir / f"mbrl_control_ros_domain_{domain}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        try:
            yield domain
        finally:
            handle.close()
        return
    pytest.fail(f"no free ROS domain id in [{DOMAIN_RANGE[0]}, {DOMAIN_RANGE[-1]}]")


def ros_env(domain: int, log_dir: Path, prefixes: list[str] | None = None) -> dict[str, str]:
    """The environment a user's shell has after sourcing the overlay (or a colcon install)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MBRL_CONTROL_SHARE", "PYTEST_XDIST_WORKER")}
    ament = prefixes if prefixes is not None else [*_package_prefixes(), sys.prefix]
    env.update({
        "AMENT_PREFIX_PATH": os.pathsep.join(dict.fromkeys(ament)),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "ROS_LOG_DIR": str(log_dir),
        "PYTHONUNBUFFERED": "1",
    })
    return env


REALTIME_NICE = -10
"""Niceness asked for the launched graph and the rate measurement: what `mbrl-control demo` asks for itself.
On 2 shared cores, pytest-xdist runs the demo test (at -10) beside these; at 0 the launched nodes lost a
fifth of their CPU to it and /drive fell to 42 Hz (wall clock). Without the privilege they run at 0."""


def _child_setup(nice: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if nice is not None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)


class Group:
    """A command in its own session / process group, its output (stdout + stderr) in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None,
                 nice: int | None = REALTIME_NICE) -> None:
        self.args = args
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen(args, env=env, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=str(cwd or tempfile.gettempdir()), start_new_session=True,
                                     preexec_fn=lambda: _child_setup(nice))

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)

    def stop(self, sig: int = signal.SIGINT, times: int = 1, timeout_s: float = 20.0) -> int:
        """``times`` process-group signals 0.1 s apart (a user pressing Ctrl-C again), then wait."""
        for i in range(times):
            if i:
                time.sleep(0.1)
            self.send(sig)
        return self.wait(timeout_s)

    def kill(self) -> None:
        """Whatever is left of the group (also the nodes when the launch process already ended)."""
        self.send(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._out.close()

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def cli(ros2: str, env: dict[str, str], *args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    """One ``ros2`` CLI command (without the daemon: it would outlive the test)."""
    return subprocess.run([ros2, *args], env=env, capture_output=True, text=True, timeout=timeout_s,
                          cwd=tempfile.gettempdir(), start_new_session=True)


def topic_hz(ros2: str, env: dict[str, str], topic: str, seconds: float, log: Path, sim_time: bool = False) -> float:
    """The average rate ``ros2 topic hz`` reports after listening ``seconds`` (``-s``: in sim time, from /clock)."""
    with Group([ros2, "topic", "hz", *(["-s"] if sim_time else []), topic], env, log) as hz:
        time.sleep(seconds)
        hz.stop(timeout_s=15)
        text = hz.output()
    rates = re.findall(r"average rate: ([0-9.]+)", text)
    assert rates, f"ros2 topic hz {topic} printed no rate:\n{text[-2000:]}"
    return float(rates[-1])


def steady_rate(ros2: str, env: dict[str, str], topic: str, seconds: float, log: Path, target_hz: float,
                tolerance_hz: float, sim_time: bool = False, windows: int = 3) -> list[float]:
    """``ros2 topic hz`` over one window, and over another (at most ``windows`` in all) only while the
    last is off the target.

    On 2 cores, one window can coincide with a burst of load: the other test worker, other jobs, or the
    sysid node's first refit in the first seconds of driving (a fresh CI clone saw 48.6 and 47.8 Hz in
    two windows there, 50.0 Hz by the wall-clock listener); a graph that cannot hold the rate fails
    every window. Returns the rates measured (the last one is the verdict).
    """
    rates = [topic_hz(ros2, env, topic, seconds, log, sim_time)]
    while abs(rates[-1] - target_hz) > tolerance_hz and len(rates) < windows:
        rates.append(topic_hz(ros2, env, topic, seconds, log.with_suffix(f".{len(rates) + 1}.txt"), sim_time))
    return rates


def node_exits(launch_output: str, names=NODES_IN_SIM_LAUNCH) -> dict[str, str]:
    """How ros2 launch saw each node end: 'clean', 'exit code N', or 'running' (no line)."""
    result = {}
    for name in names:
        if re.search(rf"\[{name}-\d+\]: process has finished cleanly", launch_output):
            result[name] = "clean"
        else:
            died = re.search(rf"\[{name}-\d+\]: process has died \[pid \d+, exit code (-?\d+)", launch_output)
            result[name] = f"exit code {died.group(1)}" if died else "running"
    return result


def wait_for(predicate, timeout_s: float, period_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return bool(predicate())

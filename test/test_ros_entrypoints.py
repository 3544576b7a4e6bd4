"""The console scripts (what launch files start): they run, shut down cleanly on SIGINT, and refuse bad parameters.

Process start-up imports torch (seconds on a loaded machine), so this starts as few processes as it can.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from test_ros_support import test_domain_id

BIN = Path(sys.executable).parent


def _start(name: str, *ros_args: str) -> subprocess.Popen:
    env = {**os.environ, "ROS_DOMAIN_ID": str(test_domain_id())}
    return subprocess.Popen([str(BIN / name), "--ros-args", *ros_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _collect(proc: subprocess.Popen, lines: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    thread.start()
    return thread


def test_nodes_run_as_processes_and_stop_cleanly_on_sigint():
    procs = [_start("controller_node", "-p", "controller:=pure_pursuit", "-p", "warmup_steps:=1")]
    logs: list[list[str]] = [[]]
    readers = [_collect(p, log) for p, log in zip(procs, logs)]
    try:
        ready = ("pure_pursuit on 'default'",)  # the node's start-up line: it is spinning (safe stops, no odometry)
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and not all(any(r in line for line in log) for r, log in zip(ready, logs)):
            assert all(p.poll() is None for p in procs), logs
            time.sleep(0.2)
        time.sleep(1.0)  # a second of driving
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=30)
    finally:
        for p in procs:
            p.kill()
    for p, reader, log in zip(procs, readers, logs):
        reader.join(timeout=5)
        err = "".join(log)
        assert p.returncode == 0, err
        assert "Traceback" not in err and "terminate called" not in err


def test_a_bad_parameter_is_one_line_and_exit_code_2():
    for name, arg, message in (("sysid_node", "bogus:=1", "unknown parameter 'bogus'"),):
        proc = _start(name, "-p", arg)
        _, err = proc.communicate(timeout=60)
        lines = [line for line in err.strip().splitlines() if not line.startswith("[")]
        assert proc.returncode == 2, err
        assert len(lines) == 1 and lines[0].startswith(f"{name}: error: ") and message in lines[0], err

"""``raise_priority`` (controller_node's ``process_niceness``, the demo's ``--nice``): every thread of the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import json, os, threading
    from mbrl_control.ros.env import raise_priority

    stop = threading.Event()
    started = [threading.Thread(target=stop.wait) for _ in range(3)]  # like the DDS threads: running before
    for t in started:
        t.start()
    effective = raise_priority({nice})
    later = threading.Thread(target=stop.wait)  # like the executor's threads: started after
    later.start()
    tids = [int(t) for t in os.listdir("/proc/self/task")]
    print(json.dumps([effective, sorted({{os.getpriority(os.PRIO_PROCESS, tid) for tid in tids}}), len(tids)]))
    stop.set()
""")


def _probe(nice: int) -> tuple[int, list[int], int]:
    """(niceness returned, the distinct niceness values of the probe's threads, its thread count)."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(nice=nice)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    effective, values, count = json.loads(done.stdout)
    return effective, values, count


def test_every_thread_gets_the_niceness_when_permitted():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    effective, values, threads = _probe(base - 3)
    assert threads >= 5
    if os.geteuid() == 0:  # CAP_SYS_NICE: all threads, also the one started afterwards
        assert effective == base - 3 and values == [base - 3]
    else:  # no privilege: nothing changes, and it says so
        assert effective == base and values == [base]


def test_a_niceness_above_the_current_one_changes_nothing():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    effective, values, _ = _probe(base + 5)
    assert effective == base and values == [base]

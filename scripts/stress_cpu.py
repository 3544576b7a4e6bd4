"""Keep every core busy for a while: one busy-looping process per core, at normal priority.

The load of docs/benchmarks.md ("Under load"): run it beside the thing to measure, e.g.

    python scripts/stress_cpu.py --seconds 120 &
    mbrl-control demo

Pure Python (no stress-ng needed). Each worker spins on arithmetic, so it is always runnable and the
scheduler shares the cores between it and everything else at the same priority. ``--workers`` sets
another count (default: the cores this process may run on); Ctrl-C or SIGTERM stops all workers.
Prints one line when it starts and one with the CPU time the workers got when it ends.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time


def _spin(seconds: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers
    deadline = time.monotonic() + seconds
    x = 0
    while True:
        for _ in range(100_000):  # about 5 ms of pure-Python arithmetic between clock reads
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        if time.monotonic() >= deadline:
            return


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, required=True, help="how long to keep the cores busy [s]")
    parser.add_argument("--workers", type=int, default=None, help="busy processes (default: one per usable core)")
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error("--seconds must be > 0")
    workers = args.workers or _cores()
    if workers < 1:
        parser.error("--workers must be >= 1")
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_spin, args=(args.seconds,), daemon=True) for _ in range(workers)]
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    start = time.monotonic()
    cpu_before = os.times()
    for proc in procs:
        proc.start()
    print(f"stress_cpu: {workers} busy processes (nice {os.nice(0)}) for {args.seconds:g} s", file=sys.stderr, flush=True)
    try:
        for proc in procs:
            proc.join(max(0.0, args.seconds - (time.monotonic() - start)) + 5.0)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(5.0)
    wall = time.monotonic() - start
    cpu_after = os.times()
    cpu = (cpu_after.children_user - cpu_before.children_user) + (cpu_after.children_system - cpu_before.children_system)
    print(f"stress_cpu: done after {wall:.1f} s; workers used {cpu:.1f} CPU-s ({cpu / max(wall, 1e-9):.2f} cores)",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Seconds from starting a command until it prints its first line matching a pattern (then Ctrl-C it).

Used for the demo's cold-start figure: ``python scripts/first_command_time.py '^\\[demo\\] ' -- mbrl-control demo``
prints the time until the node graph is built, the controller warmed up and the executor spinning,
i.e. until the first command can go out.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print("usage: first_command_time.py PATTERN -- COMMAND...", file=sys.stderr)
        return 2
    pattern, command = re.compile(sys.argv[1]), sys.argv[3:]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if pattern.search(line):
            print(f"{time.perf_counter() - start:.2f}")
            proc.send_signal(signal.SIGINT)
            break
    else:
        print(f"no line matched; exit {proc.wait()}", file=sys.stderr)
        return 1
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())

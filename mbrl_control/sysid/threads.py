"""Run system identification on one torch thread.

Identification and residual training work on small tensors (hundreds of rows), where torch's
intra-op threads only add synchronisation; on a loaded machine two threads were measured ~10x
slower than one (0.37 s vs 4.4 s for the same fit). The decorator pins torch to one thread for
the call and restores the previous setting, so a caller's own setting survives.
"""

from __future__ import annotations

import functools
import threading

import torch

_LOCK = threading.RLock()


def single_threaded(fn):
    """Decorator: call ``fn`` with ``torch.set_num_threads(1)``, restoring the thread count afterwards."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _LOCK:
            before = torch.get_num_threads()
            if before != 1:
                torch.set_num_threads(1)
            try:
                return fn(*args, **kwargs)
            finally:
                if before != 1:
                    torch.set_num_threads(before)

    return wrapper

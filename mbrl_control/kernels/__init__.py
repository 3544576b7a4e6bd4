"""Fused Numba CPU / CUDA kernels mirroring models/ and the costs, for speed (tested equal to them).

Threading: the MPPI kernels are parallel over sample blocks. Unless the user chose a Numba
threading layer (``NUMBA_THREADING_LAYER``), the ``workqueue`` layer is selected here: on a
loaded machine OpenMP's spinning barriers made a 2-thread step several times slower than one
thread, while ``workqueue`` degrades gracefully. It must not be entered concurrently; the MPPI
controller serialises its kernel calls with a lock.
"""

import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

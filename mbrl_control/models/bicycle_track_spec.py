"""The numbers of the ``bicycle-track`` benchmark problem (``../shared/bench/PROBLEM.md``), nothing else.

Kept here, in the lowest layer that uses them (the CasADi derivatives of ``models/derivatives.py``),
so that the kernels, the NMPC and the problem itself in ``mbrl_control.benchmarks.bicycle_track``
all read one definition without importing upward.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "WHEELBASE_M", "LR_M", "DT_S", "RADIUS_M", "V_REF_MPS", "ACCEL_MAX_MPS2", "STEER_MAX_RAD", "U_MIN", "U_MAX",
    "X0", "HORIZON", "SIGMA", "LAMBDA", "SAMPLE_COUNTS", "W_DIST", "W_SPEED", "W_HEADING", "W_ACCEL", "W_STEER",
    "CLOSED_LOOP_STEPS", "WARMUP_STEPS", "TIMED_STEPS", "QUALITY_FROM", "PX", "PY", "YAW", "V", "ACC", "STEER",
]

WHEELBASE_M = 0.33
LR_M = 0.17
DT_S = 0.05
RADIUS_M = 5.0
V_REF_MPS = 3.0
ACCEL_MAX_MPS2 = 4.0
STEER_MAX_RAD = 0.4
U_MIN = np.array([-ACCEL_MAX_MPS2, -STEER_MAX_RAD])
U_MAX = np.array([ACCEL_MAX_MPS2, STEER_MAX_RAD])
X0 = np.array([RADIUS_M, 0.0, math.pi / 2.0, 0.0])
HORIZON = 56
SIGMA = np.array([1.0, 0.2])  # (sigma_a, sigma_delta)
LAMBDA = 1.0
SAMPLE_COUNTS = (256, 1024, 2000, 4096, 16384)

W_DIST, W_SPEED, W_HEADING, W_ACCEL, W_STEER = 10.0, 1.0, 2.0, 0.1, 1.0

CLOSED_LOOP_STEPS = 200
WARMUP_STEPS = 10
TIMED_STEPS = 100  # steps 10..109
QUALITY_FROM = 101  # states x_101..x_200

PX, PY, YAW, V = range(4)  # state x = (px, py, yaw, v)
ACC, STEER = range(2)  # control u = (a, delta)

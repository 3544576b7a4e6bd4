#!/usr/bin/env python3
"""Side by side in one run: the command interface's dead-time prediction as it was (RK4 in NumPy on
``numpy_derivative``, the definition traversed in Python per stage) and as it is (the kernel generated
from the same definition, ``mbrl_control/kernels/dead_time.py``), per control step.

    .venv/bin/python scripts/dead_time_prediction_bench.py
"""
import time, numpy as np
from mbrl_control.config import load_vehicle_params
from mbrl_control.control.command_interface import CommandInterface, ActuationConfig
from mbrl_control.models.layout import S, U, STATE_DIM, CONTROL_DIM
from mbrl_control.models.base import integrate_step
from mbrl_control.models.motion_model import numpy_derivative
from mbrl_control.models.single_track import DynamicSingleTrackModel
p = load_vehicle_params('models/f1tenth.yaml')
for d in (0.02, 0.08):
    ci = CommandInterface(ActuationConfig(steer_dead_time_s=d), p, 0.02)
    x = np.zeros(STATE_DIM); x[S.V] = 5.0
    sent = []
    for _ in range(10):
        u = np.array([0.1, 1.0]); ci.wire_command(u, x); sent.append(u)
    k = int(np.ceil(d/0.02 - 1e-9)); first = d - (k-1)*0.02
    def old():
        y = x
        for i, u in enumerate(sent[-k:]):
            y = integrate_step(lambda s, c: numpy_derivative(DynamicSingleTrackModel, s, c, p), y, u, first if i == 0 else 0.02, "rk4")
        return y
    res = {}
    for name, f in (("before (NumPy RK4)", old), ("after (generated kernel)", lambda: ci.predict(x))):
        f(); n = 500 if name.startswith("before") else 20000
        t = time.perf_counter()
        for _ in range(n): f()
        res[name] = 1e6 * (time.perf_counter() - t) / n
    print(f"dead time {d*1e3:.0f} ms: " + ", ".join(f"{k} {v:.1f} us" for k, v in res.items()))

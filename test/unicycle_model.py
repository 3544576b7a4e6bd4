"""A motion model defined in one file outside the package: a unicycle with speed state.

Used by test_problem_extension.py to show that a new model runs through every solver (MPPI on
Numba / torch / CUDA, iLQR/DDP, NMPC) with no edit to ``mbrl_control/``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrl_control.models.motion_model import MotionModel, Quantity


@dataclass(frozen=True)
class UnicycleParams:
    yaw_rate_max_radps: float = 2.0
    accel_max_mps2: float = 3.0
    drag_per_s: float = 0.1


class Unicycle(MotionModel):
    """x' = v cos(yaw), y' = v sin(yaw), yaw' = yaw rate command, v' = accel - drag v."""

    name = "unicycle"
    states = (Quantity("x", "m"), Quantity("y", "m"), Quantity("yaw", "rad"), Quantity("v", "m/s"))
    controls = (Quantity("yaw_rate_cmd", "rad/s"), Quantity("accel", "m/s^2"))
    param_names = ("yaw_rate_max_radps", "accel_max_mps2", "drag_per_s")

    @staticmethod
    def derivative(m, x, u, p):
        s, c = m.sin_cos(x.yaw)
        return x.v * c, x.v * s, u.yaw_rate_cmd, u.accel - p.drag_per_s * x.v

    @classmethod
    def control_bounds(cls, params):
        return (np.array([-params.yaw_rate_max_radps, -params.accel_max_mps2]),
                np.array([params.yaw_rate_max_radps, params.accel_max_mps2]))

    @classmethod
    def safe_stop(cls, state, params):
        return np.array([0.0, float(np.clip(-2.0 * state[3], -params.accel_max_mps2, params.accel_max_mps2))])

"""The kinematic bicycle of ``bicycle-track`` (``../shared/bench/PROBLEM.md`` section 1) as a motion-model definition.

State ``x = (px, py, yaw, v)``, control ``u = (a, delta)``; the continuous-time equations

    beta = atan(lr / L * tan(delta))
    px' = v cos(yaw + beta),  py' = v sin(yaw + beta),  yaw' = v / lr * sin(beta),  v' = a

integrated by one explicit Euler step of ``dt`` (``integrator="euler"``, ``substeps=1`` in
:func:`mbrl_control.benchmarks.bicycle_track.mppi.control_problem`) are PROBLEM.md's discrete model
exactly, written as PROBLEM.md writes them: CasADi's derivatives of ``atan``/``tan`` are compact
(the step Hessian has 93 instructions, against 183 for the same model through ``sqrt``
identities), and the Numba backend's ``tan``/``atan`` are branch-free polynomials that vectorise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrl_control.models import bicycle_track_spec as spec
from mbrl_control.models.motion_model import MotionModel, Quantity


@dataclass(frozen=True)
class BicycleTrackParams:
    """The model's constants (PROBLEM.md section 1) and control bounds."""

    wheelbase_m: float = spec.WHEELBASE_M
    lr_m: float = spec.LR_M
    accel_max_mps2: float = spec.ACCEL_MAX_MPS2
    steer_max_rad: float = spec.STEER_MAX_RAD


class BicycleTrackModel(MotionModel):
    """PROBLEM.md's kinematic bicycle at the centre of gravity (no yaw wrapping)."""

    name = "bicycle_track"
    states = (
        Quantity("px", "m", "position of the centre of gravity, world x"),
        Quantity("py", "m", "position of the centre of gravity, world y"),
        Quantity("yaw", "rad", "heading (not wrapped)"),
        Quantity("v", "m/s", "speed"),
    )
    controls = (
        Quantity("a", "m/s^2", "longitudinal acceleration"),
        Quantity("delta", "rad", "front steering angle"),
    )
    param_names = ("wheelbase_m", "lr_m")

    @staticmethod
    def derivative(m, x, u, p):
        beta = m.atan(p.lr_m / p.wheelbase_m * m.tan(u.delta))
        s_h, c_h = m.sin_cos(x.yaw + beta)
        return x.v * c_h, x.v * s_h, x.v / p.lr_m * m.sin(beta), u.a

    @classmethod
    def control_bounds(cls, params):
        return (np.array([-params.accel_max_mps2, -params.steer_max_rad]),
                np.array([params.accel_max_mps2, params.steer_max_rad]))

    @classmethod
    def safe_stop(cls, state, params):
        """Brake towards standstill (at most the acceleration limit), wheels straight."""
        return np.array([float(np.clip(-state[3] / spec.DT_S, -params.accel_max_mps2, params.accel_max_mps2)), 0.0])

"""Steering-angle estimate for odometry, which carries no steering angle.

The controller (and the sysid node) integrate the models' steering servo
(:meth:`mbrl_control.models.bicycle.SingleTrackBase.steer_rate`: a first-order lag that
saturates smoothly at the steering-rate limit) on the steering *commands* that were sent. Pure
Python on scalars, because it runs once per control tick and must cost microseconds, not a torch
dispatch.
"""

from __future__ import annotations

import math

from mbrl_control.config import VehicleParams

MAX_SUBSTEP_S = 0.005
"""RK4 sub-step; the servo's time constant is >= tens of ms, so this is far inside stability."""


def servo_rate_radps(steer_rad: float, steer_cmd_rad: float, params: VehicleParams) -> float:
    """d(steer)/dt of the servo; same equation as ``SingleTrackBase.steer_rate``."""
    cmd = min(max(steer_cmd_rad, params.steer_min_rad), params.steer_max_rad)
    rate_max = params.steer_rate_max_radps
    rate = rate_max * math.tanh((cmd - steer_rad) / (params.steer_time_constant_s * rate_max))
    if (steer_rad <= params.steer_min_rad and rate < 0.0) or (steer_rad >= params.steer_max_rad and rate > 0.0):
        return 0.0
    return rate


class SteeringEstimator:
    """Integrates the servo model on the commanded steering to estimate the wheels' angle."""

    def __init__(self, params: VehicleParams, steer_rad: float = 0.0) -> None:
        self.params = params
        self.steer_rad = float(steer_rad)
        self.command_rad = float(steer_rad)

    def reset(self, steer_rad: float = 0.0) -> None:
        """Forget the history (wheels assumed at ``steer_rad`` and commanded there)."""
        self.steer_rad = float(steer_rad)
        self.command_rad = float(steer_rad)

    def set_command(self, steer_cmd_rad: float) -> None:
        """The steering command sent now; it is held until the next one (zero-order hold)."""
        if math.isfinite(steer_cmd_rad):
            self.command_rad = float(steer_cmd_rad)

    def advance(self, elapsed_s: float) -> float:
        """Integrate the servo over ``elapsed_s`` with the held command (RK4); the new estimate [rad]."""
        if not elapsed_s > 0.0 or not math.isfinite(elapsed_s):
            return self.steer_rad
        steps = max(1, math.ceil(elapsed_s / MAX_SUBSTEP_S - 1e-9))
        h = elapsed_s / steps
        d, cmd, p = self.steer_rad, self.command_rad, self.params
        for _ in range(steps):  # a handful of scalar steps per control tick
            k1 = servo_rate_radps(d, cmd, p)
            k2 = servo_rate_radps(d + 0.5 * h * k1, cmd, p)
            k3 = servo_rate_radps(d + 0.5 * h * k2, cmd, p)
            k4 = servo_rate_radps(d + h * k3, cmd, p)
            d += h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        self.steer_rad = min(max(d, p.steer_min_rad), p.steer_max_rad)
        return self.steer_rad

"""Dynamic single-track car whose driver follows speed set-points and steers at a limited rate.

The plant of an F1TENTH car (a VESC in speed mode) and of the F1TENTH community simulator: the
chassis of :mod:`.single_track` driven by the speed loop of :mod:`.speed_loop` (then the drive
limits and drag of :mod:`.actuation`) and by a steering rate from :mod:`.rate_limited_steering`.
The controls are what such a car's actuators receive: the steering rate over the current physics
step (the plant computes it from the delayed steering command) and the speed set-point.
Used by the speed-following plant (``--actuation speed``) and by actuator identification; the
planners keep planning accelerations and steering angles on :mod:`.single_track`.
"""

from __future__ import annotations

import numpy as np

from mbrl_control.models.actuation import drive_acceleration
from mbrl_control.models.kinematic_bicycle import SINGLE_TRACK_PARAMS, SINGLE_TRACK_STATES
from mbrl_control.models.motion_model import MotionModel, Quantity
from mbrl_control.models.single_track import single_track_rates
from mbrl_control.models.speed_loop import speed_loop_acceleration


class SpeedCommandedSingleTrackModel(MotionModel):
    """Single-track chassis behind a speed loop and a steering-rate actuator."""

    name = "speed_commanded_single_track"
    states = SINGLE_TRACK_STATES
    controls = (Quantity("steer_rate", "rad/s", "steering rate held over the physics step"),
                Quantity("speed_set", "m/s", "speed set-point of the driver's loop"))
    param_names = SINGLE_TRACK_PARAMS + ("speed_gain_up_per_s", "speed_gain_down_per_s")

    @staticmethod
    def derivative(m, x, u, p):
        a, dv = drive_acceleration(m, x.v, speed_loop_acceleration(m, x.v, u.speed_set, p), p)
        return single_track_rates(m, x, u.steer_rate, a, dv, p)

    @classmethod
    def control_bounds(cls, params):
        return (np.array([-params.steer_rate_max_radps, params.v_min_mps]),
                np.array([params.steer_rate_max_radps, params.v_max_mps]))

    @classmethod
    def safe_stop(cls, state, params):
        return np.array([0.0, 0.0])

"""The one state / control layout every model, plant, kernel and ROS conversion shares.

State ``s`` (7), the CommonRoad single-track order used by f1tenth_gym:

====  ============  ======  ==========================================
idx   name          unit    meaning
====  ============  ======  ==========================================
0     X             m       position of the centre of gravity, world x
1     Y             m       position of the centre of gravity, world y
2     STEER         rad     front wheel steering angle
3     V             m/s     speed of the centre of gravity (signed)
4     YAW           rad     heading (not wrapped)
5     YAW_RATE      rad/s   yaw rate
6     SLIP          rad     side-slip angle at the centre of gravity
====  ============  ======  ==========================================

Control ``u`` (2), exactly what goes on the wire (AckermannDrive ``steering_angle``,
``acceleration``):

====  ============  ======  ==========================================
0     STEER_CMD     rad     commanded steering angle (servo tracks it)
1     ACCEL         m/s^2   commanded longitudinal acceleration
====  ============  ======  ==========================================

The velocity states (V, YAW_RATE, SLIP) are the ones a learned residual corrects:
``s' = step_physics(s, u) + E @ residual(s, u)`` with ``E`` scattering into VELOCITY_STATES.
"""

from __future__ import annotations

from enum import IntEnum


class S(IntEnum):
    """State indices."""

    X = 0
    Y = 1
    STEER = 2
    V = 3
    YAW = 4
    YAW_RATE = 5
    SLIP = 6


class U(IntEnum):
    """Control indices."""

    STEER_CMD = 0
    ACCEL = 1


STATE_DIM = len(S)
CONTROL_DIM = len(U)
STATE_NAMES = tuple(s.name.lower() for s in S)
CONTROL_NAMES = tuple(u.name.lower() for u in U)
VELOCITY_STATES = (S.V, S.YAW_RATE, S.SLIP)
"""States a residual model corrects; the pose follows from them by integration."""
RESIDUAL_INPUT_STATES = (S.STEER, S.V, S.YAW_RATE, S.SLIP)
"""Pose-invariant states a residual model sees (with both controls)."""

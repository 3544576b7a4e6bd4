"""Conversions between the model state and odometry fields (pose + body-frame twist).

Odometry carries everything but the steering angle: ``vx_body = v cos(slip)``,
``vy_body = v sin(slip)``, ``wz = yaw_rate``. The steering angle comes from elsewhere (the
commanded steering through the servo model, or a steering sensor).
"""

from __future__ import annotations

import math

import numpy as np

from mbrl_control.models.layout import STATE_DIM, S


def yaw_to_quaternion(yaw_rad: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation about z."""
    return 0.0, 0.0, math.sin(0.5 * yaw_rad), math.cos(0.5 * yaw_rad)


def quaternion_to_yaw(x: float, y: float, z: float, w: float) -> float:
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def state_to_odometry(state: np.ndarray) -> dict[str, float]:
    """Pose and body-frame twist of a state."""
    v, slip = float(state[S.V]), float(state[S.SLIP])
    qx, qy, qz, qw = yaw_to_quaternion(float(state[S.YAW]))
    return {
        "x_m": float(state[S.X]), "y_m": float(state[S.Y]), "qx": qx, "qy": qy, "qz": qz, "qw": qw,
        "vx_body_mps": v * math.cos(slip), "vy_body_mps": v * math.sin(slip), "yaw_rate_radps": float(state[S.YAW_RATE]),
    }


def odometry_to_state(x_m: float, y_m: float, yaw_rad: float, vx_body_mps: float, vy_body_mps: float,
                      yaw_rate_radps: float, steer_rad: float, yaw_ref_rad: float | None = None) -> np.ndarray:
    """Build the 7-state; ``yaw_ref_rad`` unwraps the yaw next to a previous value (yaw is not wrapped)."""
    if yaw_ref_rad is not None:
        yaw_rad = yaw_ref_rad + math.remainder(yaw_rad - yaw_ref_rad, 2.0 * math.pi)
    speed = math.hypot(vx_body_mps, vy_body_mps)
    v = speed if vx_body_mps >= 0 else -speed
    slip = math.atan2(vy_body_mps, abs(vx_body_mps)) if speed > 1e-3 else 0.0
    if vx_body_mps < 0:
        slip = -slip
    s = np.zeros(STATE_DIM)
    s[S.X], s[S.Y], s[S.STEER], s[S.V] = x_m, y_m, steer_rad, v
    s[S.YAW], s[S.YAW_RATE], s[S.SLIP] = yaw_rad, yaw_rate_radps, slip
    return s

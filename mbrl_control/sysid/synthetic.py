"""Deterministic excitation drives for identification tests and benchmarks (no track needed).

The car follows a slowly varying speed reference with a proportional acceleration command while
the steering command is a multi-sine scaled to a safe lateral acceleration at the current speed,
which excites the servo, yaw and slip dynamics over a range of speeds. The plant is the torch
:class:`~mbrl_control.models.bicycle.DynamicSingleTrack` integrated with RK4 at 100 Hz (the
built-in plant's rate) and sampled at the control period, optionally with measurement noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mbrl_control.bag import TelemetryWriter, command_speed
from mbrl_control.config import VehicleParams
from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle, kinematic_state
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S, U
from mbrl_control.sysid.threads import single_threaded

STEER_TONES = ((0.31, 0.0, 0.5), (0.83, 1.0, 0.3), (1.7, 2.0, 0.2))
"""(frequency Hz, phase rad, weight) of the steering multi-sine."""


@torch.no_grad()
@single_threaded
def excitation_drive(params: VehicleParams, duration_s: float, dt_s: float = 0.02, seed: int = 0,
                     lateral_accel_mps2: float = 5.0, speed_range_mps: tuple[float, float] = (2.0, 6.0),
                     noise_std: float = 0.0, kinematic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t_s (N,), measured states (N, 7), commands (N, 2)) of an excitation drive on ``params``.

    The plant is the dynamic single-track model, or the kinematic bicycle with ``kinematic``.
    ``noise_std`` adds Gaussian noise to the measured velocity states (m/s, rad/s, rad) and a
    tenth of it to the position (m) and yaw (rad); the steering angle is measured exactly.
    """
    rng = np.random.default_rng(seed)
    substeps = max(1, int(round(dt_s / 0.01)))
    plant = (KinematicBicycle if kinematic else DynamicSingleTrack)(params, dt_s=dt_s, integrator="rk4", substeps=substeps, dtype=torch.float64)
    n = int(round(duration_s / dt_s))
    t = np.arange(n) * dt_s
    lo, hi = speed_range_mps
    phase = rng.uniform(0, 2 * math.pi, size=len(STEER_TONES))
    v_ref = lo + (hi - lo) * (0.5 - 0.5 * np.cos(2 * math.pi * t / 9.0 + rng.uniform(0, 0.5)))
    tone = sum(w * np.sin(2 * math.pi * f * t + p + q) for (f, p, w), q in zip(STEER_TONES, phase))
    states = np.zeros((n, STATE_DIM))
    controls = np.zeros((n, CONTROL_DIM))
    s = kinematic_state(0.0, 0.0, 0.0, 1.0, 0.0, params)
    for k in range(n):
        v = float(s[S.V])
        steer_amp = min(params.steer_max_rad, lateral_accel_mps2 * params.wheelbase_m / max(v, 1.0) ** 2)
        u = torch.zeros(CONTROL_DIM, dtype=torch.float64)
        u[U.STEER_CMD] = steer_amp * tone[k]
        u[U.ACCEL] = float(np.clip(2.0 * (v_ref[k] - v), -4.0, 4.0))
        states[k], controls[k] = s.numpy(), u.numpy()
        s = plant(s, u)
    if noise_std > 0:
        states = add_noise(states, noise_std, rng)
    return t, states, controls


def add_noise(states: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Measurement noise: ``std`` on V, YAW_RATE, SLIP; ``std / 10`` on X, Y, YAW."""
    out = states.copy()
    for idx, scale in ((S.X, 0.1), (S.Y, 0.1), (S.YAW, 0.1), (S.V, 1.0), (S.YAW_RATE, 1.0), (S.SLIP, 1.0)):
        out[:, idx] += rng.normal(0.0, std * scale, len(out))
    return out


def write_bag(path, t_s: np.ndarray, states: np.ndarray, controls: np.ndarray, dt_s: float) -> None:
    """Record a drive as the simulator does (odometry and drive commands at each control step)."""
    with TelemetryWriter(path) as writer:
        for t, s, u in zip(t_s, states, controls):
            writer.odometry(float(t), s)
            writer.command(float(t), u, command_speed(s, u, dt_s))

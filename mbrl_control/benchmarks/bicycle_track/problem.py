"""The fixed benchmark problem ``bicycle-track`` of ``../shared/bench/PROBLEM.md``, exactly.

A 4-state kinematic bicycle ``x = (px, py, yaw, v)`` with control ``u = (a, delta)``, explicit
Euler at ``dt = 0.05 s``, tracking the counter-clockwise circle of radius 5 m at 3 m/s.
This module holds what every solver on the problem shares (iLQR, MPPI, peers): the model and
stage cost in NumPy (float64) and torch (batched, differentiable), the trajectory cost ``J``,
the closed loop with its timing protocol and the quality metrics; the problem's numbers are
:mod:`mbrl_control.models.bicycle_track_spec`. Solvers are plain callables
``controller(x) -> u`` with ``u`` in the problem's order ``(a, delta)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from mbrl_control.models.bicycle_track_spec import (ACC, CLOSED_LOOP_STEPS, DT_S, LR_M, PX, PY, QUALITY_FROM, RADIUS_M,
                                                    STEER, TIMED_STEPS, U_MAX, U_MIN, V, V_REF_MPS, W_ACCEL, W_DIST,
                                                    W_HEADING, W_SPEED, W_STEER, WARMUP_STEPS, WHEELBASE_M, X0, YAW)

Controller = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------ model and cost (NumPy)

def step(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One Euler step of ``dt`` (batched over leading dimensions, float64). ``u`` is not clipped here."""
    x = np.asarray(x, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    beta = np.arctan(LR_M / WHEELBASE_M * np.tan(u[..., STEER]))
    v, yaw = x[..., V], x[..., YAW]
    return np.stack([
        x[..., PX] + DT_S * v * np.cos(yaw + beta),
        x[..., PY] + DT_S * v * np.sin(yaw + beta),
        yaw + DT_S * v / LR_M * np.sin(beta),
        v + DT_S * u[..., ACC],
    ], axis=-1)


def stage_cost(x_next: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``l(x_{t+1}, u_t)``: distance to the circle, speed error, heading error, control effort."""
    px, py, yaw, v = x_next[..., PX], x_next[..., PY], x_next[..., YAW], x_next[..., V]
    d = np.hypot(px, py) - RADIUS_M
    psi = np.arctan2(py, px) + math.pi / 2.0
    return (W_DIST * d**2 + W_SPEED * (v - V_REF_MPS) ** 2 + W_HEADING * (1.0 - np.cos(yaw - psi))
            + W_ACCEL * u[..., ACC] ** 2 + W_STEER * u[..., STEER] ** 2)


def trajectory_cost(x0: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """``J(x0, u_0..u_{T-1})`` for controls (..., T, 2): the state part on the resulting states."""
    controls = np.asarray(controls, dtype=np.float64)
    x = np.broadcast_to(np.asarray(x0, dtype=np.float64), controls.shape[:-2] + (4,))
    total = np.zeros(controls.shape[:-2])
    for t in range(controls.shape[-2]):
        x = step(x, controls[..., t, :])
        total = total + stage_cost(x, controls[..., t, :])
    return total


def clip_control(u: np.ndarray) -> np.ndarray:
    """What the plant does with any command: clip to the bounds."""
    return np.clip(np.asarray(u, dtype=np.float64), U_MIN, U_MAX)


# ------------------------------------------------------------------ model and cost (torch)

def step_torch(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """:func:`step` for torch tensors (batched, differentiable; dtype of ``x``)."""
    beta = torch.atan(LR_M / WHEELBASE_M * torch.tan(u[..., STEER]))
    v, yaw = x[..., V], x[..., YAW]
    return torch.stack([
        x[..., PX] + DT_S * v * torch.cos(yaw + beta),
        x[..., PY] + DT_S * v * torch.sin(yaw + beta),
        yaw + DT_S * v / LR_M * torch.sin(beta),
        v + DT_S * u[..., ACC],
    ], dim=-1)


def stage_cost_torch(x_next: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """:func:`stage_cost` for torch tensors; heading term in the wrap-safe form ``1 - (sin(yaw) px - cos(yaw) py) / r``."""
    px, py, yaw, v = x_next[..., PX], x_next[..., PY], x_next[..., YAW], x_next[..., V]
    r = torch.sqrt(px * px + py * py)
    d = r - RADIUS_M
    heading = 1.0 - (torch.sin(yaw) * px - torch.cos(yaw) * py) / r
    return (W_DIST * d * d + W_SPEED * (v - V_REF_MPS) ** 2 + W_HEADING * heading
            + W_ACCEL * u[..., ACC] ** 2 + W_STEER * u[..., STEER] ** 2)


# ------------------------------------------------------------------ closed loop and metrics

@dataclass
class ClosedLoopResult:
    """States ``x_0..x_N`` (N+1, 4), applied (clipped) controls (N, 2), controller call times [ms] (N,)."""

    states: np.ndarray
    controls: np.ndarray
    times_ms: np.ndarray


def run_closed_loop(controller: Controller, steps: int = CLOSED_LOOP_STEPS, x0: np.ndarray = X0) -> ClosedLoopResult:
    """Drive the true model from ``x0``; only the controller call is timed (``perf_counter``)."""
    states = np.zeros((steps + 1, 4))
    controls = np.zeros((steps, 2))
    times = np.zeros(steps)
    states[0] = x0
    x = np.array(x0, dtype=np.float64)
    for i in range(steps):
        tic = time.perf_counter()
        u = np.asarray(controller(x.copy()), dtype=np.float64).reshape(2)
        times[i] = (time.perf_counter() - tic) * 1e3
        u = clip_control(np.nan_to_num(u, nan=0.0))
        x = step(x, u)
        states[i + 1] = x
        controls[i] = u
    return ClosedLoopResult(states, controls, times)


@dataclass(frozen=True)
class Timing:
    """Solve times of a closed loop as PROBLEM.md reports them."""

    first_call_ms: float
    median_ms: float
    p95_ms: float


def timing(times_ms: np.ndarray) -> Timing:
    """Step 0 (first call), median and p95 over steps 10..109 (PROBLEM.md section 4.1)."""
    window = np.asarray(times_ms)[WARMUP_STEPS:WARMUP_STEPS + TIMED_STEPS]
    if len(window) == 0:
        raise ValueError(f"timing needs more than {WARMUP_STEPS} steps")
    return Timing(float(times_ms[0]), float(np.median(window)), float(np.percentile(window, 95)))


@dataclass(frozen=True)
class Quality:
    """Tracking quality of a closed loop as PROBLEM.md reports it."""

    mean_abs_d_m: float
    max_abs_d_m: float
    mean_abs_speed_error_mps: float


def quality(states: np.ndarray) -> Quality:
    """Over ``x_101..x_200``: mean and max ``|d|``, mean ``|v - 3|`` (PROBLEM.md section 4.2)."""
    tail = np.asarray(states)[QUALITY_FROM:]
    d = np.abs(np.hypot(tail[:, PX], tail[:, PY]) - RADIUS_M)
    return Quality(float(d.mean()), float(d.max()), float(np.abs(tail[:, V] - V_REF_MPS).mean()))

"""The fixed benchmark problem ``bicycle-track`` of ``../shared/bench/PROBLEM.md``, exactly.

A 4-state kinematic bicycle ``x = (px, py, yaw, v)`` with control ``u = (a, delta)``, explicit
Euler at ``dt = 0.05 s``, tracking the counter-clockwise circle of radius 5 m at 3 m/s.
This module holds what every solver on the problem shares (iLQR, MPPI, peers): the model and
stage cost in NumPy (float64) and torch (batched, differentiable), the trajectory cost ``J``,
the closed loop with its timing protocol and the quality metrics. Solvers are plain callables
``controller(x) -> u`` with ``u`` in the problem's order ``(a, delta)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

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

PX, PY, YAW, V = range(4)
ACC, STEER = range(2)

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


# ------------------------------------------------------------------ MPPI on the problem

@dataclass(frozen=True)
class BicycleTrackSettings:
    """MPPI settings on bicycle-track. The canonical variant of PROBLEM.md has the defaults of the
    first block; ``smoothing_window``/``null_samples``/``noise_alpha`` are this project's additions."""

    samples: int = 2000
    horizon: int = HORIZON
    sigma_accel: float = float(SIGMA[0])
    sigma_steer: float = float(SIGMA[1])
    lam: float = LAMBDA
    smoothing_window: int = 0  # Savitzky-Golay window over the horizon (0: off)
    smoothing_order: int = 2
    null_samples: int = 0  # samples that keep the nominal sequence unperturbed
    noise_alpha: float = 0.0  # AR(1) coloured noise along the horizon (0: white)

    @staticmethod
    def canonical(samples: int, horizon: int = HORIZON) -> "BicycleTrackSettings":
        return BicycleTrackSettings(samples=samples, horizon=horizon)

    @staticmethod
    def tuned(samples: int, horizon: int = HORIZON) -> "BicycleTrackSettings":
        """The project's default variant: canonical + smoothing of the nominal sequence + one null sample."""
        return BicycleTrackSettings(samples=samples, horizon=horizon, smoothing_window=9, null_samples=1)



class BicycleTrackTorchMPPI:
    """The torch backend of MPPI on bicycle-track (same algorithm and noise counters as the Numba kernel)."""

    def __init__(self, settings: BicycleTrackSettings, seed: int = 0, device: str = "cpu") -> None:
        self.settings = settings
        self.seed = int(seed)
        self.device = torch.device(device)
        self.U = torch.zeros(settings.horizon, 2, device=self.device)
        self.sigma = torch.tensor([settings.sigma_accel, settings.sigma_steer], device=self.device)
        self.lo = torch.tensor(U_MIN, dtype=torch.float32, device=self.device)
        self.hi = torch.tensor(U_MAX, dtype=torch.float32, device=self.device)
        from mbrl_control.kernels.mppi_common import savgol_weights

        self.coeffs = torch.tensor(savgol_weights(settings.smoothing_window, settings.smoothing_order), dtype=torch.float32)
        self.calls = 0

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        from mbrl_control.kernels.noise import normal_pairs_torch, stream_key

        s = self.settings
        noise = normal_pairs_torch(stream_key(self.seed, self.calls), s.samples, s.horizon, device=self.device)
        self.calls += 1
        if s.noise_alpha > 0:
            alpha = torch.tensor(s.noise_alpha, dtype=torch.float32)
            beta = torch.sqrt(1.0 - alpha * alpha)
            coloured = [noise[:, 0]]
            for t in range(1, s.horizon):
                coloured.append(alpha * coloured[-1] + beta * noise[:, t])
            noise = torch.stack(coloured, dim=1)
        noise[: s.null_samples] = 0.0
        V = torch.minimum(torch.maximum(self.U + self.sigma * noise, self.lo), self.hi)
        eps = V - self.U
        state = torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device).expand(s.samples, 4)
        cost = torch.zeros(s.samples, dtype=torch.float32, device=self.device)
        for t in range(s.horizon):
            state = step_torch(state, V[:, t])
            cost = cost + stage_cost_torch(state, V[:, t])
        cost = cost.double() + (s.lam * self.U / (self.sigma * self.sigma) * eps).sum(dim=(1, 2)).double()
        cost = torch.where(torch.isnan(cost), torch.full_like(cost, float("inf")), cost)
        best = torch.min(cost)
        if torch.isfinite(best):
            w = torch.exp(-(cost - best) / s.lam)
            self.U = (self.U.double() + torch.einsum("k,ktc->tc", w / w.sum(), eps.double())).float()
        if len(self.coeffs) > 1:
            h = len(self.coeffs) // 2
            padded = torch.cat([self.U[:1].expand(h, 2), self.U, self.U[-1:].expand(h, 2)])
            self.U = torch.stack([sum(self.coeffs[j] * padded[t + j] for j in range(len(self.coeffs)))
                                  for t in range(s.horizon)])
        u = self.U[0].cpu().numpy().astype(np.float64)
        self.U = torch.cat([self.U[1:], torch.zeros(1, 2, device=self.device)])
        return u


def make_bicycle_mppi(backend: str, settings: BicycleTrackSettings, seed: int = 0):
    """MPPI controller ``x -> (a, delta)`` on bicycle-track: backend 'numba' (fused kernel) or 'torch'."""
    if backend == "numba":
        from mbrl_control.kernels.bicycle_track import BicycleTrackKernel

        return BicycleTrackKernel(settings, seed=seed)
    if backend == "torch":
        return BicycleTrackTorchMPPI(settings, seed=seed)
    raise ValueError(f"bicycle-track MPPI has no backend {backend!r} (numba or torch)")


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
    mean_abs_d_m: float
    max_abs_d_m: float
    mean_abs_speed_error_mps: float


def quality(states: np.ndarray) -> Quality:
    """Over ``x_101..x_200``: mean and max ``|d|``, mean ``|v - 3|`` (PROBLEM.md section 4.2)."""
    tail = np.asarray(states)[QUALITY_FROM:]
    d = np.abs(np.hypot(tail[:, PX], tail[:, PY]) - RADIUS_M)
    return Quality(float(d.mean()), float(d.max()), float(np.abs(tail[:, V] - V_REF_MPS).mean()))

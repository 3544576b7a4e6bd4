"""Plants: the simulated vehicle the closed loop drives (built-in single-track; MuJoCo elsewhere).

A plant integrates its true dynamics at its own rate (RK4 at 100 Hz by default), applies the
command after an optional latency, and returns measurements with optional sensor noise,
reproducibly for a seed.
"""

from __future__ import annotations

import abc
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from mbrl_control.config import VehicleParams
from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle, kinematic_state
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S


@dataclass(frozen=True)
class PlantConfig:
    rate_hz: float = 100.0  # integration rate
    command_latency_s: float = 0.0  # command applied this long after it is sent
    position_noise_m: float = 0.0  # std of the measured x, y
    yaw_noise_rad: float = 0.0
    velocity_noise: float = 0.0  # std of measured v [m/s], yaw rate [rad/s], slip [rad]
    seed: int = 0


class Plant(abc.ABC):
    """The true system. ``advance`` moves it forward by one control period."""

    name = "plant"

    def __init__(self, params: VehicleParams, config: PlantConfig | None = None) -> None:
        self.params = params
        self.config = config or PlantConfig()
        self.rng = np.random.default_rng(self.config.seed)
        self.time_s = 0.0
        self._pending: deque[tuple[float, np.ndarray]] = deque()
        self._applied = np.zeros(CONTROL_DIM)

    @property
    @abc.abstractmethod
    def state(self) -> np.ndarray:
        """True state (7,)."""

    @abc.abstractmethod
    def reset(self, state: np.ndarray) -> None:
        ...

    @abc.abstractmethod
    def _integrate(self, control: np.ndarray, duration_s: float) -> None:
        """Integrate the true dynamics over ``duration_s`` with ``control`` held."""

    def advance(self, command: np.ndarray, duration_s: float) -> np.ndarray:
        """Send ``command`` now, simulate ``duration_s`` seconds, return the measurement."""
        self._pending.append((self.time_s + self.config.command_latency_s, np.asarray(command, dtype=np.float64)))
        end = self.time_s + duration_s
        while self.time_s < end - 1e-12:
            while self._pending and self._pending[0][0] <= self.time_s + 1e-12:
                self._applied = self._pending.popleft()[1]
            next_switch = self._pending[0][0] if self._pending else end
            chunk = min(end, max(next_switch, self.time_s + 1e-9)) - self.time_s
            self._integrate(self._applied, chunk)
            self.time_s += chunk
        return self.measure()

    def measure(self) -> np.ndarray:
        """The state with sensor noise (the odometry a controller sees)."""
        z = self.state.copy()
        cfg = self.config
        if cfg.position_noise_m > 0:
            z[[S.X, S.Y]] += self.rng.normal(0.0, cfg.position_noise_m, 2)
        if cfg.yaw_noise_rad > 0:
            z[S.YAW] += self.rng.normal(0.0, cfg.yaw_noise_rad)
        if cfg.velocity_noise > 0:
            z[[S.V, S.YAW_RATE, S.SLIP]] += self.rng.normal(0.0, cfg.velocity_noise, 3)
        return z


class SingleTrackPlant(Plant):
    """The dynamic (or kinematic) single-track model, RK4 at ``rate_hz``, in float64."""

    def __init__(self, params: VehicleParams, config: PlantConfig | None = None, kinematic: bool = False) -> None:
        super().__init__(params, config)
        self.name = "kinematic" if kinematic else "dynamic"
        model_cls = KinematicBicycle if kinematic else DynamicSingleTrack
        self.model = model_cls(params, dt_s=1.0 / self.config.rate_hz, integrator="rk4", dtype=torch.float64)
        self._state = torch.zeros(STATE_DIM, dtype=torch.float64)

    @property
    def state(self) -> np.ndarray:
        return self._state.numpy().copy()

    def reset(self, state: np.ndarray) -> None:
        self._state = torch.as_tensor(np.asarray(state, dtype=np.float64)).clone()
        self._applied = np.zeros(CONTROL_DIM)
        self._pending.clear()
        self.time_s = 0.0

    @torch.no_grad()
    def _integrate(self, control: np.ndarray, duration_s: float) -> None:
        u = torch.as_tensor(control, dtype=torch.float64)
        h = self.model.dt_s
        steps = max(1, int(round(duration_s / h)))
        h = duration_s / steps
        from mbrl_control.models.base import integrate_step

        for _ in range(steps):
            self._state = integrate_step(self.model.derivative, self._state, u, h, "rk4")


def initial_state_at(x_m: float, y_m: float, yaw_rad: float, v_mps: float, params: VehicleParams) -> np.ndarray:
    """A consistent 7-state at rest (or rolling straight) at a pose."""
    return kinematic_state(x_m, y_m, yaw_rad, v_mps, 0.0, params).numpy()

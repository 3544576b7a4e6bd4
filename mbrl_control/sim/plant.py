"""Plants: the simulated vehicle the closed loop drives (built-in single-track; MuJoCo elsewhere).

A plant integrates its true dynamics at its own rate (RK4 at 100 Hz by default), applies the
command after an optional latency, and returns measurements with optional sensor noise,
reproducibly for a seed.
"""

from __future__ import annotations

import abc
from collections import deque
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from mbrl_control.config import VehicleParams
from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle, kinematic_state
from mbrl_control.models.base import integrate_step
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S
from mbrl_control.models.motion_model import numpy_derivative
from mbrl_control.models.rate_limited_steering import rate_limited_steering_rate
from mbrl_control.models.speed_commanded_single_track import SpeedCommandedSingleTrackModel
from mbrl_control.models.speed_loop import speed_loop_acceleration
from mbrl_control.models.steering_actuator import linkage_target
from mbrl_control.models.throttle_dead_zone import dead_zone_acceleration
from mbrl_control.ops import numpy_ops


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
        """Send ``command`` now, simulate ``duration_s`` seconds, return the measurement. ``command`` is
        ``[steering, acceleration]`` or the AckermannDrive fields ``[steering, acceleration, speed]``
        (this driver applies the acceleration; the speed is for speed-following ones)."""
        command = np.asarray(command, dtype=np.float64).reshape(-1)[:CONTROL_DIM]
        self._pending.append((self.time_s + self.config.command_latency_s, command))
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
        for _ in range(steps):
            self._state = integrate_step(self.model.derivative, self._state, u, h, "rk4")


def initial_state_at(x_m: float, y_m: float, yaw_rad: float, v_mps: float, params: VehicleParams) -> np.ndarray:
    """A consistent 7-state at rest (or rolling straight) at a pose."""
    return kinematic_state(x_m, y_m, yaw_rad, v_mps, 0.0, params).numpy()


def drive_fields(command: np.ndarray, v_mps: float, duration_s: float, hold_steer_rad: float) -> np.ndarray:
    """``[steering, acceleration, speed]`` a speed-following driver reads: a 2-vector ``[steering,
    acceleration]`` is sent as ``speed = v + a dt`` (a controller that does not know the driver); a
    broken (non-finite) command holds the wheels and asks for standstill."""
    command = np.asarray(command, dtype=np.float64).reshape(-1)
    if command.shape == (CONTROL_DIM,):
        command = np.array([command[0], command[1], v_mps + command[1] * duration_s])
    if not np.all(np.isfinite(command)):
        command = np.array([hold_steer_rad, 0.0, 0.0])
    return command


class SpeedFollowingPlant(Plant):
    """A car whose driver follows speed set-points and steers at its full rate after a dead time.

    The F1TENTH community simulator's actuators (``--actuation speed``): the chassis of the dynamic
    single-track model behind the speed loop of :mod:`mbrl_control.models.speed_loop` (continuous,
    inside the RK4 derivative) and rate-limited steering that turns at ``steer_rate_max`` until it
    is on the (delayed) command, integrated exactly (the physics step is split where the wheels
    reach the target). Commands are the AckermannDrive fields ``[steering_angle, acceleration,
    speed]``; a 2-vector ``[steering, acceleration]`` is sent as ``speed = v + a dt`` (what a driver
    of this kind gets from a controller that does not know it).
    """

    def __init__(self, params: VehicleParams, config: PlantConfig | None = None, actuation=None) -> None:
        from mbrl_control.control.command_interface import f1tenth_speed_actuation

        super().__init__(params, config)
        self.name = "dynamic-speed"
        self.actuation = actuation or f1tenth_speed_actuation(params)
        self.model_params = SimpleNamespace(**params.as_dict(), speed_gain_up_per_s=self.actuation.speed_gain_up_per_s,
                                            speed_gain_down_per_s=self.actuation.speed_gain_down_per_s)
        self._state = np.zeros(STATE_DIM)
        self._steer_queue: deque[tuple[float, float]] = deque()
        self._speed_queue: deque[tuple[float, float]] = deque()
        self._steer_target, self._speed_set = 0.0, 0.0

    @property
    def state(self) -> np.ndarray:
        return self._state.copy()

    def reset(self, state: np.ndarray) -> None:
        self._state = np.asarray(state, dtype=np.float64).copy()
        self._steer_queue.clear()
        self._speed_queue.clear()
        self._steer_target, self._speed_set = float(self._state[S.STEER]), float(self._state[S.V])
        self.time_s = 0.0

    def _integrate(self, control: np.ndarray, duration_s: float) -> None:  # pragma: no cover - advance is overridden
        raise NotImplementedError

    def advance(self, command: np.ndarray, duration_s: float) -> np.ndarray:
        command = drive_fields(command, float(self._state[S.V]), duration_s, self._steer_target)
        latency = self.config.command_latency_s
        self._speed_queue.append((self.time_s + latency, float(command[2])))
        self._steer_queue.append((self.time_s + latency + self.actuation.steer_dead_time_s, float(command[0])))
        end = self.time_s + duration_s
        h = 1.0 / self.config.rate_hz
        while self.time_s < end - 1e-12:
            self._apply_due_commands()
            switches = [q[0][0] for q in (self._steer_queue, self._speed_queue) if q]
            stop = min([end, self.time_s + h] + [s for s in switches if s > self.time_s + 1e-12])
            self._physics_step(stop - self.time_s)
            self.time_s = stop
        self._apply_due_commands()
        return self.measure()

    def _apply_due_commands(self) -> None:
        while self._steer_queue and self._steer_queue[0][0] <= self.time_s + 1e-12:
            self._steer_target = self._steer_queue.popleft()[1]
        while self._speed_queue and self._speed_queue[0][0] <= self.time_s + 1e-12:
            self._speed_set = self._speed_queue.popleft()[1]

    def _physics_step(self, h: float) -> None:
        """``h`` seconds with the current targets: at full steering rate until on target, then held."""
        p = self.model_params
        target = float(np.clip(self._steer_target, p.steer_min_rad, p.steer_max_rad))
        reach_s = abs(target - self._state[S.STEER]) / p.steer_rate_max_radps
        if reach_s >= h:
            self._rk4(float(rate_limited_steering_rate(numpy_ops, self._state[S.STEER], target, reach_s, p)), h)
            return
        if reach_s > 1e-9:
            self._rk4(float(rate_limited_steering_rate(numpy_ops, self._state[S.STEER], target, reach_s, p)), reach_s)
        self._state[S.STEER] = target
        self._rk4(0.0, h - reach_s)

    def _rk4(self, steer_rate: float, h: float) -> None:
        if h <= 0.0:
            return
        u = np.array([steer_rate, self._speed_set])
        self._state = integrate_step(lambda s, c: numpy_derivative(SpeedCommandedSingleTrackModel, s, c, self.model_params),
                                     self._state, u, h, "rk4")


class DriverWrappedPlant(Plant):
    """An acceleration-commanded plant (``inner``) behind a driver that turns the AckermannDrive fields
    into its inputs: the steering target reaches it through a queue (the dead time); subclasses give
    the driver (``advance``)."""

    def __init__(self, inner: Plant, actuation, suffix: str) -> None:
        super().__init__(inner.params, inner.config)
        self.inner = inner
        self.name = f"{inner.name}-{suffix}"
        self.actuation = actuation
        self._steer_queue: deque[tuple[float, float]] = deque()
        self._steer_target = 0.0

    @property
    def state(self) -> np.ndarray:
        return self.inner.state

    def reset(self, state: np.ndarray) -> None:
        self.inner.reset(state)
        self.time_s = 0.0
        self._steer_queue.clear()
        self._steer_target = float(state[S.STEER])
        self._reset_driver(state)

    def _reset_driver(self, state: np.ndarray) -> None:
        """The driver's own state at a reset."""

    def _integrate(self, control: np.ndarray, duration_s: float) -> None:  # pragma: no cover - advance is overridden
        raise NotImplementedError

    def _take_due_steering(self) -> None:
        """The steering targets whose dead time has passed, the latest one applied."""
        while self._steer_queue and self._steer_queue[0][0] <= self.time_s + 1e-12:
            self._steer_target = self._steer_queue.popleft()[1]

    def _inner_step(self, accel_mps2: float, h: float) -> None:
        """``h`` seconds of the inner plant with the current steering target and ``accel_mps2``."""
        self.inner._integrate(np.array([self._steer_target, accel_mps2]), h)
        self.inner.time_s += h
        self.time_s += h


class SpeedDrivenPlant(DriverWrappedPlant):
    """Any acceleration-commanded plant (MuJoCo, kinematic) behind a speed-following driver.

    The driver's speed loop (:mod:`mbrl_control.models.speed_loop`) runs every ``driver_step_s``
    on the plant's true speed and commands the plant's acceleration input; the steering command
    reaches the plant's own steering servo after the dead time. (The built-in dynamic plant has the
    exact continuous form, :class:`SpeedFollowingPlant`.)
    """

    def __init__(self, inner: Plant, actuation=None, driver_step_s: float = 0.002) -> None:
        from mbrl_control.control.command_interface import f1tenth_speed_actuation

        super().__init__(inner, actuation or f1tenth_speed_actuation(inner.params), "speed")
        self.driver_step_s = driver_step_s
        self.loop_params = SimpleNamespace(speed_gain_up_per_s=self.actuation.speed_gain_up_per_s,
                                           speed_gain_down_per_s=self.actuation.speed_gain_down_per_s,
                                           accel_max_mps2=inner.params.accel_max_mps2)
        self._speed_set = 0.0

    def _reset_driver(self, state: np.ndarray) -> None:
        self._speed_set = float(state[S.V])

    def advance(self, command: np.ndarray, duration_s: float) -> np.ndarray:
        command = drive_fields(command, float(self.inner.state[S.V]), duration_s, self._steer_target)
        self._speed_set = float(command[2])
        self._steer_queue.append((self.time_s + self.actuation.steer_dead_time_s, float(command[0])))
        end = self.time_s + duration_s
        while self.time_s < end - 1e-12:
            self._take_due_steering()
            h = min(self.driver_step_s, end - self.time_s)
            v = float(self.inner.state[S.V])
            self._inner_step(float(speed_loop_acceleration(numpy_ops, v, self._speed_set, self.loop_params)), h)
        return self.inner.measure()


class MiscalibratedActuatorPlant(DriverWrappedPlant):
    """Any acceleration-commanded plant behind actuators that differ from the nominal calibration.

    ``--actuation miscalibrated``: the driver turns ``drive.steering_angle`` into the raw command
    ``steering_angle / steer_max``, which reaches the steering linkage after the dead time and sets
    the servo's target through the asymmetric, offset map of
    :func:`mbrl_control.models.steering_actuator.steering_map`; ``drive.acceleration`` goes through
    the throttle dead zone of :mod:`mbrl_control.models.throttle_dead_zone` at once. The inner
    plant's own servo and drive limits apply after that.
    """

    def __init__(self, inner: Plant, actuation=None) -> None:
        from mbrl_control.control.command_interface import calibration_terms, miscalibrated_actuation

        super().__init__(inner, actuation or miscalibrated_actuation(inner.params), "miscalibrated")
        self.terms = calibration_terms(self.actuation, inner.params)
        self._accel = 0.0

    def _reset_driver(self, state: np.ndarray) -> None:
        self._accel = 0.0

    def advance(self, command: np.ndarray, duration_s: float) -> np.ndarray:
        command = np.asarray(command, dtype=np.float64).reshape(-1)
        if np.all(np.isfinite(command[:CONTROL_DIM])):
            target = linkage_target(command[0], self.params, self.terms)
            self._steer_queue.append((self.time_s + self.actuation.steer_dead_time_s, target))
            self._accel = float(dead_zone_acceleration(numpy_ops, float(command[1]), self.terms))
        else:  # a broken command: the wheels hold, the drive coasts
            self._accel = 0.0
        end = self.time_s + duration_s
        while self.time_s < end - 1e-12:
            self._take_due_steering()
            next_switch = self._steer_queue[0][0] if self._steer_queue else end
            self._inner_step(self._accel, min(end, max(next_switch, self.time_s + 1e-9)) - self.time_s)
        return self.inner.measure()

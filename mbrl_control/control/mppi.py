"""MPPI racing controller: the generic :class:`~mbrl_control.control.mppi_solver.MPPISolver` on a race track.

The controller builds the racing :class:`~mbrl_control.problem.definition.ControlProblem` (the
prediction model's definition, :class:`~mbrl_control.problem.costs.racing.RacingCost` with the
``cost`` weights of the YAML, the track as context) and hands it to the solver, which runs it on
the ``numba`` (generated fused CPU kernel, the default: real time on a car's CPU), ``torch``
(any model of :mod:`mbrl_control.models`; the reference) or ``cuda`` backend. Racing-specific:

* above ``steer_noise_ref_speed_mps`` the steering sigma of the step shrinks as ``(v_ref / v)^2``:
  lateral acceleration grows as ``v^2 tan(steer)``, so a fixed steering sigma that explores a slow
  corner would make nearly every sample at top speed slide;
* the yaw of the measured state is wrapped (the model is yaw-invariant);
* recovery: when every sample leaves the track early in the horizon (the best sample crashes in
  its first half) or the car has stalled, the controller samples wider, tries a few structured
  candidates (:func:`recovery_sequences`: slow down and steer, back up and turn) as its nominal
  sequence, allows slow reversing and no longer counts the car's own distance to the edge as a
  crash, until it races again (``recovery_*`` options); the step of a racing car pays nothing for
  it but a comparison of the best cost;
* safety: a non-finite measured state returns the safe stop of
  :func:`~mbrl_control.control.base.safe_stop_command` and forgets the warm start; a non-finite
  or out-of-limit command is never returned (non-finite -> safe stop, else clipped).

The kernels mirror the single-track models (kinematic / dynamic, RK4 or Euler, any sub-steps)
and the semi-parametric model (physics + residual MLP ensemble; sample ``k`` follows member
``(k // 32) % E``). :meth:`MPPIController.set_model` swaps parameters and weights without
recompiling (a model of another class loads the kernel of its own problem shape).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams, dataclass_from_dict
from mbrl_control.control.base import Controller, safe_stop_command
from mbrl_control.control.mppi_solver import MPPISolver, PredictionModel, SamplingSettings, SolverConfig
from mbrl_control.models.layout import STATE_DIM, S
from mbrl_control.problem.costs.racing import RacingCost, RacingCostConfig
from mbrl_control.problem.definition import ControlProblem, CostSpec, TrackContext
from mbrl_control.problem.track_context import TrackTable
from mbrl_control.track import Track

LOG = logging.getLogger("mbrl_control.control.mppi")
MPPI_COST_DEFAULTS = {"lateral_weight": 5.0, "lateral_accel_max_mps2": 8.0, "steer_rate_weight": 0.007}
"""Where MPPI's racing cost departs from the generic :class:`RacingCostConfig` defaults (which iLQR
also reads); a YAML ``cost`` section overrides them key by key."""


@dataclass(frozen=True)
class MPPIConfig:
    """MPPI settings (the ``mppi`` section of a controller YAML); validated on construction."""

    backend: str = "numba"  # numba | torch | cuda
    samples: int = 1024
    horizon: int = 75  # prediction steps of the model's dt (the control period): 1.5 s at 50 Hz
    iterations: int = 1
    sigma_steer_rad: float = 0.06
    sigma_accel_mps2: float = 1.5
    steer_noise_ref_speed_mps: float = 6.0  # above it the steering sigma scales as (ref / v)^2 (0: constant)
    temperature: float = 1.3  # lambda
    control_cost_weight: float = 0.05  # gamma: the information-theoretic term is lambda * gamma * U^T Sigma^-1 eps
    noise_alpha: float = 0.8  # AR(1) low-pass of the noise along the horizon (0: white)
    null_samples: int = 1  # samples that keep the nominal sequence
    smoothing_window: int = 9  # Savitzky-Golay window over the horizon (0 or 1: off; cut to the horizon)
    smoothing_order: int = 2
    shift_fill: str = "last"  # warm-start padding of the last step: last | zero
    seed: int = 0
    device: str = "cpu"  # torch backend: cpu | cuda
    cost: dict = field(default_factory=dict)  # RacingCostConfig fields, over MPPI_COST_DEFAULTS
    # recovery mode (see MPPIController): entered when the best sample crashes early or the car stalls
    recovery: bool = True
    recovery_stall_speed_mps: float = 0.3  # slower than this ...
    recovery_stall_s: float = 0.4  # ... for this long: stalled
    recovery_exit_speed_mps: float = 1.0  # faster than this, best sample not crashed: racing again
    recovery_sigma_scale: float = 3.0  # sampling noise multiplied by this while recovering
    recovery_reverse_weight: float = 2.0  # per (m/s)^2 of reversing while recovering (racing: cost.reverse_weight)
    recovery_soft_bound_scale: float = 0.1  # the soft-bound weight times this while recovering (no centerline term)
    reverse_speed_max_mps: float = 0.4  # no further reverse acceleration beyond this reversing speed

    def validate(self) -> None:
        """One clear :class:`MbrlError` for the first bad setting (racing ones here, the rest in SolverConfig)."""
        def bad(msg: str) -> None:
            raise MbrlError(f"mppi: {msg}")

        for name in ("sigma_steer_rad", "sigma_accel_mps2"):
            if not getattr(self, name) > 0:
                bad(f"'{name}' must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.steer_noise_ref_speed_mps < math.inf:
            bad(f"'steer_noise_ref_speed_mps' must be a non-negative number, got {self.steer_noise_ref_speed_mps}")
        for name in ("recovery_stall_speed_mps", "recovery_stall_s", "recovery_exit_speed_mps", "recovery_reverse_weight",
                     "recovery_soft_bound_scale", "reverse_speed_max_mps"):
            if not 0.0 <= getattr(self, name) < math.inf:
                bad(f"'{name}' must be a non-negative number, got {getattr(self, name)}")
        if not 1.0 <= self.recovery_sigma_scale <= 100.0:
            bad(f"'recovery_sigma_scale' must be in [1, 100], got {self.recovery_sigma_scale}")
        self.solver_config().validate(controls=2)
        if not isinstance(self.cost, dict):
            bad("'cost' must be a mapping of racing cost weights")
        self.cost_config()

    def cost_config(self) -> RacingCostConfig:
        return dataclass_from_dict(RacingCostConfig, {**MPPI_COST_DEFAULTS, **self.cost}, "mppi.cost")

    def solver_config(self) -> SolverConfig:
        """The generic solver settings (sigma = steering, acceleration)."""
        shared = {f.name: getattr(self, f.name) for f in fields(SolverConfig) if f.name != "sigma"}
        return SolverConfig(sigma=(self.sigma_steer_rad, self.sigma_accel_mps2), **shared)

    def smoothing(self) -> tuple[int, int]:
        """(window, order) actually used: the window is cut to the largest odd length within the horizon."""
        return self.solver_config().smoothing()


# --------------------------------------------------------------------------- the racing problem

def kernel_model(model) -> PredictionModel:
    """The prediction model for the solver: the physics' parameters, its packed residual, the torch model
    itself (what the torch backend steps)."""
    from mbrl_control.kernels.residual_mlp import EMPTY_PACK, pack_residual
    from mbrl_control.models.bicycle import split_physics

    physics, res, _ = split_physics(model)
    residual = EMPTY_PACK
    if res is not None:
        try:
            residual = pack_residual(res.export())
        except ValueError as exc:
            raise MbrlError(f"mppi: {exc}") from None
    return PredictionModel(getattr(physics, "params", None), residual, model)


def racing_problem(model, table: TrackTable, cost: RacingCostConfig, backend: str = "numba") -> ControlProblem:
    """Racing on ``table`` with the definition and discretisation of the torch ``model`` (a model that is
    no definition's torch module runs on the torch backend only, with the single-track layout)."""
    from mbrl_control.models.bicycle import split_physics
    from mbrl_control.models.single_track import DynamicSingleTrackModel

    physics, _, _ = split_physics(model)
    definition = getattr(physics, "definition", None)
    if definition is None:
        if backend != "torch":
            raise MbrlError(f"mppi: the kernels do not mirror {type(physics).__name__}; use backend 'torch'")
        definition = DynamicSingleTrackModel
    dt_s = float(model.dt_s)
    return ControlProblem(definition, (CostSpec(RacingCost, cost.vector(dt_s)),), TrackContext(table), dt_s,
                          physics.integrator, int(physics.substeps)).validate()


def racing_sampling(config: MPPIConfig, params: VehicleParams) -> SamplingSettings:
    """The sampling settings of the racing controller (steering and acceleration bounds of the car)."""
    from mbrl_control.models.kinematic_bicycle import single_track_bounds

    return SamplingSettings(config.solver_config(), *single_track_bounds(params))


def steer_sigma_at(config: MPPIConfig, speed_mps: float) -> float:
    """The steering sigma at ``speed_mps``: ``sigma_steer_rad * min(1, (v_ref / |v|)^2)``.

    Keeps the spread of the samples' lateral acceleration (~ v^2 tan(steer) / wheelbase) at its
    value at the reference speed; a NaN speed keeps the full sigma.
    """
    v_ref, speed = config.steer_noise_ref_speed_mps, abs(speed_mps)
    if v_ref <= 0.0 or not speed > v_ref:
        return config.sigma_steer_rad
    return config.sigma_steer_rad * (v_ref / speed) ** 2


def recovery_sequences(horizon: int, dt_s: float, speed_mps: float, steer_max_rad: float, accel_max_mps2: float,
                       reverse_speed_mps: float) -> np.ndarray:
    """The structured candidates of the recovery (C, T, 2) = (steer_cmd, accel) for five steering levels
    (full lock either way, half lock, straight): slow down to standstill and creep on; and the two
    three-point turns: slow down, back up to ``reverse_speed_mps`` with this lock, hold it a short or
    a longer while, stop, drive on with the opposite lock."""
    T = int(horizon)
    brake = 0.8 * accel_max_mps2
    creep = min(1.5, accel_max_mps2)
    n_stop = min(T, int(math.ceil(max(speed_mps, 0.0) / brake / dt_s)))
    n_rev = max(1, int(math.ceil(reverse_speed_mps / creep / dt_s)))
    seqs = []
    for level in (-1.0, -0.5, 0.0, 0.5, 1.0):
        steer = level * steer_max_rad
        on = np.empty((T, 2))
        on[:, 0] = steer
        on[:, 1] = creep
        on[:n_stop, 1] = -brake
        seqs.append(on)
        for hold_s in (0.2, 0.5):
            turn = np.empty((T, 2))
            turn[:, 0] = -steer
            turn[:, 1] = creep
            n_hold = int(round(hold_s / dt_s))
            a, b, c, d = n_stop, n_stop + n_rev, n_stop + n_rev + n_hold, n_stop + 2 * n_rev + n_hold
            turn[:a, 1] = -brake
            turn[:c, 0] = steer
            turn[a:b, 1] = -creep
            turn[b:c, 1] = 0.0
            turn[c:d, 1] = creep  # stop the reversing, then drive on
            seqs.append(turn)
    return np.asarray(seqs, dtype=np.float32)


# --------------------------------------------------------------------------- controller

class MPPIController(Controller):
    """MPPI on a race track (see module docstring)."""

    name = "mppi"

    def __init__(self, params: VehicleParams, control_dt_s: float, track: Track, model,
                 config: MPPIConfig | None = None, table: TrackTable | None = None) -> None:
        super().__init__(params, control_dt_s)
        self.config = config or MPPIConfig()
        self.config.validate()
        if model is None:
            from mbrl_control.models.factory import make_model

            model = make_model("dynamic", params, control_dt_s)
        self._check_model_dt(model)
        self.track = track
        self.cost_config = self.config.cost_config()
        self.table = table if table is not None else TrackTable(track, cell_m=self.cost_config.cell_m)
        self.sampling = racing_sampling(self.config, params)
        self.problem = racing_problem(model, self.table, self.cost_config, self.config.backend)
        self.solver = MPPISolver(self.problem, kernel_model(model), self.config.solver_config(), self.sampling)
        self._model = model
        self._plan: tuple[np.ndarray, np.ndarray] | None = None
        self._x0 = np.zeros(STATE_DIM, dtype=np.float32)
        self._racing_weights = self.cost_config.vector(control_dt_s)
        self._crash_level = 0.5 * self.cost_config.crash_cost * self.config.horizon  # best sample crashed in the first half
        self._stall_steps = max(1, int(round(self.config.recovery_stall_s / control_dt_s)))
        self._slow_steps = 0
        self.recovering = False
        self.recoveries = 0  # times the controller entered recovery
        self._warm_up()

    # the solver's warm start, exposed as the controller's (tests and hot swaps copy them)
    backend = property(lambda self: self.solver.backend)
    U = property(lambda self: self.solver.U)
    u_prev = property(lambda self: self.solver.u_prev)
    last_cost = property(lambda self: self.solver.last_cost)
    last_ess = property(lambda self: self.solver.last_ess)

    @property
    def calls(self) -> int:
        return self.solver.calls

    @calls.setter
    def calls(self, value: int) -> None:
        self.solver.calls = value

    def _warm_up(self) -> None:
        """Compile (or load from Numba's cache) the kernel now, so that the first control step meets its deadline."""
        if self.backend.name == "torch":
            return
        x, y, yaw = self.track.start_pose()
        x0 = np.zeros(STATE_DIM, dtype=np.float32)
        x0[[S.X, S.Y, S.YAW]] = x, y, yaw
        self.backend.iterate(x0, self.u_prev, self.U.copy(), key=0)

    # ------------------------------------------------------------------ model handling
    def _check_model_dt(self, model) -> None:
        if not math.isclose(float(model.dt_s), self.control_dt_s, rel_tol=1e-6, abs_tol=1e-9):
            raise MbrlError(f"mppi: the model steps {model.dt_s} s but the control period is {self.control_dt_s} s")

    @property
    def model(self):
        return self._model

    def set_model(self, model) -> None:
        """Hot swap: new parameters / weights for the next step, no recompilation."""
        self._check_model_dt(model)
        problem = racing_problem(model, self.table, self.cost_config, self.config.backend)
        self.solver.set_model(kernel_model(model), problem)
        self.problem = problem
        self._model = model

    # ------------------------------------------------------------------ control
    def reset(self, state: np.ndarray) -> None:
        self.solver.reset()
        self._plan = None
        self._slow_steps = 0
        if self.recovering:
            self._leave_recovery()

    def key(self) -> int:
        """Noise stream of the next iteration (deterministic for the seed)."""
        return self.solver.key()

    def step(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (STATE_DIM,) or not np.all(np.isfinite(state)):
            return self._safe_stop(state if state.shape == (STATE_DIM,) else None, "non-finite state")
        x0 = self._x0
        x0[:] = state
        x0[S.YAW] = math.remainder(float(state[S.YAW]), 2.0 * math.pi)  # the model is yaw-invariant
        speed = float(state[S.V])
        self.sampling.sigma[0] = steer_sigma_at(self.config, speed)
        if self.recovering:
            self._prepare_recovery(x0, speed)
        u = self.solver.optimise(x0)
        if self.config.recovery and self._recovery_starts(speed):
            self._prepare_recovery(x0, speed)  # and plan this step again with its settings
            u = self.solver.optimise(x0)
        if not np.all(np.isfinite(u)):
            return self._safe_stop(state, "non-finite command")
        u = self.solver.clip(u)
        if speed < -self.config.reverse_speed_max_mps and u[1] < 0.0:
            u[1] = 0.0  # backing up only slowly (the tire model is not meant for fast reversing)
        self._plan = (x0.copy(), self.U.copy())
        self.solver.commit(u)
        return u

    # ------------------------------------------------------------------ recovery
    def _recovery_starts(self, speed: float) -> bool:
        """Track the triggers; True when recovery starts now. It starts when the best sample crashes in
        the first half of the horizon (every sample leaves the track) or the car has stalled (slower than
        ``recovery_stall_speed_mps`` for ``recovery_stall_s``); it ends once the car is faster than
        ``recovery_exit_speed_mps`` and the best sample no longer crashes early."""
        crashed = not self.solver.last_cost < self._crash_level  # NaN (no finite sample) counts as crashed
        self._slow_steps = self._slow_steps + 1 if abs(speed) < self.config.recovery_stall_speed_mps else 0
        if self.recovering:
            if not crashed and speed > self.config.recovery_exit_speed_mps:
                self._leave_recovery()
            return False
        if crashed or self._slow_steps >= self._stall_steps:
            self.recovering = True
            self.recoveries += 1
            LOG.info("mppi: %s; recovering (wider sampling, structured candidates, backing up allowed)",
                     "every sample leaves the track" if crashed else "the car has stalled")
            return True
        return False

    def _prepare_recovery(self, x0: np.ndarray, speed: float) -> None:
        """Recovery settings for this step: the sampling noise times ``recovery_sigma_scale``; the racing
        cost with a cheap, slow reverse, no centerline term, a soft bound ``recovery_soft_bound_scale``
        as steep (any way that does not crash beats standing still) and the crash line no further in
        than 5 cm outside the car (a car inside the crash margin, or off the track, is not crashed by
        staying where it is, only by going further out: the samples that head back in keep their
        progress reward); the best of the structured candidates (:func:`recovery_sequences`) as the
        nominal sequence when it beats the shifted one."""
        cfg, cost = self.config, self.cost_config
        self.sampling.sigma[0] = cfg.recovery_sigma_scale * steer_sigma_at(cfg, speed)
        self.sampling.sigma[1] = cfg.recovery_sigma_scale * cfg.sigma_accel_mps2
        proj = self.track.project(np.asarray(x0[[S.X, S.Y]], dtype=np.float64))
        right, left = self.track.widths_at(proj.progress_m)
        lateral = float(proj.lateral_m)
        edge = min(float(left) - lateral, float(right) + lateral)
        hard = min(cost.hard_margin_m, edge - 0.05)  # negative off the track: the crash line beyond the edge
        weights = replace(cost, reverse_weight=cfg.recovery_reverse_weight, hard_margin_m=hard, lateral_weight=0.0,
                          soft_bound_weight=cfg.recovery_soft_bound_scale * cost.soft_bound_weight)
        self.solver.set_cost_weights([weights.vector(self.control_dt_s)])
        candidates = recovery_sequences(cfg.horizon, self.control_dt_s, speed, self.params.steer_max_rad,
                                        self.params.accel_max_mps2, cfg.reverse_speed_max_mps)
        candidates = np.clip(candidates, self.sampling.u_min, self.sampling.u_max)
        costs = self.solver.sequence_costs(x0, np.concatenate([self.U[None], candidates]))
        best = int(np.argmin(costs))
        if best > 0 and costs[best] < costs[0]:
            self.U[:] = candidates[best - 1]

    def _leave_recovery(self) -> None:
        self.recovering = False
        self.sampling.sigma[1] = self.config.sigma_accel_mps2  # the steering sigma is set every step
        self.solver.set_cost_weights([self._racing_weights])
        LOG.info("mppi: recovered, racing again")

    def _safe_stop(self, state, why: str) -> np.ndarray:
        LOG.warning("mppi: %s, commanding a safe stop and dropping the warm start", why)
        self.U[:] = 0.0
        self._plan = None
        u = safe_stop_command(state, self.params, self.control_dt_s)
        self.u_prev[:] = u
        return u

    # ------------------------------------------------------------------ plan
    def planned_xy(self) -> np.ndarray | None:
        """(T, 2) positions of the nominal sequence applied at the last step (prediction model rollout;
        a semi-parametric model uses ensemble member 0, the member of the unperturbed sample, on the
        kernel backends and the ensemble mean on the torch backend)."""
        if self._plan is None:
            return None
        x0, U_plan = self._plan
        return self.solver.nominal_states(x0, U_plan)[:, [S.X, S.Y]].astype(np.float64)


def make_mppi(params: VehicleParams, control_dt_s: float, track: Track, model, options: dict) -> MPPIController:
    """Factory for :mod:`mbrl_control.control.factory` (``options``: the ``mppi`` section)."""
    return MPPIController(params, control_dt_s, track, model, dataclass_from_dict(MPPIConfig, options, "mppi"))

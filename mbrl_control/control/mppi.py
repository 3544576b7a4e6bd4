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
from dataclasses import dataclass, field, fields

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

    def validate(self) -> None:
        """One clear :class:`MbrlError` for the first bad setting (racing ones here, the rest in SolverConfig)."""
        def bad(msg: str) -> None:
            raise MbrlError(f"mppi: {msg}")

        for name in ("sigma_steer_rad", "sigma_accel_mps2"):
            if not getattr(self, name) > 0:
                bad(f"'{name}' must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.steer_noise_ref_speed_mps < math.inf:
            bad(f"'steer_noise_ref_speed_mps' must be a non-negative number, got {self.steer_noise_ref_speed_mps}")
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
        self.sampling.sigma[0] = steer_sigma_at(self.config, float(state[S.V]))
        u = self.solver.optimise(x0)
        if not np.all(np.isfinite(u)):
            return self._safe_stop(state, "non-finite command")
        u = self.solver.clip(u)
        self._plan = (x0.copy(), self.U.copy())
        self.solver.commit(u)
        return u

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

"""MPPI (model predictive path integral) racing controller with Numba, torch and CUDA backends.

One control step (Williams et al. 2017, information-theoretic MPPI):

1. sample K control sequences ``V_k = clip(U + eps_k)`` around the nominal ``U`` with Gaussian
   noise of per-channel sigma (optionally low-pass filtered along the horizon, and the first
   ``null_samples`` sequences unperturbed); ``eps'_k = V_k - U`` is the applied perturbation.
   Above ``steer_noise_ref_speed_mps`` the steering sigma of the step shrinks as
   ``(v_ref / v)^2``: lateral acceleration grows as ``v^2 tan(steer)``, so a fixed steering sigma
   that explores a slow corner would make nearly every sample at top speed slide;
2. roll the prediction model out and charge ``S_k = racing cost + lambda * gamma * sum_t U_t^T
   Sigma^-1 eps'_k,t``;
3. ``U <- U + sum_k w_k eps'_k`` with ``w = softmin(S / lambda)``; repeat ``iterations`` times;
4. smooth ``U`` along the horizon (Savitzky-Golay), apply ``U_0``, shift ``U`` by one step.

Backends (same noise for the same seed, so their results agree; tests compare them):

* ``numba``: one fused, parallel, vectorised CPU kernel per iteration
  (:mod:`mbrl_control.kernels.mppi_car`): the default, real time on a car's CPU;
* ``torch``: the same algorithm on tensors (CPU or CUDA) with the torch model itself, so it
  accepts any model of :mod:`mbrl_control.models`; the reference the kernels are tested against;
* ``cuda``: one fused Numba CUDA kernel per iteration (:mod:`mbrl_control.kernels.mppi_cuda`).

The kernels mirror the single-track models (kinematic / dynamic, RK4 or Euler, any sub-steps)
and the semi-parametric model (physics + residual MLP ensemble; sample ``k`` follows member
``(k // 32) % E``). :meth:`MPPIController.set_model` swaps parameters and weights without
recompiling. Safety: a non-finite measured state returns the safe stop of
:func:`~mbrl_control.control.base.safe_stop_command` and forgets the warm start; a non-finite
or out-of-limit command is never returned (non-finite -> safe stop, else clipped).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams, dataclass_from_dict
from mbrl_control.control.base import Controller, safe_stop_command
from mbrl_control.control.costs import RacingCostConfig, RacingCostTorch, TrackTable
from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM, S
from mbrl_control.track import Track

LOG = logging.getLogger("mbrl_control.control.mppi")
BACKENDS = ("numba", "torch", "cuda")
_KERNEL_LOCK = threading.Lock()  # Numba's workqueue threading layer must not be entered concurrently
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
        def bad(msg: str) -> None:
            raise MbrlError(f"mppi: {msg}")

        if self.backend not in BACKENDS:
            bad(f"unknown backend '{self.backend}' (choose from {', '.join(BACKENDS)})")
        if not 1 <= self.samples <= 1 << 22:
            bad(f"'samples' must be in [1, 4194304], got {self.samples}")
        if not 1 <= self.horizon <= 10000:
            bad(f"'horizon' must be in [1, 10000], got {self.horizon}")
        if not 1 <= self.iterations <= 100:
            bad(f"'iterations' must be in [1, 100], got {self.iterations}")
        for name in ("sigma_steer_rad", "sigma_accel_mps2", "temperature"):
            if not getattr(self, name) > 0:
                bad(f"'{name}' must be positive, got {getattr(self, name)}")
        if self.control_cost_weight < 0:
            bad(f"'control_cost_weight' must be non-negative, got {self.control_cost_weight}")
        if not 0.0 <= self.steer_noise_ref_speed_mps < math.inf:
            bad(f"'steer_noise_ref_speed_mps' must be a non-negative number, got {self.steer_noise_ref_speed_mps}")
        if not 0.0 <= self.noise_alpha < 1.0:
            bad(f"'noise_alpha' must be in [0, 1), got {self.noise_alpha}")
        if not 0 <= self.null_samples <= self.samples:
            bad(f"'null_samples' must be in [0, samples], got {self.null_samples}")
        if self.smoothing_window < 0 or (self.smoothing_window > 1 and self.smoothing_window % 2 == 0):
            bad(f"'smoothing_window' must be odd (or 0 for no smoothing), got {self.smoothing_window}")
        if self.smoothing_window > 1 and not 0 <= self.smoothing_order < self.smoothing_window:
            bad("'smoothing_order' must be in [0, smoothing_window)")
        if self.shift_fill not in ("last", "zero"):
            bad(f"'shift_fill' must be 'last' or 'zero', got '{self.shift_fill}'")
        if self.device not in ("cpu", "cuda"):
            bad(f"'device' must be 'cpu' or 'cuda', got '{self.device}'")
        if not isinstance(self.cost, dict):
            bad("'cost' must be a mapping of racing cost weights")
        self.cost_config()

    def cost_config(self) -> RacingCostConfig:
        return dataclass_from_dict(RacingCostConfig, {**MPPI_COST_DEFAULTS, **self.cost}, "mppi.cost")

    def smoothing(self) -> tuple[int, int]:
        """(window, order) actually used: the window is cut to the largest odd length within the horizon."""
        window = min(self.smoothing_window, self.horizon if self.horizon % 2 else self.horizon - 1)
        if window <= 1 or self.smoothing_order >= window:
            return 0, 0
        return window, self.smoothing_order


# --------------------------------------------------------------------------- model description

@dataclass
class KernelModel:
    """What the kernels need of a prediction model: all plain arrays, swappable without recompiling."""

    kind: str  # kinematic | dynamic
    params: np.ndarray  # single_track.pack_params
    dt_s: float
    integrator: str
    substeps: int
    tableau: np.ndarray  # mppi_car.integrator_tableau
    residual: object  # residual_mlp.ResidualPack (EMPTY_PACK: none)


def kernel_model(model) -> KernelModel:
    """Describe a torch model for the kernels; models they do not mirror are an MbrlError."""
    from mbrl_control.kernels.mppi_car import integrator_tableau
    from mbrl_control.kernels.residual_mlp import EMPTY_PACK, pack_residual
    from mbrl_control.kernels.single_track import pack_params
    from mbrl_control.models.bicycle import split_physics

    physics, res, kind = split_physics(model)
    residual = EMPTY_PACK
    if res is not None:
        try:
            residual = pack_residual(res.export())
        except ValueError as exc:
            raise MbrlError(f"mppi: {exc}") from None
    if kind is None:
        raise MbrlError(f"mppi: the kernels do not mirror {type(physics).__name__}; use backend 'torch'")
    integrator, substeps = physics.integrator, int(physics.substeps)
    return KernelModel(kind, pack_params(physics.params, kind), float(model.dt_s), integrator, substeps,
                       integrator_tableau(integrator, float(model.dt_s), substeps), residual)


# --------------------------------------------------------------------------- backends

class _Problem:
    """Everything a backend needs besides the model: sizes, noise, bounds, cost, track table."""

    def __init__(self, config: MPPIConfig, params: VehicleParams, dt_s: float, table: TrackTable) -> None:
        from mbrl_control.kernels.mppi_car import O_SIGMA0, O_SIGMA1

        self.config = config
        self.samples, self.horizon = config.samples, config.horizon
        self.u_min = np.array([params.steer_min_rad, -params.accel_max_mps2], dtype=np.float32)
        self.u_max = np.array([params.steer_max_rad, params.accel_max_mps2], dtype=np.float32)
        self.options = self._settings_vector()
        self.sigma = self.options[O_SIGMA0:O_SIGMA1 + 1]  # a view: this step's sigmas live in one place
        self.cost_config = config.cost_config()
        self.cost_weights = self.cost_config.vector(dt_s)
        self.table = table
        self.dt_s = dt_s

    def set_speed(self, speed_mps: float) -> None:
        """Set this step's steering sigma for the car's speed (see ``MPPIConfig.steer_noise_ref_speed_mps``)."""
        self.sigma[0] = steer_sigma_at(self.config, speed_mps)

    def _settings_vector(self) -> np.ndarray:
        """The float32 settings vector the kernels read (``mppi_car.O_*``)."""
        from mbrl_control.kernels.mppi_car import N_OPTIONS

        c = self.config
        o = np.zeros(N_OPTIONS, dtype=np.float32)
        o[:] = [c.sigma_steer_rad, c.sigma_accel_mps2, c.temperature, c.control_cost_weight, c.noise_alpha,
                self.u_min[0], self.u_min[1], self.u_max[0], self.u_max[1]]
        return o


def steer_sigma_at(config: MPPIConfig, speed_mps: float) -> float:
    """The steering sigma at ``speed_mps``: ``sigma_steer_rad * min(1, (v_ref / |v|)^2)``.

    Keeps the spread of the samples' lateral acceleration (~ v^2 tan(steer) / wheelbase) at its
    value at the reference speed; a NaN speed keeps the full sigma.
    """
    v_ref, speed = config.steer_noise_ref_speed_mps, abs(speed_mps)
    if v_ref <= 0.0 or not speed > v_ref:
        return config.sigma_steer_rad
    return config.sigma_steer_rad * (v_ref / speed) ** 2


class NumbaBackend:
    """The fused CPU kernel; workspace allocated once, nothing allocated per call."""

    name = "numba"

    def __init__(self, problem: _Problem, model: KernelModel) -> None:
        from mbrl_control.kernels.mppi_car import LANES

        self.p = problem
        blocks = -(-problem.samples // LANES)
        k_pad = blocks * LANES
        self.eps = np.zeros((problem.horizon, CONTROL_DIM, k_pad), dtype=np.float32)
        self.costs = np.zeros(k_pad, dtype=np.float64)
        self.weights = np.zeros(k_pad, dtype=np.float64)
        self.set_model(model)

    def set_model(self, model: KernelModel) -> None:
        self.model = model

    def iterate(self, x0: np.ndarray, u_prev: np.ndarray, U: np.ndarray, key: int) -> tuple[float, float]:
        from mbrl_control.kernels.mppi_car import LANES, car_mppi_iteration

        m, p, t = self.model, self.p, self.p.table
        with _KERNEL_LOCK:
            best, ess = car_mppi_iteration(x0, u_prev, U, p.options, np.uint64(key), p.samples,
                                           p.config.null_samples, m.substeps, m.tableau, m.params, t.cells,
                                           t.segments, t.scalars, p.cost_weights, m.residual.params,
                                           m.residual.layout, LANES, self.eps, self.costs, self.weights)
        return float(best), float(ess)


class TorchBackend:
    """The same algorithm on torch tensors with the torch model (any model; CPU or CUDA)."""

    name = "torch"

    def __init__(self, problem: _Problem, model, device: str = "cpu") -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise MbrlError("mppi: device 'cuda' requested but torch sees no CUDA device")
        self.p = problem
        self.device = torch.device(device)
        self.cost = RacingCostTorch(problem.table, problem.cost_config, problem.dt_s)
        self.set_model(model)

    def set_model(self, model) -> None:
        self.model = model.to(self.device) if isinstance(model, torch.nn.Module) else model
        self.dtype = next(iter(model.buffers())).dtype if list(model.buffers()) else torch.float32
        members = 0
        if hasattr(model, "residual") and hasattr(model.residual, "members"):
            members = int(model.residual.members)
        self.member = None
        if members > 0:
            from mbrl_control.kernels.residual_mlp import member_of_sample

            self.member = torch.as_tensor(member_of_sample(self.p.samples, members), device=self.device)

    def sample(self, key: int, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(applied controls V (K, T, 2), applied perturbation V - U) for noise stream ``key``."""
        from mbrl_control.kernels.noise import normal_pairs_torch

        c = self.p.config
        white = normal_pairs_torch(key, self.p.samples, self.p.horizon, device=self.device, dtype=torch.float32)
        if c.noise_alpha > 0:
            alpha = torch.tensor(c.noise_alpha, dtype=torch.float32)
            beta = torch.sqrt(1.0 - alpha * alpha)
            coloured = [white[:, 0]]
            for t in range(1, self.p.horizon):
                coloured.append(alpha * coloured[-1] + beta * white[:, t])
            white = torch.stack(coloured, dim=1)
        if c.null_samples:
            white[: c.null_samples] = 0.0
        sigma = torch.as_tensor(self.p.sigma, device=self.device)
        lo = torch.as_tensor(self.p.u_min, device=self.device)
        hi = torch.as_tensor(self.p.u_max, device=self.device)
        V = torch.minimum(torch.maximum(U + sigma * white, lo), hi)
        return V, V - U

    @torch.no_grad()
    def rollout(self, x0: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """States x_1..x_T (K, T, 7) of every sample (member per sample for semi-parametric models)."""
        state = x0.to(self.dtype).expand(V.shape[0], STATE_DIM)
        states = []
        for t in range(V.shape[1]):
            u = V[:, t].to(self.dtype)
            state = self.model(state, u) if self.member is None else self.model(state, u, self.member)
            states.append(state)
        return torch.stack(states, dim=1)

    @torch.no_grad()
    def iterate(self, x0: np.ndarray, u_prev: np.ndarray, U: np.ndarray, key: int) -> tuple[float, float]:
        c = self.p.config
        Ut = torch.as_tensor(U, device=self.device)
        V, eps = self.sample(key, Ut)
        x0t = torch.as_tensor(x0, device=self.device)
        states = self.rollout(x0t, V)
        costs = self.cost(x0t.to(self.dtype), states, V.to(self.dtype), torch.as_tensor(u_prev, device=self.device))
        sigma = torch.as_tensor(self.p.sigma, device=self.device)
        coef = c.temperature * c.control_cost_weight * Ut / (sigma * sigma)
        costs = costs.double() + (coef * eps).sum(dim=(1, 2)).double()
        costs = torch.where(torch.isnan(costs), torch.full_like(costs, math.inf), costs)
        best = torch.min(costs)
        if not torch.isfinite(best):
            return math.inf, 0.0
        w = torch.exp(-(costs - best) / c.temperature)
        w = w / w.sum()
        U[:] = (Ut.double() + torch.einsum("k,ktc->tc", w, eps.double())).float().cpu().numpy()
        return float(best), float(1.0 / torch.sum(w * w))


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
        cost_config = self.config.cost_config()
        self.table = table if table is not None else TrackTable(track, cell_m=cost_config.cell_m)
        self.problem = _Problem(self.config, params, control_dt_s, self.table)
        self._model = model
        self.backend = self._make_backend(model)
        from mbrl_control.kernels.mppi_common import savgol_weights

        self._smooth = savgol_weights(*self.config.smoothing())
        self._smooth_scratch = np.zeros((self.config.horizon + len(self._smooth) - 1, CONTROL_DIM), dtype=np.float32)
        self.U = np.zeros((self.config.horizon, CONTROL_DIM), dtype=np.float32)
        self.u_prev = np.zeros(CONTROL_DIM, dtype=np.float32)
        self.calls = 0
        self.last_cost = math.nan
        self.last_ess = math.nan
        self._plan: tuple[np.ndarray, np.ndarray] | None = None
        self._x0 = np.zeros(STATE_DIM, dtype=np.float32)
        self._warm_up()

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

    def _make_backend(self, model):
        backend = self.config.backend
        if backend == "torch":
            return TorchBackend(self.problem, model, self.config.device)
        description = kernel_model(model)
        if backend == "cuda":
            from mbrl_control.kernels.mppi_cuda import CudaBackend

            return CudaBackend(self.problem, description)
        return NumbaBackend(self.problem, description)

    @property
    def model(self):
        return self._model

    def set_model(self, model) -> None:
        """Hot swap: new parameters / weights for the next step, no recompilation."""
        self._check_model_dt(model)
        self.backend.set_model(model if self.backend.name == "torch" else kernel_model(model))
        self._model = model

    # ------------------------------------------------------------------ control
    def reset(self, state: np.ndarray) -> None:
        self.U[:] = 0.0
        self.u_prev[:] = 0.0
        self.calls = 0
        self._plan = None

    def key(self) -> int:
        """Noise stream of the next iteration (deterministic for the seed)."""
        from mbrl_control.kernels.noise import stream_key

        return stream_key(self.config.seed, self.calls)

    def step(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (STATE_DIM,) or not np.all(np.isfinite(state)):
            return self._safe_stop(state if state.shape == (STATE_DIM,) else None, "non-finite state")
        x0 = self._x0
        x0[:] = state
        x0[S.YAW] = math.remainder(float(state[S.YAW]), 2.0 * math.pi)  # the model is yaw-invariant
        self.problem.set_speed(float(state[S.V]))
        for _ in range(self.config.iterations):
            self.last_cost, self.last_ess = self.backend.iterate(x0, self.u_prev, self.U, self.key())
            self.calls += 1
        if len(self._smooth) > 1:
            from mbrl_control.kernels.mppi_common import smooth_sequence

            smooth_sequence(self.U, self._smooth, self._smooth_scratch)
        u = self.U[0].astype(np.float64)
        if not np.all(np.isfinite(u)):
            return self._safe_stop(state, "non-finite command")
        u = np.clip(u, self.problem.u_min, self.problem.u_max)
        self._plan = (x0.copy(), self.U.copy())
        self.u_prev[:] = u
        self._shift()
        return u

    def _shift(self) -> None:
        self.U[:-1] = self.U[1:]
        if self.config.shift_fill == "zero":
            self.U[-1] = 0.0

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
        a semi-parametric model uses ensemble member 0, the member of the unperturbed sample)."""
        if self._plan is None:
            return None
        x0, U_plan = self._plan
        if self.backend.name == "torch":
            with torch.no_grad():
                dtype = next(iter(self._model.buffers())).dtype
                s = torch.as_tensor(x0, dtype=dtype)
                states = self._model.rollout(s, torch.as_tensor(U_plan, dtype=dtype))
            return states[:, [S.X, S.Y]].double().cpu().numpy()
        from mbrl_control.kernels.mppi_car import nominal_rollout

        m = self.backend.model
        out = np.zeros((len(U_plan), STATE_DIM), dtype=np.float32)
        nominal_rollout(x0, U_plan, m.substeps, m.tableau, m.params, m.residual.params, m.residual.layout, out)
        return out[:, [S.X, S.Y]].astype(np.float64)


def make_mppi(params: VehicleParams, control_dt_s: float, track: Track, model, options: dict) -> MPPIController:
    """Factory for :mod:`mbrl_control.control.factory` (``options``: the ``mppi`` section)."""
    return MPPIController(params, control_dt_s, track, model, dataclass_from_dict(MPPIConfig, options, "mppi"))


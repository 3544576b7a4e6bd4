"""MPPI on any control problem: sampling settings, the Numba / torch / CUDA backends, the solver.

One iteration (Williams et al. 2017, information-theoretic MPPI) on a
:class:`~mbrl_control.problem.definition.ControlProblem`:

1. sample K control sequences ``V_k = clip(U + sigma * n_k)`` around the nominal ``U`` (noise
   ``n_k`` optionally AR(1)-filtered along the horizon, the first ``null_samples`` sequences
   unperturbed); ``eps_k = V_k - U`` is the applied perturbation;
2. roll the problem's model out and charge ``S_k = sum of the cost terms + lambda * gamma * sum_t
   U_t^T Sigma^-1 eps_k,t``;
3. ``U <- U + sum_k w_k eps_k`` with ``w = softmin(S / lambda)``.

:class:`MPPISolver` repeats that ``iterations`` times per control step, smooths ``U`` along the
horizon (Savitzky-Golay) and shifts it for the warm start. Backends (same noise for the same
key, so their results agree; tests compare them): ``numba`` runs the generated fused CPU kernel
of the problem's shape (:mod:`mbrl_control.kernels.mppi_generated`), ``cuda`` its CUDA twin
(:mod:`mbrl_control.kernels.mppi_cuda`), ``torch`` evaluates the same definitions on tensors
(:class:`~mbrl_control.problem.torch_cost.TorchProblemCost`; the model is a torch module given
with the :class:`PredictionModel`, or the problem's definition integrated in float64). A new
motion model or cost term needs no edit here: see ``test/test_mppi_new_problem.py``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch

from mbrl_control import MbrlError
from mbrl_control.config import check_memory
from mbrl_control.kernels.bundles import O_SIGMA, Sampling, Workspace, model_data, options_vector
from mbrl_control.kernels.mppi_generated import LANES, context_data, cost_data, mppi_kernels
from mbrl_control.kernels.residual_mlp import EMPTY_PACK, ResidualPack
from mbrl_control.problem.definition import ControlProblem, CostSpec
from mbrl_control.problem.torch_cost import TorchProblemCost

BACKENDS = ("numba", "torch", "cuda")
_KERNEL_LOCK = threading.Lock()  # Numba's workqueue threading layer must not be entered concurrently


@dataclass(frozen=True)
class SolverConfig:
    """The problem-independent MPPI settings (one noise scale per control in ``sigma``)."""

    samples: int = 1024
    horizon: int = 75
    sigma: tuple[float, ...] = ()
    iterations: int = 1
    temperature: float = 1.3  # lambda
    control_cost_weight: float = 0.05  # gamma
    noise_alpha: float = 0.8  # AR(1) low-pass of the noise along the horizon (0: white)
    null_samples: int = 1
    smoothing_window: int = 9  # Savitzky-Golay window over the horizon (0 or 1: off; cut to the horizon)
    smoothing_order: int = 2
    shift_fill: str = "last"  # warm-start padding of the last step: last | zero
    seed: int = 0
    backend: str = "numba"
    device: str = "cpu"  # torch backend: cpu | cuda

    def validate(self, controls: int) -> None:
        """One clear :class:`MbrlError` for the first bad setting."""
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
        if len(self.sigma) != controls or not all(s > 0 for s in self.sigma):
            bad(f"'sigma' needs one positive noise scale per control ({controls}), got {self.sigma}")
        if not self.temperature > 0:
            bad(f"'temperature' must be positive, got {self.temperature}")
        if self.control_cost_weight < 0:
            bad(f"'control_cost_weight' must be non-negative, got {self.control_cost_weight}")
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
        check_memory(f"mppi: samples {self.samples} x horizon {self.horizon}", self.memory_estimate_bytes(controls))

    def memory_estimate_bytes(self, controls: int) -> float:
        """Buffers of one solver, estimated before allocating them: the numba workspace holds the (T, m, K)
        float32 perturbations; the torch / CUDA backends also keep the sampled states and controls of every
        sample (about 8 times as much)."""
        per_sample_step = 4.0 * controls * (1 if self.backend == "numba" else 8)
        return float(_padded_samples(self.samples)) * self.horizon * per_sample_step + 16.0 * self.samples

    def smoothing(self) -> tuple[int, int]:
        """(window, order) actually used: the window is cut to the largest odd length within the horizon."""
        window = min(self.smoothing_window, self.horizon if self.horizon % 2 else self.horizon - 1)
        if window <= 1 or self.smoothing_order >= window:
            return 0, 0
        return window, self.smoothing_order


class SamplingSettings:
    """The kernels' sampling bundle of a solver, owning the options vector; ``sigma`` is a view of it
    (a change, e.g. the steering sigma for the car's speed, reaches every backend)."""

    def __init__(self, config: SolverConfig, u_min: Sequence[float], u_max: Sequence[float]) -> None:
        m = len(config.sigma)
        self.samples, self.horizon, self.controls = config.samples, config.horizon, m
        self.temperature, self.control_cost_weight = config.temperature, config.control_cost_weight
        self.noise_alpha, self.null_samples = config.noise_alpha, config.null_samples
        self.u_min = np.asarray(u_min, dtype=np.float32)
        self.u_max = np.asarray(u_max, dtype=np.float32)
        self.bounds = (np.asarray(u_min, dtype=np.float64), np.asarray(u_max, dtype=np.float64))  # exact, for commands
        self.options = options_vector(config.sigma, self.u_min, self.u_max, config.temperature,
                                      config.control_cost_weight, config.noise_alpha)
        self.sigma = self.options[O_SIGMA:O_SIGMA + m]
        self.bundle = Sampling(self.options, int(config.samples), int(config.null_samples), LANES)


@dataclass(frozen=True)
class PredictionModel:
    """A model instance for a problem: parameter values, an optional learned residual, optionally its
    torch module (the torch backend steps it; None: the problem's definition in float64)."""

    params: Any  # an object with the definition's param_names as attributes
    residual: ResidualPack = EMPTY_PACK
    module: Any = None

    def data(self, problem: ControlProblem):
        """The kernels' model bundle for ``problem``'s model class and discretisation."""
        return model_data(problem.model.param_vector(self.params), problem.integrator, problem.dt_s,
                          problem.substeps, self.residual)


# --------------------------------------------------------------------------- backends

def _padded_samples(samples: int) -> int:
    return -(-samples // LANES) * LANES


class NumbaBackend:
    """The generated fused CPU kernel; workspace allocated once, nothing allocated per call."""

    name = "numba"

    def __init__(self, problem: ControlProblem, sampling: SamplingSettings, model: PredictionModel) -> None:
        self.sampling = sampling
        k_pad = _padded_samples(sampling.samples)
        self.work = Workspace(np.zeros((sampling.horizon, sampling.controls, k_pad), dtype=np.float32),
                              np.zeros(k_pad, dtype=np.float64), np.zeros(k_pad, dtype=np.float64))
        self._context_of = None
        self.set_model(problem, model)

    @property
    def eps(self) -> np.ndarray:
        """(T, m, K_pad) applied perturbations of the last iteration."""
        return self.work.eps

    def set_model(self, problem: ControlProblem, model: PredictionModel) -> None:
        """New model data (no recompilation); a problem of another shape loads its own kernel."""
        self.problem, self.model = problem, model
        self.kernels = mppi_kernels(problem).cpu
        self._model = model.data(problem)
        self._cost = cost_data(problem)
        if self._context_of is not problem.context:
            self._context, self._context_of = context_data(problem.context), problem.context

    def set_costs(self, problem: ControlProblem) -> None:
        """New cost weights (same terms): only the cost bundle changes."""
        self.problem = problem
        self._cost = cost_data(problem)

    def sequence_costs(self, x0: np.ndarray, u_prev: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        """Cost (K,) of control sequences (K, T, m) from ``x0`` (no control cost; see :func:`sequence_costs`)."""
        return sequence_costs(self.problem, self._model, self._context, self._cost, x0, u_prev, sequences)

    def iterate(self, x0: np.ndarray, u_prev: np.ndarray, U: np.ndarray, key: int) -> tuple[float, float]:
        """One iteration from ``x0``: updates ``U`` (float32, in place); returns (min cost, ESS)."""
        x0 = np.ascontiguousarray(x0, dtype=np.float32)
        u_prev = np.ascontiguousarray(u_prev, dtype=np.float32)
        with _KERNEL_LOCK:
            best, ess = self.kernels.mppi_iteration(x0, u_prev, U, np.uint64(key), self.sampling.bundle, self._model,
                                                    self._context, self._cost, self.work)
        return float(best), float(ess)

    def nominal_states(self, x0: np.ndarray, U: np.ndarray) -> np.ndarray:
        """States x_1..x_T (T, n) of the control sequence ``U`` (member 0 of a residual ensemble)."""
        return nominal_states(self.problem, self._model, x0, U)


def nominal_states(problem: ControlProblem, model_bundle, x0: np.ndarray, U: np.ndarray) -> np.ndarray:
    """The generated serial rollout of ``U`` from ``x0`` (float32 (T, n))."""
    out = np.zeros((len(U), problem.model.state_dim()), dtype=np.float32)
    mppi_kernels(problem).cpu.nominal_rollout(np.ascontiguousarray(x0, dtype=np.float32),
                                              np.ascontiguousarray(U, dtype=np.float32), model_bundle, out)
    return out


def sequence_costs(problem: ControlProblem, model_bundle, context_bundle, cost_bundle, x0: np.ndarray,
                   u_prev: np.ndarray, sequences: np.ndarray) -> np.ndarray:
    """The cost terms' total (K,) of each control sequence (K, T, m) rolled out from ``x0`` by the generated
    serial kernels (no MPPI control cost; a non-finite total is +inf). A few sequences, off the hot path:
    the racing controller's recovery candidates."""
    kernels = mppi_kernels(problem).cpu
    seqs = np.ascontiguousarray(sequences, dtype=np.float32)
    x0 = np.ascontiguousarray(x0, dtype=np.float32)
    states = np.zeros((seqs.shape[0], seqs.shape[1], problem.model.state_dim()), dtype=np.float32)
    for k in range(seqs.shape[0]):
        kernels.nominal_rollout(x0, seqs[k], model_bundle, states[k])
    out = np.zeros(seqs.shape[0], dtype=np.float32)
    kernels.trajectory_costs(x0, states, seqs, np.ascontiguousarray(u_prev, dtype=np.float32), context_bundle,
                             cost_bundle, out)
    out = out.astype(np.float64)
    out[~np.isfinite(out)] = np.inf
    return out


class CudaBackend:
    """The generated CUDA kernel (:class:`mbrl_control.kernels.mppi_cuda.CudaMPPI`): one launch per iteration."""

    name = "cuda"

    def __init__(self, problem: ControlProblem, sampling: SamplingSettings, model: PredictionModel) -> None:
        from mbrl_control.kernels.mppi_cuda import CudaMPPI

        self.problem, self.model = problem, model
        self._device = CudaMPPI(problem, sampling.bundle, model.data(problem), sampling.horizon)

    def set_model(self, problem: ControlProblem, model: PredictionModel) -> None:
        self.problem, self.model = problem, model
        self._device.set_model(problem, model.data(problem))

    def set_costs(self, problem: ControlProblem) -> None:
        self.set_model(problem, self.model)  # uploads the weights (they changed)

    def sequence_costs(self, x0: np.ndarray, u_prev: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        p = self.problem
        return sequence_costs(p, self.model.data(p), context_data(p.context), cost_data(p), x0, u_prev, sequences)

    def iterate(self, x0: np.ndarray, u_prev: np.ndarray, U: np.ndarray, key: int) -> tuple[float, float]:
        return self._device.iterate(x0, u_prev, U, key)

    def nominal_states(self, x0: np.ndarray, U: np.ndarray) -> np.ndarray:
        return nominal_states(self.problem, self.model.data(self.problem), x0, U)


class DefinitionStep:
    """One step of a problem's motion model on float64 tensors, evaluated from its definition."""

    dtype = torch.float64

    def __init__(self, problem: ControlProblem, params: Any) -> None:
        self.problem, self.params = problem, params

    def _derivative(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        from mbrl_control.models.motion_model import torch_derivative

        return torch_derivative(self.problem.model, state, control, self.params)

    def __call__(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        from mbrl_control.models.base import integrate_step

        p = self.problem
        for _ in range(p.substeps):
            state = integrate_step(self._derivative, state, control, p.dt_s / p.substeps, p.integrator)
        return state

    def rollout(self, state0: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        states, state = [], state0
        for t in range(controls.shape[-2]):
            state = self(state, controls[..., t, :])
            states.append(state)
        return torch.stack(states, dim=-2)


def normal_noise_torch(key: int, samples: int, horizon: int, controls: int, device) -> torch.Tensor:
    """(K, T, m) standard normals of the kernels' stream: pair j of step t is counter ``t * pairs + j``."""
    from mbrl_control.kernels.noise import normal_pairs_torch

    pairs = (controls + 1) // 2
    white = normal_pairs_torch(key, samples, horizon * pairs, device=device, dtype=torch.float32)
    return white.reshape(samples, horizon, 2 * pairs)[..., :controls]


class TorchBackend:
    """The same algorithm on torch tensors (CPU or CUDA): the reference the kernels are tested against."""

    name = "torch"

    def __init__(self, problem: ControlProblem, sampling: SamplingSettings, model: PredictionModel,
                 device: str = "cpu") -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise MbrlError("mppi: device 'cuda' requested but torch sees no CUDA device")
        self.sampling = sampling
        self.device = torch.device(device)
        self.set_model(problem, model)

    def set_model(self, problem: ControlProblem, model: PredictionModel) -> None:
        self.problem, self.model = problem, model
        self.cost = TorchProblemCost(problem)
        module = model.module
        if module is None:
            self.step, self.dtype = DefinitionStep(problem, model.params), DefinitionStep.dtype
        else:
            self.step = module.to(self.device) if isinstance(module, torch.nn.Module) else module
            buffers = list(module.buffers()) if isinstance(module, torch.nn.Module) else []
            self.dtype = buffers[0].dtype if buffers else torch.float32
        members = int(getattr(getattr(module, "residual", None), "members", 0) or 0)
        self.member = None
        if members > 0:
            from mbrl_control.kernels.residual_mlp import member_of_sample

            self.member = torch.as_tensor(member_of_sample(self.sampling.samples, members), device=self.device)

    def set_costs(self, problem: ControlProblem) -> None:
        self.problem = problem
        self.cost = TorchProblemCost(problem)

    @torch.no_grad()
    def sequence_costs(self, x0: np.ndarray, u_prev: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        """Cost (K,) of control sequences (K, T, m) (a residual ensemble's mean; no control cost)."""
        V = torch.as_tensor(np.asarray(sequences), dtype=self.dtype, device=self.device)
        x0t = torch.as_tensor(np.asarray(x0), dtype=self.dtype, device=self.device)
        states = self.step.rollout(x0t.expand(V.shape[0], x0t.shape[-1]), V)
        u_prev_t = torch.as_tensor(np.asarray(u_prev, dtype=np.float32), device=self.device)
        out = self.cost(x0t, states, V, u_prev_t).double().cpu().numpy()
        out[~np.isfinite(out)] = np.inf
        return out

    def sample(self, key: int, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(applied controls V (K, T, m), applied perturbation V - U) for noise stream ``key``."""
        s = self.sampling
        white = normal_noise_torch(key, s.samples, s.horizon, s.controls, self.device)
        if s.noise_alpha > 0:
            alpha = torch.tensor(s.noise_alpha, dtype=torch.float32)
            beta = torch.sqrt(1.0 - alpha * alpha)
            coloured = [white[:, 0]]
            for t in range(1, s.horizon):
                coloured.append(alpha * coloured[-1] + beta * white[:, t])
            white = torch.stack(coloured, dim=1)
        if s.null_samples:
            white[: s.null_samples] = 0.0
        sigma = torch.as_tensor(s.sigma, device=self.device)
        lo = torch.as_tensor(s.u_min, device=self.device)
        hi = torch.as_tensor(s.u_max, device=self.device)
        V = torch.minimum(torch.maximum(U + sigma * white, lo), hi)
        return V, V - U

    @torch.no_grad()
    def rollout(self, x0: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """States x_1..x_T (K, T, n) of every sample (member per sample for semi-parametric models)."""
        state = x0.to(self.dtype).expand(V.shape[0], x0.shape[-1])
        states = []
        for t in range(V.shape[1]):
            u = V[:, t].to(self.dtype)
            state = self.step(state, u) if self.member is None else self.step(state, u, self.member)
            states.append(state)
        return torch.stack(states, dim=1)

    @torch.no_grad()
    def iterate(self, x0: np.ndarray, u_prev: np.ndarray, U: np.ndarray, key: int) -> tuple[float, float]:
        s = self.sampling
        Ut = torch.as_tensor(U, device=self.device)
        V, eps = self.sample(key, Ut)
        x0t = torch.as_tensor(np.asarray(x0, dtype=np.float32), device=self.device)
        states = self.rollout(x0t, V)
        u_prev_t = torch.as_tensor(np.asarray(u_prev, dtype=np.float32), device=self.device)
        costs = self.cost(x0t.to(self.dtype), states, V.to(self.dtype), u_prev_t)
        sigma = torch.as_tensor(s.sigma, device=self.device)
        coef = s.temperature * s.control_cost_weight * Ut / (sigma * sigma)
        costs = costs.double() + (coef * eps).sum(dim=(1, 2)).double()
        costs = torch.where(torch.isnan(costs), torch.full_like(costs, math.inf), costs)
        best = torch.min(costs)
        if not torch.isfinite(best):
            return math.inf, 0.0
        w = torch.exp(-(costs - best) / s.temperature)
        w = w / w.sum()
        U[:] = (Ut.double() + torch.einsum("k,ktc->tc", w, eps.double())).float().cpu().numpy()
        return float(best), float(1.0 / torch.sum(w * w))

    @torch.no_grad()
    def nominal_states(self, x0: np.ndarray, U: np.ndarray) -> np.ndarray:
        """States x_1..x_T (T, n) of ``U`` (a residual ensemble's mean)."""
        s = torch.as_tensor(np.asarray(x0), dtype=self.dtype, device=self.device)
        states = self.step.rollout(s, torch.as_tensor(np.asarray(U), dtype=self.dtype, device=self.device))
        return states.double().cpu().numpy()


def make_backend(name: str, problem: ControlProblem, sampling: SamplingSettings, model: PredictionModel,
                 device: str = "cpu"):
    """The backend ``name`` (numba | torch | cuda) for a problem."""
    if name == "torch":
        return TorchBackend(problem, sampling, model, device)
    if name == "cuda":
        return CudaBackend(problem, sampling, model)
    return NumbaBackend(problem, sampling, model)


# --------------------------------------------------------------------------- solver

class MPPISolver:
    """MPPI on a :class:`ControlProblem`: the warm-started nominal sequence and one control step at a time."""

    def __init__(self, problem: ControlProblem, model: PredictionModel, config: SolverConfig,
                 sampling: SamplingSettings | None = None) -> None:
        from mbrl_control.kernels.mppi_common import savgol_weights

        problem.validate()
        config.validate(problem.model.control_dim())
        self.problem, self.config = problem, config
        self.sampling = sampling or SamplingSettings(config, *problem.model.control_bounds(model.params))
        self.backend = make_backend(config.backend, problem, self.sampling, model, config.device)
        m = problem.model.control_dim()
        self._smooth = savgol_weights(*config.smoothing())
        self._smooth_scratch = np.zeros((config.horizon + len(self._smooth) - 1, m), dtype=np.float32)
        self.U = np.zeros((config.horizon, m), dtype=np.float32)
        self.u_prev = np.zeros(m, dtype=np.float32)
        self.calls = 0
        self.last_cost = math.nan
        self.last_ess = math.nan

    def set_model(self, model: PredictionModel, problem: ControlProblem | None = None) -> None:
        """Hot swap: new parameters / weights (no recompilation); a new problem of another shape loads its kernel."""
        self.problem = (problem or self.problem).validate()
        self.backend.set_model(self.problem, model)

    def set_cost_weights(self, weights: Sequence[np.ndarray]) -> None:
        """New weight vectors for the problem's cost terms (same terms, in order): no recompilation."""
        if len(weights) != len(self.problem.costs):
            raise MbrlError(f"mppi: {len(self.problem.costs)} cost terms, got {len(weights)} weight vectors")
        costs = tuple(CostSpec(spec.term, np.asarray(w, dtype=np.float32).copy())
                      for spec, w in zip(self.problem.costs, weights))
        self.problem = replace(self.problem, costs=costs).validate()
        self.backend.set_costs(self.problem)

    def sequence_costs(self, x0: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        """The problem's cost (K,) of each control sequence (K, T, m) from ``x0`` after the last applied
        command (no MPPI control cost; +inf where not finite)."""
        return self.backend.sequence_costs(x0, self.u_prev, sequences)

    def reset(self) -> None:
        """Forget the warm start and the last command."""
        self.U[:] = 0.0
        self.u_prev[:] = 0.0
        self.calls = 0

    def key(self) -> int:
        """Noise stream of the next iteration (deterministic for the seed)."""
        from mbrl_control.kernels.noise import stream_key

        return stream_key(self.config.seed, self.calls)

    def optimise(self, x0: np.ndarray) -> np.ndarray:
        """Run the iterations from ``x0`` and smooth ``U``; returns ``U[0]`` (float64, maybe non-finite)."""
        for _ in range(self.config.iterations):
            self.last_cost, self.last_ess = self.backend.iterate(x0, self.u_prev, self.U, self.key())
            self.calls += 1
        if len(self._smooth) > 1:
            from mbrl_control.kernels.mppi_common import smooth_sequence

            smooth_sequence(self.U, self._smooth, self._smooth_scratch)
        return self.U[0].astype(np.float64)

    def clip(self, u: np.ndarray) -> np.ndarray:
        """``u`` within the control bounds (as given: float32 rounding may lie a hair outside them)."""
        return np.clip(u, *self.sampling.bounds)

    def commit(self, u: np.ndarray) -> None:
        """Record the applied command ``u`` and shift ``U`` by one step (the warm start)."""
        self.u_prev[:] = u
        self.U[:-1] = self.U[1:]
        if self.config.shift_fill == "zero":
            self.U[-1] = 0.0

    def step(self, x0: np.ndarray) -> np.ndarray | None:
        """One control step: the command to apply (within bounds), None when it is not finite."""
        u = self.optimise(x0)
        if not np.all(np.isfinite(u)):
            return None
        u = self.clip(u)
        self.commit(u)
        return u

    def nominal_states(self, x0: np.ndarray, U: np.ndarray | None = None) -> np.ndarray:
        """Predicted states (T, n) along ``U`` (default: the current nominal sequence) from ``x0``."""
        return self.backend.nominal_states(x0, self.U if U is None else U)

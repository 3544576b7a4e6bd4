"""Parametric identification: bounded nonlinear least squares on multi-step predictions.

The physics model (the torch :class:`~mbrl_control.models.bicycle.SingleTrackBase` models, the
single source of truth) is rolled out ``horizon_steps`` steps from the measured state at the start
of each window with the recorded commands; the residuals are the differences to the measured
states, each state scaled by its typical one-step change so that metres, radians and m/s weigh
alike. scipy's trust-region-reflective ``least_squares`` solves the bounded problem; its Jacobian
comes from central differences with all perturbed parameter vectors batched into one rollout
(checked against forward-mode autodiff in the tests; see :class:`MultiStepProblem`).

Parameters are optimised as ``theta = p / p_ref`` (``p_ref`` the prior, or the upper bound when
the prior is 0) so all unknowns are O(1). Identifiability in the CommonRoad model: the friction
coefficient only appears as ``mu * C_S``, so fit either ``friction_coeff`` or the stiffnesses.

Without a measured steering angle (bags), the start states' steering is re-estimated inside the
residual for every candidate servo time constant (:func:`~.dataset.estimate_steering`, a fast
Numba scan), and the steering itself is left out of the compared states, so the time constant
is identified from its effect on yaw rate and slip.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import least_squares

from mbrl_control import MbrlError
from mbrl_control.config import VehicleParams
from mbrl_control.models.bicycle import SingleTrackBase
from mbrl_control.models.layout import STATE_DIM, S, U
from mbrl_control.models.semiparametric import PHYSICS
from mbrl_control.sysid.config import IdentifyConfig, bounded_prior
from mbrl_control.sysid.dataset import Dataset, estimate_steering
from mbrl_control.sysid.threads import single_threaded

LOG = logging.getLogger("mbrl_control.sysid")

SCALE_FLOORS = np.array([1e-3, 1e-3, 1e-4, 1e-3, 1e-4, 1e-3, 1e-4])
"""Smallest per-state residual scale (indexed by S): keeps a nearly constant state from dominating."""
MIN_WINDOWS = 20
FD_STEP = 1e-5
"""Central-difference step in the normalised parameters (truncation ~1e-10, round-off ~1e-11 relative)."""


@dataclass
class IdentifyResult:
    """Fitted parameters and how the fit went."""

    params: VehicleParams
    names: tuple[str, ...]
    values: np.ndarray
    prior: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    rms_initial: float  # RMS of the scaled multi-step residual at the start / the end
    rms_final: float
    evaluations: int
    windows: int
    time_s: float

    def report(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.names, self.values)}


class MultiStepProblem:
    """The scaled multi-step prediction residual of a physics model as a function of ``theta``.

    Several parameter vectors are evaluated in one batched rollout: the identified buffers of a
    private copy of the model become (B, 1) tensors that broadcast against (B, W, 7) states. The
    Jacobian is by central differences over such a batch (2P rollouts in one), which on a CPU is
    ~10x faster than forward-mode autodiff through the same rollout and agrees with it to ~1e-8
    (tested against ``torch.func.jacfwd``, see :meth:`residual` for the autodiff path).
    """

    def __init__(self, model: SingleTrackBase, dataset: Dataset, names: tuple[str, ...], ref: np.ndarray,
                 horizon: int, stride: int, max_windows: int) -> None:
        starts = dataset.window_starts(horizon, stride, max_windows)
        if len(starts) < MIN_WINDOWS:
            raise MbrlError(f"system identification: only {len(starts)} windows of {horizon} valid steps "
                            f"(need {MIN_WINDOWS}); record more (or cleaner) data")
        s0, u, y = dataset.windows(starts, horizon)
        self.starts = starts
        self.dataset = dataset
        self.tau_index = names.index("steer_time_constant_s") if not dataset.steer_measured and "steer_time_constant_s" in names else None
        self.model = copy.deepcopy(model)
        self.names = names
        self.ref = torch.as_tensor(ref, dtype=torch.float64)
        self.s0 = torch.as_tensor(s0, dtype=torch.float64)
        self.u = torch.as_tensor(u, dtype=torch.float64)
        dims = [d for d in range(STATE_DIM) if dataset.steer_measured or d != S.STEER]
        self.dims = torch.as_tensor(dims)
        self.y = torch.as_tensor(y, dtype=torch.float64)[..., self.dims]
        steps = np.diff(np.concatenate([s0[:, None, :], y], axis=1), axis=1).reshape(-1, STATE_DIM)
        scale = np.maximum(np.sqrt(np.mean(steps**2, axis=0)), SCALE_FLOORS)
        self.inv_scale = torch.as_tensor(1.0 / scale[dims], dtype=torch.float64)
        self.windows = len(starts)
        self.size = self.windows * horizon * len(dims)  # residual entries

    def batched(self, theta: torch.Tensor) -> torch.Tensor:
        """Residual vectors (B, M) for parameter vectors ``theta`` (B, P), in one batched rollout."""
        values = theta * self.ref
        for i, name in enumerate(self.names):
            setattr(self.model, name, values[:, i:i + 1])
        state = self.s0.expand(theta.shape[0], *self.s0.shape)
        if self.tau_index is not None:
            state = self._with_steering(state, values[:, self.tau_index])
        errors = []
        for j in range(self.u.shape[1]):
            state = self.model(state, self.u[:, j])
            errors.append((state[..., self.dims] - self.y[:, j]) * self.inv_scale)
        return torch.stack(errors, dim=2).reshape(theta.shape[0], -1)

    def _with_steering(self, state: torch.Tensor, tau_s: torch.Tensor) -> torch.Tensor:
        """Window start states with the steering re-estimated by the servo model for each candidate ``tau``."""
        params = self.model.params
        cmd = self.dataset.controls[:, U.STEER_CMD]
        steer = np.stack([
            estimate_steering(cmd, self.dataset.dt_s, params.replace(steer_time_constant_s=float(t)), self.model.substeps)[self.starts]
            for t in tau_s.detach().numpy()])
        state = state.clone()
        state[..., S.STEER] = torch.as_tensor(steer, dtype=state.dtype)
        return state

    def residual(self, theta: torch.Tensor) -> torch.Tensor:
        """Flat residual (M,) for one ``theta`` (P,); differentiable (autodiff reference for the Jacobian)."""
        return self.batched(theta[None, :])[0]

    def fun(self, theta: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            r = self.batched(torch.as_tensor(theta, dtype=torch.float64)[None, :])[0]
        return _finite(r.numpy())

    def jac(self, theta: np.ndarray) -> np.ndarray:
        """(M, P) Jacobian by central differences, all 2P perturbed rollouts batched."""
        theta = np.asarray(theta, dtype=np.float64)
        p = len(theta)
        step = FD_STEP * np.maximum(1.0, np.abs(theta))
        offsets = np.concatenate([np.diag(step), -np.diag(step)])
        with torch.no_grad():
            r = self.batched(torch.as_tensor(theta[None, :] + offsets, dtype=torch.float64)).numpy()
        return _finite(((r[:p] - r[p:]) / (2.0 * step[:, None])).T)


def _finite(a: np.ndarray) -> np.ndarray:
    """Replace non-finite entries by large finite ones (a diverging rollout must not crash the solver)."""
    return np.nan_to_num(a, nan=1e6, posinf=1e6, neginf=-1e6)


@single_threaded
def identify(dataset: Dataset, prior: VehicleParams, config: IdentifyConfig | None = None,
             initial: VehicleParams | None = None) -> IdentifyResult:
    """Fit ``config.params`` of ``prior`` to ``dataset``; ``initial`` (e.g. the last fit) warm-starts the solver.

    Bounds are ``prior * [lower_scale, upper_scale]`` within the valid ranges of the parameters.
    A weak quadratic pull (``prior_weight``) towards the starting point keeps parameters the data
    does not excite (e.g. tire stiffnesses on a straight) where they were instead of letting them
    drift along a flat cost; with informative data its bias is negligible.
    """
    config = config or IdentifyConfig()
    kind = "dynamic" if config.physics == "auto" else config.physics  # 'auto' chooses in fit_model
    tic = time.perf_counter()
    names = tuple(config.params)
    bounds = np.array([bounded_prior(prior, n, config) for n in names]).reshape(-1, 3)
    prior_v, lower, upper = bounds[:, 0], bounds[:, 1], bounds[:, 2]
    ref = np.where(prior_v != 0.0, np.abs(prior_v), upper)
    start = np.array([getattr(initial or prior, n) for n in names], dtype=np.float64)
    model = PHYSICS[kind](prior, dt_s=dataset.dt_s, integrator="rk4", substeps=config.substeps, dtype=torch.float64)
    if not names:  # nothing to identify: the prior as it is
        empty = np.zeros(0)
        return IdentifyResult(initial or prior, names, empty, empty, empty, empty, float("nan"), float("nan"), 0, 0,
                              time.perf_counter() - tic)
    problem = MultiStepProblem(model, dataset, names, ref, config.horizon_steps, config.window_stride, config.max_windows)
    lo, hi = lower / ref, upper / ref
    x0 = np.clip(start / ref, lo + 1e-6 * (hi - lo), hi - 1e-6 * (hi - lo))
    anchor = x0.copy()
    weight = config.prior_weight * np.sqrt(problem.size)

    def fun(theta: np.ndarray) -> np.ndarray:
        return np.concatenate([problem.fun(theta), weight * (theta - anchor)])

    def jac(theta: np.ndarray) -> np.ndarray:
        return np.vstack([problem.jac(theta), weight * np.eye(len(theta))])

    r0 = problem.fun(x0)
    sol = least_squares(fun, x0, jac=jac, bounds=(lo, hi), method="trf", loss=config.loss,
                        x_scale=1.0, max_nfev=config.max_iterations, xtol=1e-10, ftol=1e-10, gtol=1e-10)
    values = sol.x * ref
    params = prior.replace(**{n: float(v) for n, v in zip(names, values)})
    result = IdentifyResult(params, names, values, prior_v, lower, upper, _rms(r0), _rms(problem.fun(sol.x)), int(sol.nfev),
                            problem.windows, time.perf_counter() - tic)
    LOG.info("identify: %s (rms %.4g -> %.4g, %d evaluations, %d windows, %.2f s)",
             ", ".join(f"{n}={v:.4g}" for n, v in zip(names, values)), result.rms_initial, result.rms_final,
             result.evaluations, result.windows, result.time_s)
    return result


def _rms(r: np.ndarray) -> float:
    return float(np.sqrt(np.mean(r**2))) if len(r) else float("nan")

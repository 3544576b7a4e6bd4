"""The learned residual of a real car's commanded single-track model: body accelerations.

``d(vx, vy, w)/dt = physics + residual(features)`` inside every Euler substep of
:func:`mbrl_control.models.predictor.euler_step`: a continuous-time correction, so a model trained
on 100 Hz recordings predicts at any ``dt``. The features are pose invariant, at the centre of
mass: body velocities ``vx, vy`` [m/s], yaw rate ``w`` [rad/s], the actuator states ``steer`` [rad]
and ``duty`` [1], and the commands as the actuators get them (``throttle`` [1], delayed ``steering``
[1]). The network is the residual ensemble of :mod:`.residual` (one written definition,
:mod:`.residual_definition`); its three outputs are accelerations [m/s^2, m/s^2, rad/s^2].

**History residual** (``ResidualFitConfig(kind="history")``, :class:`HistoryResidualPredictor`): the
same inputs plus a per-window context held constant along the rollout (:data:`HISTORY_CONTEXT`: the
means of the past commands over the last 1 s and 0.3 s, the measured start speed and yaw rate).
Why: what the physics misses differs between recordings (battery charge, motor and steering drift),
and an instantaneous residual learns it per recording (it helped on held-out blocks of its own
files, not on held-out files); the speed and yaw rate the car reached under the recent commands
say, at prediction time, how strongly this recording's car responds. Leave-one-file-out it lowers
the pooled 1 s position RMSE by 8.4 % (``real_residual.HISTORY_FIT``) where the instantaneous
residual gives 1.6 % (docs/real_data.md).
``fit --residual --residual-kind history`` writes it; ``predictor.load_predictor`` reads it back.
"""

from __future__ import annotations

import numpy as np
import torch

from mbrl_control.models import residual_definition as rd
from mbrl_control.models.predictor import CommandedCarPredictor
from mbrl_control.models.residual import ResidualEnsemble
from mbrl_control.ops import numpy_ops

FEATURES = ("vx", "vy", "w", "steer", "duty", "throttle", "steering")
"""Residual inputs, in order (states of the model, then its controls)."""
CORRECTED = ("vx", "vy", "w")
"""States whose derivative the residual corrects."""


def features(x, u) -> list:
    """The residual's inputs of state record ``x`` and control record ``u`` (any backend's arrays)."""
    return [x.vx, x.vy, x.w, x.steer, x.duty, u.throttle, u.steering]


def stack_last(values: list):
    """Broadcast and stack arrays (NumPy) or tensors (torch) on a new last axis."""
    if any(isinstance(v, torch.Tensor) for v in values):
        like = next(v for v in values if isinstance(v, torch.Tensor))
        tensors = [torch.as_tensor(v, dtype=like.dtype) for v in values]
        return torch.stack(torch.broadcast_tensors(*tensors), dim=-1)
    return np.stack(np.broadcast_arrays(*values), axis=-1)


def new_ensemble(members: int, hidden: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64,
                 feature_dim: int = len(FEATURES)) -> ResidualEnsemble:
    """An ensemble with ``feature_dim`` inputs (default: :data:`FEATURES`) whose correction is exactly zero."""
    return ResidualEnsemble(members, hidden, seed=seed, dtype=dtype, feature_dim=feature_dim).zero_()


def numpy_network(ensemble: ResidualEnsemble):
    """The ensemble's record for :mod:`.residual_definition` as float64 NumPy arrays."""
    f64 = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    return rd.network([f64(w) for w in ensemble.weights], [f64(b) for b in ensemble.biases], f64(ensemble.in_mean),
                      f64(ensemble.in_std), f64(ensemble.out_mean), f64(ensemble.out_std),
                      float(ensemble.min_logvar), float(ensemble.max_logvar))


class EnsembleMeanCorrection:
    """``correction(m, x, u)`` for :func:`~mbrl_control.models.predictor.euler_step`: the members'
    mean accelerations (NumPy float64; what a fitted model file predicts with). ``context`` (N, C):
    a history residual's per-window context, which :class:`HistoryResidualPredictor` sets before
    each rollout (None: an instantaneous residual)."""

    def __init__(self, ensemble: ResidualEnsemble) -> None:
        self.net = numpy_network(ensemble)
        self.context: np.ndarray | None = None

    def __call__(self, m, x, u) -> tuple:
        f = _with_context(stack_last(features(x, u)), self.context)
        a = rd.ensemble_mean(numpy_ops, self.net, f.reshape(1, -1, f.shape[-1])).reshape(*f.shape[:-1], 3)
        return a[..., 0], a[..., 1], a[..., 2]


class MemberCorrection:
    """``correction(m, x, u)`` on torch tensors whose first axis is the ensemble member (training:
    each member rolls its own windows out; differentiable); ``context`` (E, B, C) of a history residual."""

    def __init__(self, ensemble: ResidualEnsemble, context: torch.Tensor | None = None) -> None:
        self.ensemble, self.context = ensemble, context

    def __call__(self, m, x, u) -> tuple:
        f = _with_context(stack_last(features(x, u)), self.context)   # (E, B, F [+ C])
        a = rd.member_means(m, self.ensemble.network(), f)
        return a[..., 0], a[..., 1], a[..., 2]


HISTORY_CONTEXT = ("throttle_mean_1s", "throttle_mean_0.3s", "steering_mean_1s", "steering_mean_0.3s", "vx0_mps",
                   "w0_radps")
"""Per-window context of the history residual (appended to :data:`FEATURES`, constant along a rollout):
the means of the recorded past commands over the last 1 s and 0.3 s [1] and the measured start speed
``vx`` [m/s] and yaw rate ``w`` [rad/s] of the reference point."""
HISTORY_CONTEXT_S = (1.0, 0.3)
"""Spans [s] of the past-command means of :data:`HISTORY_CONTEXT`."""


def history_context(state0: np.ndarray, past_commands: np.ndarray, dt_s: float) -> np.ndarray:
    """(N, 6) :data:`HISTORY_CONTEXT` of start states (N, 6) and past commands (N, P, 2), oldest first,
    sampled every ``dt_s``; a span longer than the P rows uses all of them."""
    P = past_commands.shape[-2]
    n_long, n_short = (max(1, min(P, int(round(s / dt_s)))) for s in HISTORY_CONTEXT_S)
    thr, steer = past_commands[..., 0], past_commands[..., 1]
    return np.stack([thr[:, -n_long:].mean(1), thr[:, -n_short:].mean(1), steer[:, -n_long:].mean(1),
                     steer[:, -n_short:].mean(1), state0[:, 3], state0[:, 5]], axis=-1)


def _with_context(f, context):
    """Features (..., F) with the per-window context (..., C) appended (NumPy or torch); None: as they are."""
    if context is None:
        return f
    if isinstance(f, torch.Tensor):
        return torch.cat([f, context.to(f.dtype).expand(*f.shape[:-1], context.shape[-1])], dim=-1)
    return np.concatenate([f, np.broadcast_to(context, (*f.shape[:-1], context.shape[-1]))], axis=-1)


class HistoryResidualPredictor(CommandedCarPredictor):
    """Physics + actuators + the history residual, a metric.py predictor (batched). Without
    ``past_commands`` the first command counts as held (as :class:`CommandedCarPredictor` does).
    ``predict`` sets the context on its correction before the rollout: one call at a time per instance.
    Saved and loaded like the others (``residual_kind: history`` in the file)."""

    residual_kind = "history"

    def __init__(self, params: dict, command_names=("throttle_applied", "steering"), info: dict | None = None,
                 residual: ResidualEnsemble | None = None) -> None:
        if residual is None or residual.feature_dim != len(FEATURES) + len(HISTORY_CONTEXT):
            raise ValueError(f"a history residual has {len(FEATURES) + len(HISTORY_CONTEXT)} inputs")
        super().__init__(params, command_names, info, residual)
        self._correction = EnsembleMeanCorrection(residual)

    def predict(self, state0, commands, dt: float = 0.01, past_commands=None, meta=None):
        s0 = np.asarray(state0, dtype=np.float64)
        single = s0.ndim == 1
        s0 = np.atleast_2d(s0)
        u = np.asarray(commands, dtype=np.float64).reshape(len(s0), -1, len(self.command_names))
        if past_commands is None or np.shape(past_commands)[-2] == 0:
            past = np.repeat(u[:, :1], max(1, u.shape[1]), axis=1)
        else:
            past = np.asarray(past_commands, dtype=np.float64).reshape(len(s0), -1, u.shape[-1])
        self._correction.context = history_context(s0, past, float(dt))
        out = super().predict(s0, u, dt=dt, past_commands=past)
        return out[0] if single else out

    __call__ = predict

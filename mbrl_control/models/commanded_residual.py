"""The learned residual of a real car's commanded single-track model: body accelerations.

``d(vx, vy, w)/dt = physics + residual(features)`` inside every Euler substep of
:func:`mbrl_control.models.predictor.euler_step`: a continuous-time correction, so a model trained
on 100 Hz recordings predicts at any ``dt``. The features are pose invariant, at the centre of
mass: body velocities ``vx, vy`` [m/s], yaw rate ``w`` [rad/s], the actuator states ``steer`` [rad]
and ``duty`` [1], and the commands as the actuators get them (``throttle`` [1], delayed ``steering``
[1]). The network is the residual ensemble of :mod:`.residual` (one written definition,
:mod:`.residual_definition`); its three outputs are accelerations [m/s^2, m/s^2, rad/s^2].
"""

from __future__ import annotations

import numpy as np
import torch

from mbrl_control.models import residual_definition as rd
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


def new_ensemble(members: int, hidden: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> ResidualEnsemble:
    """An ensemble with this residual's input size whose correction is exactly zero."""
    return ResidualEnsemble(members, hidden, seed=seed, dtype=dtype, feature_dim=len(FEATURES)).zero_()


def numpy_network(ensemble: ResidualEnsemble):
    """The ensemble's record for :mod:`.residual_definition` as float64 NumPy arrays."""
    f64 = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    return rd.network([f64(w) for w in ensemble.weights], [f64(b) for b in ensemble.biases], f64(ensemble.in_mean),
                      f64(ensemble.in_std), f64(ensemble.out_mean), f64(ensemble.out_std),
                      float(ensemble.min_logvar), float(ensemble.max_logvar))


class EnsembleMeanCorrection:
    """``correction(m, x, u)`` for :func:`~mbrl_control.models.predictor.euler_step`: the members'
    mean accelerations (NumPy float64; what a fitted model file predicts with)."""

    def __init__(self, ensemble: ResidualEnsemble) -> None:
        self.net = numpy_network(ensemble)

    def __call__(self, m, x, u) -> tuple:
        f = stack_last(features(x, u))
        a = rd.ensemble_mean(numpy_ops, self.net, f.reshape(1, -1, f.shape[-1])).reshape(*f.shape[:-1], 3)
        return a[..., 0], a[..., 1], a[..., 2]


class MemberCorrection:
    """``correction(m, x, u)`` on torch tensors whose first axis is the ensemble member (training:
    each member rolls its own windows out; differentiable)."""

    def __init__(self, ensemble: ResidualEnsemble) -> None:
        self.ensemble = ensemble

    def __call__(self, m, x, u) -> tuple:
        f = stack_last(features(x, u))                          # (E, B, F)
        a = rd.member_means(m, self.ensemble.network(), f)
        return a[..., 0], a[..., 1], a[..., 2]

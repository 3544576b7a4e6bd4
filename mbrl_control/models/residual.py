"""The learned residual: an ensemble of small MLPs correcting the velocity states after a physics step.

Interface shared with the planners (see the MPPI / iLQR kernels):

* features ``x = [steer, v, yaw_rate, slip, steer_cmd, accel]`` (:data:`RESIDUAL_FEATURES`, pose
  invariant, built by :func:`residual_features`);
* member ``e`` maps ``(x - in_mean) / in_std`` through ``tanh`` hidden layers to 6 outputs
  ``[mean(3), log-variance(3)]`` in normalised units; the correction of ``(V, YAW_RATE, SLIP)``
  (:data:`~mbrl_control.models.layout.VELOCITY_STATES`) is ``out_mean + out_std * mean``, added
  after one physics step of ``dt_s``;
* the log-variance is bounded softly to ``[min_logvar, max_logvar]`` (PETS, Chua et al. 2018),
  so a member never claims zero or unbounded uncertainty;
* :meth:`ResidualEnsemble.export` gives the float32 arrays the Numba / CUDA kernels read.

The network itself is written once in :mod:`mbrl_control.models.residual_definition`; this
module evaluates that definition with torch ops (training, the torch planners) and NumPy ops
(:meth:`ResidualWeights.mean_numpy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from mbrl_control.models import residual_definition as rd
from mbrl_control.models.layout import CONTROL_DIM, RESIDUAL_INPUT_STATES, VELOCITY_STATES, U
from mbrl_control.ops import numpy_ops, torch_ops

RESIDUAL_FEATURES: tuple[str, ...] = tuple(s.name.lower() for s in RESIDUAL_INPUT_STATES) + tuple(
    u.name.lower() for u in U)
"""Names of the residual's input features, in order: steer, v, yaw_rate, slip, steer_cmd, accel."""
FEATURE_DIM = len(RESIDUAL_FEATURES)
OUTPUT_DIM = rd.OUTPUT_DIM
"""Corrected states (V, YAW_RATE, SLIP); the last layer has ``2 * OUTPUT_DIM`` rows (mean, log-variance)."""
assert OUTPUT_DIM == len(VELOCITY_STATES)
ACTIVATION = "tanh"


def residual_features(state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """Features (..., 6) of states (..., 7) and controls (..., 2), broadcast over leading dims."""
    picked = state[..., list(RESIDUAL_INPUT_STATES)]
    batch = np.broadcast_shapes(tuple(picked.shape[:-1]), tuple(control.shape[:-1]))  # torch's imports sympy
    return torch.cat([picked.expand(*batch, picked.shape[-1]), control.to(picked.dtype).expand(*batch, CONTROL_DIM)], dim=-1)


@dataclass
class ResidualWeights:
    """A residual ensemble as plain float32 arrays (what the Numba / CUDA kernels read).

    ``weights[l]`` is (E, out_l, in_l) and ``biases[l]`` (E, out_l); the last layer keeps all six
    rows (kernels use rows 0..2, the normalised mean). ``mean = out_mean + out_std * y[:3]``.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    in_mean: np.ndarray
    in_std: np.ndarray
    out_mean: np.ndarray
    out_std: np.ndarray
    activation: str = ACTIVATION
    min_logvar: float = -10.0
    max_logvar: float = 2.0
    features: tuple[str, ...] = field(default=RESIDUAL_FEATURES)

    @property
    def members(self) -> int:
        return int(self.weights[0].shape[0])

    def mean_numpy(self, features: np.ndarray) -> np.ndarray:
        """Member means (E, B, 3) for features (B, 6), in float64 numpy (a reference for kernels)."""
        f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
        net = rd.network([f64(w) for w in self.weights], [f64(b) for b in self.biases], f64(self.in_mean),
                         f64(self.in_std), f64(self.out_mean), f64(self.out_std), self.min_logvar, self.max_logvar)
        return rd.member_means(numpy_ops, net, f64(features)[None])


class ResidualEnsemble(nn.Module):
    """E independent MLPs (tanh), evaluated together with batched matrix products.

    Parameters are stacked per layer as (E, out, in) weights and (E, out) biases, so all members
    run in one einsum per layer. Normalisation statistics are buffers (saved with the model).
    """

    def __init__(self, members: int = 5, hidden: Sequence[int] = (32, 32), min_logvar: float = -10.0,
                 max_logvar: float = 2.0, seed: int = 0, dtype: torch.dtype = torch.float32,
                 feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if members < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"bad residual ensemble shape: members={members}, hidden={hidden}")
        if not min_logvar < max_logvar:
            raise ValueError("min_logvar must be below max_logvar")
        self.members = int(members)
        self.hidden = hidden
        self.feature_dim = int(feature_dim)  # another motion model's features (the real car's residual)
        sizes = (self.feature_dim, *hidden, 2 * OUTPUT_DIM)
        gen = torch.Generator().manual_seed(int(seed))
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # the nn.Linear default init, per member
            w = (torch.rand(members, fan_out, fan_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            b = (torch.rand(members, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w.to(dtype)))
            self.biases.append(nn.Parameter(b.to(dtype)))
        self.register_buffer("in_mean", torch.zeros(self.feature_dim, dtype=dtype))
        self.register_buffer("in_std", torch.ones(self.feature_dim, dtype=dtype))
        self.register_buffer("out_mean", torch.zeros(OUTPUT_DIM, dtype=dtype))
        self.register_buffer("out_std", torch.ones(OUTPUT_DIM, dtype=dtype))
        self.register_buffer("min_logvar", torch.tensor(float(min_logvar), dtype=dtype))
        self.register_buffer("max_logvar", torch.tensor(float(max_logvar), dtype=dtype))

    # ------------------------------------------------------------------ normalisation
    def set_normalisation(self, in_mean, in_std, out_mean, out_std, min_std: float = 1e-6) -> None:
        """Set the input / output statistics (stds floored at ``min_std`` so constant inputs stay finite)."""
        def put(buf: torch.Tensor, value) -> None:
            value = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=buf.dtype, device=buf.device)
            if value.shape != buf.shape or not torch.all(torch.isfinite(value)):
                raise ValueError(f"normalisation statistic of shape {tuple(value.shape)} (expected {tuple(buf.shape)}) or not finite")
            buf.copy_(value)

        put(self.in_mean, in_mean)
        put(self.in_std, np.maximum(np.asarray(in_std, dtype=np.float64), min_std))
        put(self.out_mean, out_mean)
        put(self.out_std, np.maximum(np.asarray(out_std, dtype=np.float64), min_std))

    def zero_(self) -> "ResidualEnsemble":
        """Make every member predict exactly zero correction (a physics-only model, same interface)."""
        with torch.no_grad():
            self.weights[-1][:, :OUTPUT_DIM].zero_()
            self.biases[-1][:, :OUTPUT_DIM].zero_()
            self.out_mean.zero_()
        return self

    # ------------------------------------------------------------------ evaluation
    def normalised_outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, bounded log-variance), both (E, ..., 3) in normalised units, for features (..., 6)."""
        batch = features.shape[:-1]
        mean, logvar = self.member_outputs(features.reshape(1, -1, self.feature_dim))
        shape = (self.members, *batch, OUTPUT_DIM)
        return mean.reshape(shape), logvar.reshape(shape)

    def member_outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`normalised_outputs` for features (E, B, 6) holding each member's own inputs
        (or (1, B, 6) shared): member ``e`` sees ``features[e]`` (training on bootstrap resamples)."""
        return rd.member_outputs(torch_ops, self.network(), features)

    def network(self):
        """The record the definition (:mod:`.residual_definition`) reads: this module's tensors."""
        return rd.network(self.weights, self.biases, self.in_mean, self.in_std, self.out_mean, self.out_std,
                          self.min_logvar, self.max_logvar)

    def member_means(self, features: torch.Tensor) -> torch.Tensor:
        """Corrections (E, ..., 3) of (V, YAW_RATE, SLIP) in state units, one per member."""
        batch = features.shape[:-1]
        means = rd.member_means(torch_ops, self.network(), features.reshape(1, -1, self.feature_dim))
        return means.reshape(self.members, *batch, OUTPUT_DIM)

    def forward(self, features: torch.Tensor, member: torch.Tensor | None = None) -> torch.Tensor:
        """Correction (..., 3): the ensemble mean, or per batch element the member ``member`` (int tensor)."""
        if member is None:
            batch = features.shape[:-1]
            mean = rd.ensemble_mean(torch_ops, self.network(), features.reshape(1, -1, self.feature_dim))
            return mean.reshape(*batch, OUTPUT_DIM)
        means = self.member_means(features)
        member = torch.as_tensor(member, device=means.device).long()
        if torch.any((member < 0) | (member >= self.members)):
            raise ValueError(f"member index outside [0, {self.members})")
        index = member.expand(features.shape[:-1]).unsqueeze(0).unsqueeze(-1).expand(1, *features.shape[:-1], OUTPUT_DIM)
        return torch.gather(means, 0, index).squeeze(0)

    def spread(self, features: torch.Tensor) -> torch.Tensor:
        """Disagreement (..., 3): the standard deviation of the member means (state units; 0 for E = 1)."""
        means = self.member_means(features)
        if self.members == 1:
            return torch.zeros_like(means[0])
        return means.std(dim=0, unbiased=False)

    # ------------------------------------------------------------------ export / checks
    @torch.no_grad()
    def export(self) -> ResidualWeights:
        """Float32 numpy copies of every array the kernels need (detached, contiguous)."""
        as_np = lambda t: np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))  # noqa: E731
        return ResidualWeights(
            weights=[as_np(w) for w in self.weights], biases=[as_np(b) for b in self.biases],
            in_mean=as_np(self.in_mean), in_std=as_np(self.in_std), out_mean=as_np(self.out_mean),
            out_std=as_np(self.out_std), activation=ACTIVATION, min_logvar=float(self.min_logvar),
            max_logvar=float(self.max_logvar))

    def config(self) -> dict:
        """What is needed to rebuild an empty ensemble of the same shape (saved next to the weights)."""
        return {"members": self.members, "hidden": list(self.hidden), "min_logvar": float(self.min_logvar),
                "max_logvar": float(self.max_logvar), "feature_dim": self.feature_dim}

    def is_finite(self) -> bool:
        return all(bool(torch.all(torch.isfinite(t))) for t in [*self.parameters(), *self.buffers()])

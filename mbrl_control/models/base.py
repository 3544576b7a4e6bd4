"""Base class of the batched, differentiable (torch) dynamics models."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mbrl_control.models.layout import CONTROL_DIM, STATE_DIM

Integrator = Literal["rk4", "euler"]


class DynamicsModel(nn.Module):
    """A continuous-time model ``ds/dt = f(s, u)`` with a fixed discretisation.

    ``forward(s, u)`` returns the next state after ``dt_s`` seconds (control held constant),
    integrated with ``substeps`` steps of ``integrator``. Inputs are batched over any leading
    dimensions; the dtype and device are those of the model's buffers (``.to(...)``).
    """

    state_dim = STATE_DIM
    control_dim = CONTROL_DIM

    def __init__(self, dt_s: float, integrator: Integrator = "rk4", substeps: int = 1) -> None:
        super().__init__()
        if dt_s <= 0 or substeps < 1 or integrator not in ("rk4", "euler"):
            raise ValueError(f"bad discretisation: dt_s={dt_s}, integrator={integrator}, substeps={substeps}")
        self.dt_s = float(dt_s)
        self.integrator: Integrator = integrator
        self.substeps = int(substeps)

    def derivative(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        """Continuous-time state derivative ``ds/dt``, same shape as ``state``."""
        raise NotImplementedError

    def forward(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        h = self.dt_s / self.substeps
        for _ in range(self.substeps):
            state = integrate_step(self.derivative, state, control, h, self.integrator)
        return state

    def rollout(self, state0: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """States ``s_1..s_T`` for controls ``u_0..u_{T-1}`` (time on dim -2 of ``controls``)."""
        states = []
        state = state0
        for t in range(controls.shape[-2]):
            state = self(state, controls[..., t, :])
            states.append(state)
        return torch.stack(states, dim=-2)


def integrate_step(f, state: torch.Tensor, control: torch.Tensor, h: float, integrator: Integrator) -> torch.Tensor:
    """One explicit step of size ``h`` (classical RK4 or forward Euler) with zero-order-hold control
    (tensors, or NumPy arrays for the plants and the dead-time prediction)."""
    k1 = f(state, control)
    if integrator == "euler":
        return state + h * k1
    k2 = f(state + 0.5 * h * k1, control)
    k3 = f(state + 0.5 * h * k2, control)
    k4 = f(state + h * k3, control)
    return state + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

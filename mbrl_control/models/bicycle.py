"""Kinematic bicycle and dynamic single-track models as torch modules (batched, differentiable).

The equations are not written here: each module evaluates its one written definition
(:class:`~mbrl_control.models.kinematic_bicycle.KinematicBicycleModel`,
:class:`~mbrl_control.models.single_track.DynamicSingleTrackModel`) over the torch backend of
:mod:`mbrl_control.ops`, with the vehicle parameters as buffers (so ``.to(device, dtype)`` moves
them and system identification can fit them).
"""

from __future__ import annotations

import torch

from mbrl_control.config import VehicleParams
from mbrl_control.models.actuation import drive_acceleration, steering_servo
from mbrl_control.models.base import DynamicsModel, Integrator
from mbrl_control.models.kinematic_bicycle import KinematicBicycleModel
from mbrl_control.models.layout import STATE_DIM, S
from mbrl_control.models.motion_model import MotionModel, torch_derivative
from mbrl_control.models.single_track import GRAVITY_MPS2, DynamicSingleTrackModel
from mbrl_control.ops import torch_ops

__all__ = ["GRAVITY_MPS2", "SingleTrackBase", "KinematicBicycle", "DynamicSingleTrack", "split_physics",
           "kinematic_state"]


class SingleTrackBase(DynamicsModel):
    """A single-track definition as a torch module; the parameters are buffers named as in VehicleParams."""

    definition: type[MotionModel]

    def __init__(
        self,
        params: VehicleParams,
        dt_s: float = 0.02,
        integrator: Integrator = "rk4",
        substeps: int = 1,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(dt_s, integrator, substeps)
        self.params = params
        for name, value in params.as_dict().items():
            self.register_buffer(name, torch.tensor(value, dtype=dtype), persistent=False)

    def derivative(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        return torch_derivative(self.definition, state, control, self)

    def steer_rate(self, steer: torch.Tensor, steer_cmd: torch.Tensor) -> torch.Tensor:
        """Steering rate of the servo (:func:`~mbrl_control.models.actuation.steering_servo`)."""
        return steering_servo(torch_ops, steer, steer_cmd, self)

    def accel(self, v: torch.Tensor, accel_cmd: torch.Tensor) -> torch.Tensor:
        """Achieved acceleration (:func:`~mbrl_control.models.actuation.drive_acceleration`, without drag)."""
        return drive_acceleration(torch_ops, v, accel_cmd, self)[0]


class KinematicBicycle(SingleTrackBase):
    """Kinematic single-track model at the centre of gravity (:mod:`.kinematic_bicycle`)."""

    definition = KinematicBicycleModel


class DynamicSingleTrack(SingleTrackBase):
    """Dynamic single-track model with linear tires and load transfer (:mod:`.single_track`)."""

    definition = DynamicSingleTrackModel


def split_physics(model) -> tuple[SingleTrackBase | None, torch.nn.Module | None, str | None]:
    """(physics, residual or None, 'dynamic' | 'kinematic' | None) of a prediction model.

    A semi-parametric model (anything with ``physics`` and ``residual``) is split into its parts;
    the kind names the exact single-track class the compiled kernels mirror (None: neither).
    """
    physics, residual = (model.physics, model.residual) if hasattr(model, "physics") and hasattr(model, "residual") else (model, None)
    kind = {DynamicSingleTrack: "dynamic", KinematicBicycle: "kinematic"}.get(type(physics))
    return physics, residual, kind


def kinematic_state(x_m, y_m, yaw_rad, v_mps, steer_rad, params: VehicleParams, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """A full 7-state whose yaw rate and slip are the kinematic (steady, no tire slip) values."""
    t = lambda z: torch.as_tensor(z, dtype=torch.float64 if like is None else like.dtype)  # noqa: E731
    steer = t(steer_rad)
    v = t(v_mps)
    lwb = params.wheelbase_m
    slip = torch.atan(torch.tan(steer) * params.lr_m / lwb)
    yaw_rate = v * torch.cos(slip) * torch.tan(steer) / lwb
    x, y, yaw = torch.broadcast_tensors(t(x_m), t(y_m), t(yaw_rad))
    parts = [None] * STATE_DIM
    parts[S.X], parts[S.Y], parts[S.STEER], parts[S.V] = x, y, steer.expand_as(x), v.expand_as(x)
    parts[S.YAW], parts[S.YAW_RATE], parts[S.SLIP] = yaw, yaw_rate.expand_as(x), slip.expand_as(x)
    return torch.stack(parts, dim=-1)

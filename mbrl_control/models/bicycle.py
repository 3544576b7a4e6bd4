"""Kinematic bicycle and dynamic single-track models (torch, batched, differentiable).

Equations: the CommonRoad single-track model as used by f1tenth_gym (Althoff et al.,
"CommonRoad: Vehicle Models"), with its actuator constraints, plus two actuation terms the
textbook model lacks and system identification fits: a first-order steering servo that
saturates smoothly at the steering-rate limit, and quadratic aerodynamic drag. Below
``kinematic_blend_low_mps`` the dynamic model is exactly the kinematic model at the centre of
gravity (the f1tenth_gym switch); up to ``kinematic_blend_high_mps`` the two are blended with a
smoothstep so that derivatives exist everywhere. The kinematic slip rate is the exact time
derivative of ``atan(tan(steer) lr / l_wb)`` (CommonRoad's printed expression squares
``tan(steer)`` once too often, which lets slip drift from its kinematic value).
"""

from __future__ import annotations

import torch

from mbrl_control.config import VehicleParams
from mbrl_control.models.base import DynamicsModel, Integrator
from mbrl_control.models.layout import STATE_DIM, S, U

GRAVITY_MPS2 = 9.81


class SingleTrackBase(DynamicsModel):
    """Shared parameters (as buffers, so ``.to(device, dtype)`` moves them) and actuator models."""

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

    def steer_rate(self, steer: torch.Tensor, steer_cmd: torch.Tensor) -> torch.Tensor:
        """Servo: rate = sv_max * tanh(err / (tau * sv_max)), zero when pushing past a bound."""
        cmd = torch.clamp(steer_cmd, self.steer_min_rad, self.steer_max_rad)
        sv_max = self.steer_rate_max_radps
        rate = sv_max * torch.tanh((cmd - steer) / (self.steer_time_constant_s * sv_max))
        blocked = ((steer <= self.steer_min_rad) & (rate < 0)) | ((steer >= self.steer_max_rad) & (rate > 0))
        return torch.where(blocked, torch.zeros_like(rate), rate)

    def accel(self, v: torch.Tensor, accel_cmd: torch.Tensor) -> torch.Tensor:
        """CommonRoad acceleration constraints: power limit above v_switch, speed bounds."""
        a_max = self.accel_max_mps2
        pos_limit = a_max * self.v_switch_mps / torch.maximum(v, self.v_switch_mps)
        a = torch.minimum(torch.maximum(accel_cmd, -a_max), pos_limit)
        stopped = ((v <= self.v_min_mps) & (a <= 0)) | ((v >= self.v_max_mps) & (a >= 0))
        return torch.where(stopped, torch.zeros_like(a), a)

    def kinematic_terms(self, state: torch.Tensor, sv: torch.Tensor, a: torch.Tensor):
        """(dx, dy, dyaw, dyaw_rate, dslip) of the kinematic model at the centre of gravity."""
        steer, v, yaw, slip = state[..., S.STEER], state[..., S.V], state[..., S.YAW], state[..., S.SLIP]
        lwb = self.lf_m + self.lr_m
        tan_d = torch.tan(steer)
        cos2_d = torch.cos(steer) ** 2
        ratio = self.lr_m / lwb
        slip_kin = torch.atan(tan_d * ratio)
        dslip = ratio * sv / (cos2_d * (1.0 + (tan_d * ratio) ** 2))
        dyaw_rate = (a * torch.cos(slip) * tan_d - v * torch.sin(slip) * dslip * tan_d + v * torch.cos(slip) * sv / cos2_d) / lwb
        return (
            v * torch.cos(yaw + slip_kin),
            v * torch.sin(yaw + slip_kin),
            v * torch.cos(slip_kin) * tan_d / lwb,
            dyaw_rate,
            dslip,
        )

    def assemble(self, sv, dv, dx, dy, dyaw, dyaw_rate, dslip) -> torch.Tensor:
        parts = [None] * STATE_DIM
        parts[S.X], parts[S.Y], parts[S.STEER], parts[S.V] = dx, dy, sv, dv
        parts[S.YAW], parts[S.YAW_RATE], parts[S.SLIP] = dyaw, dyaw_rate, dslip
        return torch.stack(parts, dim=-1)

    def actuators(self, state: torch.Tensor, control: torch.Tensor):
        """(steering rate, constrained acceleration, dv/dt including drag)."""
        v = state[..., S.V]
        sv = self.steer_rate(state[..., S.STEER], control[..., U.STEER_CMD])
        a = self.accel(v, control[..., U.ACCEL])
        return sv, a, a - self.drag_coeff_per_m * v * torch.abs(v)


class KinematicBicycle(SingleTrackBase):
    """Kinematic single-track model at the centre of gravity, in the shared 7-state layout.

    Yaw rate and slip are carried as states whose derivatives keep them equal to their
    kinematic values (CommonRoad's low-speed model), so the layout matches the dynamic model.
    """

    def derivative(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        sv, a, dv = self.actuators(state, control)
        return self.assemble(sv, dv, *self.kinematic_terms(state, sv, a))


class DynamicSingleTrack(SingleTrackBase):
    """Dynamic single-track model with linear tires and load transfer (f1tenth_gym ``st``)."""

    def derivative(self, state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        sv, a, dv = self.actuators(state, control)
        kin = self.kinematic_terms(state, sv, a)
        dyn = self.dynamic_terms(state, a)
        w = self.blend_weight(state[..., S.V])
        blended = [w * d + (1.0 - w) * k for d, k in zip(dyn, kin)]
        return self.assemble(sv, dv, *blended)

    def blend_weight(self, v: torch.Tensor) -> torch.Tensor:
        """0 (kinematic) below the low threshold, 1 (dynamic) above the high one, smoothstep between."""
        t = (torch.abs(v) - self.kinematic_blend_low_mps) / (self.kinematic_blend_high_mps - self.kinematic_blend_low_mps)
        t = torch.clamp(t, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)

    def dynamic_terms(self, state: torch.Tensor, a: torch.Tensor):
        """(dx, dy, dyaw, dyaw_rate, dslip) of the tire model; speed kept away from 0 for the 1/v terms."""
        steer, v, yaw = state[..., S.STEER], state[..., S.V], state[..., S.YAW]
        yaw_rate, slip = state[..., S.YAW_RATE], state[..., S.SLIP]
        v_low = self.kinematic_blend_low_mps
        v_d = torch.where(v >= 0, torch.clamp(v, min=v_low), torch.clamp(v, max=-v_low))
        mu, m, iz, h = self.friction_coeff, self.mass_kg, self.yaw_inertia_kgm2, self.cg_height_m
        lf, lr, csf, csr = self.lf_m, self.lr_m, self.cornering_stiffness_front, self.cornering_stiffness_rear
        lwb = lf + lr
        load_f = GRAVITY_MPS2 * lr - a * h
        load_r = GRAVITY_MPS2 * lf + a * h
        k = mu * m / (iz * lwb)
        dyaw_rate = (
            -k / v_d * (lf * lf * csf * load_f + lr * lr * csr * load_r) * yaw_rate
            + k * (lr * csr * load_r - lf * csf * load_f) * slip
            + k * lf * csf * load_f * steer
        )
        dslip = (
            (mu / (v_d * v_d * lwb) * (csr * load_r * lr - csf * load_f * lf) - 1.0) * yaw_rate
            - mu / (v_d * lwb) * (csr * load_r + csf * load_f) * slip
            + mu / (v_d * lwb) * csf * load_f * steer
        )
        return v * torch.cos(yaw + slip), v * torch.sin(yaw + slip), yaw_rate, dyaw_rate, dslip


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

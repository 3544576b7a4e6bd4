"""The racing cost term: progress along a track, its bounds, speed and grip limits, control rates.

Stage cost of step ``t`` (charged on the resulting state ``x_{t+1}`` and the applied control
``u_t``; ``u_{-1}`` is the command applied last period):

* progress: ``-progress_weight * ds`` with ``ds`` the wrapped change of arclength along the
  centerline (none once the sample has crashed);
* soft track bound: ``soft_bound_weight * e^2`` with ``e`` the distance beyond the half width
  minus ``soft_margin_m`` (left or right);
* hard track bound: a sample whose centre gets closer than ``hard_margin_m`` to an edge has
  crashed; from then on it pays ``crash_cost`` every step;
* speed limit ``speed_weight * max(0, v - speed_max)^2``, reversing ``reverse_weight * min(0, v)^2``;
* lateral acceleration ``lateral_accel_weight * max(0, |v * yaw_rate| - lateral_accel_max)^2``;
* control rate ``steer_rate_weight * (d steer_cmd / dt)^2 + accel_rate_weight * (d accel / dt)^2``;
* side slip ``slip_weight * slip^2``;
* offset from the centerline ``lateral_weight * lateral^2`` (the contouring error of MPCC; it
  rewards a controller for following the path it was given, which a more accurate model does better).

Written once (:meth:`RacingCost.stage`); the torch evaluation, the Numba and the CUDA kernels
derive from it. Not smooth (crash memory, hinges): iLQR/DDP uses the smooth contouring cost.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.problem.cost_term import CostTerm, Weight
from mbrl_control.problem.track_context import TRACK_FEATURES


@dataclass(frozen=True)
class RacingCostConfig:
    """Weights and limits of the racing cost (per prediction step; SI units)."""

    progress_weight: float = 20.0  # cost per metre of progress (negative)
    soft_margin_m: float = 0.35  # soft bound this far inside each edge
    soft_bound_weight: float = 300.0  # per m^2 beyond the soft bound
    hard_margin_m: float = 0.2  # centre closer than this to an edge: crashed
    crash_cost: float = 1000.0  # per step once crashed
    speed_max_mps: float = 12.0
    speed_weight: float = 20.0  # per (m/s)^2 above speed_max
    reverse_weight: float = 50.0  # per (m/s)^2 of negative speed
    lateral_accel_max_mps2: float = 10.0  # about friction_coeff * g of the F1TENTH car
    lateral_accel_weight: float = 2.0  # per (m/s^2)^2 above the limit
    steer_rate_weight: float = 0.0  # per (rad/s)^2 of commanded steering change
    accel_rate_weight: float = 0.0  # per (m/s^3)^2 of commanded acceleration change
    slip_weight: float = 0.0  # per rad^2 of side slip
    lateral_weight: float = 0.0  # per m^2 of offset from the centerline
    cell_m: float = 0.2  # lookup-table resolution

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if not math.isfinite(value) or value < 0:
                raise MbrlError(f"mppi.cost: '{name}' must be a finite non-negative number, got {value}")
        if self.cell_m <= 0.01:
            raise MbrlError(f"mppi.cost: 'cell_m' must exceed 0.01 m, got {self.cell_m}")
        if self.hard_margin_m > self.soft_margin_m:
            raise MbrlError("mppi.cost: 'hard_margin_m' must not exceed 'soft_margin_m'")

    def vector(self, dt_s: float) -> np.ndarray:
        """The weights of :class:`RacingCost` as the float32 array the kernels read (order of
        :data:`COST_FIELDS`); rate weights per (unit/s)^2 become per (unit/step)^2."""
        inv_dt2 = 1.0 / (dt_s * dt_s)
        values = {
            "progress": self.progress_weight, "soft_margin": self.soft_margin_m, "soft_bound": self.soft_bound_weight,
            "hard_margin": self.hard_margin_m, "crash": self.crash_cost, "speed_max": self.speed_max_mps,
            "speed": self.speed_weight, "reverse": self.reverse_weight, "alat_max": self.lateral_accel_max_mps2,
            "alat": self.lateral_accel_weight, "steer_rate": self.steer_rate_weight * inv_dt2,
            "accel_rate": self.accel_rate_weight * inv_dt2, "slip": self.slip_weight,
            "lateral": self.lateral_weight,
        }
        return np.array([values[name] for name in COST_FIELDS], dtype=np.float32)


COST_FIELDS = ("progress", "soft_margin", "soft_bound", "hard_margin", "crash", "speed_max", "speed", "reverse",
               "alat_max", "alat", "steer_rate", "accel_rate", "slip", "lateral")
"""The racing cost's weight names, in the order of the kernels' weight vector."""


def wrapped_difference(m, ds, length):
    """Arclength difference wrapped to (-L/2, L/2]."""
    half = 0.5 * length
    ds = ds - m.select(ds > half, length, 0.0)
    return ds + m.select(ds < -half, length, 0.0)


class RacingCost(CostTerm):
    """The racing cost (see module docstring); weights from :meth:`RacingCostConfig.vector`."""

    name = "racing"
    weights = (
        Weight("progress", "1/m", None, "reward per metre of progress"),
        Weight("soft_margin", "m", None, "soft bound this far inside each edge"),
        Weight("soft_bound", "1/m^2", None, "beyond the soft bound"),
        Weight("hard_margin", "m", None, "centre closer than this to an edge: crashed"),
        Weight("crash", "1", None, "per step once crashed"),
        Weight("speed_max", "m/s", None, "speed cap"),
        Weight("speed", "s^2/m^2", None, "above the speed cap"),
        Weight("reverse", "s^2/m^2", None, "per (m/s)^2 of negative speed"),
        Weight("alat_max", "m/s^2", None, "lateral acceleration limit"),
        Weight("alat", "s^4/m^2", None, "above the lateral acceleration limit"),
        Weight("steer_rate", "1/rad^2", None, "per (rad/step)^2 of steering command change"),
        Weight("accel_rate", "s^4/m^2", None, "per (m/s^2/step)^2 of acceleration command change"),
        Weight("slip", "1/rad^2", None, "per rad^2 of side slip"),
        Weight("lateral", "1/m^2", None, "per m^2 of offset from the centerline"),
    )
    context = TRACK_FEATURES
    requires_states = ("v", "yaw_rate", "slip")
    requires_controls = ("steer_cmd", "accel")
    carry = ("progress", "crashed")
    smooth = False

    @staticmethod
    def initial(m, x, ctx, w):
        return ctx.progress, 0.0

    @staticmethod
    def stage(m, x, u, u_prev, ctx, carry, w):
        lateral, wl, wr = ctx.lateral, ctx.width_left, ctx.width_right
        out_left = lateral - (wl - w.hard_margin)
        out_right = -lateral - (wr - w.hard_margin)
        crashed = m.select(m.logical_or(out_left > 0.0, out_right > 0.0), 1.0, carry.crashed)
        ds = wrapped_difference(m, ctx.progress - carry.progress, ctx.track_length)
        soft = m.max(lateral - (wl - w.soft_margin), 0.0) + m.max(-lateral - (wr - w.soft_margin), 0.0)
        v = x.v
        over = m.max(v - w.speed_max, 0.0)
        rev = m.min(v, 0.0)
        alat = m.max(m.abs(v * x.yaw_rate) - w.alat_max, 0.0)
        du_steer = u.steer_cmd - u_prev.steer_cmd
        du_accel = u.accel - u_prev.accel
        cost = (-w.progress * ds * (1.0 - crashed) + w.soft_bound * soft * soft + w.crash * crashed
                + w.speed * over * over + w.reverse * rev * rev + w.alat * alat * alat
                + w.steer_rate * du_steer * du_steer + w.accel_rate * du_accel * du_accel
                + w.slip * x.slip * x.slip + w.lateral * lateral * lateral)
        return cost, (ctx.progress, crashed)

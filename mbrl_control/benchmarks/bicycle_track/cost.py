"""The stage cost of ``bicycle-track`` (``../shared/bench/PROBLEM.md`` section 2) as a cost-term definition.

    l(x_{t+1}, u_t) = 10 d^2 + 1 (v - 3)^2 + 2 (1 - cos(yaw - psi)) + 0.1 a^2 + 1 delta^2

with ``d = r - 5``, ``r = sqrt(px^2 + py^2)`` and the heading term in its wrap-safe form
``1 - (sin(yaw) px - cos(yaw) py) / r`` (``r = sqrt(px^2 + py^2 + (1e-6 m)^2)``: never 0, smooth, so
its derivatives have no branch; the 1e-12 m^2 changes nothing at the circle in float32 or float64 beyond 1e-13). The generic MPPI kernels charge
a term on the state reached after applying ``u`` (PROBLEM.md's ``J``), so ``0.1 a^2 + delta^2`` is
charged on the applied (clipped) control; the information-theoretic control cost
``lambda * U^T Sigma^-1 eps`` of PROBLEM.md section 3 is the solver's, with ``control_cost_weight = 1``.
"""

from __future__ import annotations

from mbrl_control.models import bicycle_track_spec as spec
from mbrl_control.problem.cost_term import CostTerm, Weight

R_MIN_M = 1e-6


class BicycleTrackCost(CostTerm):
    """Distance to the circle, speed error, heading error, control effort (PROBLEM.md's weights by default)."""

    name = "bicycle_track"
    weights = (
        Weight("radius", "m", spec.RADIUS_M, "circle radius"),
        Weight("v_ref", "m/s", spec.V_REF_MPS, "reference speed"),
        Weight("dist", "1/m^2", spec.W_DIST, "per m^2 of distance to the circle"),
        Weight("speed", "s^2/m^2", spec.W_SPEED, "per (m/s)^2 of speed error"),
        Weight("heading", "1", spec.W_HEADING, "times 1 - cos(heading error)"),
        Weight("accel", "s^4/m^2", spec.W_ACCEL, "per (m/s^2)^2 of acceleration"),
        Weight("steer", "1/rad^2", spec.W_STEER, "per rad^2 of steering"),
    )
    requires_states = ("px", "py", "yaw", "v")
    requires_controls = ("a", "delta")
    smooth = True

    @staticmethod
    def stage(m, x, u, u_prev, ctx, carry, w):
        r = m.sqrt(x.px * x.px + x.py * x.py + R_MIN_M * R_MIN_M)
        d = r - w.radius
        s_y, c_y = m.sin_cos(x.yaw)
        heading = 1.0 - (s_y * x.px - c_y * x.py) / r
        dv = x.v - w.v_ref
        cost = (w.dist * d * d + w.speed * dv * dv + w.heading * heading
                + w.accel * u.a * u.a + w.steer * u.delta * u.delta)
        return cost, ()

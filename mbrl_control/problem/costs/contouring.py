"""The smooth racing cost (contouring / lag form) of iLQR/DDP and the NMPC, as a cost-term definition.

Charged on a state ``x`` of the car against a reference point frozen for one solver iteration
(the context: centerline point ``c = (cx, cy)``, unit tangent ``t = (tx, ty)``, curvature
``kappa``, usable half widths ``bound_left`` / ``bound_right``, speed cap ``v_max``):

* contouring error ``e_c = n.(p - c)`` (``n`` the left normal), lag error ``e_l = t.(p - c)``;
* progress reward ``-progress * dt * v cos(yaw + slip - psi) / max(1 - kappa e_c, 0.25)`` (the
  rate along the path, ``dt`` turning it into metres per step);
* ``lateral * e_c^2 + lag * e_l^2 + slip * slip^2``;
* smooth one-sided quadratic penalties (:func:`smooth_hinge_sq`) beyond the half widths
  (``bound``), for ``|v yaw_rate| > lat_accel_max`` (``lat_accel``), above ``v_max``
  (``speed_cap``) and for reversing (``reverse``), smoothed over ``eps_bound`` / ``eps_lat_accel``
  / ``eps_speed``;
* the track bounds as constraints: a steep penalty of the same form (``bound_hard``, orders of
  magnitude above ``bound``) beyond the hard limits ``hard_gap`` outside the usable half widths
  (the racing cost's hard margin from the edges: room for the car's half width), smoothed over
  ``eps_bound`` so that it already bends the plan a few ``eps_bound`` before them;

that is :meth:`ContouringCost.state_cost` (also the final cost), and with the control
``u = (steer_cmd, accel)`` the stage cost adds ``steer * steer_cmd^2 + accel * accel^2 +
servo * (steer_cmd - steer)^2`` (:meth:`ContouringCost.stage`). The vehicle iLQR
(:mod:`mbrl_control.kernels.ilqr_vehicle`) charges the stage cost on ``(x_t, u_t)`` against the
reference at ``x_t`` and the state cost on ``x_T``; the NMPC (:class:`mbrl_control.control.nmpc.NMPCController`)
solves the same objective. The weights map from the MPPI racing cost in
:meth:`mbrl_control.control.ilqr.ILQRConfig.weight_vector` (the defaults below are its defaults).

Written once; CasADi differentiates it (:func:`casadi_cost`; the generated iLQR kernels
``rc_*`` of :mod:`mbrl_control.kernels.casadi_codegen`).
"""

from __future__ import annotations

from mbrl_control.problem.cost_term import CostTerm, Weight
from mbrl_control.problem.costs.racing import RacingCostConfig

_RACING = RacingCostConfig()


def smooth_hinge_sq(m, r, eps):
    """``(0.5 (r + sqrt(r^2 + eps^2)))^2``: the smooth, convex version of ``max(r, 0)^2``.

    Equal to it up to ``O(eps^2)``, but with curvature already a few ``eps`` before the limit,
    so a quadratic model sees a penalty coming instead of stepping far past its kink.
    """
    h = 0.5 * (r + m.sqrt(r * r + eps * eps))
    return h * h


class ContouringCost(CostTerm):
    """The smooth racing cost against a frozen reference point (see module docstring)."""

    name = "contouring"
    weights = (
        Weight("progress", "1/m", _RACING.progress_weight, "reward per metre of progress along the path"),
        Weight("lateral", "1/m^2", _RACING.lateral_weight, "per m^2 of contouring error"),
        Weight("lag", "1/m^2", 0.0, "per m^2 of lag error (of the frozen reference)"),
        Weight("bound", "1/m^2", _RACING.soft_bound_weight, "per m^2 beyond the usable half widths"),
        Weight("lat_accel", "s^4/m^2", _RACING.lateral_accel_weight, "per (m/s^2)^2 above the limit"),
        Weight("lat_accel_max", "m/s^2", _RACING.lateral_accel_max_mps2, "lateral acceleration limit"),
        Weight("speed_cap", "s^2/m^2", _RACING.speed_weight, "per (m/s)^2 above the reference's speed cap"),
        Weight("steer", "1/rad^2", 0.2, "per rad^2 of steering command"),
        Weight("accel", "s^4/m^2", 0.05, "per (m/s^2)^2 of acceleration command"),
        Weight("servo", "1/rad^2", 0.0, "per rad^2 of (steering command - steering angle)"),
        Weight("dt", "s", None, "prediction step: turns the progress rate into metres"),
        Weight("slip", "1/rad^2", _RACING.slip_weight, "per rad^2 of side slip"),
        Weight("reverse", "s^2/m^2", _RACING.reverse_weight, "per (m/s)^2 of negative speed"),
        Weight("eps_bound", "m", 0.05, "smoothing width of the bound hinge"),
        Weight("eps_speed", "m/s", 0.3, "smoothing width of the speed cap and reverse hinges"),
        Weight("eps_lat_accel", "m/s^2", 0.5, "smoothing width of the lateral-acceleration hinge"),
        Weight("bound_hard", "1/m^2", 0.0, "per m^2 beyond the hard limits (the track bounds as constraints)"),
        Weight("hard_gap", "m", _RACING.soft_margin_m - _RACING.hard_margin_m,
               "how far beyond the usable half widths the hard limits lie"),
    )
    context = ("cx", "cy", "tx", "ty", "kappa", "bound_left", "bound_right", "v_max")
    requires_states = ("x", "y", "steer", "v", "yaw", "yaw_rate", "slip")
    requires_controls = ("steer_cmd", "accel")
    smooth = True

    @staticmethod
    def state_cost(m, x, ctx, w):
        """The state part (also the final cost)."""
        dx, dy = x.x - ctx.cx, x.y - ctx.cy
        e_c = -ctx.ty * dx + ctx.tx * dy
        e_l = ctx.tx * dx + ctx.ty * dy
        s_h, c_h = m.sin_cos(x.yaw + x.slip)
        v_along = x.v * (c_h * ctx.tx + s_h * ctx.ty)
        scale = m.max(1.0 - ctx.kappa * e_c, 0.25)
        bound = (smooth_hinge_sq(m, e_c - ctx.bound_left, w.eps_bound)
                 + smooth_hinge_sq(m, -e_c - ctx.bound_right, w.eps_bound))
        hard = (smooth_hinge_sq(m, e_c - ctx.bound_left - w.hard_gap, w.eps_bound)
                + smooth_hinge_sq(m, -e_c - ctx.bound_right - w.hard_gap, w.eps_bound))
        a_lat = x.v * x.yaw_rate
        over_lat = (smooth_hinge_sq(m, a_lat - w.lat_accel_max, w.eps_lat_accel)
                    + smooth_hinge_sq(m, -a_lat - w.lat_accel_max, w.eps_lat_accel))
        over_speed = smooth_hinge_sq(m, x.v - ctx.v_max, w.eps_speed)
        reverse = smooth_hinge_sq(m, -x.v, w.eps_speed)
        return (-w.progress * w.dt * v_along / scale + w.lateral * e_c * e_c + w.lag * e_l * e_l
                + w.bound * bound + w.bound_hard * hard + w.lat_accel * over_lat + w.speed_cap * over_speed
                + w.slip * x.slip * x.slip + w.reverse * reverse)

    @staticmethod
    def stage(m, x, u, u_prev, ctx, carry, w):
        servo = u.steer_cmd - x.steer
        cost = (ContouringCost.state_cost(m, x, ctx, w) + w.steer * u.steer_cmd * u.steer_cmd
                + w.accel * u.accel * u.accel + w.servo * servo * servo)
        return cost, ()


REF_FIELDS: tuple[str, ...] = ContouringCost.context
"""Order of the per-step reference vector (the context) the kernels and the NMPC pass."""
WEIGHT_FIELDS: tuple[str, ...] = ContouringCost.weight_names()
"""Order of the weight vector (:meth:`mbrl_control.control.ilqr.ILQRConfig.weight_vector`)."""


def casadi_cost(state_names, control_names, x, ref, w, u=None):
    """The CasADi form: stage cost of ``(x, u)``, or the state (final) cost when ``u`` is None.

    ``x``, ``u`` index by the model's ``state_names`` / ``control_names``; ``ref`` (``REF_FIELDS``
    order) and ``w`` (``WEIGHT_FIELDS`` order) are CasADi vectors or sequences of numbers.
    """
    from mbrl_control.ops import casadi_ops, record

    xr = record(state_names, [x[i] for i in range(len(state_names))])
    ctx = record(REF_FIELDS, [ref[i] for i in range(len(REF_FIELDS))])
    wr = record(WEIGHT_FIELDS, [w[i] for i in range(len(WEIGHT_FIELDS))])
    if u is None:
        return ContouringCost.state_cost(casadi_ops, xr, ctx, wr)
    ur = record(control_names, [u[i] for i in range(len(control_names))])
    return ContouringCost.stage(casadi_ops, xr, ur, ur, ctx, record((), ()), wr)[0]

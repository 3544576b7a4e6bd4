"""A control problem in CasADi symbolics, derived from its parts' definitions.

The discrete step is the motion model's ``derivative`` integrated by the problem's explicit
scheme (``substeps`` of RK4 or Euler, control held: the arithmetic of
:func:`mbrl_control.models.base.integrate_step`); the stage cost is the sum of the smooth cost
terms charged on the state the step reaches, ``l(x_t, u_t) = sum_i c_i(F(x_t, u_t), u_t)``: the
objective MPPI samples, written so that a gradient-based solver (iLQR/DDP, NMPC) sees it exactly.
Smooth terms keep no carry; their ``u_prev`` is ``u`` (a rate term has no effect here).
"""

from __future__ import annotations

from mbrl_control import MbrlError
from mbrl_control.models.motion_model import casadi_derivative, symbolic_params
from mbrl_control.ops import casadi_ops, record
from mbrl_control.problem.definition import ControlProblem


def check_smooth(problem: ControlProblem) -> None:
    """Gradient-based solvers need smooth, memoryless terms and no sampled context."""
    for spec in problem.costs:
        if not spec.term.smooth or spec.term.carry:
            raise MbrlError(f"cost '{spec.term.name}' is not smooth (or keeps a carry): iLQR/NMPC cannot use it")
    if problem.context.features:
        raise MbrlError(f"context '{problem.context.kind}' is not supported by the generic iLQR/NMPC path")


def weight_slices(problem: ControlProblem) -> list[slice]:
    """Where each cost term's weights sit in the problem's concatenated weight vector."""
    out, start = [], 0
    for spec in problem.costs:
        out.append(slice(start, start + len(spec.term.weights)))
        start += len(spec.term.weights)
    return out


def casadi_step(problem: ControlProblem, x, u, p):
    """``x_{t+1}`` of the discretised model; ``p`` the parameter vector (numbers or symbols)."""
    model = problem.model
    params = symbolic_params(model.param_names, p)
    h = problem.dt_s / problem.substeps

    def f(z):
        return casadi_derivative(model, z, u, params)

    for _ in range(problem.substeps):
        k1 = f(x)
        if problem.integrator == "euler":
            x = x + h * k1
            continue
        k2 = f(x + 0.5 * h * k1)
        k3 = f(x + 0.5 * h * k2)
        k4 = f(x + h * k3)
        x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return x


def casadi_stage_cost(problem: ControlProblem, x, u, p, w):
    """``l(x, u)``: every cost term on the state reached from ``x`` under ``u``; ``w`` all weights."""
    return casadi_cost_at(problem, casadi_step(problem, x, u, p), u, w)


def casadi_cost_at(problem: ControlProblem, x_next, u, w):
    """Every cost term charged on the reached state ``x_next`` and the applied control ``u``."""
    model = problem.model
    xr = model.state_record([x_next[i] for i in range(model.state_dim())])
    ur = model.control_record([u[i] for i in range(model.control_dim())])
    total = 0
    for spec, sl in zip(problem.costs, weight_slices(problem)):
        term = spec.term
        wr = record(term.weight_names(), [w[i] for i in range(sl.start, sl.stop)])
        cost, _ = term.stage(casadi_ops, xr, ur, ur, record((), ()), record((), ()), wr)
        total = total + cost
    return total

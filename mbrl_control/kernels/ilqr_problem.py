"""iLQR/DDP for any smooth :class:`~mbrl_control.problem.definition.ControlProblem`, generated.

From the problem's CasADi form (:mod:`mbrl_control.problem.symbolic`) CasADi's algorithmic
differentiation gives the step's Jacobian and multiplier-weighted Hessian and the stage cost's
gradient and Hessian; :func:`.casadi_codegen.sx_to_numba_source` turns each into a straight-line
Numba function. They are written, with the solver hooks of :func:`.ilqr.register_problem` for
a problem namedtuple of their own, into one generated module per problem shape (cached by
:mod:`.codegen`; never checked in). Parameters and weights are run-time arrays.

Two forms of the same objective ``J = sum_t c(x_{t+1}, u_t)``:

* composed (default): ``l_t(x_t, u_t) = c(F(x_t, u_t), u_t)``, no final cost; any smooth cost;
* split (``split=True``): for a cost that is a sum of state-only and control-only parts,
  ``c(x', u) = q(x') + r(u)`` (found in the CasADi expression's top-level sum), the stage cost
  ``l_t = [t > 0] q(x_t) + r(u_t)`` and the final cost ``q(x_T)`` (``q(x_0)`` is a constant and
  dropped). Smaller derivative kernels (no cost term composed with the step), so faster.
"""

from __future__ import annotations

import types

import numpy as np

from mbrl_control.kernels import codegen
from mbrl_control.kernels.casadi_codegen import sx_to_numba_source
from mbrl_control.problem.definition import ControlProblem
from mbrl_control import MbrlError
from mbrl_control.problem.symbolic import casadi_cost_at, casadi_stage_cost, casadi_step, check_smooth

_HOOKS = '''
GeneratedProblem = namedtuple("GeneratedProblem", ["p", "w", "scratch"])
# Pickled by Numba's cache index of ilqr.solve: named by a package module that can find it again.
GeneratedProblem.__module__ = "mbrl_control.kernels.ilqr_problem"
GeneratedProblem.__qualname__ = GeneratedProblem.__name__ = "{class_name}"
N, M = {n}, {m}
NM = N + M
# rows of the scratch array (NM columns): step Jacobian, step Hessian, cost Hessian, cost gradient, cost value
JAC, HESS, CHESS, GRAD, VALUE = 0, N, N + NM, N + 2 * NM, N + 2 * NM + 1


@njit(cache=True, error_model="numpy")
def _step(prob, t, x, u, xn):
    step_f(x, u, prob.p, xn)


@njit(cache=True, error_model="numpy")
def _linearize(prob, t, x, u, fx, fu):
    step_jac(x, u, prob.p, prob.scratch[JAC:JAC + N])
    for i in range(N):
        for j in range(N):
            fx[i, j] = prob.scratch[JAC + i, j]
        for j in range(M):
            fu[i, j] = prob.scratch[JAC + i, N + j]


@njit(cache=True, error_model="numpy")
def _dyn_hessian(prob, t, x, u, lam, hxx, huu, hux):
    step_hess(x, u, lam, prob.p, prob.scratch[HESS:HESS + NM])
    for i in range(N):
        for j in range(N):
            hxx[i, j] = prob.scratch[HESS + i, j]
    for i in range(M):
        for j in range(M):
            huu[i, j] = prob.scratch[HESS + N + i, N + j]
        for j in range(N):
            hux[i, j] = prob.scratch[HESS + N + i, j]


@njit(cache=True, error_model="numpy")
def _stage_cost(prob, t, x, u):
    stage_value(x, u, prob.p, prob.w, prob.scratch[VALUE, 0:1])
    return prob.scratch[VALUE, 0]


@njit(cache=True, error_model="numpy")
def _stage_derivs(prob, t, x, u, lx, lu, lxx, luu, lux):
    stage_grad(x, u, prob.p, prob.w, prob.scratch[GRAD])
    stage_hess(x, u, prob.p, prob.w, prob.scratch[CHESS:CHESS + NM])
    for i in range(N):
        lx[i] = prob.scratch[GRAD, i]
        for j in range(N):
            lxx[i, j] = prob.scratch[CHESS + i, j]
    for i in range(M):
        lu[i] = prob.scratch[GRAD, N + i]
        for j in range(M):
            luu[i, j] = prob.scratch[CHESS + N + i, N + j]
        for j in range(N):
            lux[i, j] = prob.scratch[CHESS + N + i, j]


@njit(cache=True, error_model="numpy")
def _final_cost(prob, x):
    return 0.0


@njit(cache=True, error_model="numpy")
def _final_derivs(prob, x, lx, lxx):
    lx[:] = 0.0
    lxx[:, :] = 0.0


register_problem(GeneratedProblem, step=_step, linearize=_linearize, dyn_hessian=_dyn_hessian,
                 stage_cost=_stage_cost, stage_derivs=_stage_derivs, final_cost=_final_cost,
                 final_derivs=_final_derivs)
'''

_SPLIT_COST_HOOKS = '''
@njit(cache=True, error_model="numpy")
def _stage_cost(prob, t, x, u):
    control_value(u, prob.p, prob.w, prob.scratch[VALUE, 0:1])
    c = prob.scratch[VALUE, 0]
    if t > 0:
        state_value(x, prob.p, prob.w, prob.scratch[VALUE, 0:1])
        c += prob.scratch[VALUE, 0]
    return c


@njit(cache=True, error_model="numpy")
def _stage_derivs(prob, t, x, u, lx, lu, lxx, luu, lux):
    if t > 0:
        state_derivs(x, prob.p, prob.w, lx, lxx)
    else:
        lx[:] = 0.0
        lxx[:, :] = 0.0
    control_derivs(u, prob.p, prob.w, lu, luu)
    lux[:, :] = 0.0


@njit(cache=True, error_model="numpy")
def _final_cost(prob, x):
    state_value(x, prob.p, prob.w, prob.scratch[VALUE, 0:1])
    return prob.scratch[VALUE, 0]


@njit(cache=True, error_model="numpy")
def _final_derivs(prob, x, lx, lxx):
    state_derivs(x, prob.p, prob.w, lx, lxx)
'''


def _hooks(split: bool) -> str:
    """The solver hooks' source: :data:`_HOOKS`, with the cost hooks of the split form when ``split``."""
    if not split:
        return _HOOKS
    head, tail = _HOOKS.split("@njit(cache=True, error_model=\"numpy\")\ndef _stage_cost", 1)
    return head + _SPLIT_COST_HOOKS.lstrip("\n") + "\n\n" + tail[tail.index("register_problem("):]


def split_cost(cost, x, u):
    """``(q, r)`` with ``cost = q(x) + r(u)``, read off the top-level sum of the CasADi scalar ``cost``.

    Raises :class:`MbrlError` when a summand depends on both ``x`` and ``u``.
    """
    import casadi as ca

    q, r = ca.SX(0), ca.SX(0)
    stack = [(cost, 1.0)]
    while stack:
        e, sign = stack.pop()
        if e.is_op(ca.OP_ADD) or e.is_op(ca.OP_SUB):
            stack += [(e.dep(0), sign), (e.dep(1), sign if e.is_op(ca.OP_ADD) else -sign)]
        elif e.is_op(ca.OP_NEG):
            stack.append((e.dep(0), -sign))
        elif ca.depends_on(e, u):
            if ca.depends_on(e, x):
                raise MbrlError("the cost is not a sum of state-only and control-only parts: use the composed form")
            r = r + sign * e
        else:
            q = q + sign * e
    return q, r


_CSE = {"cse": True}  # CasADi merges common subexpressions: 8 % fewer instructions in the step Hessian
CLASS_PREFIX = "GeneratedProblem_"
_PLACEHOLDERS: dict = {}


def __getattr__(name: str):
    """``GeneratedProblem_<stem>``: the problem class of generated module ``<stem>`` (PEP 562).

    Numba's on-disk cache index of :func:`.ilqr.solve` pickles the problem classes it was compiled
    for by this name; a later process unpickling the index imports the generated module from the
    cache folder here. A class whose module is gone (cache cleared) gets a placeholder that
    matches no problem, so the index still loads and that entry is simply never used.
    """
    if not name.startswith(CLASS_PREFIX):
        raise AttributeError(name)
    import sys

    stem = name[len(CLASS_PREFIX):]
    module = sys.modules.get(f"{codegen.GENERATED_PACKAGE}.{stem}")
    path = codegen.generated_root() / f"{stem}.py"
    if module is None and path.is_file():
        module = codegen.import_generated(stem, path)
    if module is not None:
        return module.GeneratedProblem
    if name not in _PLACEHOLDERS:
        from collections import namedtuple

        _PLACEHOLDERS[name] = namedtuple(name, ["p", "w", "scratch"])
    return _PLACEHOLDERS[name]


def generate_source(problem: ControlProblem, stem: str, split: bool = False) -> str:
    """Source of the generated iLQR module of ``problem`` (derivative kernels + solver hooks; see the
    module docstring for the ``split`` form)."""
    import casadi as ca

    check_smooth(problem)
    model = problem.model
    n, m = model.state_dim(), model.control_dim()
    n_w = sum(len(s.term.weights) for s in problem.costs)
    x, u = ca.SX.sym("x", n), ca.SX.sym("u", m)
    p, w = ca.SX.sym("p", len(model.param_names)), ca.SX.sym("w", max(n_w, 1))
    lam = ca.SX.sym("lam", n)
    xu = ca.vertcat(x, u)
    step = casadi_step(problem, x, u, p)
    functions = [
        (ca.Function("step_f", [x, u, p], [step]), ["x", "u", "p"], ["out"]),
        (ca.Function("step_jac", [x, u, p], [ca.jacobian(step, xu)], _CSE), ["x", "u", "p"], ["out"]),
        (ca.Function("step_hess", [x, u, lam, p], [ca.hessian(ca.dot(lam, step), xu)[0]], _CSE),
         ["x", "u", "lam", "p"], ["out"]),
    ]
    if split:
        q, r = split_cost(casadi_cost_at(problem, x, u, w), x, u)
        for name, expr, v in (("state", q, x), ("control", r, u)):
            functions += [
                (ca.Function(f"{name}_value", [v, p, w], [expr]), [name[0], "p", "w"], ["out"]),
                (ca.Function(f"{name}_derivs", [v, p, w], [ca.jacobian(expr, v).T, ca.hessian(expr, v)[0]]),
                 [name[0], "p", "w"], ["out_grad", "out_hess"])]
    else:
        cost = casadi_stage_cost(problem, x, u, p, w)
        functions += [
            (ca.Function("stage_value", [x, u, p, w], [cost]), ["x", "u", "p", "w"], ["out"]),
            (ca.Function("stage_grad", [x, u, p, w], [ca.jacobian(cost, xu).T]), ["x", "u", "p", "w"], ["out"]),
            (ca.Function("stage_hess", [x, u, p, w], [ca.hessian(cost, xu)[0]]), ["x", "u", "p", "w"], ["out"]),
        ]
    terms = ", ".join(s.term.name for s in problem.costs)
    parts = [f'"""Generated by mbrl_control.kernels.ilqr_problem for model {model.name!r} with cost(s) {terms} '
             f'({problem.integrator}, {problem.substeps} substep(s) of {problem.dt_s} s'
             f'{", split cost form" if split else ""}); do not edit."""',
             "", "import math", "from collections import namedtuple", "", "from numba import njit", "",
             "from mbrl_control.kernels.ilqr import register_problem", ""]
    parts += [sx_to_numba_source(fn, fn.name(), ins, outs) for fn, ins, outs in functions]
    parts.append(_hooks(split).format(n=n, m=m, class_name=CLASS_PREFIX + stem))
    return "\n\n".join(parts)


def ilqr_module(problem: ControlProblem, split: bool = False) -> types.ModuleType:
    """The generated module of ``problem`` (its ``GeneratedProblem`` class is registered with the solver)."""
    key = codegen.inputs_digest(
        *(_source_files(problem)), problem.integrator, problem.substeps, problem.dt_s)
    name = f"ilqr_{problem.model.name}{'_split' if split else ''}"
    return codegen.load_generated_keyed(name, key, lambda: generate_source(problem, f"{name}_{key}", split))


def _source_files(problem: ControlProblem) -> list:
    """The modules the generation reads: the model's and cost terms' files, the generators."""
    import inspect
    import sys
    from pathlib import Path

    from mbrl_control.kernels import casadi_codegen
    from mbrl_control.ops import casadi_ops
    from mbrl_control.problem import symbolic

    owners = {sys.modules[c.__module__] for c in (problem.model, *(s.term for s in problem.costs))}
    files = {Path(inspect.getfile(mod)) for mod in owners}
    for mod in owners:  # definitions the owners import (helpers such as models.actuation)
        for value in vars(mod).values():
            if codegen.is_definition(value):
                files.add(Path(inspect.getfile(value)))
    generators = (casadi_codegen, casadi_ops, symbolic, codegen)
    return sorted(files) + [Path(inspect.getfile(x)) for x in generators] + [Path(__file__)]  # + the hooks here


def make_problem(problem: ControlProblem, params, weights: np.ndarray | None = None, split: bool = False):
    """The problem namedtuple the solver takes: parameter vector, weights, scratch arrays."""
    module = ilqr_module(problem, split)
    model = problem.model
    n, m = model.state_dim(), model.control_dim()
    w = np.concatenate([s.weights for s in problem.costs]).astype(np.float64) if weights is None else weights
    # one scratch array for every derivative kernel's output: the solver's dispatch types each
    # field of the problem on every call, so fewer arrays is a cheaper call (2 us of 0.16 ms)
    return module.GeneratedProblem(p=model.param_vector(params, np.float64), w=np.asarray(w, np.float64),
                                   scratch=np.zeros((n + 2 * (n + m) + 2, n + m)))

"""The fused MPPI kernels of a control problem, generated per problem shape from its definitions.

A :class:`~mbrl_control.problem.definition.ControlProblem` names a motion model, cost terms and a
context; :func:`mppi_kernels` writes (and imports, see :func:`.codegen.load_generated`) for its
*shape* (``ControlProblem.shape_key``):

- the device functions of the definitions: the model's ``derivative`` and each cost term's
  ``initial`` / ``stage``, translated by :func:`.codegen.numba_device_source` (one module each);
- a CPU module (:data:`CPU_TEMPLATE`): ``mppi_rollouts`` / ``mppi_iteration``, the fused parallel
  kernel of one MPPI iteration (samples in blocks of :data:`LANES`, the block's lane state in a
  stack buffer, every time step a few loops over the lanes that LLVM vectorises: noise and
  controls, each integrator stage, each residual layer, the cost), plus the serial
  ``nominal_rollout``, ``model_steps`` and ``trajectory_costs``;
- on first use, a CUDA module (:data:`CUDA_TEMPLATE`): one thread per sample, then the block and
  grid reductions of :func:`.mppi_cuda.combine_samples`.

Everything else is run-time data in the typed bundles of :mod:`.bundles` (parameters, integrator
tableau, residual weights, cost weights, track tables, sampling options), so a new model instance
or new weights never recompile. The lane buffer has a named row per state, per control (applied,
previous, perturbation, noise), the cost, each cost term's carry, and the integrator's stage
derivative (only of the states the derivative reads) and weighted sum. Noise: pair ``j`` of
sample ``k`` at step ``t`` is ``normal_pair(key, k, t * pairs + j)`` (two controls: the stream of
:mod:`.noise` unchanged). The residual MLP (when the model names ``residual_inputs`` /
``residual_outputs``) sees those states and all controls and corrects the output states after the
physics step; sample ``k`` uses member ``(k // MEMBER_BLOCK) % E``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from string import Template
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from mbrl_control import MbrlError
from mbrl_control.kernels.bundles import (MAX_STAGES, O_SIGMA, CostData, NoContextData, TrackData,
                                          no_context_data)
from mbrl_control.kernels.codegen import load_generated, numba_device_source
from mbrl_control.kernels.residual_mlp import MEMBER_BLOCK, OUTPUTS
from mbrl_control.problem.definition import ControlProblem
from mbrl_control.problem.track_context import TRACK_FEATURES

LANES = MEMBER_BLOCK
"""Samples per vectorised block of the CPU kernel (one ensemble member per block)."""


# --------------------------------------------------------------------------- contexts

class TrackLookup:
    """Emits the O(1) track lookup of :mod:`.racing` at the model's position states."""

    kind = "track"
    imports = ("from mbrl_control.kernels.racing import (load_track_table, nearest_candidate, segment_candidate, "
               "segment_fields,\n                                          track_cell)")

    def setup(self) -> list[str]:
        return ["cells = context.cells", "segs = context.segments",
                "ox, oy, inv_cell, nx, ny, length = load_track_table(context.scalars)"]

    def lookup(self, x: str, y: str, out: str, tmp: str = "") -> list[str]:
        """Lines binding ``out`` to the features (progress, lateral, width_left, width_right, track_length)."""
        cand = ", ".join(f"segment_candidate({x}, {y}, segs, {tmp}first{off})" for off in ("", " + 1", " + 2"))
        return [f"{tmp}first = track_cell({x}, {y}, cells, ox, oy, inv_cell, nx, ny)",
                f"{tmp}lat, {tmp}along, {tmp}row = nearest_candidate({cand}, {tmp}first)",
                f"{tmp}prog, {tmp}wl, {tmp}wr = segment_fields(segs, {tmp}row, {tmp}along)",
                f"{out} = ({tmp}prog, {tmp}lat, {tmp}wl, {tmp}wr, length)"]

    def data(self, context: Any) -> TrackData:
        t = context.table
        return TrackData(t.cells, t.segments, t.scalars)


class NoLookup:
    """A problem without context: the cost terms get an empty feature tuple."""

    kind = "none"
    imports = ""

    def setup(self) -> list[str]:
        return []

    def lookup(self, x: str, y: str, out: str, tmp: str = "") -> list[str]:
        return [f"{out} = ()"]

    def data(self, context: Any) -> NoContextData:
        return no_context_data()


CONTEXTS = {"track": (TrackLookup(), TRACK_FEATURES), "none": (NoLookup(), ())}
"""Context kinds the kernels can look up: (emitter, the features it yields in order)."""


def context_code(context: Any) -> TrackLookup | NoLookup:
    """The lookup emitter of a problem's context (checked against the features it declares)."""
    entry = CONTEXTS.get(context.kind)
    if entry is None or tuple(context.features) != entry[1]:
        raise MbrlError(f"mppi kernels: no lookup for context '{context.kind}' with features {context.features}")
    return entry[0]


def context_data(context: Any) -> TrackData | NoContextData:
    """The context bundle of a problem's context (its lookup tables)."""
    return context_code(context).data(context)


def cost_data(problem: ControlProblem) -> CostData:
    """The cost bundle: every term's weights, concatenated in the problem's order."""
    parts = [np.asarray(spec.weights, dtype=np.float32) for spec in problem.costs]
    return CostData(np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(1, dtype=np.float32)))


# --------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class CostPlan:
    """One cost term in the kernel: its generated module, weight offset and carry rows."""

    term: Any
    module: str
    weight_offset: int
    carry_rows: tuple[str, ...]


@dataclass(frozen=True)
class KernelPlan:
    """Everything the templates need to know about a problem shape."""

    origin: str
    stem: str  # names the generated modules
    states: tuple[str, ...]
    controls: tuple[str, ...]
    n_params: int
    reads: tuple[int, ...]  # states the derivative reads: the stage derivatives kept in the lane buffer
    residual_in: tuple[int, ...]
    residual_out: tuple[int, ...]
    position: tuple[int, ...]
    model_module: str
    costs: tuple[CostPlan, ...]
    context: Any
    rows: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.states)

    @property
    def m(self) -> int:
        return len(self.controls)

    @property
    def residual(self) -> bool:
        return bool(self.residual_out)

    def row(self, prefix: str, index: int) -> str:
        names = self.states if prefix in ("S", "K", "A") else self.controls
        return f"{prefix}_{names[index].upper()}"


def generated_identifier(text: str) -> str:
    """``text`` as a Python identifier (a generated module or function name)."""
    return re.sub(r"\W", "_", text)


def _states_read(source: str, root: str, n: int) -> tuple[int, ...]:
    """Indices of the states the generated ``root`` reads: every ``x[i]``; all of them if ``x`` is used whole."""
    tree = ast.parse(source)
    fn = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == root)
    arg = fn.args.args[0].arg
    uses = [node for node in ast.walk(fn) if isinstance(node, ast.Name) and node.id == arg]
    reads = [node.slice.value for node in ast.walk(fn)
             if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == arg
             and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int)]
    return tuple(range(n)) if len(reads) != len(uses) else tuple(sorted({i % n for i in reads}))


def _rows(states: Sequence[str], controls: Sequence[str], carries: Sequence[str],
          reads: Sequence[int]) -> tuple[str, ...]:
    """Row names of the lane buffer, in order (states first: row i is state i)."""
    rows = [f"S_{s.upper()}" for s in states]
    for prefix in ("U", "UP", "E", "N"):
        rows += [f"{prefix}_{c.upper()}" for c in controls]
    rows += ["COST", *carries]
    rows += [f"K_{states[i].upper()}" for i in reads]
    rows += [f"A_{s.upper()}" for s in states]
    return tuple(rows)


def model_derivative_module(model) -> tuple[str, str]:
    """(module name, source) of the model's generated ``derivative``."""
    source = numba_device_source({"derivative": model.derivative}, model.records(),
                                 f"{model.__module__}.{model.__qualname__}")
    return load_generated(f"mppi_model_{generated_identifier(model.name)}", source).__name__, source


def _cost_plans(problem: ControlProblem) -> tuple[CostPlan, ...]:
    """Each cost term's generated ``initial`` / ``stage``, its weight offset and its carry rows."""
    states, controls = problem.model.state_names(), problem.model.control_names()
    plans, offset = [], 0
    for i, spec in enumerate(problem.costs):
        term = spec.term
        source = numba_device_source({"initial": term.initial, "stage": term.stage},
                                     term.records(states, controls, problem.context.features),
                                     f"{term.__module__}.{term.__qualname__}")
        module = load_generated(f"mppi_cost_{generated_identifier(term.name)}", source).__name__
        plans.append(CostPlan(term, module, offset, tuple(f"C{i}_{c.upper()}" for c in term.carry)))
        offset += len(term.weights)
    return tuple(plans)


def kernel_plan(problem: ControlProblem) -> KernelPlan:
    """Generate (and import) the definitions' device functions and lay out the lane buffer."""
    problem.validate()
    model = problem.model
    model_module, model_source = model_derivative_module(model)
    costs = _cost_plans(problem)
    reads = _states_read(model_source, "derivative", model.state_dim())
    residual_out = model.residual_output_indices()
    if residual_out and len(residual_out) != OUTPUTS:
        raise MbrlError(f"mppi kernels: the residual MLP kernels correct {OUTPUTS} states, "
                        f"model '{model.name}' names {len(residual_out)}")
    context = context_code(problem.context)
    names = [model.name, *(c.term.name for c in costs), context.kind]
    carries = [row for c in costs for row in c.carry_rows]
    return KernelPlan(
        origin=f"{model.name}, costs {', '.join(names[1:-1]) or 'none'}, context {context.kind}",
        stem=generated_identifier("_".join(names)), states=model.state_names(), controls=model.control_names(),
        n_params=len(model.param_names), reads=reads, residual_in=model.residual_input_indices(),
        residual_out=residual_out, position=tuple(model.state_index(s) for s in problem.context.position_states),
        model_module=model_module, costs=costs, context=context,
        rows=_rows(model.state_names(), model.control_names(), carries, reads))


# --------------------------------------------------------------------------- emitters

def _tuple(items: Sequence[str]) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _block(lines: Sequence[str], depth: int) -> str:
    pad = "    " * depth
    return "\n".join(pad + line for line in lines)


def _f32_tuple(name: str, size: int) -> str:
    """``(np.float32(name[0]), ...)``: the carries and derivatives keep one type across loop iterations."""
    return _tuple([f"np.float32({name}[{i}])" for i in range(size)])


def _header(plan: KernelPlan, target: str) -> list[str]:
    lines = [f'"""Generated by mbrl_control.kernels.mppi_generated ({target} MPPI kernels of {plan.origin}); do not '
             'edit."""', "", "import math", "", "import numpy as np"]
    numba_names = "carray, njit, prange" if target == "CPU" else "cuda, float32, float64"
    lines.append(f"from numba import {numba_names}")
    lines += ["", "from mbrl_control.kernels.bundles import MAX_STAGES, O_ALPHA, O_GAMMA, O_LAMBDA",
              "from mbrl_control.kernels.fastmath import ONE, ZERO, clip32, device_function, select",
              "from mbrl_control.kernels.noise import normal_pair",
              "from mbrl_control.kernels.residual_mlp import MAX_HIDDEN, MEMBER_BLOCK, mlp_lanes, mlp_thread"]
    if target == "CPU":
        lines.append("from mbrl_control.kernels.mppi_common import KERNEL_FASTMATH, softmin_weights, stack_buffer, "
                     "weighted_update")
    else:
        lines.append("from mbrl_control.kernels.mppi_cuda import THREADS, combine_samples")
    if plan.context.imports:
        lines.append(plan.context.imports)
    lines.append(f"from {plan.model_module} import derivative as model_derivative")
    for i, c in enumerate(plan.costs):
        lines.append(f"from {c.module} import initial as cost_{i}_initial, stage as cost_{i}_stage")
    return lines


def _constants(plan: KernelPlan) -> list[str]:
    lines = [f"{name} = {i}" for i, name in enumerate(plan.rows)]
    k_rows = [r for r in plan.rows if r.startswith("K_")]
    first = plan.rows.index(k_rows[0]) if k_rows else plan.rows.index(f"A_{plan.states[0].upper()}")
    n_features = len(plan.residual_in) + plan.m
    lines += [f"ROWS = {len(plan.rows)}", f"N_STATES = {plan.n}", f"LANES = {LANES}", "BUF_SIZE = ROWS * LANES",
              f"K_FIRST = {first}", f"A_FIRST = A_{plan.states[0].upper()}", f"A_LAST = A_{plan.states[-1].upper()}",
              f"N_FEATURES = {n_features}", "FEAT_SIZE = N_FEATURES * LANES", f"OUT_SIZE = {OUTPUTS} * LANES"]
    return lines


def _sampling_setup(plan: KernelPlan) -> list[str]:
    """Noise scales, control-cost factors, AR coefficients and bounds from the options vector."""
    m = plan.m
    lines = ["options = sampling.options", "lam_gamma = options[O_LAMBDA] * options[O_GAMMA]",
             "alpha = options[O_ALPHA]", "beta = np.sqrt(ONE - alpha * alpha)"]
    for j in range(m):
        lines += [f"sig_{j} = options[{O_SIGMA + j}]", f"kc_{j} = lam_gamma / (sig_{j} * sig_{j})",
                  f"lo_{j} = options[{O_SIGMA + m + j}]", f"hi_{j} = options[{O_SIGMA + 2 * m + j}]"]
    return lines


def _model_setup(plan: KernelPlan) -> list[str]:
    """Parameters as a tuple of scalars (hoisted out of the lane loops), integrator, residual."""
    lines = ["params = model.params", f"p = {_tuple([f'params[{i}]' for i in range(plan.n_params)])}",
             "tableau = model.tableau", "substeps = model.substeps", "n_stages = np.int64(tableau[0])",
             "final = tableau[1 + 2 * MAX_STAGES]"]
    if plan.residual:
        lines += ["mlp_params = model.mlp_params", "mlp_layout = model.mlp_layout", "members = mlp_layout[0]"]
    return lines


def _cost_setup(plan: KernelPlan) -> list[str]:
    lines = ["weights = cost.weights"]
    for i, c in enumerate(plan.costs):
        size = len(c.term.weights)
        lines.append(f"w_{i} = {_tuple([f'weights[{c.weight_offset + j}]' for j in range(size)])}")
    return lines


def _start(plan: KernelPlan) -> list[str]:
    """The start state as a tuple, its context, and each cost term's initial carry (``held_i``)."""
    lines = [f"x_start = {_tuple([f'x0[{i}]' for i in range(plan.n)])}"]
    lines += plan.context.lookup(*_position(plan, "x0"), out="ctx_start", tmp="s_")
    for i, c in enumerate(plan.costs):
        lines += [f"carry_{i} = cost_{i}_initial(x_start, ctx_start, w_{i})",
                  f"held_{i} = {_f32_tuple(f'carry_{i}', len(c.carry_rows))}"]
    return lines


def _stage_costs(plan: KernelPlan, x: str, u: str, u_before: str, carries: Sequence[str]) -> list[str]:
    """Lines looking up the context at state tuple ``x`` and charging every cost term: ``charged_i``."""
    lines = plan.context.lookup(*_position(plan, x), out="ctx")
    for i, carry in enumerate(carries):
        lines.append(f"charged_{i} = charge_{i}({x}, {u}, {u_before}, ctx, {carry}, w_{i})")
    return lines


def _charge_functions(plan: KernelPlan) -> list[str]:
    """``charge_i``: cost term i's stage as one flat float32 tuple (cost, carry...).

    Why a function of its own (not inlined at Numba IR level): Numba's array analysis of parallel
    loops flattens nested tuples such as ``(cost, (progress, crashed))`` and then fails on them;
    behind a call the parallel loop sees a flat tuple, and LLVM still inlines the call.
    """
    lines = []
    for i, c in enumerate(plan.costs):
        flat = ["np.float32(r[0])"] + [f"np.float32(r[1][{r}])" for r in range(len(c.carry_rows))]
        lines += ["@device_function", f"def charge_{i}(x, u, u_before, ctx, carry, w):",
                  f'    """Cost term {i} ({c.term.name}) at state x: (cost, carry after the step...)."""',
                  f"    r = cost_{i}_stage(x, u, u_before, ctx, carry, w)", f"    return {_tuple(flat)}", "", ""]
    return lines


def _derivative_input(plan: KernelPlan, state: Callable[[int], str], stage_k: Callable[[int], str]) -> str:
    """The stage input tuple: ``state + offset * k`` for the states the derivative reads, 0 for the others."""
    return _tuple([f"{state(i)} + offset * {stage_k(i)}" if i in plan.reads else "ZERO" for i in range(plan.n)])


def _position(plan: KernelPlan, x: str) -> tuple[str, str]:
    """The context's position arguments read from state tuple or array ``x``."""
    return tuple(f"{x}[{i}]" for i in plan.position[:2]) or ("", "")


def _device_functions(plan: KernelPlan) -> list[str]:
    """``rk_substep`` and ``model_step`` (one sample: physics sub-steps, then the residual correction)."""
    n = plan.n
    zeros = _tuple(["ZERO"] * n)
    lines = ["@device_function", "def rk_substep(s, u, n_stages, tableau, final, p):",
             '    """One sub-step of the explicit Runge-Kutta scheme of ``tableau`` (one sample)."""',
             f"    k = {zeros}", f"    acc = {zeros}", "    for stage in range(n_stages):",
             "        offset = tableau[1 + stage]", "        weight = tableau[1 + MAX_STAGES + stage]",
             f"        d = model_derivative({_derivative_input(plan, lambda i: f's[{i}]', lambda i: f'k[{i}]')}, u, p)",
             f"        k = {_f32_tuple('d', n)}",
             f"        acc = {_tuple([f'acc[{i}] + weight * k[{i}]' for i in range(n)])}",
             f"    return {_tuple([f's[{i}] + final * acc[{i}]' for i in range(n)])}", "", ""]
    if not plan.residual:
        lines += ["@device_function", "def model_step(s, u, substeps, n_stages, tableau, final, p):",
                  '    """One step of the prediction model (``substeps`` sub-steps), one sample."""',
                  "    for _ in range(substeps):", "        s = rk_substep(s, u, n_stages, tableau, final, p)",
                  "    return s", "", ""]
        return lines
    feats = [f"s[{i}]" for i in plan.residual_in] + [f"u[{j}]" for j in range(plan.m)]
    corrected = [f"s[{i}] + r[{plan.residual_out.index(i)}]" if i in plan.residual_out else f"s[{i}]"
                 for i in range(n)]
    lines += ["@device_function",
              "def model_step(s, u, substeps, n_stages, tableau, final, p, members, feat, h_a, h_b, mlp_params, "
              "mlp_layout, member):",
              '    """One step of the prediction model: physics sub-steps, then the residual (``member``) on the '
              'pre-step features."""']
    lines += [f"    feat[{i}] = {f}" for i, f in enumerate(feats)]
    lines += ["    for _ in range(substeps):", "        s = rk_substep(s, u, n_stages, tableau, final, p)",
              "    if members > 0:", "        r = mlp_thread(feat, h_a, h_b, mlp_params, mlp_layout, member)",
              f"        s = {_tuple(corrected)}", "    return s", "", ""]
    return lines


def _carried(i: int, c: CostPlan) -> str:
    """The carry tuple of term i after a step, from its flat ``charged_i``."""
    return _tuple([f"charged_{i}[{r + 1}]" for r in range(len(c.carry_rows))])


def _step_call(plan: KernelPlan, s: str, u: str, member: str) -> str:
    args = f"{s}, {u}, substeps, n_stages, tableau, final, p"
    if plan.residual:
        args += f", members, feat, h_a, h_b, mlp_params, mlp_layout, {member}"
    return f"model_step({args})"


def _serial_scratch(plan: KernelPlan) -> list[str]:
    if not plan.residual:
        return []
    return ["feat = np.zeros(N_FEATURES, dtype=np.float32)", "h_a = np.zeros(MAX_HIDDEN, dtype=np.float32)",
            "h_b = np.zeros(MAX_HIDDEN, dtype=np.float32)"]


# --------------------------------------------------------------------------- CPU module

CPU_TEMPLATE = Template('''$header


$constants


$device_functions
@njit(parallel=True, cache=True, fastmath=KERNEL_FASTMATH, error_model="numpy")
def mppi_rollouts(x0, u_prev, U, key, sampling, model, context, cost, work):
    """Roll out and cost all samples: writes ``work.eps`` (T, m, K_pad) = V - U and ``work.costs`` (K_pad,).

    ``x0`` (n,) float32, ``u_prev`` (m,) the command applied last period, ``U`` (T, m) the nominal
    sequence, ``key`` the uint64 noise stream; the bundles are those of kernels.bundles.
    """
    T = U.shape[0]
    eps = work.eps
    costs = work.costs
    blocks = eps.shape[2] // LANES
    lanes = sampling.lanes
    samples = sampling.samples
    null_samples = sampling.null_samples
$setup
$start
    for blk in prange(blocks):
        buf = carray(stack_buffer(BUF_SIZE, np.float32), (ROWS, LANES))
        k0 = blk * LANES
$scratch
        for r in range(N_STATES):
            for b in range(lanes):
                buf[r, b] = x0[r]
        for b in range(lanes):
$lane_init
        for t in range(T):
$step_init
            for b in range(lanes):
$noise
$features
            for _ in range(substeps):
                for r in range(K_FIRST, A_LAST + 1):
                    for b in range(lanes):
                        buf[r, b] = ZERO
                for stage in range(n_stages):
                    offset = tableau[1 + stage]
                    weight = tableau[1 + MAX_STAGES + stage]
                    for b in range(lanes):
$stage
                for r in range(N_STATES):
                    for b in range(lanes):
                        buf[r, b] = buf[r, b] + final * buf[A_FIRST + r, b]
$residual
            for b in range(lanes):
$cost
$eps
        for b in range(lanes):
            c = buf[COST, b]
            costs[k0 + b] = c if (k0 + b < samples and c == c) else np.inf


@njit(cache=True, error_model="numpy")
def mppi_iteration(x0, u_prev, U, key, sampling, model, context, cost, work):
    """One MPPI iteration: rollouts, soft-min weights, ``U += sum_k w_k eps_k``; returns (min cost, ESS).

    ``U`` is left unchanged when no sample is finite.
    """
    mppi_rollouts(x0, u_prev, U, key, sampling, model, context, cost, work)
    best, ess = softmin_weights(work.costs, sampling.samples, sampling.options[O_LAMBDA], work.weights)
    if best < np.inf:
        weighted_update(U, work.eps, work.weights)
    return best, ess


@njit(cache=True, error_model="numpy")
def nominal_rollout(x0, U, model, out):
    """States x_1..x_T (T, n) of one control sequence (member 0 of a residual ensemble), serial."""
$model_setup
$serial_scratch
    s = $x0_tuple
    for t in range(U.shape[0]):
        s = $step_u
$write_out


@njit(cache=True, error_model="numpy")
def model_steps(states, controls, model, out):
    """One step of the prediction model (member 0 of a residual ensemble) from each row of ``states``."""
$model_setup
$serial_scratch
    for row in range(states.shape[0]):
        s = $step_row
$write_row


@njit(cache=True, error_model="numpy")
def trajectory_costs(x0, states, controls, u_prev, context, cost, out):
    """Cost (float32, no control cost) of trajectories: ``states`` (K, T, n) = x_1..x_T, ``controls`` (K, T, m)."""
$cost_setup
$start
    for k in range(states.shape[0]):
$carry_copy
        u_before = $u_prev_tuple
        total = np.float32(0.0)
        for t in range(states.shape[1]):
            x = $x_kt
            u = $u_kt
$traj_cost
            u_before = u
        out[k] = total
''')


def _lane(prefix: str, plan: KernelPlan, j: int) -> str:
    return f"buf[{plan.row(prefix, j)}, b]"


def _cpu_lane_init(plan: KernelPlan) -> list[str]:
    lines = [f"{_lane('UP', plan, j)} = u_prev[{j}]" for j in range(plan.m)]
    lines += [f"{_lane('N', plan, j)} = ZERO" for j in range(plan.m)]
    lines.append("buf[COST, b] = ZERO")
    for i, c in enumerate(plan.costs):
        lines += [f"buf[{row}, b] = held_{i}[{r}]" for r, row in enumerate(c.carry_rows)]
    return lines


def _step_init(plan: KernelPlan) -> list[str]:
    lines = [f"nom_{j} = U[t, {j}]" for j in range(plan.m)]
    lines += ["a_t = select(t > 0, alpha, ZERO)", "b_t = select(t > 0, beta, ONE)"]
    return lines


def _normals(plan: KernelPlan, sample: str) -> list[str]:
    """Draw ``g_0 .. g_{2 pairs - 1}``: pair j of step t is counter ``t * pairs + j``."""
    pairs = (plan.m + 1) // 2
    return [f"g_{2 * j}, g_{2 * j + 1} = normal_pair(key, {sample}, {'t' if pairs == 1 else f't * {pairs} + {j}'})"
            for j in range(pairs)]


def _control_cost(plan: KernelPlan, factor: str) -> str:
    return " + ".join(f"{factor.format(j=j)} * d_{j}" for j in range(plan.m))


def _cpu_noise(plan: KernelPlan) -> list[str]:
    m = plan.m
    lines = _normals(plan, "k0 + b") + ["keep = select(k0 + b < null_samples, ZERO, ONE)"]
    lines += [f"n_{j} = keep * (a_t * {_lane('N', plan, j)} + b_t * g_{j})" for j in range(m)]
    lines += [f"{_lane('N', plan, j)} = n_{j}" for j in range(m)]
    lines += [f"v_{j} = clip32(nom_{j} + sig_{j} * n_{j}, lo_{j}, hi_{j})" for j in range(m)]
    lines += [f"d_{j} = v_{j} - nom_{j}" for j in range(m)]
    lines += [f"{_lane('U', plan, j)} = v_{j}" for j in range(m)]
    lines += [f"{_lane('E', plan, j)} = d_{j}" for j in range(m)]
    lines.append(f"buf[COST, b] = buf[COST, b] + ({_control_cost(plan, 'c_{j}')})")
    return lines


def _lane_index(i: int) -> str:
    return "b" if i == 0 else ("lanes + b" if i == 1 else f"{i} * lanes + b")


def _cpu_features(plan: KernelPlan) -> list[str]:
    if not plan.residual:
        return []
    rows = [f"S_{plan.states[i].upper()}" for i in plan.residual_in] + [plan.row("U", j) for j in range(plan.m)]
    return ["if members > 0:", "    for b in range(lanes):"] + [
        f"        feat[{_lane_index(i)}] = buf[{row}, b]" for i, row in enumerate(rows)]


def _cpu_stage(plan: KernelPlan) -> list[str]:
    state_in = _derivative_input(plan, lambda i: _lane("S", plan, i), lambda i: _lane("K", plan, i))
    controls = _tuple([_lane("U", plan, j) for j in range(plan.m)])
    lines = [f"k = model_derivative({state_in}, {controls}, p)"]
    lines += [f"{_lane('A', plan, i)} = {_lane('A', plan, i)} + weight * k[{i}]" for i in range(plan.n)]
    lines += [f"{_lane('K', plan, i)} = k[{i}]" for i in plan.reads]
    return lines


def _cpu_residual(plan: KernelPlan) -> list[str]:
    if not plan.residual:
        return []
    lines = ["if members > 0:", "    mlp_lanes(feat, out, mlp_params, mlp_layout, member)",
             "    for b in range(lanes):"]
    for r, i in enumerate(plan.residual_out):
        lines.append(f"        {_lane('S', plan, i)} = {_lane('S', plan, i)} + out[{_lane_index(r)}]")
    return lines


def _cpu_cost(plan: KernelPlan) -> list[str]:
    lines = [f"x = {_tuple([_lane('S', plan, i) for i in range(plan.n)])}",
             f"u = {_tuple([_lane('U', plan, j) for j in range(plan.m)])}",
             f"u_before = {_tuple([_lane('UP', plan, j) for j in range(plan.m)])}"]
    carries = [_tuple([f"buf[{row}, b]" for row in c.carry_rows]) for c in plan.costs]
    lines += _stage_costs(plan, "x", "u", "u_before", carries)
    for i, c in enumerate(plan.costs):
        lines.append(f"buf[COST, b] = buf[COST, b] + charged_{i}[0]")
        lines += [f"buf[{row}, b] = charged_{i}[{r + 1}]" for r, row in enumerate(c.carry_rows)]
    lines += [f"{_lane('UP', plan, j)} = {_lane('U', plan, j)}" for j in range(plan.m)]
    return lines


def _cpu_eps(plan: KernelPlan) -> list[str]:
    lines = [f"eps_{j} = eps[t, {j}]" for j in range(plan.m)] + ["for b in range(lanes):"]
    return lines + [f"    eps_{j}[k0 + b] = {_lane('E', plan, j)}" for j in range(plan.m)]


def _cpu_scratch(plan: KernelPlan) -> list[str]:
    if not plan.residual:
        return []
    return ["feat = carray(stack_buffer(FEAT_SIZE, np.float32), (FEAT_SIZE,))",
            "out = carray(stack_buffer(OUT_SIZE, np.float32), (OUT_SIZE,))",
            "member = (k0 // MEMBER_BLOCK) % members if members > 0 else 0"]


def _traj_cost(plan: KernelPlan) -> list[str]:
    lines = _stage_costs(plan, "x", "u", "u_before", [f"held_{i}_k" for i in range(len(plan.costs))])
    for i, c in enumerate(plan.costs):
        lines += [f"total = total + charged_{i}[0]", f"held_{i}_k = {_carried(i, c)}"]
    return lines


def _common_blocks(plan: KernelPlan, target: str) -> dict[str, str]:
    """Header, row constants, device functions and the set-up lines every kernel of a module shares."""
    setup = _sampling_setup(plan) + _model_setup(plan) + _cost_setup(plan) + plan.context.setup()
    return {"header": "\n".join(_header(plan, target)), "constants": "\n".join(_constants(plan)),
            "device_functions": "\n".join(_device_functions(plan) + _charge_functions(plan)),
            "setup": _block(setup, 1), "start": _block(_start(plan), 1)}


def _cpu_kernel_blocks(plan: KernelPlan) -> dict[str, str]:
    """The blocks of the fused lane kernel ``mppi_rollouts``."""
    return {"scratch": _block(_cpu_scratch(plan), 2), "lane_init": _block(_cpu_lane_init(plan), 3),
            "step_init": _block(_step_init(plan) + [f"c_{j} = kc_{j} * nom_{j}" for j in range(plan.m)], 3),
            "noise": _block(_cpu_noise(plan), 4), "features": _block(_cpu_features(plan), 3),
            "stage": _block(_cpu_stage(plan), 6), "residual": _block(_cpu_residual(plan), 3),
            "cost": _block(_cpu_cost(plan), 4), "eps": _block(_cpu_eps(plan), 3)}


def _cpu_serial_blocks(plan: KernelPlan) -> dict[str, str]:
    """The blocks of ``nominal_rollout``, ``model_steps`` and ``trajectory_costs``."""
    n, m = plan.n, plan.m
    return {
        "model_setup": _block(_model_setup(plan), 1), "serial_scratch": _block(_serial_scratch(plan), 1),
        "x0_tuple": _tuple([f"x0[{i}]" for i in range(n)]),
        "step_u": _step_call(plan, "s", _tuple([f"U[t, {j}]" for j in range(m)]), "0"),
        "write_out": _block([f"out[t, {i}] = s[{i}]" for i in range(n)], 2),
        "step_row": _step_call(plan, _tuple([f"states[row, {i}]" for i in range(n)]),
                               _tuple([f"controls[row, {j}]" for j in range(m)]), "0"),
        "write_row": _block([f"out[row, {i}] = s[{i}]" for i in range(n)], 2),
        "cost_setup": _block(_cost_setup(plan) + plan.context.setup(), 1),
        "carry_copy": _block([f"held_{i}_k = held_{i}" for i in range(len(plan.costs))], 2),
        "u_prev_tuple": _tuple([f"u_prev[{j}]" for j in range(m)]),
        "x_kt": _tuple([f"states[k, t, {i}]" for i in range(n)]),
        "u_kt": _tuple([f"controls[k, t, {j}]" for j in range(m)]), "traj_cost": _block(_traj_cost(plan), 3)}


def cpu_source(plan: KernelPlan) -> str:
    """The CPU module's source for a plan (see :data:`CPU_TEMPLATE`)."""
    return CPU_TEMPLATE.substitute(**_common_blocks(plan, "CPU"), **_cpu_kernel_blocks(plan),
                                   **_cpu_serial_blocks(plan))


# --------------------------------------------------------------------------- CUDA module

CUDA_TEMPLATE = Template('''$header


$constants


$device_functions
@cuda.jit(device=True)
def rollout_sample(x0, u_prev, U, key, k, sampling, model, context, cost, eps):
    """Total cost (float64; +inf when invalid or non-finite) of sample ``k``; writes its column of ``eps``."""
    if k >= eps.shape[2]:
        return math.inf
    T = U.shape[0]
    samples = sampling.samples
    null_samples = sampling.null_samples
$setup
$scratch
$start
    s = x_start
    u_before = $u_prev_tuple
$noise_init
    keep = select(k < null_samples, ZERO, ONE)
    total = float32(0.0)
    for t in range(T):
$step_init
$noise
        u = $u_tuple
        s = $step
$cost
        u_before = u
    value = float64(total)
    if k >= samples or not value == value:
        return math.inf
    return value


@cuda.jit
def mppi_iteration(x0, u_prev, U, key, sampling, model, context, cost, eps, partials, result):
    """One MPPI iteration in one launch: a thread per sample, then the reductions of ``combine_samples``."""
    k = cuda.blockIdx.x * THREADS + cuda.threadIdx.x
    total = rollout_sample(x0, u_prev, U, key, k, sampling, model, context, cost, eps)
    combine_samples(total, U, eps, sampling.options[O_LAMBDA], partials, result)
''')


def _cuda_noise(plan: KernelPlan) -> list[str]:
    m = plan.m
    lines = _normals(plan, "k")
    lines += [f"n_{j} = keep * (a_t * n_{j} + b_t * g_{j})" for j in range(m)]
    lines += [f"v_{j} = clip32(nom_{j} + sig_{j} * n_{j}, lo_{j}, hi_{j})" for j in range(m)]
    lines += [f"d_{j} = v_{j} - nom_{j}" for j in range(m)]
    lines += [f"eps[t, {j}, k] = d_{j}" for j in range(m)]
    return lines + [f"total += {_control_cost(plan, 'kc_{j} * nom_{j}')}"]


def _cuda_cost(plan: KernelPlan) -> list[str]:
    lines = _stage_costs(plan, "s", "u", "u_before", [f"held_{i}" for i in range(len(plan.costs))])
    for i, c in enumerate(plan.costs):
        lines += [f"total += charged_{i}[0]", f"held_{i} = {_carried(i, c)}"]
    return lines


def _cuda_scratch(plan: KernelPlan) -> list[str]:
    if not plan.residual:
        return []
    return ["member = (k // MEMBER_BLOCK) % members if members > 0 else 0",
            "feat = cuda.local.array(N_FEATURES, float32)", "h_a = cuda.local.array(MAX_HIDDEN, float32)",
            "h_b = cuda.local.array(MAX_HIDDEN, float32)"]


def cuda_source(plan: KernelPlan) -> str:
    """The CUDA module's source for a plan (see :data:`CUDA_TEMPLATE`)."""
    m = plan.m
    return CUDA_TEMPLATE.substitute(
        **_common_blocks(plan, "CUDA"), scratch=_block(_cuda_scratch(plan), 1),
        u_prev_tuple=_tuple([f"u_prev[{j}]" for j in range(m)]),
        noise_init=_block([f"n_{j} = ZERO" for j in range(m)], 1), step_init=_block(_step_init(plan), 2),
        noise=_block(_cuda_noise(plan), 2), u_tuple=_tuple([f"v_{j}" for j in range(m)]),
        step=_step_call(plan, "s", "u", "member"), cost=_block(_cuda_cost(plan), 2))


# --------------------------------------------------------------------------- loading

class MPPIKernels:
    """The generated kernels of one problem shape: the CPU module now, the CUDA module on first use."""

    def __init__(self, plan: KernelPlan) -> None:
        self.plan = plan
        self.cpu: ModuleType = load_generated(f"mppi_cpu_{plan.stem}", cpu_source(plan))
        self._cuda: ModuleType | None = None

    @property
    def cuda(self) -> ModuleType:
        """The CUDA module (imports ``numba.cuda``: the simulator when ``NUMBA_ENABLE_CUDASIM=1``)."""
        if self._cuda is None:
            self._cuda = load_generated(f"mppi_cuda_{self.plan.stem}", cuda_source(self.plan))
        return self._cuda


_LOADED: dict[tuple, MPPIKernels] = {}


def mppi_kernels(problem: ControlProblem) -> MPPIKernels:
    """The generated kernels of ``problem``'s shape (generated and imported once per process)."""
    key = problem.shape_key()
    kernels = _LOADED.get(key)
    if kernels is None:
        kernels = _LOADED[key] = MPPIKernels(kernel_plan(problem))
    return kernels

"""The fused Numba CPU MPPI kernel for the car: noise + single-track rollouts (+ residual MLP) + racing cost.

One call of :func:`car_rollouts` samples, simulates and costs all K trajectories of one MPPI
iteration; :func:`car_mppi_iteration` adds the soft-min weights and the update of the nominal
sequence. Samples run in parallel over blocks of :data:`LANES`; inside a block every time step
is a handful of loops over the lanes (noise and controls, each integrator stage, each MLP
layer, cost), each vectorised by LLVM (AVX-512 on the CI machine). The block's lane state lives
in stack buffers: no allocation, and LLVM can prove they do not alias the read-only tables it
gathers from. Model parameters, integrator tableau, MLP weights, cost weights and the track
table are arguments: swapping a model never recompiles. The residual's lanes kernel
(:func:`.residual_mlp.mlp_lanes`, row-grouped weights of :func:`.residual_mlp.pack_residual`) is
compiled into :func:`car_rollouts`; the on-disk cache is keyed by all package sources (see
:mod:`mbrl_control.kernels`), so a change there recompiles this kernel too.

Mirrors, tested equal: :mod:`mbrl_control.models.bicycle` (via :mod:`.single_track`; the
explicit Runge-Kutta scheme of ``models.base.integrate_step`` is given as a tableau, see
:func:`integrator_tableau`), :mod:`mbrl_control.models.semiparametric` (via :mod:`.residual_mlp`)
and the torch racing cost of :mod:`mbrl_control.control.costs` (via :mod:`.racing`).
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, prange

from mbrl_control.kernels.fastmath import CPU_KERNEL_OPTIONS, ONE, ZERO, clip32, device_function, select
from mbrl_control.kernels.mppi_common import KERNEL_FASTMATH, softmin_weights, stack_buffer, weighted_update
from mbrl_control.kernels.noise import normal_pair
from mbrl_control.kernels.racing import (load_cost_weights, load_track_table, nearest_candidate, racing_stage_cost,
                                         segment_candidate, segment_fields, track_cell, track_lookup)
from mbrl_control.kernels.residual_mlp import MAX_HIDDEN, MEMBER_BLOCK, mlp_lanes, mlp_thread
from mbrl_control.kernels.single_track import derivative, load_params

F32 = np.float32
LANES = MEMBER_BLOCK  # samples per vectorised block (one ensemble member per block)

# rows of the per-block lane buffer (LANES floats each)
(R_X, R_Y, R_STEER, R_V, R_YAW, R_YAW_RATE, R_SLIP,  # state
 R_U0, R_U1, R_UP0, R_UP1, R_E0, R_E1, R_N0, R_N1, R_COST, R_PROG, R_CRASH,  # controls, noise, cost
 R_K0, R_K1, R_K2, R_K3, R_K4,  # last stage derivative of (steer, v, yaw, yaw_rate, slip)
 R_A0, R_A1, R_A2, R_A3, R_A4, R_A5, R_A6) = range(30)  # weighted sum of the stage derivatives
ROWS = 30
_BUF_SIZE = ROWS * LANES  # module constants: literal sizes of the stack buffers
_FEAT_SIZE = 6 * LANES
_OUT_SIZE = 3 * LANES

# scalar settings vector (float32) of one iteration
(O_SIGMA0, O_SIGMA1, O_LAMBDA, O_GAMMA, O_ALPHA, O_UMIN0, O_UMIN1, O_UMAX0, O_UMAX1) = range(9)
N_OPTIONS = 9
MAX_STAGES = 4


def integrator_tableau(integrator: str, dt_s: float, substeps: int) -> np.ndarray:
    """float32 [n_stages, stage input offsets (4), stage weights (4), final factor] of one sub-step.

    Stage s evaluates f(state + offset_s * k_{s-1}); the sub-step is state + final * sum_s w_s k_s,
    the exact arithmetic of ``models.base.integrate_step`` (offsets 0.5 h, 0.5 h, h; weights
    1, 2, 2, 1; final h / 6 for RK4; one stage, final h for Euler).
    """
    h = dt_s / substeps
    tab = np.zeros(2 + 2 * MAX_STAGES, dtype=np.float32)
    if integrator == "rk4":
        tab[0] = 4
        tab[1:5] = [0.0, 0.5 * h, 0.5 * h, h]
        tab[5:9] = [1.0, 2.0, 2.0, 1.0]
        tab[9] = h / 6.0
    elif integrator == "euler":
        tab[0] = 1
        tab[5] = 1.0
        tab[9] = h
    else:
        raise ValueError(f"unknown integrator {integrator!r}")
    return tab


@device_function
def sampling_settings(options):
    """(sigma0, sigma1, control-cost factor 0, 1, AR coefficient alpha, innovation scale beta, umin0,
    umin1, umax0, umax1) from the options vector: the set-up every MPPI kernel shares."""
    sig0, sig1 = options[O_SIGMA0], options[O_SIGMA1]
    lam_gamma = options[O_LAMBDA] * options[O_GAMMA]
    alpha = options[O_ALPHA]
    return (sig0, sig1, lam_gamma / (sig0 * sig0), lam_gamma / (sig1 * sig1), alpha, np.sqrt(ONE - alpha * alpha),
            options[O_UMIN0], options[O_UMIN1], options[O_UMAX0], options[O_UMAX1])


@device_function
def rk_substep(s, u0, u1, n_stages, tableau, final, p):
    """One sub-step of the explicit Runge-Kutta scheme of ``tableau`` on a 7-tuple state (one sample)."""
    k = (ZERO, ZERO, ZERO, ZERO, ZERO, ZERO, ZERO)
    acc = (ZERO, ZERO, ZERO, ZERO, ZERO, ZERO, ZERO)
    for stage in range(n_stages):
        o = tableau[1 + stage]
        w = tableau[1 + MAX_STAGES + stage]
        k = derivative(s[2] + o * k[2], s[3] + o * k[3], s[4] + o * k[4], s[5] + o * k[5], s[6] + o * k[6], u0, u1, p)
        acc = (acc[0] + w * k[0], acc[1] + w * k[1], acc[2] + w * k[2], acc[3] + w * k[3], acc[4] + w * k[4],
               acc[5] + w * k[5], acc[6] + w * k[6])
    return (s[0] + final * acc[0], s[1] + final * acc[1], s[2] + final * acc[2], s[3] + final * acc[3],
            s[4] + final * acc[4], s[5] + final * acc[5], s[6] + final * acc[6])


@njit(parallel=True, cache=True, fastmath=KERNEL_FASTMATH, **CPU_KERNEL_OPTIONS)
def car_rollouts(x0, u_prev, U, options, key, samples, null_samples, substeps, tableau, params,
                 cells, segs, table, cost_w, mlp_params, mlp_layout, lanes, eps, costs):
    """Roll out and cost all samples. Writes ``eps`` (T, 2, K_pad) = V - U and ``costs`` (K_pad,) float64.

    ``x0`` (7,) float32; ``u_prev`` (2,) the command applied last period; ``U`` (T, 2) the nominal
    sequence; ``options`` see ``O_*``; ``key`` uint64 noise stream; ``null_samples``: that many first
    samples are not perturbed; ``substeps``/``tableau`` the integrator; ``params`` the model
    (single_track.pack_params); ``cells``/``segs``/``table`` the TrackTable; ``cost_w`` the cost
    weights; ``mlp_params``/``mlp_layout`` the packed residual (``mlp_layout[0] == 0``: none);
    ``lanes`` must be :data:`LANES`: a run-time value on purpose, so that LLVM vectorises the lane
    loops instead of unrolling them completely into scalar code (Numba runs no SLP vectoriser).
    """
    T = U.shape[0]
    blocks = eps.shape[2] // LANES
    pt = load_params(params)
    cw = load_cost_weights(cost_w)
    ox, oy, inv_cell, nx, ny, length = load_track_table(table)
    sig0, sig1, k0_cost, k1_cost, alpha, beta, umin0, umin1, umax0, umax1 = sampling_settings(options)
    n_stages = np.int64(tableau[0])
    final = tableau[1 + 2 * MAX_STAGES]
    members = mlp_layout[0]
    s_start = track_lookup(x0[0], x0[1], cells, segs, ox, oy, inv_cell, nx, ny)[0]
    for blk in prange(blocks):
        buf = carray(stack_buffer(_BUF_SIZE, np.float32), (ROWS, LANES))
        feat = carray(stack_buffer(_FEAT_SIZE, np.float32), (_FEAT_SIZE,))
        out = carray(stack_buffer(_OUT_SIZE, np.float32), (_OUT_SIZE,))
        k0 = blk * LANES
        member = (k0 // MEMBER_BLOCK) % members if members > 0 else 0
        for r in range(7):
            for b in range(lanes):
                buf[r, b] = x0[r]
        for b in range(lanes):
            buf[R_UP0, b] = u_prev[0]
            buf[R_UP1, b] = u_prev[1]
            buf[R_N0, b] = ZERO
            buf[R_N1, b] = ZERO
            buf[R_COST, b] = ZERO
            buf[R_PROG, b] = s_start
            buf[R_CRASH, b] = ZERO
        for t in range(T):
            nom0 = U[t, 0]
            nom1 = U[t, 1]
            a_t = select(t > 0, alpha, ZERO)
            b_t = select(t > 0, beta, ONE)
            c0 = k0_cost * nom0
            c1 = k1_cost * nom1
            # noise, clipped controls, information-theoretic control cost, residual features
            for b in range(lanes):
                w0, w1 = normal_pair(key, k0 + b, t)
                keep = select(k0 + b < null_samples, ZERO, ONE)
                n0 = keep * (a_t * buf[R_N0, b] + b_t * w0)
                n1 = keep * (a_t * buf[R_N1, b] + b_t * w1)
                buf[R_N0, b] = n0
                buf[R_N1, b] = n1
                v0 = clip32(nom0 + sig0 * n0, umin0, umax0)
                v1 = clip32(nom1 + sig1 * n1, umin1, umax1)
                e0 = v0 - nom0
                e1 = v1 - nom1
                buf[R_U0, b] = v0
                buf[R_U1, b] = v1
                buf[R_E0, b] = e0
                buf[R_E1, b] = e1
                buf[R_COST, b] = buf[R_COST, b] + (c0 * e0 + c1 * e1)
            if members > 0:
                for b in range(lanes):
                    feat[b] = buf[R_STEER, b]
                    feat[lanes + b] = buf[R_V, b]
                    feat[2 * lanes + b] = buf[R_YAW_RATE, b]
                    feat[3 * lanes + b] = buf[R_SLIP, b]
                    feat[4 * lanes + b] = buf[R_U0, b]
                    feat[5 * lanes + b] = buf[R_U1, b]
            # physics: substeps x stages of the explicit Runge-Kutta scheme
            for _ in range(substeps):
                for r in range(R_K0, R_A6 + 1):
                    for b in range(lanes):
                        buf[r, b] = ZERO
                for stage in range(n_stages):
                    offset = tableau[1 + stage]
                    weight = tableau[1 + MAX_STAGES + stage]
                    for b in range(lanes):
                        k = derivative(buf[R_STEER, b] + offset * buf[R_K0, b], buf[R_V, b] + offset * buf[R_K1, b],
                                       buf[R_YAW, b] + offset * buf[R_K2, b], buf[R_YAW_RATE, b] + offset * buf[R_K3, b],
                                       buf[R_SLIP, b] + offset * buf[R_K4, b], buf[R_U0, b], buf[R_U1, b], pt)
                        buf[R_A0, b] = buf[R_A0, b] + weight * k[0]
                        buf[R_A1, b] = buf[R_A1, b] + weight * k[1]
                        buf[R_A2, b] = buf[R_A2, b] + weight * k[2]
                        buf[R_A3, b] = buf[R_A3, b] + weight * k[3]
                        buf[R_A4, b] = buf[R_A4, b] + weight * k[4]
                        buf[R_A5, b] = buf[R_A5, b] + weight * k[5]
                        buf[R_A6, b] = buf[R_A6, b] + weight * k[6]
                        buf[R_K0, b] = k[2]
                        buf[R_K1, b] = k[3]
                        buf[R_K2, b] = k[4]
                        buf[R_K3, b] = k[5]
                        buf[R_K4, b] = k[6]
                for r in range(7):
                    for b in range(lanes):
                        buf[r, b] = buf[r, b] + final * buf[R_A0 + r, b]
            # learned residual on the velocity states
            if members > 0:
                mlp_lanes(feat, out, mlp_params, mlp_layout, member)
                for b in range(lanes):
                    buf[R_V, b] = buf[R_V, b] + out[b]
                    buf[R_YAW_RATE, b] = buf[R_YAW_RATE, b] + out[lanes + b]
                    buf[R_SLIP, b] = buf[R_SLIP, b] + out[2 * lanes + b]
            # racing cost on the new state
            for b in range(lanes):
                x = buf[R_X, b]
                y = buf[R_Y, b]
                first = track_cell(x, y, cells, ox, oy, inv_cell, nx, ny)
                lat, along, row = nearest_candidate(segment_candidate(x, y, segs, first),
                                                    segment_candidate(x, y, segs, first + 1),
                                                    segment_candidate(x, y, segs, first + 2), first)
                prog, wl, wr = segment_fields(segs, row, along)
                stage_cost, crashed = racing_stage_cost(prog, buf[R_PROG, b], lat, wl, wr, buf[R_V, b],
                                                        buf[R_YAW_RATE, b], buf[R_SLIP, b], buf[R_U0, b] - buf[R_UP0, b],
                                                        buf[R_U1, b] - buf[R_UP1, b], buf[R_CRASH, b], length, cw)
                buf[R_COST, b] = buf[R_COST, b] + stage_cost
                buf[R_CRASH, b] = crashed
                buf[R_PROG, b] = prog
                buf[R_UP0, b] = buf[R_U0, b]
                buf[R_UP1, b] = buf[R_U1, b]
            e_0 = eps[t, 0]
            e_1 = eps[t, 1]
            for b in range(lanes):
                e_0[k0 + b] = buf[R_E0, b]
                e_1[k0 + b] = buf[R_E1, b]
        for b in range(lanes):
            c = buf[R_COST, b]
            costs[k0 + b] = c if (k0 + b < samples and c == c) else np.inf


@njit(cache=True, **CPU_KERNEL_OPTIONS)
def car_mppi_iteration(x0, u_prev, U, options, key, samples, null_samples, substeps, tableau, params,
                       cells, segs, table, cost_w, mlp_params, mlp_layout, lanes, eps, costs, weights):
    """One MPPI iteration in one call: rollouts, soft-min weights, ``U += sum_k w_k eps_k``.

    Returns (min cost, effective sample size); ``U`` is left unchanged when no sample is finite.
    """
    car_rollouts(x0, u_prev, U, options, key, samples, null_samples, substeps, tableau, params,
                 cells, segs, table, cost_w, mlp_params, mlp_layout, lanes, eps, costs)
    best, ess = softmin_weights(costs, samples, options[O_LAMBDA], weights)
    if best < np.inf:
        weighted_update(U, eps, weights)
    return best, ess


@njit(cache=True, **CPU_KERNEL_OPTIONS)
def nominal_rollout(x0, U, substeps, tableau, params, mlp_params, mlp_layout, out):
    """States x_1..x_T (T, 7) of one control sequence (member 0 of a residual ensemble), serial."""
    pt = load_params(params)
    n_stages = np.int64(tableau[0])
    final = tableau[1 + 2 * MAX_STAGES]
    members = mlp_layout[0]
    s = (x0[0], x0[1], x0[2], x0[3], x0[4], x0[5], x0[6])
    feat = np.zeros(6, dtype=np.float32)
    h_a = np.zeros(MAX_HIDDEN, dtype=np.float32)
    h_b = np.zeros(MAX_HIDDEN, dtype=np.float32)
    for t in range(U.shape[0]):
        u0, u1 = U[t, 0], U[t, 1]
        feat[0], feat[1], feat[2], feat[3], feat[4], feat[5] = s[2], s[3], s[5], s[6], u0, u1
        for _ in range(substeps):
            s = rk_substep(s, u0, u1, n_stages, tableau, final, pt)
        if members > 0:
            r = mlp_thread(feat, h_a, h_b, mlp_params, mlp_layout, 0)
            s = (s[0], s[1], s[2], s[3] + r[0], s[4], s[5] + r[1], s[6] + r[2])
        for i in range(7):
            out[t, i] = s[i]

"""The CUDA backend of MPPI: one fused Numba CUDA kernel per iteration.

One thread per sample runs the whole horizon (noise, single-track model, residual MLP, racing
cost; the same device functions as the CPU kernel). Each block then reduces its own samples to
a partial soft-min: its minimum cost ``m_b``, ``Z_b = sum exp(-(S - m_b)/lambda)``, the sum of
squared weights and the weighted perturbation sums ``A_b[t, c]``. The last block to finish
(atomic ticket after a memory fence, the "threadfence reduction" pattern) combines the partials
with the factors ``exp(-(m_b - m)/lambda)`` into the exact update ``U += sum_k w_k eps_k`` and
writes the minimum cost and the effective sample size. So one launch does a whole iteration and
only ``U`` (T x 2 floats) travels between host and device.

Parameters, tables and weights are device arrays replaced in place by ``set_model`` (same
types: no recompilation). Tested on the CPU with Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) against the Numba CPU kernel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64

from mbrl_control.kernels.fastmath import ONE, ZERO, clip32, select
from mbrl_control.kernels.mppi_car import MAX_STAGES, O_LAMBDA, rk_substep, sampling_settings
from mbrl_control.kernels.noise import normal_pair
from mbrl_control.kernels.racing import load_track_table, racing_stage_cost, track_lookup
from mbrl_control.kernels.residual_mlp import MAX_HIDDEN, MEMBER_BLOCK, mlp_thread

THREADS = 128  # samples per block (a multiple of MEMBER_BLOCK)


@cuda.jit
def mppi_cuda_iteration(x0, u_prev, U, options, key, samples, null_samples, substeps, tableau, params, cells, segs,
                        table, cost_w, mlp_params, mlp_layout, eps, part_min, part_z, part_q, part_a, counter, result):
    """One MPPI iteration (see module docstring). ``part_a`` (blocks, T*2); ``result`` = [min cost, ESS]."""
    T = U.shape[0]
    tid = cuda.threadIdx.x
    blk = cuda.blockIdx.x
    k = blk * THREADS + tid
    lam = options[O_LAMBDA]
    s_cost = cuda.shared.array(THREADS, float64)
    s_w = cuda.shared.array(THREADS, float64)
    s_red = cuda.shared.array(THREADS, float64)
    s_last = cuda.shared.array(1, float64)

    cost = rollout_sample(x0, u_prev, U, options, key, k, samples, null_samples, substeps, tableau, params, cells, segs,
                          table, cost_w, mlp_params, mlp_layout, eps)
    s_cost[tid] = cost
    m_b = block_reduced(s_red, tid, cost, True)
    w = math.exp(-(cost - m_b) / lam) if (cost < math.inf and m_b < math.inf) else 0.0
    s_w[tid] = w
    z_b = block_reduced(s_red, tid, w, False)
    q_b = block_reduced(s_red, tid, w * w, False)
    if tid == 0:
        part_min[blk] = m_b
        part_z[blk] = z_b
        part_q[blk] = q_b
    k0 = blk * THREADS
    for pair in range(tid, 2 * T, THREADS):
        t = pair // 2
        c = pair - 2 * t
        acc = 0.0
        for j in range(THREADS):
            if k0 + j < eps.shape[2]:
                acc += s_w[j] * eps[t, c, k0 + j]
        part_a[blk, pair] = acc
    # the last block to finish combines the partial sums
    cuda.threadfence()
    cuda.syncthreads()
    if tid == 0:
        ticket = cuda.atomic.add(counter, 0, 1)
        s_last[0] = 1.0 if ticket == cuda.gridDim.x - 1 else 0.0
    cuda.syncthreads()
    if s_last[0] == 0.0:
        return
    blocks = cuda.gridDim.x
    best = math.inf
    for b in range(tid, blocks, THREADS):
        best = min(best, part_min[b])
    m = block_reduced(s_red, tid, best, True)
    z = 0.0
    q = 0.0
    for b in range(tid, blocks, THREADS):
        scale = math.exp(-(part_min[b] - m) / lam) if part_min[b] < math.inf else 0.0
        z += scale * part_z[b]
        q += scale * scale * part_q[b]
    z_total = block_reduced(s_red, tid, z, False)
    q_total = block_reduced(s_red, tid, q, False)
    if m < math.inf and z_total > 0.0:
        for pair in range(tid, 2 * T, THREADS):
            t = pair // 2
            c = pair - 2 * t
            acc = 0.0
            for b in range(blocks):
                if part_min[b] < math.inf:
                    acc += math.exp(-(part_min[b] - m) / lam) * part_a[b, pair]
            U[t, c] = U[t, c] + acc / z_total
    if tid == 0:
        result[0] = m
        result[1] = z_total * z_total / q_total if q_total > 0.0 else 0.0
        counter[0] = 0


@cuda.jit(device=True)
def block_reduced(values, tid, value, take_min):
    """The min or sum of every thread's ``value`` over the block, returned to every thread.

    ``values`` is a shared scratch array of THREADS entries; a tree reduction into values[0],
    synchronised before and after, so the scratch can be reused right away.
    """
    values[tid] = value
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if tid < step:
            if take_min:
                values[tid] = min(values[tid], values[tid + step])
            else:
                values[tid] = values[tid] + values[tid + step]
        cuda.syncthreads()
        step //= 2
    reduced = values[0]
    cuda.syncthreads()
    return reduced


@cuda.jit(device=True)
def rollout_sample(x0, u_prev, U, options, key, k, samples, null_samples, substeps, tableau, params, cells, segs,
                   table, cost_w, mlp_params, mlp_layout, eps):
    """Total cost (float64; +inf when invalid or non-finite) of sample ``k``; writes its eps column."""
    if k >= eps.shape[2]:
        return math.inf
    T = U.shape[0]
    ox, oy, inv_cell, nx, ny, length = load_track_table(table)
    sig0, sig1, k0_cost, k1_cost, alpha, beta, umin0, umin1, umax0, umax1 = sampling_settings(options)
    n_stages = np.int64(tableau[0])
    final = tableau[1 + 2 * MAX_STAGES]
    members = mlp_layout[0]
    member = (k // MEMBER_BLOCK) % members if members > 0 else 0
    feat = cuda.local.array(6, float32)
    h_a = cuda.local.array(MAX_HIDDEN, float32)
    h_b = cuda.local.array(MAX_HIDDEN, float32)
    s = (x0[0], x0[1], x0[2], x0[3], x0[4], x0[5], x0[6])
    prog_prev = track_lookup(x0[0], x0[1], cells, segs, ox, oy, inv_cell, nx, ny)[0]
    up0, up1 = u_prev[0], u_prev[1]
    n0, n1 = ZERO, ZERO
    crashed = ZERO
    keep = select(k < null_samples, ZERO, ONE)
    cost = float32(0.0)
    for t in range(T):
        nom0 = U[t, 0]
        nom1 = U[t, 1]
        w0, w1 = normal_pair(key, k, t)
        a_t = select(t > 0, alpha, ZERO)
        b_t = select(t > 0, beta, ONE)
        n0 = keep * (a_t * n0 + b_t * w0)
        n1 = keep * (a_t * n1 + b_t * w1)
        v0 = clip32(nom0 + sig0 * n0, umin0, umax0)
        v1 = clip32(nom1 + sig1 * n1, umin1, umax1)
        e0 = v0 - nom0
        e1 = v1 - nom1
        eps[t, 0, k] = e0
        eps[t, 1, k] = e1
        cost += k0_cost * nom0 * e0 + k1_cost * nom1 * e1
        feat[0], feat[1], feat[2], feat[3], feat[4], feat[5] = s[2], s[3], s[5], s[6], v0, v1
        for _ in range(substeps):
            s = rk_substep(s, v0, v1, n_stages, tableau, final, params)
        if members > 0:
            r = mlp_thread(feat, h_a, h_b, mlp_params, mlp_layout, member)
            s = (s[0], s[1], s[2], s[3] + r[0], s[4], s[5] + r[1], s[6] + r[2])
        prog, lat, wl, wr = track_lookup(s[0], s[1], cells, segs, ox, oy, inv_cell, nx, ny)
        stage, crashed = racing_stage_cost(prog, prog_prev, lat, wl, wr, s[3], s[5], s[6], v0 - up0, v1 - up1,
                                           crashed, length, cost_w)
        cost += stage
        prog_prev = prog
        up0, up1 = v0, v1
    total = float64(cost)
    if k >= samples or not total == total:
        return math.inf
    return total


class CudaBackend:
    """Device-resident problem and workspace; one kernel launch per MPPI iteration."""

    name = "cuda"

    def __init__(self, problem, model) -> None:
        from mbrl_control import MbrlError

        if not cuda.is_available():
            raise MbrlError("mppi: backend 'cuda' needs a CUDA GPU (or NUMBA_ENABLE_CUDASIM=1 for the simulator)")
        self.p = problem
        horizon = problem.horizon
        self.blocks = -(-problem.samples // THREADS)
        k_pad = self.blocks * THREADS
        t = problem.table
        self._sigma_on_device = float(problem.sigma[0])
        self.options = cuda.to_device(problem.options)
        self.cells = cuda.to_device(t.cells)
        self.segs = cuda.to_device(t.segments)
        self.table = cuda.to_device(t.scalars)
        self.cost_w = cuda.to_device(problem.cost_weights)
        self.eps = cuda.device_array((horizon, 2, k_pad), dtype=np.float32)
        self.part_min = cuda.device_array(self.blocks, dtype=np.float64)
        self.part_z = cuda.device_array(self.blocks, dtype=np.float64)
        self.part_q = cuda.device_array(self.blocks, dtype=np.float64)
        self.part_a = cuda.device_array((self.blocks, 2 * horizon), dtype=np.float64)
        self.counter = cuda.to_device(np.zeros(1, dtype=np.int32))
        self.result = cuda.device_array(2, dtype=np.float64)
        self.U = cuda.device_array((horizon, 2), dtype=np.float32)
        self.x0 = cuda.device_array(7, dtype=np.float32)
        self.u_prev = cuda.device_array(2, dtype=np.float32)
        self._result_host = np.zeros(2, dtype=np.float64)
        self.set_model(model)

    def set_model(self, model) -> None:
        """Copy a new model description to the device (arrays; the kernel is not recompiled)."""
        self.model = model
        self.params = cuda.to_device(model.params)
        self.tableau = cuda.to_device(model.tableau)
        self.mlp_params = cuda.to_device(model.residual.params)
        self.mlp_layout = cuda.to_device(model.residual.layout)

    def iterate(self, x0: np.ndarray, u_prev: np.ndarray, U: np.ndarray, key: int) -> tuple[float, float]:
        p, m = self.p, self.model
        if self._sigma_on_device != p.sigma[0]:  # the steering sigma follows the car's speed
            self._sigma_on_device = float(p.sigma[0])
            self.options.copy_to_device(p.options)
        self.x0.copy_to_device(np.ascontiguousarray(x0, dtype=np.float32))
        self.u_prev.copy_to_device(np.ascontiguousarray(u_prev, dtype=np.float32))
        self.U.copy_to_device(np.ascontiguousarray(U, dtype=np.float32))
        mppi_cuda_iteration[self.blocks, THREADS](
            self.x0, self.u_prev, self.U, self.options, np.uint64(key), p.samples, p.config.null_samples, m.substeps,
            self.tableau, self.params, self.cells, self.segs, self.table, self.cost_w, self.mlp_params,
            self.mlp_layout, self.eps, self.part_min, self.part_z, self.part_q, self.part_a, self.counter, self.result)
        self.U.copy_to_host(U)
        self.result.copy_to_host(self._result_host)
        return float(self._result_host[0]), float(self._result_host[1])


"""The CUDA side of MPPI: the problem-independent reductions and the device-resident data.

The generated kernel (:mod:`.mppi_generated`, ``CUDA_TEMPLATE``) runs one thread per sample over
the whole horizon (noise, model, residual MLP, cost terms: the same device functions as the CPU
kernel) and then calls :func:`combine_samples`: each block reduces its own samples to a partial
soft-min (its minimum cost ``m_b``, ``Z_b = sum exp(-(S - m_b)/lambda)``, the sum of squared
weights and the weighted perturbation sums ``A_b[t, c]``); the last block to finish (atomic
ticket after a memory fence, the "threadfence reduction" pattern) combines the partials with the
factors ``exp(-(m_b - m)/lambda)`` into the exact update ``U += sum_k w_k eps_k`` and writes the
minimum cost and the effective sample size. So one launch does a whole iteration and only ``U``
(T x m floats) travels between host and device.

:class:`CudaMPPI` keeps the bundles on the device; ``set_model`` replaces their arrays (same
types: no recompilation). Tested on the CPU with Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) against the Numba CPU kernel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from mbrl_control import MbrlError
from mbrl_control.kernels.bundles import CudaPartials, ModelData, Sampling
from mbrl_control.kernels.mppi_generated import context_data, cost_data, mppi_kernels
from mbrl_control.problem.definition import ControlProblem

THREADS = 128  # samples per block (a multiple of MEMBER_BLOCK)


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
def combine_samples(cost, U, eps, lam, partials, result):
    """Soft-min weights and the update of ``U`` from every thread's sample ``cost`` (see module docstring).

    ``result`` = [min cost, ESS]; ``partials`` a :class:`~.bundles.CudaPartials` of device arrays.
    """
    horizon, channels = U.shape[0], U.shape[1]
    tid = cuda.threadIdx.x
    blk = cuda.blockIdx.x
    s_w = cuda.shared.array(THREADS, float64)
    s_red = cuda.shared.array(THREADS, float64)
    s_last = cuda.shared.array(1, float64)
    m_b = block_reduced(s_red, tid, cost, True)
    w = math.exp(-(cost - m_b) / lam) if (cost < math.inf and m_b < math.inf) else 0.0
    s_w[tid] = w
    z_b = block_reduced(s_red, tid, w, False)
    q_b = block_reduced(s_red, tid, w * w, False)
    if tid == 0:
        partials.part_min[blk] = m_b
        partials.part_z[blk] = z_b
        partials.part_q[blk] = q_b
    k0 = blk * THREADS
    for pair in range(tid, channels * horizon, THREADS):
        t = pair // channels
        c = pair - channels * t
        acc = 0.0
        for j in range(THREADS):
            if k0 + j < eps.shape[2]:
                acc += s_w[j] * eps[t, c, k0 + j]
        partials.part_a[blk, pair] = acc
    # the last block to finish combines the partial sums
    cuda.threadfence()
    cuda.syncthreads()
    if tid == 0:
        ticket = cuda.atomic.add(partials.counter, 0, 1)
        s_last[0] = 1.0 if ticket == cuda.gridDim.x - 1 else 0.0
    cuda.syncthreads()
    if s_last[0] == 0.0:
        return
    combine_blocks(U, lam, partials, result, s_red)


@cuda.jit(device=True)
def combine_blocks(U, lam, partials, result, s_red):
    """In the last block: the global soft-min from the blocks' partials, ``U`` updated, ``result`` written."""
    horizon, channels = U.shape[0], U.shape[1]
    tid = cuda.threadIdx.x
    blocks = cuda.gridDim.x
    part_min = partials.part_min
    best = math.inf
    for b in range(tid, blocks, THREADS):
        best = min(best, part_min[b])
    m = block_reduced(s_red, tid, best, True)
    z = 0.0
    q = 0.0
    for b in range(tid, blocks, THREADS):
        scale = math.exp(-(part_min[b] - m) / lam) if part_min[b] < math.inf else 0.0
        z += scale * partials.part_z[b]
        q += scale * scale * partials.part_q[b]
    z_total = block_reduced(s_red, tid, z, False)
    q_total = block_reduced(s_red, tid, q, False)
    if m < math.inf and z_total > 0.0:
        for pair in range(tid, channels * horizon, THREADS):
            t = pair // channels
            c = pair - channels * t
            acc = 0.0
            for b in range(blocks):
                if part_min[b] < math.inf:
                    acc += math.exp(-(part_min[b] - m) / lam) * partials.part_a[b, pair]
            U[t, c] = U[t, c] + acc / z_total
    if tid == 0:
        result[0] = m
        result[1] = z_total * z_total / q_total if q_total > 0.0 else 0.0
        partials.counter[0] = 0


def _on_device(bundle):
    """The bundle with each array field copied to the device (integers kept)."""
    return type(bundle)(*(cuda.to_device(f) if isinstance(f, np.ndarray) else f for f in bundle))


class CudaMPPI:
    """Device-resident bundles and workspace of one problem; one launch of the generated kernel per iteration."""

    def __init__(self, problem: ControlProblem, sampling: Sampling, model: ModelData, horizon: int) -> None:
        if not cuda.is_available():
            raise MbrlError("mppi: backend 'cuda' needs a CUDA GPU (or NUMBA_ENABLE_CUDASIM=1 for the simulator)")
        self.sampling_host = sampling
        self.blocks = -(-sampling.samples // THREADS)
        m = problem.model.control_dim()
        self.eps = cuda.device_array((horizon, m, self.blocks * THREADS), dtype=np.float32)
        self.partials = CudaPartials(cuda.device_array(self.blocks, dtype=np.float64),
                                     cuda.device_array(self.blocks, dtype=np.float64),
                                     cuda.device_array(self.blocks, dtype=np.float64),
                                     cuda.device_array((self.blocks, m * horizon), dtype=np.float64),
                                     cuda.to_device(np.zeros(1, dtype=np.int32)))
        self.result = cuda.device_array(2, dtype=np.float64)
        self.U = cuda.device_array((horizon, m), dtype=np.float32)
        self.x0 = cuda.device_array(problem.model.state_dim(), dtype=np.float32)
        self.u_prev = cuda.device_array(m, dtype=np.float32)
        self._result_host = np.zeros(2, dtype=np.float64)
        self._options_on_device = sampling.options.copy()
        self.sampling = _on_device(sampling)
        self._context_of, self._weights = None, None
        self.set_model(problem, model)

    def set_model(self, problem: ControlProblem, model: ModelData) -> None:
        """Copy a problem's model data to the device (and its cost weights / context when they changed);
        a new problem shape loads its own kernel."""
        self.kernel = mppi_kernels(problem).cuda.mppi_iteration
        self.model = _on_device(model)
        if self._context_of is not problem.context:
            self.context = _on_device(context_data(problem.context))
            self._context_of = problem.context
        weights = cost_data(problem)
        if self._weights is None or not np.array_equal(self._weights.weights, weights.weights):
            self.cost = _on_device(weights)
            self._weights = weights

    def _sync_options(self) -> None:
        """Follow changes of the host options (e.g. the steering sigma set for the car's speed)."""
        options = self.sampling_host.options
        if not np.array_equal(options, self._options_on_device):
            self._options_on_device[:] = options
            self.sampling.options.copy_to_device(options)

    def iterate(self, x0: np.ndarray, u_prev: np.ndarray, U: np.ndarray, key: int) -> tuple[float, float]:
        self._sync_options()
        self.x0.copy_to_device(np.ascontiguousarray(x0, dtype=np.float32))
        self.u_prev.copy_to_device(np.ascontiguousarray(u_prev, dtype=np.float32))
        self.U.copy_to_device(np.ascontiguousarray(U, dtype=np.float32))
        self.kernel[self.blocks, THREADS](self.x0, self.u_prev, self.U, np.uint64(key), self.sampling, self.model,
                                          self.context, self.cost, self.eps, self.partials, self.result)
        self.U.copy_to_host(U)
        self.result.copy_to_host(self._result_host)
        return float(self._result_host[0]), float(self._result_host[1])

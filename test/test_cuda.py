"""The CUDA backend, run on the CPU by Numba's CUDA simulator, against the Numba CPU kernel.

The simulator must be enabled before Numba is imported, so the comparison runs in a
subprocess with ``NUMBA_ENABLE_CUDASIM=1`` (tiny sizes: the simulator interprets every thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(r"""
    import json, sys
    import numpy as np, torch
    from numba import cuda
    assert cuda.simulator is not None or True
    from mbrl_control.config import load_vehicle_params
    from mbrl_control.control.mppi import MPPIConfig, kernel_model, racing_problem, racing_sampling, steer_sigma_at
    from mbrl_control.control.mppi_solver import CudaBackend, NumbaBackend
    from mbrl_control.kernels.mppi_cuda import THREADS
    from mbrl_control.problem.track_context import TrackTable
    from mbrl_control.models.bicycle import DynamicSingleTrack
    from mbrl_control.models.residual import ResidualEnsemble
    from mbrl_control.models.semiparametric import SemiParametricModel
    from mbrl_control.sim.plant import initial_state_at
    from mbrl_control.track import resolve_track

    params = load_vehicle_params()
    track = resolve_track("default")
    table = TrackTable(track, 0.2)
    physics = DynamicSingleTrack(params, dt_s=0.02, dtype=torch.float32)
    ens = ResidualEnsemble(2, (8,), seed=3)
    with torch.no_grad():
        ens.weights[-1].mul_(0.3)
    cases = [("dynamic", physics, None), ("semiparametric", SemiParametricModel(physics, ens).float(), None),
             ("dynamic, steering sigma of 12 m/s", physics, 12.0)]
    out = {}
    x, y, yaw = track.start_pose()
    x0 = initial_state_at(x, y, yaw, 3.0, params).astype(np.float32)
    u_prev = np.array([0.01, 1.0], dtype=np.float32)
    for name, model, speed in cases:
        cfg = MPPIConfig(samples=THREADS + 3, horizon=4, noise_alpha=0.5, temperature=3.0)
        problem, sampling = racing_problem(model, table, cfg.cost_config()), racing_sampling(cfg, params)
        desc = kernel_model(model)
        cpu, gpu = NumbaBackend(problem, sampling, desc), CudaBackend(problem, sampling, desc)
        if speed is not None:
            sampling.sigma[0] = steer_sigma_at(cfg, speed)  # after both backends exist: the GPU's copy must follow
        U_cpu = np.tile(np.array([[0.05, 2.0]], dtype=np.float32), (4, 1))
        U_gpu = U_cpu.copy()
        best_cpu, ess_cpu = cpu.iterate(x0, u_prev, U_cpu, 4242)
        best_gpu, ess_gpu = gpu.iterate(x0, u_prev, U_gpu, 4242)
        U_again = np.tile(np.array([[0.05, 2.0]], dtype=np.float32), (4, 1))
        again = gpu.iterate(x0, u_prev, U_again, 4242)  # the block counter was reset
        out[name] = {"best": [best_cpu, best_gpu, again[0]], "ess": [ess_cpu, ess_gpu],
                     "U_cpu": U_cpu.tolist(), "U_gpu": U_gpu.tolist(), "U_again": U_again.tolist()}
    print("RESULT" + json.dumps(out))
""")


def test_cuda_kernel_in_simulator_matches_numba_cpu_kernel():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    results = json.loads(line[len("RESULT"):])
    import numpy as np

    for name, r in results.items():
        best_cpu, best_gpu, best_again = r["best"]
        assert best_gpu == best_again, name
        assert abs(best_cpu - best_gpu) <= 1e-4 * max(1.0, abs(best_cpu)), name
        assert abs(r["ess"][0] - r["ess"][1]) <= 1e-3 * r["ess"][0], name
        U_cpu, U_gpu = np.array(r["U_cpu"]), np.array(r["U_gpu"])
        assert np.linalg.norm(U_cpu - U_gpu) <= 1e-4 * np.linalg.norm(U_cpu), name
        np.testing.assert_array_equal(U_gpu, np.array(r["U_again"]))
        assert not np.allclose(U_cpu, np.tile([[0.05, 2.0]], (4, 1)))

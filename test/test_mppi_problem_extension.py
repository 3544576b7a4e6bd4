"""Acceptance 1, MPPI part: a model and a cost term defined in one file each, outside the package
(``unicycle_model.py``, ``goal_cost.py``), run by MPPI on the Numba, torch and CUDA backends
(the CUDA kernel in Numba's simulator), which agree, and drive the unicycle to the goal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from goal_cost import GoalCost
from mbrl_control.control.mppi_solver import (MPPISolver, NumbaBackend, PredictionModel, SamplingSettings,
                                              SolverConfig, TorchBackend)
from mbrl_control.problem.definition import ControlProblem, CostSpec
from numpy_rk4 import rk4_step
from unicycle_model import Unicycle, UnicycleParams

PARAMS = UnicycleParams()
GOAL = np.array([3.0, 2.0])  # GoalCost's default goal_x, goal_y
CONFIG = SolverConfig(samples=256, horizon=25, sigma=(0.8, 1.0), temperature=0.5, noise_alpha=0.5,
                      smoothing_window=5, seed=3)


def _problem() -> ControlProblem:
    return ControlProblem(Unicycle, (CostSpec(GoalCost, GoalCost.weight_vector()),), dt_s=0.1, integrator="rk4",
                          substeps=2)


def _plant_step(x: np.ndarray, u: np.ndarray, dt: float = 0.1, substeps: int = 4) -> np.ndarray:
    """The plant: RK4 of the float64 NumPy evaluation of the same definition, finer than the model's."""
    return rk4_step(Unicycle, PARAMS, x, u, dt, substeps)


def test_numba_and_torch_backends_agree_on_the_new_problem():
    problem = _problem()
    sampling = SamplingSettings(CONFIG, *Unicycle.control_bounds(PARAMS))
    numba_backend = NumbaBackend(problem, sampling, PredictionModel(PARAMS))
    torch_backend = TorchBackend(problem, sampling, PredictionModel(PARAMS))  # the definition in float64
    x0 = np.array([0.0, 0.0, 0.3, 0.5], dtype=np.float32)
    u_prev = np.array([0.1, 0.2], dtype=np.float32)
    U_a = np.tile(np.array([[0.2, 0.5]], dtype=np.float32), (CONFIG.horizon, 1))
    U_b = U_a.copy()
    best_a, ess_a = numba_backend.iterate(x0, u_prev, U_a, key=2024)
    best_b, ess_b = torch_backend.iterate(x0, u_prev, U_b, key=2024)
    assert best_a == pytest.approx(best_b, rel=1e-4, abs=1e-3)
    assert ess_a == pytest.approx(ess_b, rel=1e-3)
    assert 1.0 < ess_a < CONFIG.samples
    assert np.linalg.norm(U_a - U_b) <= 1e-4 * np.linalg.norm(U_b)
    assert not np.allclose(U_a, np.tile([[0.2, 0.5]], (CONFIG.horizon, 1)))


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_mppi_drives_the_unicycle_to_the_goal(backend):
    solver = MPPISolver(_problem(), PredictionModel(PARAMS), SolverConfig(**{**CONFIG.__dict__, "backend": backend}))
    x = np.array([0.0, 0.0, 0.3, 0.0])
    lo, hi = Unicycle.control_bounds(PARAMS)
    for _ in range(80):  # 8 s
        u = solver.step(x.astype(np.float32))
        assert u is not None and np.all(lo <= u) and np.all(u <= hi)
        x = _plant_step(x, u)
    assert np.hypot(*(x[:2] - GOAL)) < 0.2 and abs(x[3]) < 0.3
    plan = solver.nominal_states(x.astype(np.float32))
    assert plan.shape == (CONFIG.horizon, 4) and np.all(np.hypot(*(plan[:, :2] - GOAL).T) < 0.5)


CUDA_SCRIPT = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from goal_cost import GoalCost
    from unicycle_model import Unicycle, UnicycleParams
    from mbrl_control.control.mppi_solver import (CudaBackend, NumbaBackend, PredictionModel, SamplingSettings,
                                                  SolverConfig, TorchBackend)
    from mbrl_control.kernels.mppi_cuda import THREADS
    from mbrl_control.problem.definition import ControlProblem, CostSpec

    params = UnicycleParams()
    problem = ControlProblem(Unicycle, (CostSpec(GoalCost, GoalCost.weight_vector()),), dt_s=0.1, substeps=2)
    config = SolverConfig(samples=THREADS + 5, horizon=5, sigma=(0.8, 1.0), temperature=0.5, noise_alpha=0.5)
    sampling = SamplingSettings(config, *Unicycle.control_bounds(params))
    x0 = np.array([0.0, 0.0, 0.3, 0.5], dtype=np.float32)
    u_prev = np.array([0.1, 0.2], dtype=np.float32)
    out = {}
    for name, cls in (("numba", NumbaBackend), ("torch", TorchBackend), ("cuda", CudaBackend)):
        U = np.tile(np.array([[0.2, 0.5]], dtype=np.float32), (5, 1))
        best, ess = cls(problem, sampling, PredictionModel(params)).iterate(x0, u_prev, U, 99)
        out[name] = {"best": best, "ess": ess, "U": U.tolist()}
    print("RESULT" + json.dumps(out))
""")


def test_cuda_backend_in_simulator_agrees_with_numba_and_torch_on_the_new_problem():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", CUDA_SCRIPT, str(Path(__file__).parent)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[6:])
    reference = results["numba"]
    for name in ("torch", "cuda"):
        r = results[name]
        assert r["best"] == pytest.approx(reference["best"], rel=1e-4, abs=1e-3), name
        assert r["ess"] == pytest.approx(reference["ess"], rel=1e-3), name
        U, U_ref = np.array(r["U"]), np.array(reference["U"])
        assert np.linalg.norm(U - U_ref) <= 1e-4 * np.linalg.norm(U_ref), name
    assert not np.allclose(reference["U"], np.tile([[0.2, 0.5]], (5, 1)))

"""bicycle-track as a ControlProblem: the model and cost definitions equal PROBLEM.md's equations
(``benchmarks/bicycle_track/problem.py``), and the generic MPPI solver optimises the problem."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mbrl_control.benchmarks import bicycle_track as bt
from mbrl_control.control.mppi_solver import NumbaBackend, PredictionModel, SamplingSettings, nominal_states
from mbrl_control.models.motion_model import numpy_derivative, torch_derivative
from mbrl_control.ops import numpy_ops, record

PARAMS = bt.BicycleTrackParams()


def _samples(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = np.column_stack([rng.uniform(-7, 7, n), rng.uniform(-7, 7, n), rng.uniform(-9, 9, n), rng.uniform(-1, 5, n)])
    us = np.column_stack([rng.uniform(-4, 4, n), rng.uniform(-0.4, 0.4, n)])
    return xs, us


def test_euler_step_of_the_derivative_is_the_problem_model():
    xs, us = _samples()
    euler = xs + bt.DT_S * numpy_derivative(bt.BicycleTrackModel, xs, us, PARAMS)
    np.testing.assert_allclose(euler, bt.step(xs, us), rtol=1e-12, atol=1e-12)
    f_torch = torch_derivative(bt.BicycleTrackModel, torch.tensor(xs), torch.tensor(us), PARAMS).numpy()
    np.testing.assert_allclose(f_torch, numpy_derivative(bt.BicycleTrackModel, xs, us, PARAMS), rtol=1e-12, atol=1e-12)
    # closed form of PROBLEM.md section 1 at one point
    x, u = np.array([1.0, 2.0, 0.3, 2.0]), np.array([0.5, 0.2])
    beta = math.atan(bt.LR_M / bt.WHEELBASE_M * math.tan(0.2))
    expected = [2.0 * math.cos(0.3 + beta), 2.0 * math.sin(0.3 + beta), 2.0 / bt.LR_M * math.sin(beta), 0.5]
    np.testing.assert_allclose(numpy_derivative(bt.BicycleTrackModel, x, u, PARAMS), expected, rtol=1e-13)
    lo, hi = bt.BicycleTrackModel.control_bounds(PARAMS)
    np.testing.assert_array_equal(lo, bt.U_MIN)
    np.testing.assert_array_equal(hi, bt.U_MAX)


def test_cost_definition_is_the_problem_stage_cost():
    xs, us = _samples(seed=1)
    term = bt.BicycleTrackCost
    x = bt.BicycleTrackModel.state_record(tuple(xs.T))
    u = bt.BicycleTrackModel.control_record(tuple(us.T))
    w = record(term.weight_names(), term.weight_vector().astype(np.float64))
    cost, carry = term.stage(numpy_ops, x, u, u, record((), ()), record((), ()), w)
    assert carry == ()
    np.testing.assert_allclose(cost, bt.stage_cost(xs, us), rtol=1e-6, atol=1e-6)  # weights stored as float32
    exact = record(term.weight_names(), [w.default for w in term.weights])
    cost64, _ = term.stage(numpy_ops, x, u, u, record((), ()), record((), ()), exact)
    np.testing.assert_allclose(cost64, bt.stage_cost(xs, us), rtol=1e-12, atol=1e-12)


def test_generated_rollout_and_solver_settings():
    problem = bt.control_problem()
    assert problem.integrator == "euler" and problem.substeps == 1 and problem.dt_s == bt.DT_S
    rng = np.random.default_rng(2)
    U = rng.uniform(bt.U_MIN, bt.U_MAX, size=(bt.HORIZON, 2)).astype(np.float32)
    x0 = np.array([5.0, 0.2, 1.4, 2.5])
    states = nominal_states(problem, PredictionModel(PARAMS).data(problem), x0, U)
    x, expected = x0, []
    for t in range(bt.HORIZON):
        x = bt.step(x, U[t].astype(np.float64))
        expected.append(x)
    np.testing.assert_allclose(states, np.array(expected), rtol=1e-4, atol=2e-4)  # float32 kernel, 56 steps

    canonical = bt.solver_config(bt.BicycleTrackSettings.canonical(2000), seed=3)
    assert (canonical.samples, canonical.horizon, canonical.sigma) == (2000, bt.HORIZON, tuple(bt.SIGMA))
    assert (canonical.temperature, canonical.control_cost_weight) == (bt.LAMBDA, 1.0)
    assert (canonical.noise_alpha, canonical.null_samples, canonical.smoothing()) == (0.0, 0, (0, 0))
    assert canonical.shift_fill == "zero" and canonical.seed == 3 and canonical.iterations == 1
    tuned = bt.solver_config(bt.BicycleTrackSettings.tuned(2000))
    assert tuned.null_samples == 1 and tuned.smoothing() == (9, 2)


def test_generic_solver_reduces_the_trajectory_cost():
    problem = bt.control_problem()
    config = bt.solver_config(bt.BicycleTrackSettings.canonical(1024), seed=4)
    backend = NumbaBackend(problem, SamplingSettings(config, bt.U_MIN, bt.U_MAX), PredictionModel(PARAMS))
    x0 = np.array([5.3, -0.4, 1.9, 1.0])
    U = np.zeros((config.horizon, 2), dtype=np.float32)
    costs = [float(bt.trajectory_cost(x0, U))]
    from mbrl_control.kernels.noise import stream_key

    for i in range(8):
        best, ess = backend.iterate(x0.astype(np.float32), np.zeros(2, np.float32), U, stream_key(4, i))
        assert math.isfinite(best) and 1.0 <= ess <= config.samples
        costs.append(float(bt.trajectory_cost(x0, U)))
    assert np.all(np.abs(U) <= bt.U_MAX + 1e-6)
    assert costs[-1] < 0.5 * costs[0]
    assert costs[-1] < min(costs[:4])


@pytest.mark.parametrize("variant", ["canonical", "tuned"])
def test_controller_is_deterministic_for_a_seed(variant):
    settings = getattr(bt.BicycleTrackSettings, variant)(256, horizon=20)
    a, b = bt.make_bicycle_mppi("numba", settings, seed=7), bt.make_bicycle_mppi("numba", settings, seed=7)
    x = bt.X0.copy()
    for _ in range(5):
        ua, ub = a(x), b(x)
        np.testing.assert_array_equal(ua, ub)
        assert np.all(bt.U_MIN <= ua) and np.all(ua <= bt.U_MAX)
        x = bt.step(x, ua)
    np.testing.assert_array_equal(a.U[-1], [0.0, 0.0])  # warm start padded with u = 0
    with pytest.raises(ValueError):
        bt.make_bicycle_mppi("cuda", settings)

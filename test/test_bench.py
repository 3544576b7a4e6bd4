"""bicycle-track (PROBLEM.md) exactly, MPPI on it against an independent float64 reference, and the bench CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mbrl_control.apps.cli import main as cli_main
from mbrl_control.benchmarks import bicycle_track as bt
from mbrl_control.kernels.noise import normal_pairs_numpy, stream_key


def test_model_matches_closed_forms():
    x = np.array([1.0, 2.0, 0.3, 2.0])
    straight = bt.step(x, np.array([1.5, 0.0]))
    np.testing.assert_allclose(straight, [1 + 0.05 * 2 * math.cos(0.3), 2 + 0.05 * 2 * math.sin(0.3), 0.3, 2.075])
    delta = 0.2
    beta = math.atan(0.17 / 0.33 * math.tan(delta))
    turned = bt.step(x, np.array([0.0, delta]))
    assert turned[2] == pytest.approx(0.3 + 0.05 * 2.0 / 0.17 * math.sin(beta))
    assert turned[0] == pytest.approx(1 + 0.1 * math.cos(0.3 + beta))
    # torch and NumPy agree (and the torch heading term is the wrap-safe form of PROBLEM.md)
    rng = np.random.default_rng(0)
    xs = np.column_stack([rng.uniform(-7, 7, 500), rng.uniform(-7, 7, 500), rng.uniform(-9, 9, 500), rng.uniform(-1, 5, 500)])
    us = np.column_stack([rng.uniform(-4, 4, 500), rng.uniform(-0.4, 0.4, 500)])
    np.testing.assert_allclose(bt.step_torch(torch.tensor(xs), torch.tensor(us)).numpy(), bt.step(xs, us), atol=1e-12)
    np.testing.assert_allclose(bt.stage_cost_torch(torch.tensor(xs), torch.tensor(us)).numpy(), bt.stage_cost(xs, us),
                               rtol=1e-9, atol=1e-9)


def test_stage_cost_is_zero_only_on_the_reference_motion():
    on_circle = np.array([0.0, 5.0, math.pi, 3.0])  # at (0, 5), heading -x: CCW tangent
    assert bt.stage_cost(on_circle, np.zeros(2)) == pytest.approx(0.0, abs=1e-12)
    off = on_circle + np.array([0.0, 0.1, 0.0, 0.0])
    assert bt.stage_cost(off, np.zeros(2)) == pytest.approx(10 * 0.1**2)
    controls = np.zeros((3, 2))
    total = bt.trajectory_cost(bt.X0, controls)
    x = bt.X0.copy()
    expected = 0.0
    for _ in range(3):
        x = bt.step(x, np.zeros(2))
        expected += bt.stage_cost(x, np.zeros(2))
    assert total == pytest.approx(expected)  # charged on the resulting states
    assert bt.stage_cost(bt.X0, np.zeros(2)) == pytest.approx(9.0)


def _reference_canonical_step(U: np.ndarray, x0: np.ndarray, key: int, samples: int) -> np.ndarray:
    """PROBLEM.md section 3, in float64 NumPy, with the same noise counters as the kernels."""
    noise = normal_pairs_numpy(key, samples, len(U))
    V = np.clip(U + bt.SIGMA * noise, bt.U_MIN, bt.U_MAX)
    eps = V - U
    S = bt.trajectory_cost(x0, V) + bt.LAMBDA * np.sum(U / bt.SIGMA**2 * eps, axis=(1, 2))
    w = np.exp(-(S - S.min()) / bt.LAMBDA)
    w /= w.sum()
    return U + np.einsum("k,ktc->tc", w, eps)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_mppi_on_bicycle_track_matches_float64_reference(backend):
    settings = bt.BicycleTrackSettings.canonical(samples=300, horizon=20)
    controller = bt.make_bicycle_mppi(backend, settings, seed=5)
    x0 = np.array([5.2, 0.3, 1.7, 1.5])
    u = controller(x0)
    reference = _reference_canonical_step(np.zeros((20, 2)), x0, stream_key(5, 0), 300)
    np.testing.assert_allclose(u, reference[0], rtol=1e-4, atol=2e-5)
    U_after = controller.U if isinstance(controller.U, np.ndarray) else controller.U.numpy()
    np.testing.assert_allclose(U_after[:-1], reference[1:], rtol=1e-4, atol=2e-5)  # shifted warm start
    np.testing.assert_array_equal(U_after[-1], [0.0, 0.0])


def test_tuned_variant_tracks_the_circle_closely():
    controller = bt.make_bicycle_mppi("numba", bt.BicycleTrackSettings.tuned(samples=512), seed=0)
    result = bt.run_closed_loop(controller, steps=bt.CLOSED_LOOP_STEPS)
    q = bt.quality(result.states)
    assert q.mean_abs_d_m < 0.06 and q.mean_abs_speed_error_mps < 0.3
    timing = bt.timing(result.times_ms)
    assert timing.median_ms > 0 and timing.p95_ms >= timing.median_ms


def _run_json(capsys, *argv) -> list[dict]:
    assert cli_main(["bench", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_cli_bicycle_track_side_by_side_json(capsys):
    rows = _run_json(capsys, "--problem", "bicycle-track", "--samples", "64", "--steps", "12", "--seeds", "0",
                     "--peer", "pytorch-mppi")
    (row,) = rows
    for key in ("controller", "backend", "problem", "samples", "horizon", "median_ms", "p95_ms", "peer", "peer_median_ms"):
        assert key in row
    assert row["problem"] == "bicycle-track" and row["samples"] == 64 and row["horizon"] == 56
    assert row["peer"] == "pytorch-mppi" and row["peer_median_ms"] > 0


def test_bench_cli_track_problem_json(capsys):
    rows = _run_json(capsys, "--problem", "track", "--track", "default", "--samples", "64", "96", "--horizon", "12",
                     "--steps", "12")
    assert [r["samples"] for r in rows] == [64, 96]
    assert all(r["problem"] == "track" and r["median_ms"] > 0 for r in rows)


def test_bench_cli_dispatches_ilqr(monkeypatch, capsys):
    import mbrl_control.apps.ilqr_bench as ilqr_bench

    seen = {}

    def fake(args):
        seen["problem"] = args.problem
        return [{"controller": "ilqr", "backend": "numba", "problem": args.problem, "samples": None, "horizon": 56,
                 "median_ms": 1.0, "p95_ms": 2.0}]

    monkeypatch.setattr(ilqr_bench, "run_ilqr_bench", fake)
    rows = _run_json(capsys, "--controller", "ilqr", "--problem", "bicycle-track")
    assert seen["problem"] == "bicycle-track" and rows[0]["controller"] == "ilqr"


def test_bench_cli_bad_arguments_exit_2_with_one_line(capsys):
    assert cli_main(["bench", "--steps", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--steps" in err[0]
    assert cli_main(["bench", "--problem", "track", "--residual", "a,b", "--samples", "8", "--steps", "11"]) == 2
    assert "--residual" in capsys.readouterr().err

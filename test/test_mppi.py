"""MPPI controller: backends agree on the same noise, safety of the commands, hot swap, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.config import load_vehicle_params
from mbrl_control.control.factory import make_controller
from mbrl_control.control.mppi import (MPPIConfig, MPPIController, kernel_model, racing_problem, racing_sampling,
                                      steer_sigma_at)
from mbrl_control.control.mppi_solver import NumbaBackend, TorchBackend
from mbrl_control.kernels.mppi_generated import mppi_kernels
from mbrl_control.models.bicycle import DynamicSingleTrack, KinematicBicycle
from mbrl_control.models.layout import S, U
from mbrl_control.models.residual import ResidualEnsemble
from mbrl_control.models.semiparametric import SemiParametricModel
from mbrl_control.problem.track_context import TrackTable
from mbrl_control.sim.plant import initial_state_at
from mbrl_control.track import resolve_track

PARAMS = load_vehicle_params()
DT = 0.02


@pytest.fixture(scope="module")
def track():
    return resolve_track("default")


@pytest.fixture(scope="module")
def table(track):
    return TrackTable(track, 0.2)


def _start(track, speed=3.0):
    x, y, yaw = track.start_pose()
    return initial_state_at(x, y, yaw, speed, PARAMS).astype(np.float32)


def _semiparametric(members=2, hidden=(16, 16)):
    ens = ResidualEnsemble(members, hidden, seed=1)
    with torch.no_grad():  # a residual large enough to matter over the horizon
        ens.weights[-1].mul_(3.0)
    ens.set_normalisation([0.0, 3.0, 0.0, 0.0, 0.0, 0.0], [0.2, 2.0, 1.0, 0.1, 0.2, 3.0],
                          [0.0, 0.0, 0.0], [0.05, 0.1, 0.01])
    physics = DynamicSingleTrack(PARAMS, dt_s=DT, dtype=torch.float32)
    return SemiParametricModel(physics, ens).float()


MODELS = {
    "dynamic": lambda: DynamicSingleTrack(PARAMS, dt_s=DT, dtype=torch.float32),
    "kinematic-euler": lambda: KinematicBicycle(PARAMS, dt_s=DT, integrator="euler", substeps=2, dtype=torch.float32),
    "semiparametric": _semiparametric,
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("alpha,nulls", [(0.0, 1), (0.6, 0)])
def test_numba_and_torch_backends_agree_on_the_same_noise(track, table, name, alpha, nulls):
    model = MODELS[name]()
    cfg = MPPIConfig(samples=200, horizon=25, noise_alpha=alpha, null_samples=nulls, temperature=5.0)
    problem, sampling = racing_problem(model, table, cfg.cost_config()), racing_sampling(cfg, PARAMS)
    numba_backend = NumbaBackend(problem, sampling, kernel_model(model))
    torch_backend = TorchBackend(problem, sampling, kernel_model(model))
    x0 = _start(track)
    u_prev = np.array([0.02, 1.0], dtype=np.float32)
    U_a = np.tile(np.array([[0.05, 2.0]], dtype=np.float32), (25, 1))
    U_b = U_a.copy()
    best_a, ess_a = numba_backend.iterate(x0, u_prev, U_a, key=987654321)
    best_b, ess_b = torch_backend.iterate(x0, u_prev, U_b, key=987654321)
    assert best_a == pytest.approx(best_b, rel=1e-4, abs=1e-3)
    assert ess_a == pytest.approx(ess_b, rel=1e-3)
    assert 1.0 < ess_a < 200  # a real weighted average, not a single sample
    assert np.linalg.norm(U_a - U_b) <= 1e-4 * np.linalg.norm(U_b)
    assert np.linalg.norm(U_a - 0.0) > 0 and not np.allclose(U_a, np.tile([[0.05, 2.0]], (25, 1)))



def test_steering_noise_shrinks_as_the_inverse_square_of_speed_above_the_reference(track, table):
    """Closed form of the speed-scaled steering sigma; the kernel applies it; numba and torch still agree."""
    cfg = MPPIConfig(samples=256, horizon=12, steer_noise_ref_speed_mps=4.0, noise_alpha=0.0, null_samples=0,
                     temperature=5.0)
    base = cfg.sigma_steer_rad
    assert steer_sigma_at(cfg, 3.0) == base and steer_sigma_at(cfg, 4.0) == base
    assert steer_sigma_at(cfg, 8.0) == pytest.approx(base / 4) and steer_sigma_at(cfg, -12.0) == pytest.approx(base / 9)
    assert steer_sigma_at(cfg, float("nan")) == base
    assert steer_sigma_at(MPPIConfig(steer_noise_ref_speed_mps=0.0), 20.0) == base  # 0: constant sigma

    def applied_steer_noise(speed):
        model = MODELS["dynamic"]()
        problem, sampling = racing_problem(model, table, cfg.cost_config()), racing_sampling(cfg, PARAMS)
        backend = NumbaBackend(problem, sampling, kernel_model(model))
        sampling.sigma[0] = steer_sigma_at(cfg, speed)
        U = np.zeros((12, 2), dtype=np.float32)  # nothing is clipped around a zero nominal
        backend.iterate(_start(track, speed), np.zeros(2, dtype=np.float32), U, key=42)
        return backend.eps[:, 0, :256].copy(), (problem, sampling), U

    slow, _, _ = applied_steer_noise(2.0)
    fast, problem, U_numba = applied_steer_noise(8.0)
    np.testing.assert_allclose(fast, slow / 4.0, rtol=1e-5, atol=1e-9)  # the same draws, a quarter of the spread
    U_torch = np.zeros((12, 2), dtype=np.float32)
    TorchBackend(*problem, kernel_model(MODELS["dynamic"]())).iterate(_start(track, 8.0), np.zeros(2, dtype=np.float32),
                                                                      U_torch, key=42)
    assert np.linalg.norm(U_numba - U_torch) <= 1e-4 * np.linalg.norm(U_torch)

def test_controller_is_deterministic_for_a_seed_and_differs_across_seeds(track, table):
    def commands(seed):
        c = MPPIController(PARAMS, DT, track, MODELS["dynamic"](), MPPIConfig(samples=128, horizon=20, seed=seed),
                           table=table)
        x = _start(track)
        c.reset(x)
        return np.array([c.step(x + np.float32(0.01 * i)) for i in range(4)])

    a, b, c = commands(0), commands(0), commands(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_commands_are_finite_and_within_limits_for_any_state(track, table):
    c = MPPIController(PARAMS, DT, track, MODELS["dynamic"](), MPPIConfig(samples=96, horizon=15), table=table)
    rng = np.random.default_rng(0)
    x = _start(track)
    c.reset(x)
    for i in range(12):
        state = x.astype(np.float64) + rng.normal(0, [3, 3, 0.3, 6, 3, 3, 0.3])
        if i == 5:
            state[S.V] = 1e30  # overflowing rollouts: every sample cost is non-finite
        u = c.step(state)
        assert np.all(np.isfinite(u))
        assert PARAMS.steer_min_rad <= u[U.STEER_CMD] <= PARAMS.steer_max_rad
        assert -PARAMS.accel_max_mps2 <= u[U.ACCEL] <= PARAMS.accel_max_mps2


def test_non_finite_state_gets_the_safe_stop_and_drops_the_warm_start(track, table):
    c = MPPIController(PARAMS, DT, track, MODELS["dynamic"](), MPPIConfig(samples=64, horizon=10), table=table)
    x = _start(track, speed=4.0).astype(np.float64)
    c.reset(x)
    c.step(x)
    assert np.any(c.U != 0)
    bad = x.copy()
    bad[S.YAW] = np.nan
    u = c.step(bad)
    # safe_stop_command: straight wheels, brake at 4 m/s^2 (speed is known)
    np.testing.assert_allclose(u, [0.0, -4.0])
    assert np.all(c.U == 0) and c.planned_xy() is None
    bad[S.V] = np.inf
    np.testing.assert_allclose(c.step(bad), [0.0, 0.0])  # speed unknown: no braking command
    assert np.all(np.isfinite(c.step(x)))  # and it recovers on the next finite state


def test_hot_swap_takes_effect_without_recompiling(track, table):
    cfg = MPPIConfig(samples=96, horizon=15)
    slippery = PARAMS.replace(friction_coeff=0.6)
    x = _start(track, speed=5.0)
    swapped = MPPIController(PARAMS, DT, track, MODELS["dynamic"](), cfg, table=table)
    swapped.reset(x)
    swapped.step(x)
    car_mppi_iteration = mppi_kernels(swapped.problem).cpu.mppi_iteration
    compiled = len(car_mppi_iteration.signatures)
    for model in (MODELS["semiparametric"](), MODELS["kinematic-euler"](),
                  DynamicSingleTrack(slippery, dt_s=DT, dtype=torch.float32)):
        swapped.set_model(model)
        swapped.step(x)
    assert len(car_mppi_iteration.signatures) == compiled
    assert swapped.model.params.friction_coeff == pytest.approx(0.6)
    # same state of the warm start and the noise counter: identical to a controller built with the new model
    fresh = MPPIController(PARAMS, DT, track, DynamicSingleTrack(slippery, dt_s=DT, dtype=torch.float32), cfg, table=table)
    fresh.U[:] = swapped.U
    fresh.u_prev[:] = swapped.u_prev
    fresh.calls = swapped.calls
    np.testing.assert_array_equal(swapped.step(x), fresh.step(x))


def test_planned_path_starts_at_the_car_and_follows_the_plan(track, table):
    c = MPPIController(PARAMS, DT, track, MODELS["dynamic"](), MPPIConfig(samples=64, horizon=12), table=table)
    x = _start(track, speed=3.0)
    c.reset(x)
    assert c.planned_xy() is None
    c.step(x)
    plan = c.planned_xy()
    assert plan.shape == (12, 2)
    assert np.hypot(*(plan[0] - x[[S.X, S.Y]])) < 3.0 * DT * 1.5
    assert np.all(np.hypot(*np.diff(plan, axis=0).T) < 0.2)


def test_short_closed_loop_drives_forward_on_the_track(track, table):
    from mbrl_control.sim.plant import PlantConfig, SingleTrackPlant

    c = MPPIController(PARAMS, DT, track, MODELS["dynamic"](), MPPIConfig(samples=256, horizon=40), table=table)
    plant = SingleTrackPlant(PARAMS, PlantConfig())
    x0, y0, yaw = track.start_pose()
    plant.reset(initial_state_at(x0, y0, yaw, 0.0, PARAMS))
    z = plant.measure()
    c.reset(z)
    inside = []
    for _ in range(150):
        z = plant.advance(c.step(z), DT)
        inside.append(bool(track.inside(z[[S.X, S.Y]])))
    progress = track.project(z[[S.X, S.Y]]).progress_m
    assert all(inside)
    assert 6.0 < progress < track.length_m / 2 and z[S.V] > 2.0


def test_config_errors_are_one_clear_mbrl_error(track):
    model = MODELS["dynamic"]()
    with pytest.raises(MbrlError, match="mppi: unknown parameter 'sampels'"):
        make_controller("mppi", PARAMS, DT, track, model, {"sampels": 10})
    with pytest.raises(MbrlError, match="unknown backend"):
        make_controller("mppi", PARAMS, DT, track, model, {"backend": "fpga"})
    with pytest.raises(MbrlError, match="smoothing_window"):
        make_controller("mppi", PARAMS, DT, track, model, {"smoothing_window": 4})
    with pytest.raises(MbrlError, match="mppi.cost: unknown parameter"):
        make_controller("mppi", PARAMS, DT, track, model, {"cost": {"nope": 1.0}})
    with pytest.raises(MbrlError, match="control period"):
        MPPIController(PARAMS, 0.05, track, model, MPPIConfig(samples=8, horizon=4, smoothing_window=0))
    controller = make_controller("mppi", PARAMS, DT, track, model, {"samples": 32, "horizon": 8, "cost": {"crash_cost": 500.0}})
    assert controller.config.cost_config().crash_cost == 500.0


def test_shipped_yaml_spells_out_the_defaults():
    import dataclasses

    from mbrl_control import share_dir
    from mbrl_control.config import load_yaml
    from mbrl_control.problem.costs.racing import RacingCostConfig

    section = load_yaml(share_dir() / "config" / "mppi.yaml")["controller_node"]["ros__parameters"]["mppi"]
    defaults = {f.name: getattr(MPPIConfig(), f.name) for f in dataclasses.fields(MPPIConfig) if f.name != "cost"}
    assert {k: v for k, v in section.items() if k != "cost"} == defaults
    assert section["cost"] == dataclasses.asdict(MPPIConfig().cost_config())
    assert MPPIConfig(cost={"progress_weight": 30.0}).cost_config() == RacingCostConfig(
        **{**dataclasses.asdict(MPPIConfig().cost_config()), "progress_weight": 30.0})  # a YAML overrides key by key

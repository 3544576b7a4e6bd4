"""The built-in plant (latency, noise, limits) and the command guard every controller output passes."""

from __future__ import annotations

import numpy as np
import torch

from mbrl_control.control.base import guard_command, safe_stop_command
from mbrl_control.models import DynamicSingleTrack, S, U
from mbrl_control.sim.plant import PlantConfig, SingleTrackPlant, initial_state_at


def test_plant_equals_model_without_latency_or_noise(params):
    plant = SingleTrackPlant(params)
    x0 = initial_state_at(0.0, 0.0, 0.0, 3.0, params)
    plant.reset(x0)
    model = DynamicSingleTrack(params, dt_s=0.02, substeps=2, dtype=torch.float64)
    x = torch.tensor(x0)
    u = np.array([0.1, 1.0])
    for _ in range(50):
        z = plant.advance(u, 0.02)
        x = model(x, torch.tensor(u))
    np.testing.assert_allclose(z, x.detach().numpy(), atol=1e-12)


def test_command_latency_delays_the_effect(params):
    plant = SingleTrackPlant(params, PlantConfig(command_latency_s=0.06))
    plant.reset(initial_state_at(0.0, 0.0, 0.0, 2.0, params))
    brake = np.array([0.0, -3.0])
    speeds = [plant.advance(brake, 0.02)[S.V] for _ in range(5)]
    assert speeds[0] == speeds[1] == speeds[2] == 2.0  # still coasting on the initial zero command
    assert speeds[3] < 2.0 and speeds[4] < speeds[3]


def test_sensor_noise_is_seeded(params):
    def measure(seed):
        plant = SingleTrackPlant(params, PlantConfig(position_noise_m=0.05, seed=seed))
        plant.reset(initial_state_at(0.0, 0.0, 0.0, 1.0, params))
        return np.array([plant.advance(np.zeros(2), 0.02) for _ in range(10)])

    np.testing.assert_array_equal(measure(1), measure(1))
    assert not np.array_equal(measure(1), measure(2))
    assert 0.01 < np.std(measure(1)[:, S.X] - np.linspace(0.02, 0.2, 10)) < 0.1


def test_guard_clips_and_replaces_nan(params):
    state = initial_state_at(0.0, 0.0, 0.0, 5.0, params)
    u, replaced = guard_command(np.array([2.0, -50.0]), state, params, 0.02)
    assert not replaced and u[U.STEER_CMD] == params.steer_max_rad and u[U.ACCEL] == -params.accel_max_mps2
    for bad in (np.array([np.nan, 0.0]), np.array([0.0, np.inf]), np.zeros(3)):
        u, replaced = guard_command(bad, state, params, 0.02)
        assert replaced and np.all(np.isfinite(u)) and u[U.STEER_CMD] == 0.0 and u[U.ACCEL] < 0
    nan_state = state.copy()
    nan_state[S.V] = np.nan
    u, replaced = guard_command(np.array([0.1, 1.0]), nan_state, params, 0.02)
    assert replaced and np.all(np.isfinite(u))


def test_safe_stop_does_not_reverse(params):
    state = initial_state_at(0.0, 0.0, 0.0, 0.02, params)
    u = safe_stop_command(state, params, 0.02)
    assert -1.0 - 1e-12 <= u[U.ACCEL] < 0  # exactly enough to stop within one period

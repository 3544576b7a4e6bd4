"""The real-car fit's prior (``RealFitConfig(prior="physics")``): what the data shows is fitted,
what it cannot show stays at the vehicle YAML's value. Recordings simulated by the model itself
from known parameters, so the truth is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mbrl_control import MbrlError
from mbrl_control.bag.csv_telemetry import Telemetry
from mbrl_control.models.predictor import CommandedCarPredictor, vehicle_params
from mbrl_control.sysid.real_fit import PRIOR_STD, RealFitConfig, fit_commanded_car

DART_VEHICLE = Path(__file__).resolve().parent.parent / "models" / "dart.yaml"
TYRES = ("tyre_peak_front_n", "tyre_peak_rear_n", "tyre_stiffness_front", "tyre_stiffness_rear", "tyre_shape")


def simulated_recording(params: dict, seconds: float, throttle: tuple[float, float], steering: float,
                        seed: int, dt: float = 0.01) -> Telemetry:
    """A recording of the model with ``params`` driven by piecewise-constant random commands
    (throttle uniform in ``throttle``, changed every 1 s; steering in +-``steering``, every 0.5 s)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds / dt))
    k = np.arange(n)
    cmd = np.stack([rng.uniform(*throttle, n // 100 + 1)[k // 100], rng.uniform(-steering, steering, n // 50 + 1)[k // 50]],
                   axis=1)
    start = np.array([0.0, 0.0, 0.0, 0.5, 0.0, 0.0])
    states = CommandedCarPredictor(params).predict(start, cmd[1:], dt=dt, past_commands=np.repeat(cmd[:1], 100, axis=0))
    state = np.vstack([start, states])
    return Telemetry("simulated", dt, dt * k, state, cmd, np.zeros(n, int), ("throttle_applied", "steering"),
                     "mocap_origin", seconds)


@pytest.fixture(scope="module")
def nominal() -> dict:
    return vehicle_params(DART_VEHICLE)


def test_excited_parameters_are_recovered(nominal) -> None:
    truth = dict(nominal, motor_force_n=1.3 * nominal["motor_force_n"], steer_dead_time_s=0.0,
                 steer_gain_left_rad=0.30)  # a dead time >= 0: a window needs no command after its end
    tel = simulated_recording(truth, 30.0, (0.25, 0.45), 0.8, seed=1)
    result = fit_commanded_car(tel, nominal)
    got = result.predictor.params
    assert result.final_cost < 0.05 * result.initial_cost
    assert got["motor_force_n"] == pytest.approx(truth["motor_force_n"], rel=0.06)  # trades with back-EMF, drag
    assert got["steer_dead_time_s"] == pytest.approx(truth["steer_dead_time_s"], abs=0.01)
    assert got["steer_gain_left_rad"] == pytest.approx(truth["steer_gain_left_rad"], rel=0.05)


def test_what_the_data_cannot_see_stays_at_the_prior(nominal) -> None:
    """A slow drive with little steering never loads the tyres: they stay at the YAML's values
    (within a fifth of their prior standard deviation) although the truth differs."""
    truth = dict(nominal, motor_force_n=1.3 * nominal["motor_force_n"], tyre_peak_front_n=4.0, tyre_shape=1.0)
    tel = simulated_recording(truth, 20.0, (0.18, 0.22), 0.3, seed=2)
    assert np.abs(tel.state[:, 3]).max() < 1.2  # never fast enough to load the tyres
    result = fit_commanded_car(tel, nominal)
    got = result.predictor.params
    assert result.held_at_prior >= 3
    moved = [abs(np.log(got[n] / nominal[n])) / PRIOR_STD[n][0] if PRIOR_STD[n][1] == "log"
             else abs(got[n] - nominal[n]) / PRIOR_STD[n][0] for n in TYRES]
    assert max(moved) < 0.2, dict(zip(TYRES, moved))
    assert got["motor_force_n"] == pytest.approx(truth["motor_force_n"], rel=0.1)  # what it does see is fitted


def test_uniform_prior_is_still_available_and_unknown_prior_is_refused(nominal) -> None:
    tel = simulated_recording(nominal, 8.0, (0.25, 0.4), 0.6, seed=3)
    result = fit_commanded_car(tel, nominal, RealFitConfig(prior="uniform", max_iterations=5))
    assert result.held_at_prior == 0 and result.final_cost <= result.initial_cost + 1e-12
    with pytest.raises(MbrlError, match="prior must be one of"):
        RealFitConfig(prior="flat")

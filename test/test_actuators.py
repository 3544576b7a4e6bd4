"""Actuator models against their closed forms, the published command for a given plan, identification."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from mbrl_control.config import load_vehicle_params
from mbrl_control.control.command_interface import (ActuationConfig, CommandInterface, f1tenth_speed_actuation,
                                                    load_actuation)
from mbrl_control.models.base import integrate_step
from mbrl_control.models.layout import S, U
from mbrl_control.models.motion_model import numpy_derivative
from mbrl_control.models.single_track import DynamicSingleTrackModel
from mbrl_control.models.speed_loop import speed_after, speed_setpoint_for
from mbrl_control import MbrlError
from mbrl_control.sim import make_plant
from mbrl_control.sim.plant import initial_state_at
from mbrl_control.sysid.actuator_id import identify_speed_loop, identify_steer_dead_time

PARAMS = load_vehicle_params()
DT = 0.02


def _speed_plant(v0=2.0, steer0=0.0, **changes):
    act = f1tenth_speed_actuation(PARAMS)
    if changes:
        act = ActuationConfig(**{**act.__dict__, **changes})
    plant = make_plant("dynamic", PARAMS, actuation=act)
    plant.reset(initial_state_at(0.0, 0.0, 0.0, v0, PARAMS))
    if steer0:
        state = plant.state
        state[S.STEER] = steer0
        plant.reset(state)
    return plant, act


def test_f1tenth_gains_are_the_community_simulator_values():
    act = f1tenth_speed_actuation(PARAMS)
    assert act.speed_gain_up_per_s == pytest.approx(4.755, abs=1e-3)
    assert act.speed_gain_down_per_s == pytest.approx(19.02, abs=1e-3)


@pytest.mark.parametrize("v0, v_set", [(2.0, 3.0), (5.0, 4.5), (3.0, 2.8)])
def test_speed_step_response_is_the_closed_form(v0, v_set):
    """Unsaturated steps: v(t) = v_set + (v0 - v_set) exp(-g t), g by direction."""
    plant, act = _speed_plant(v0)
    gain = act.speed_gain_up_per_s if v_set > v0 else act.speed_gain_down_per_s
    speeds = [plant.advance(np.array([0.0, 0.0, v_set]), DT)[S.V] for _ in range(15)]
    expected = speed_after(v0, v_set, gain, DT * np.arange(1, 16))
    np.testing.assert_allclose(speeds, expected, atol=1e-5)  # RK4 at 100 Hz


def test_speed_loop_saturates_at_the_acceleration_limit():
    plant, _ = _speed_plant(2.0)
    v1 = plant.advance(np.array([0.0, 0.0, 6.0]), DT)[S.V]  # 4.755 * 4 = 19 m/s^2 asked: a_max given
    assert (v1 - 2.0) / DT == pytest.approx(PARAMS.accel_max_mps2, rel=1e-3)


def test_steering_dead_time_then_full_rate_until_on_target():
    plant, act = _speed_plant(3.0)
    target = 0.2
    times = np.arange(1, 41) * 0.005
    steer = [plant.advance(np.array([target, 0.0, 3.0]), 0.005)[S.STEER] for _ in times]
    expected = np.clip((times - act.steer_dead_time_s) * PARAMS.steer_rate_max_radps, 0.0, target)
    np.testing.assert_allclose(steer, expected, atol=1e-9)


def test_setpoint_inverse_gives_the_planned_acceleration():
    """The loop's closed form over one period with the published set-point moves v by a dt."""
    for v, a in [(3.0, 2.0), (6.0, -7.0), (1.0, 0.3), (4.0, -0.1)]:
        v_set = speed_setpoint_for(v, a, DT, 4.755, 19.02)
        gain = 4.755 if a >= 0 else 19.02
        assert speed_after(v, v_set, gain, DT) - v == pytest.approx(a * DT, rel=1e-9)


def test_published_command_for_a_plan():
    u = np.zeros(2)
    u[U.STEER_CMD], u[U.ACCEL] = 0.1, -6.0
    state = initial_state_at(0, 0, 0, 5.0, PARAMS)
    accel_if = CommandInterface(ActuationConfig(), PARAMS, DT)
    np.testing.assert_allclose(accel_if.wire_command(u, state), [0.1, -6.0, 5.0 - 6.0 * DT])
    known = ActuationConfig(interface="speed", speed_gain_up_per_s=4.755, speed_gain_down_per_s=19.02)
    speed_if = CommandInterface(known, PARAMS, DT)
    wire = speed_if.wire_command(u, state)
    assert wire[2] == pytest.approx(5.0 - 6.0 * DT / (1 - np.exp(-19.02 * DT)))
    # the plant driven by that set-point produces the planned acceleration (no saturation, no drag)
    plant, _ = _speed_plant(5.0)
    v1 = plant.advance(wire, DT)[S.V]
    assert (v1 - 5.0) / DT == pytest.approx(-6.0, rel=1e-4)  # RK4 at 100 Hz
    # braking never sends a moving car into reverse; limits hold on every field
    slow = initial_state_at(0, 0, 0, 0.5, PARAMS)
    u[U.ACCEL] = -9.0
    assert speed_if.wire_command(u, slow)[2] == 0.0
    u[U.STEER_CMD], u[U.ACCEL] = 5.0, 100.0
    wire = speed_if.wire_command(u, initial_state_at(0, 0, 0, 19.9, PARAMS))
    assert wire[0] == PARAMS.steer_max_rad and wire[1] == PARAMS.accel_max_mps2 and wire[2] <= PARAMS.v_max_mps


def test_dead_time_prediction_matches_an_independent_integration():
    interface = CommandInterface(ActuationConfig(steer_dead_time_s=0.03), PARAMS, DT)
    state = initial_state_at(0, 0, 0.3, 4.0, PARAMS)
    sent = [np.array([0.05, 1.0]), np.array([0.15, -2.0])]
    for u in sent:
        interface.wire_command(u, state)
    predicted = interface.predict(state)
    # the last 0.03 s: 0.01 s of the older command, then 0.02 s of the newer one
    x = state
    for u, h in ((sent[0], 0.01), (sent[1], 0.02)):
        sol = solve_ivp(lambda t, s: numpy_derivative(DynamicSingleTrackModel, s, u, PARAMS), (0, h), x,
                        rtol=1e-10, atol=1e-12)
        x = sol.y[:, -1]
    np.testing.assert_allclose(predicted, x, atol=2e-3)  # RK4 over 10 and 20 ms
    assert np.max(np.abs(predicted - x)) < 0.1 * np.max(np.abs(state - x))  # far closer than no prediction
    x_swapped = state
    for u, h in ((sent[1], 0.01), (sent[0], 0.02)):
        x_swapped = solve_ivp(lambda t, s: numpy_derivative(DynamicSingleTrackModel, s, u, PARAMS), (0, h), x_swapped,
                              rtol=1e-10, atol=1e-12).y[:, -1]
    assert np.max(np.abs(predicted - x_swapped)) > 5 * np.max(np.abs(predicted - x))  # the order of commands matters


@pytest.mark.parametrize("sent_count", [2, 40])  # fewer than in flight; many, so that the ring wraps
def test_compiled_dead_time_prediction_is_rk4_over_the_commands_in_flight(sent_count):
    """The generated kernel against RK4 on the NumPy form of the same definition, over the last
    ceil(d / dt) commands sent (the oldest held for the remainder)."""
    interface = CommandInterface(ActuationConfig(steer_dead_time_s=0.08), PARAMS, DT)
    state = initial_state_at(0, 0, 0.3, 4.0, PARAMS)
    rng = np.random.default_rng(sent_count)
    sent = [np.array([rng.uniform(-0.3, 0.3), rng.uniform(-3.0, 3.0)]) for _ in range(sent_count)]
    for u in sent:
        interface.wire_command(u, state)
    n = int(np.ceil(0.08 / DT - 1e-9))
    x = state.copy()
    for i, u in enumerate(sent[-n:]):
        x = integrate_step(lambda s, c: numpy_derivative(DynamicSingleTrackModel, s, c, PARAMS), x, u,
                           0.08 - (n - 1) * DT if i == 0 else DT, "rk4")
    predicted = interface.predict(state)
    np.testing.assert_allclose(predicted, x, rtol=1e-6, atol=1e-7)  # float32 constants in the generated code
    assert np.max(np.abs(predicted - state)) > 0.1  # it did move the state
    interface.reset()
    np.testing.assert_array_equal(interface.predict(state), state)  # nothing in flight after a reset


def test_actuation_config_is_validated_once():
    assert load_actuation("speed").interface == "speed"
    for bad in ({"interface": "torque"}, {"steer_dead_time_s": -0.1}, {"speed_gain_up_per_s": "fast"}, {"gain": 1}):
        with pytest.raises(MbrlError):
            load_actuation(bad)


def _excited_run(seconds=30.0, seed=0):
    """A speed-following plant driven by random speed set-points and steering commands."""
    rng = np.random.default_rng(seed)
    plant, act = _speed_plant(3.0)
    n = int(seconds / DT)
    states, wires = [plant.state], []
    v_target, steer = 3.0, 0.0
    for k in range(n):
        if k % 25 == 0:
            v_target = rng.uniform(1.5, 6.0)
        if k % 7 == 0:
            steer = rng.uniform(-0.3, 0.3)
        v = states[-1][S.V]
        wire = np.array([steer, 0.0, v + np.clip(v_target - v, -0.4, 0.4)])
        wires.append(wire)
        states.append(plant.advance(wire, DT))
    return np.array(states), np.array(wires), act


def test_speed_gains_identified_within_two_percent():
    states, wires, act = _excited_run()
    est = identify_speed_loop(states[:-1, S.V], states[1:, S.V], wires[:, 2], DT, PARAMS)
    assert est.gain_up_per_s == pytest.approx(act.speed_gain_up_per_s, rel=0.02)
    assert est.gain_down_per_s == pytest.approx(act.speed_gain_down_per_s, rel=0.02)


def test_steering_dead_time_identified_within_ten_percent():
    states, wires, act = _excited_run()
    dead_time, delays, errors = identify_steer_dead_time(states[:-1], wires[:, 0], DT, PARAMS)
    assert dead_time == pytest.approx(act.steer_dead_time_s, rel=0.10)
    assert errors[0] > 2 * errors.min()  # the data tell a delay from none


def test_mujoco_behind_the_speed_driver_follows_the_loop():
    """The generic driver front end: MuJoCo's speed follows the loop's closed form (within its tyres' slip)."""
    pytest.importorskip("mujoco")
    plant = make_plant("mujoco", PARAMS, actuation="speed")
    plant.reset(initial_state_at(0.0, 0.0, 0.0, 2.0, PARAMS))
    speeds = [plant.advance(np.array([0.0, 0.0, 3.0]), DT)[S.V] for _ in range(25)]
    expected = speed_after(2.0, 3.0, f1tenth_speed_actuation(PARAMS).speed_gain_up_per_s, DT * np.arange(1, 26))
    np.testing.assert_allclose(speeds, expected, atol=0.02)
    assert abs(speeds[-1] - 3.0) < 0.3  # and it is not the acceleration interface (that would stay at 2 m/s)


def test_identified_from_a_recorded_bag(tmp_path):
    """The offline path (``fit --actuation speed``): odometry and AckermannDrive commands in an MCAP."""
    from mbrl_control.bag import TelemetryWriter
    from mbrl_control.bag.reader import read_drive
    from mbrl_control.sysid.actuator_id import identify_from_drive

    states, wires, act = _excited_run(seconds=30.0, seed=1)
    with TelemetryWriter(tmp_path / "drive.mcap") as writer:
        for k, wire in enumerate(wires):
            writer.odometry(k * DT, states[k])
            writer.command(k * DT, wire[:2], float(wire[2]))
    found = identify_from_drive(read_drive(tmp_path / "drive.mcap", params=PARAMS), PARAMS)
    assert found["speed_gain_up_per_s"] == pytest.approx(act.speed_gain_up_per_s, rel=0.05)
    assert found["speed_gain_down_per_s"] == pytest.approx(act.speed_gain_down_per_s, rel=0.05)
    assert found["steer_dead_time_s"] == pytest.approx(act.steer_dead_time_s, rel=0.10)


def test_coarse_to_fine_dead_time_scan_finds_the_full_grid_minimum():
    """The scan evaluates ~30 of the 81 delays; the best of every 1 ms candidate, computed directly, is its answer."""
    from mbrl_control.models.layout import S as _S
    from mbrl_control.sysid.actuator_id import DEAD_TIME_GRID_S, DEAD_TIME_SPAN_S, _yaw_rate_errors

    states, wires, _ = _excited_run(seconds=12.0, seed=3)
    dead_time, delays, errors = identify_steer_dead_time(states[:-1], wires[:, 0], DT, PARAMS)
    full = np.arange(0.0, DEAD_TIME_SPAN_S + 1e-12, DEAD_TIME_GRID_S)
    moving = np.minimum(np.abs(states[:-2, _S.V]), np.abs(states[1:-1, _S.V])) >= 1.0
    full_errors = _yaw_rate_errors(states[:-1], wires[:, 0], DT, PARAMS, full, moving)
    assert len(delays) < len(full) / 2
    assert abs(dead_time - full[np.argmin(full_errors)]) <= DEAD_TIME_GRID_S
    np.testing.assert_allclose(errors, full_errors[np.rint(delays / DEAD_TIME_GRID_S).astype(int)], rtol=1e-12)


def test_dead_time_scan_memory_stays_bounded():
    """30 s of telemetry: the working arrays go through in chunks (the whole grid at once took ~700 MB)."""
    import tracemalloc

    states, wires, _ = _excited_run(seconds=30.0)
    tracemalloc.start()
    try:
        identify_steer_dead_time(states[:-1], wires[:, 0], DT, PARAMS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64e6, peak


def test_online_identification_leaves_out_irregular_periods():
    """A loaded controller skips ticks (stale odometry) and measures late: pairs not one period apart must not
    be read as one period (they were: the braking gain came out at 11 instead of 19 1/s under load)."""
    from mbrl_control.sysid.actuator_id import ActuatorIdentifier

    states, wires, act = _excited_run(seconds=30.0)
    rng = np.random.default_rng(1)
    ident = ActuatorIdentifier(PARAMS, DT, dead_time_at_s=(29.0,))
    for k in range(len(wires)):
        if rng.random() < 0.25:
            continue  # a tick that saw no fresh odometry: nothing observed
        jitter = DT * rng.choice([0.0, 0.5]) if rng.random() < 0.1 else 0.0  # a measurement half a period late
        ident.observe(k * DT, states[k], wires[k], measured_at_s=k * DT + jitter)
    est = ident.estimates
    assert est["speed_gain_up_per_s"] == pytest.approx(act.speed_gain_up_per_s, rel=0.03)
    assert est["speed_gain_down_per_s"] == pytest.approx(act.speed_gain_down_per_s, rel=0.03)
    assert est["steer_dead_time_s"] == pytest.approx(act.steer_dead_time_s, rel=0.10)

"""A car whose actuators differ from the nominal: steering map, dead time, throttle dead zone.

The actuator models against their closed forms, the published command against the plant it is
meant for, and the online identification against the plant's true terms (issue 17, acceptance 4).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mbrl_control import MbrlError
from mbrl_control.config import load_vehicle_params
from mbrl_control.control.command_interface import (ActuationConfig, CommandInterface, calibration_terms,
                                                    load_actuation, miscalibrated_actuation)
from mbrl_control.models.layout import S, U
from mbrl_control.models.steering_actuator import driver_steering_command, steering_command_for, steering_map
from mbrl_control.models.throttle_dead_zone import command_for_acceleration, dead_zone_acceleration
from mbrl_control.ops import numpy_ops
from mbrl_control.sim import make_plant
from mbrl_control.sim.plant import initial_state_at
from mbrl_control.sysid.actuator_id import ActuatorIdentifier, calibration_estimates, identifier_for
from mbrl_control.sysid.applied_controls import AppliedControls
from mbrl_control.sysid.calibration_id import identify_steering_map, identify_throttle_dead_zone

PARAMS = load_vehicle_params()
DT = 0.02
TRUE = miscalibrated_actuation(PARAMS)


def test_dead_zone_closed_form_and_inverse():
    p = SimpleNamespace(accel_max_mps2=10.0, throttle_dead_zone=0.2)
    for cmd, expected in ((1.5, 0.0), (-2.0, 0.0), (6.0, 5.0), (-10.0, -10.0), (10.0, 10.0), (4.0, 2.5)):
        assert float(dead_zone_acceleration(numpy_ops, cmd, p)) == pytest.approx(expected)
    for accel in (-9.0, -0.3, 0.01, 2.0, 9.99):
        cmd = command_for_acceleration(accel, 0.2, 10.0)
        assert float(dead_zone_acceleration(numpy_ops, cmd, p)) == pytest.approx(accel)
    assert command_for_acceleration(0.0, 0.2, 10.0) == 0.0


def test_steering_map_closed_form_and_inverse():
    p = SimpleNamespace(steer_gain_left_rad=0.5, steer_gain_right_rad=0.4, steer_offset_rad=-0.02)
    assert float(steering_map(numpy_ops, 1.0, p)) == pytest.approx(0.48)
    assert float(steering_map(numpy_ops, -1.0, p)) == pytest.approx(-0.42)
    assert float(steering_map(numpy_ops, 0.0, p)) == pytest.approx(-0.02)
    for angle in (-0.41, -0.1, -0.02, 0.0, 0.2, 0.47):
        assert float(steering_map(numpy_ops, steering_command_for(angle, p), p)) == pytest.approx(angle)
    assert steering_command_for(0.9, p) == 1.0  # beyond the linkage's reach: full command


def test_nominal_calibration_publishes_the_plan_unchanged():
    iface = CommandInterface(ActuationConfig(), PARAMS, DT)
    state = initial_state_at(0.0, 0.0, 0.0, 3.0, PARAMS)
    for steer, accel in ((0.2, 3.0), (-0.35, -6.0), (0.0, 0.4)):
        u = np.zeros(2)
        u[U.STEER_CMD], u[U.ACCEL] = steer, accel
        wire = iface.wire_command(u, state)
        assert wire[0] == pytest.approx(steer) and wire[1] == pytest.approx(accel)


@pytest.mark.parametrize("steer, accel", [(0.25, 2.0), (-0.3, -4.0), (0.05, 0.5), (-0.02, 1.0)])
def test_calibrated_command_makes_the_miscalibrated_plant_do_the_plan(steer, accel):
    """Told the plant's true terms, the published fields give the planned servo target (after the
    dead time) and the planned acceleration: checked on the plant itself."""
    iface = CommandInterface(ActuationConfig(**{**TRUE.__dict__, "calibration": "nominal"}), PARAMS, DT)
    plant = make_plant("dynamic", PARAMS, actuation=TRUE)
    plant.reset(initial_state_at(0.0, 0.0, 0.0, 3.0, PARAMS))
    u = np.zeros(2)
    u[U.STEER_CMD], u[U.ACCEL] = steer, accel
    v0 = plant.state[S.V]
    plant.advance(iface.wire_command(u, plant.state), DT)
    assert (plant.state[S.V] - v0) / DT == pytest.approx(accel, rel=1e-6)
    assert plant._steer_target == pytest.approx(0.0)  # the new command is still in the dead time
    for _ in range(4):
        plant.advance(iface.wire_command(u, plant.state), DT)
    assert plant._steer_target == pytest.approx(steer, abs=1e-9)


def test_nominal_commands_on_the_miscalibrated_plant_miss_the_plan():
    """The naive controller's view: the wheels go to the map's angle, small accelerations vanish."""
    plant = make_plant("dynamic", PARAMS, actuation="miscalibrated")
    plant.reset(initial_state_at(0.0, 0.0, 0.0, 3.0, PARAMS))
    v0 = plant.state[S.V]
    for _ in range(5):
        plant.advance(np.array([0.2, 1.0]), DT)
    terms = calibration_terms(TRUE, PARAMS)
    assert plant._steer_target == pytest.approx(-0.015 + terms.steer_gain_left_rad * 0.2 / PARAMS.steer_max_rad)
    assert plant.state[S.V] == pytest.approx(v0, abs=1e-9)  # 1 m/s^2 is inside the 15 % dead zone


def test_calibration_config_is_validated_once():
    with pytest.raises(MbrlError, match="calibration must be one of nominal, identify"):
        load_actuation({"calibration": "guess"})
    with pytest.raises(MbrlError, match="throttle_dead_zone"):
        load_actuation({"throttle_dead_zone": 0.9})
    with pytest.raises(MbrlError, match="steer_gain_left_rad"):
        load_actuation({"steer_gain_left_rad": 3.0})


def _excited_drive(actuation, seconds=30.0, seed=0):
    """Open-loop excitation on an open plane: steering steps to both sides, varied accelerations
    around 4 m/s, recorded as the controller would (measured states, wire commands)."""
    rng = np.random.default_rng(seed)
    plant = make_plant("dynamic", PARAMS, actuation=actuation)
    plant.reset(initial_state_at(0.0, 0.0, 0.0, 4.0, PARAMS))
    states, wires = [plant.state], []
    steer, accel = 0.0, 0.0
    for k in range(int(seconds / DT)):
        if k % 15 == 0:
            steer = rng.uniform(-0.3, 0.3)
            v = states[-1][S.V]
            accel = float(np.clip(rng.normal(0.0, 3.0) + 2.0 * (4.0 - v), -8.0, 8.0))
        wire = np.array([steer, accel, states[-1][S.V] + accel * DT])
        wires.append(wire)
        states.append(plant.advance(wire, DT))
    return np.array(states), np.array(wires)


def test_steering_map_and_dead_time_identified_from_telemetry():
    states, wires = _excited_drive(TRUE)
    est = identify_steering_map(states[:-1], driver_steering_command(wires[:, 0], PARAMS), DT, PARAMS)
    true = calibration_terms(TRUE, PARAMS)
    assert est.dead_time_s == pytest.approx(TRUE.steer_dead_time_s, abs=0.004)
    assert est.steer_gain_left_rad == pytest.approx(true.steer_gain_left_rad, rel=0.02)
    assert est.steer_gain_right_rad == pytest.approx(true.steer_gain_right_rad, rel=0.02)
    assert est.steer_offset_rad == pytest.approx(true.steer_offset_rad, abs=0.003)
    assert est.errors[0] > 3 * est.errors.min()  # the data tell the delay from none


def test_nominal_car_is_identified_as_nominal():
    states, wires = _excited_drive("acceleration", seed=1)
    found = calibration_estimates(states[:-1], wires, DT, PARAMS, None, None)
    assert found["steer_dead_time_s"] == pytest.approx(0.0, abs=0.004)
    assert found["steer_gain_left_rad"] == pytest.approx(PARAMS.steer_max_rad, rel=0.02)
    assert found["steer_gain_right_rad"] == pytest.approx(PARAMS.steer_max_rad, rel=0.02)
    assert found["steer_offset_rad"] == pytest.approx(0.0, abs=0.003)
    assert found["throttle_dead_zone"] == pytest.approx(0.0, abs=0.01)


def test_throttle_dead_zone_identified_from_telemetry():
    states, wires = _excited_drive(TRUE, seed=2)
    zone = identify_throttle_dead_zone(states[:-1], wires[:, 1], DT, PARAMS)
    assert zone == pytest.approx(TRUE.throttle_dead_zone, abs=0.01)


def test_too_little_driving_identifies_nothing():
    states, wires = _excited_drive(TRUE, seconds=0.6)
    assert identify_steering_map(states[:-1], wires[:, 0] / PARAMS.steer_max_rad, DT, PARAMS) is None
    assert identify_throttle_dead_zone(states[:2], wires[:1, 1], DT, PARAMS) is None


def test_online_identifier_adopted_by_the_interface():
    """The identifier the sim and controller_node build for ``calibration: identify`` reports the
    plant's terms within a few percent, and the interface adopts them."""
    config = load_actuation({"calibration": "identify"})
    identifier = identifier_for(config, PARAMS, DT)
    assert isinstance(identifier, ActuatorIdentifier) and not identifier.speed_loop
    assert identifier_for(ActuationConfig(), PARAMS, DT) is None
    iface = CommandInterface(config, PARAMS, DT)
    states, wires = _excited_drive(TRUE, seconds=12.0, seed=3)
    for k, wire in enumerate(wires):
        identifier.observe(k * DT, states[k], wire)
        found = identifier.poll()
        if found:
            iface.adopt(found)
    true = calibration_terms(TRUE, PARAMS)
    assert iface.dead_time_s == pytest.approx(TRUE.steer_dead_time_s, abs=0.004)
    for name in ("steer_gain_left_rad", "steer_gain_right_rad"):
        assert getattr(iface.calibration, name) == pytest.approx(getattr(true, name), rel=0.03)
    assert iface.calibration.steer_offset_rad == pytest.approx(true.steer_offset_rad, abs=0.004)
    assert iface.calibration.throttle_dead_zone == pytest.approx(TRUE.throttle_dead_zone, abs=0.01)
    assert "speed_gain_up_per_s" not in identifier.estimates  # no speed loop on this car


def test_applied_controls_are_the_maps_of_the_commands_a_dead_time_earlier():
    """80 ms = 4 periods: the steering applied at step k is the map of the command of step k - 4
    (the first command held before); the acceleration goes through the dead zone at once."""
    terms = calibration_terms(TRUE, PARAMS)
    applied = AppliedControls(PARAMS, DT, terms, dead_time_s=0.08)
    rng = np.random.default_rng(4)
    wires = np.column_stack([rng.uniform(-0.4, 0.4, 30), rng.uniform(-9.0, 9.0, 30)])
    out = np.array([applied.applied(w) for w in wires])
    for k in range(30):
        source = wires[max(k - 4, 0), 0] / PARAMS.steer_max_rad
        gain = terms.steer_gain_left_rad if source >= 0 else terms.steer_gain_right_rad
        assert out[k, U.STEER_CMD] == pytest.approx(terms.steer_offset_rad + gain * source)
        assert out[k, U.ACCEL] == pytest.approx(float(dead_zone_acceleration(numpy_ops, wires[k, 1], terms)))
    half = AppliedControls(PARAMS, DT, terms, dead_time_s=0.03)  # 1.5 periods: the mean of two commands
    out = np.array([half.applied(w) for w in wires])
    maps = np.array([float(steering_map(numpy_ops, w / PARAMS.steer_max_rad, terms)) for w in wires[:, 0]])
    np.testing.assert_allclose(out[5:, U.STEER_CMD], 0.5 * (maps[3:-2] + maps[4:-1]))


def test_nominal_actuators_apply_the_command_bit_for_bit():
    applied = AppliedControls(PARAMS, DT, calibration_terms(ActuationConfig(), PARAMS))
    wire = np.array([0.1234567, -3.21, 5.0])
    assert np.array_equal(applied.applied(wire), wire[:2])


def test_calibration_identified_from_a_recorded_bag(tmp_path):
    """The offline path (``fit --actuation miscalibrated``): odometry and AckermannDrive commands in an MCAP."""
    from mbrl_control.bag import TelemetryWriter
    from mbrl_control.bag.reader import read_drive
    from mbrl_control.sysid.actuator_id import identify_from_drive

    states, wires = _excited_drive(TRUE, seconds=30.0, seed=5)
    with TelemetryWriter(tmp_path / "drive.mcap") as writer:
        for k, wire in enumerate(wires):
            writer.odometry(k * DT, states[k])
            writer.command(k * DT, wire[:2], float(wire[2]))
    found = identify_from_drive(read_drive(tmp_path / "drive.mcap", params=PARAMS), PARAMS, calibration=True)
    true = calibration_terms(TRUE, PARAMS)
    assert found["steer_dead_time_s"] == pytest.approx(TRUE.steer_dead_time_s, abs=0.005)
    assert found["steer_gain_left_rad"] == pytest.approx(true.steer_gain_left_rad, rel=0.03)
    assert found["steer_gain_right_rad"] == pytest.approx(true.steer_gain_right_rad, rel=0.03)
    assert found["steer_offset_rad"] == pytest.approx(true.steer_offset_rad, abs=0.004)
    assert found["throttle_dead_zone"] == pytest.approx(TRUE.throttle_dead_zone, abs=0.015)


def test_calibration_identification_needs_the_servo_model():
    with pytest.raises(MbrlError, match="first-order servo"):
        load_actuation({"calibration": "identify", "steering": "rate_limit"})


class RecordingUpdater:
    """The OnlineModelUpdater protocol: records what the runner observes, never refits."""

    def __init__(self) -> None:
        self.observed: list[tuple[float, np.ndarray]] = []

    def observe(self, t_s, state, control) -> None:
        self.observed.append((t_s, np.array(control)))

    def poll_new_model(self):
        return None

    def close(self) -> None:
        pass


def _short_run(config: ActuationConfig, updater: RecordingUpdater):
    from mbrl_control.control.factory import make_controller
    from mbrl_control.sim.runner import ClosedLoop, RunConfig
    from mbrl_control.track import resolve_track

    track = resolve_track("default")
    plant = make_plant("dynamic", PARAMS, track=track, actuation="miscalibrated")
    loop = ClosedLoop(track, plant, make_controller("pure_pursuit", PARAMS, DT, track),
                      RunConfig(laps=1, max_time_s=6.0, progress=False), updater=updater,
                      interface=CommandInterface(config, PARAMS, DT), actuator_identifier=identifier_for(config, PARAMS, DT))
    _, log = loop.run()
    return loop, log


def test_online_refit_sees_applied_controls_once_the_steering_is_known():
    """``sim --online-sysid`` on the miscalibrated car: told nominal terms, the refit gets the commands
    from the start; identifying, it gets nothing until the steering terms are known, then what the
    car applied: the planned steering one dead time (4 periods) later, the planned acceleration."""
    told_nothing, identifying = RecordingUpdater(), RecordingUpdater()
    _, log = _short_run(ActuationConfig(), told_nothing)
    assert told_nothing.observed[0][0] == 0.0 and len(told_nothing.observed) == len(log.t_s)
    np.testing.assert_array_equal(np.array([c for _, c in told_nothing.observed]), log.control)
    loop, log = _short_run(load_actuation({"calibration": "identify"}), identifying)
    steering_known_at = min(t for t, est in loop.actuator_identifier.history if "steer_dead_time_s" in est)
    assert identifying.observed[0][0] >= steering_known_at - DT and len(identifying.observed) >= 50
    step_of = {round(t / DT): k for k, t in enumerate(log.t_s)}
    late = [(step_of[round(t / DT)], c) for t, c in identifying.observed if t >= 5.0]
    assert len(late) >= 40
    for k, control in late:
        assert control[U.STEER_CMD] == pytest.approx(log.control[k - 4][U.STEER_CMD], abs=4e-4)
        assert control[U.ACCEL] == pytest.approx(log.control[k][U.ACCEL], abs=0.05)


def test_interface_reports_the_terms_in_use():
    iface = CommandInterface(load_actuation({"calibration": "identify"}), PARAMS, DT)
    iface.adopt({"steer_gain_left_rad": 0.5, "throttle_dead_zone": 0.1, "steer_dead_time_s": 0.05,
                 "steer_offset_rad": 0.9})  # an implausible trim is not adopted
    terms = iface.terms()
    assert terms["steer_gain_left_rad"] == 0.5 and terms["throttle_dead_zone"] == 0.1
    assert terms["steer_dead_time_s"] == 0.05 and terms["steer_offset_rad"] == 0.0
    assert terms["steer_gain_right_rad"] == PARAMS.steer_max_rad

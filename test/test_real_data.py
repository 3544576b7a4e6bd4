"""Real-car telemetry: the CSV reader, the actuator definitions, the predictor contract, the fit."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mbrl_control import MbrlError
from mbrl_control.apps.cli import main as cli_main
from mbrl_control.bag.csv_telemetry import load_column_map, read_csv_telemetry
from mbrl_control.models import load_predictor
from mbrl_control.models.commanded_single_track import CommandedSingleTrackModel
from mbrl_control.models.drive_motor import duty_rate, motor_force, resistance_force
from mbrl_control.models.motion_model import numpy_derivative
from mbrl_control.models.predictor import CommandedCarPredictor, vehicle_params
from mbrl_control.models.steering_actuator import delayed_commands, steering_map, steering_rate
from mbrl_control.ops import numpy_ops

ROOT = Path(__file__).resolve().parent.parent
DART_MAP = ROOT / "config" / "telemetry" / "dart.yaml"
DART_VEHICLE = ROOT / "models" / "dart.yaml"
REALDATA = ROOT.parent / "shared" / "realdata"
FREE_FILE = REALDATA / "dart" / "91_free_driving_16_sept_2024__car_1_Datarecording_09_16_2024_10_02_28.csv"
HEADER = ("elapsed time sensors,current,voltage,acc x (IMU),acc y (IMU),W (IMU),vel encoder,safety_value,"
          "throttle,steering,vicon time,vicon x,vicon y,vicon yaw")


def write_circle_csv(path: Path, seconds=6.0, dt=0.01, radius=1.5, speed=1.2, glitch_at=None, glitch_len=1,
                     gap=None, throttle=0.3, safety=1.0, steering=0.4):
    """A car on a circle (CCW), pose of the reference point; returns (t, omega)."""
    n = int(round(seconds / dt))
    t = 1.7e9 + dt * np.arange(n)
    omega = speed / radius
    ang = omega * (t - t[0])
    x, y = radius * np.sin(ang), radius * (1 - np.cos(ang))
    yaw = np.angle(np.exp(1j * ang))
    if glitch_at is not None:
        x[glitch_at:glitch_at + glitch_len] += 7.0
    keep = np.ones(n, bool)
    if gap is not None:
        keep[gap[0]:gap[1]] = False
    rows = [HEADER]
    for k in np.flatnonzero(keep):
        rows.append(f"{1.0 + 0.1 * (k // 10):.1f},0,0,0,0,0,0,{safety},{throttle},{steering},{t[k]:.6f},{x[k]:.9f},"
                    f"{y[k]:.9f},{yaw[k]:.9f}")
    path.write_text("\n".join(rows) + "\n")
    return t, omega


# ---------------------------------------------------------------- CSV reader

def test_reader_velocities_match_closed_form(tmp_path) -> None:
    csv = tmp_path / "circle.csv"
    _, omega = write_circle_csv(csv)
    tel = read_csv_telemetry(csv, DART_MAP)
    assert tel.dt == pytest.approx(0.01)
    assert tel.command_names == ("throttle_applied", "steering")
    assert len(np.unique(tel.seg)) == 1
    inner = slice(15, -15)  # Savitzky-Golay 'interp' edges are less accurate
    np.testing.assert_allclose(tel.state[inner, 3], 1.2, atol=2e-4)   # vx: the speed along the circle
    np.testing.assert_allclose(tel.state[inner, 4], 0.0, atol=2e-4)   # vy: no side slip
    np.testing.assert_allclose(tel.state[:, 5], omega, atol=2e-5)     # w: the yaw is linear in time
    assert np.all(np.diff(tel.state[:, 2]) > 0)                        # yaw unwrapped (crosses +pi once)
    assert tel.state[-1, 2] > math.pi


def test_reader_offset_moves_reference_point(tmp_path) -> None:
    csv = tmp_path / "circle.csv"
    _, omega = write_circle_csv(csv)
    tel = read_csv_telemetry(csv, DART_MAP, reference_offset_m=(0.0, 0.1))
    # 0.1 m to the left of the path, towards the centre: a circle of radius 1.4, same yaw rate
    np.testing.assert_allclose(tel.state[15:-15, 3], 1.4 * omega, atol=2e-4)


def test_reader_glitch_is_dropped_and_long_glitch_splits(tmp_path) -> None:
    short, long_ = tmp_path / "short.csv", tmp_path / "long.csv"
    write_circle_csv(short, glitch_at=300, glitch_len=1)
    write_circle_csv(long_, glitch_at=300, glitch_len=8)
    a, b = read_csv_telemetry(short, DART_MAP), read_csv_telemetry(long_, DART_MAP)
    assert len(np.unique(a.seg)) == 1 and "1 samples dropped" in " ".join(a.notes)
    assert len(np.unique(b.seg)) == 2                                  # the 8-sample run is its own (too short) part
    assert np.all(np.abs(np.diff(b.state[:, 0])) < 0.1 + 7.0 * (np.diff(b.seg) != 0))
    np.testing.assert_allclose(b.state[20:280, 3], 1.2, atol=2e-3)


def test_reader_gap_splits_and_enable_gates_throttle(tmp_path) -> None:
    csv = tmp_path / "gap.csv"
    write_circle_csv(csv, gap=(250, 260), safety=0.0)
    tel = read_csv_telemetry(csv, DART_MAP)
    assert len(np.unique(tel.seg)) == 2
    assert np.all(tel.cmd[:, 0] == 0.0) and np.all(tel.cmd[:, 1] == pytest.approx(0.4))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.replace('"vicon x"', '"vicon xx"'), "not in the CSV header"),
    (lambda m: m.replace("unit: m}", "unit: furlong}", 1), "unknown unit"),
    (lambda m: m.replace('unit: "1", range: [0.0, 1.0]', 'unit: "volt", range: [0.0, 1.0]'), "unknown unit"),
])
def test_bad_map_is_one_line_exit_2(tmp_path, capsys, edit, message) -> None:
    csv = tmp_path / "c.csv"
    write_circle_csv(csv)
    bad = tmp_path / "map.yaml"
    bad.write_text(edit(DART_MAP.read_text()))
    with pytest.raises(MbrlError, match=message):
        read_csv_telemetry(csv, bad)
    rc = cli_main(["fit", str(csv), "--columns", str(bad), "--vehicle", str(DART_VEHICLE), "--out",
                   str(tmp_path / "m.pt"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "m.pt").exists()


def test_bad_csv_is_one_line_exit_2(tmp_path, capsys) -> None:
    csv = tmp_path / "c.csv"
    write_circle_csv(csv)
    lines = csv.read_text().splitlines()
    lines[50], lines[51] = lines[51], lines[50]  # time goes backwards
    csv.write_text("\n".join(lines) + "\n")
    rc = cli_main(["replay", str(csv), "--columns", str(DART_MAP), "--model", "constant_velocity", "--json"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not monotonic" in err and len(err.splitlines()) == 1
    still = tmp_path / "still.csv"
    write_circle_csv(still, speed=0.0)
    rc = cli_main(["fit", str(still), "--columns", str(DART_MAP), "--vehicle", str(DART_VEHICLE), "--first-s", "30",
                   "--out", str(tmp_path / "m.pt"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "never moves" in err and not (tmp_path / "m.pt").exists()


def test_nan_rows_are_one_line_exit_2_and_no_model(tmp_path, capsys) -> None:
    csv = tmp_path / "nan.csv"
    write_circle_csv(csv)
    lines = csv.read_text().splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    row = lines[120].split(",")
    row[header.index("vicon x")] = "nan"
    lines[120] = ",".join(row)
    csv.write_text("\n".join(lines) + "\n")
    model = tmp_path / "m.pt"
    rc = cli_main(["fit", str(csv), "--columns", str(DART_MAP), "--vehicle", str(DART_VEHICLE), "--out", str(model),
                   "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and not model.exists()
    assert "NaN" in err and "data row 120" in err and "'vicon x'" in err


# ---------------------------------------------------------------- actuators against closed forms

P = SimpleNamespace(**vehicle_params(DART_VEHICLE))


def _euler(rate, x0, t_end, h=1e-4):
    x = x0
    for _ in range(int(round(t_end / h))):
        x = x + h * rate(x)
    return x


@pytest.mark.parametrize("cmd", [1.0, -1.0, 0.5, 0.0])
def test_steering_step_response(cmd) -> None:
    target = P.steer_offset_rad + (P.steer_gain_left_rad if cmd >= 0 else P.steer_gain_right_rad) * cmd
    assert steering_map(numpy_ops, cmd, P) == pytest.approx(target)
    for t in (0.05, 0.129, 0.4):
        got = _euler(lambda d: steering_rate(numpy_ops, d, cmd, P), 0.0, t)
        assert got == pytest.approx(target * (1 - math.exp(-t / P.steer_time_constant_s)), abs=2e-4)
    # asymmetry: +1 and -1 give different magnitudes (DART's servo)
    assert abs(steering_map(numpy_ops, 1.0, P)) != pytest.approx(abs(steering_map(numpy_ops, -1.0, P)), abs=0.01)


def test_dead_time_shifts_a_step() -> None:
    dt = 0.01
    past = np.zeros((1, 20, 1))
    future = np.ones((1, 30, 1))
    d = delayed_commands(past, future, 0.1, dt)[0, :, 0]
    assert np.all(d[:10] == 0.0) and np.all(d[10:] == 1.0)
    half = delayed_commands(past, future, 0.105, dt)[0, :, 0]          # fractional: the mean over the step
    assert half[10] == pytest.approx(0.5) and half[9] == 0.0 and half[11] == 1.0
    assert np.all(delayed_commands(past, future, 0.0, dt) == future)


def test_duty_lag_dead_zone_and_back_emf() -> None:
    t = 0.084
    assert _euler(lambda d: duty_rate(numpy_ops, d, 0.5, P), 0.0, t) == pytest.approx(0.5 * (1 - math.exp(-1)), abs=4e-4)
    assert motor_force(numpy_ops, P.throttle_dead_zone - 0.01, 0.0, P) == 0.0
    e = 0.3 - P.throttle_dead_zone
    for v in (0.0, 1.0, 2.0):
        assert motor_force(numpy_ops, 0.3, v, P) == pytest.approx(e * (P.motor_force_n - P.motor_speed_coeff_nspm * v))
    assert resistance_force(numpy_ops, 2.0, 0.0, P) == pytest.approx(
        P.rolling_resistance_n * math.tanh(40.0) + P.drag_coeff_nspm * 2.0)


def test_straight_line_speed_settles_at_force_balance() -> None:
    """Full model, steering straight ahead, constant duty: vx -> (e F - r) / (e k + c)."""
    duty = 0.4
    e = duty - P.throttle_dead_zone
    v_star = (e * P.motor_force_n - P.rolling_resistance_n) / (e * P.motor_speed_coeff_nspm + P.drag_coeff_nspm)
    x = np.array([0, 0, 0, 0.5, 0, 0, P.steer_offset_rad * 0, duty])
    p = SimpleNamespace(**{**vars(P), "steer_offset_rad": 0.0})
    h = 2e-3
    for _ in range(int(10.0 / h)):
        x = x + h * numpy_derivative(CommandedSingleTrackModel, x, np.array([duty, 0.0]), p)
    assert x[3] == pytest.approx(v_star, rel=1e-3)
    assert abs(x[1]) < 1e-9 and abs(x[5]) < 1e-9


# ---------------------------------------------------------------- predictor contract

def test_predictor_contract_shapes_and_dt() -> None:
    pred = CommandedCarPredictor(vehicle_params(DART_VEHICLE))
    assert pred.batched
    rng = np.random.default_rng(0)
    N, H = 4, 100
    s0 = np.c_[rng.normal(size=(N, 3)), rng.uniform(0.5, 2.0, N), np.zeros(N), rng.normal(0, 0.3, N)]
    u = np.repeat(np.c_[rng.uniform(0.2, 0.4, N), rng.uniform(-1, 1, N)][:, None], H, axis=1)
    out = pred.predict(s0, u, dt=0.01, past_commands=u)
    assert out.shape == (N, H, 6) and np.all(np.isfinite(out))
    one = pred.predict(s0[1], u[1], dt=0.01, past_commands=u[1])
    assert one.shape == (H, 6)
    np.testing.assert_allclose(one, out[1])
    coarse = pred.predict(s0, u[:, ::5], dt=0.05, past_commands=u[:, ::5])   # 20 Hz, same constant commands
    assert coarse.shape == (N, H // 5, 6)
    np.testing.assert_allclose(coarse[:, -1, :2], out[:, -1, :2], atol=2e-3)
    # the state of the reference point at t0 + dt: one step on from state0, not state0 itself
    assert np.all(np.hypot(*(out[:, 0, :2] - s0[:, :2]).T) > 0.004)


def test_model_file_roundtrip(tmp_path) -> None:
    pred = CommandedCarPredictor(vehicle_params(DART_VEHICLE))
    path = pred.save(tmp_path / "m.pt")
    back = load_predictor(path)
    assert back.params == pred.params
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(MbrlError):
        load_predictor(tmp_path / "junk.pt")


# ---------------------------------------------------------------- on the real recordings

needs_realdata = pytest.mark.skipif(not FREE_FILE.is_file(), reason="../shared/realdata not present")


@needs_realdata
def test_fit_on_a_real_slice_and_replay_agrees_with_metric(tmp_path, capsys) -> None:
    out = tmp_path / "m.pt"
    rc = cli_main(["fit", str(FREE_FILE), "--columns", str(DART_MAP), "--vehicle", str(DART_VEHICLE),
                   "--first-s", "8", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    report = json.loads(text[:text.rindex("}") + 1])
    assert report["fit_s"] > 0.0  # the time goal (<= 5 s for 30 s of data) is measured in docs/real_data.md, not here
    assert report["cost_final"] < 0.5 * report["cost_initial"]
    assert report["on_fit_data"]["1s"]["pos"] < 0.5 * report["constant_velocity_on_fit_data"]["1s"]["pos"]
    # replay and metric.py agree on the model and a (short) file
    sys.path.insert(0, str(REALDATA))
    try:
        import metric
    finally:
        sys.path.remove(str(REALDATA))
    short = REALDATA / "dart" / "circles_27_sept_2024_fast_ramp__car_1_Datarecording_09_27_2024_18_21_09.csv"
    assert cli_main(["replay", str(short), "--columns", str(DART_MAP), "--model", str(out), "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)[0]
    theirs = metric.evaluate(metric.load(str(short)), load_predictor(out).predict)
    assert ours["n_windows"] == theirs["n_windows"] > 100
    for h in ("0.2s", "0.5s", "1s"):
        for k in ("pos", "yaw", "vx", "vy", "w"):
            assert ours[h][k] == pytest.approx(theirs[h][k], rel=0.01)


def test_definition_derives_torch_and_casadi_forms() -> None:
    """The commanded single-track definition evaluates the same in NumPy, torch and CasADi."""
    import casadi as ca
    import torch

    from mbrl_control.models.motion_model import casadi_derivative, torch_derivative

    rng = np.random.default_rng(1)
    x = np.array([0.3, -0.2, 0.7, 1.8, 0.1, 1.2, 0.15, 0.35])
    for vx in (0.2, 0.6, 1.8):  # kinematic, blended and dynamic regimes
        x[3] = vx
        u = np.array([rng.uniform(0.2, 0.5), rng.uniform(-1, 1)])
        ref = numpy_derivative(CommandedSingleTrackModel, x, u, P)
        tor = torch_derivative(CommandedSingleTrackModel, torch.tensor(x), torch.tensor(u), P).numpy()
        cas = np.asarray(ca.DM(casadi_derivative(CommandedSingleTrackModel, ca.DM(x), ca.DM(u), P))).ravel()
        np.testing.assert_allclose(tor, ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cas, ref, rtol=1e-10, atol=1e-10)

"""Telemetry datasets: grid resampling, command hold, outlier rejection, windows, steering estimation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.bag import RecordedDrive
from mbrl_control.models.bicycle import DynamicSingleTrack
from mbrl_control.models.layout import STATE_DIM, S, U
from mbrl_control.models.odometry import odometry_to_state, state_to_odometry
from mbrl_control.sysid.config import DatasetConfig
from mbrl_control.sysid.dataset import (Dataset, estimate_steering, from_drive, from_samples, odometry_states,
                                        reject_outliers)
from mbrl_control.sysid.synthetic import excitation_drive

DT = 0.02


@pytest.fixture(scope="module")
def drive(params):
    return excitation_drive(params.replace(steer_time_constant_s=0.1), 6.0, DT, seed=3)


def test_on_grid_samples_are_kept_as_they_are(drive) -> None:
    t, s, u = drive
    ds = from_samples(t, s, u, DT)
    assert len(ds) == len(t) and ds.transitions == len(t) - 1
    np.testing.assert_array_equal(ds.states, s)
    np.testing.assert_array_equal(ds.controls, u)


def test_irregular_samples_are_resampled(drive) -> None:
    t, s, u = drive
    keep = np.ones(len(t), dtype=bool)
    keep[50:60] = False  # a 0.22 s gap: longer than max_gap_s
    keep[[100, 103, 150]] = False  # single drop-outs: bridged
    ds = from_samples(t[keep], s[keep], u[keep], DT, DatasetConfig(max_gap_s=0.1))
    np.testing.assert_allclose(ds.t_s, t[: len(ds)], atol=1e-9)
    assert not ds.valid[49:60].all() and ds.valid[95:110].all()
    # states linear between the neighbours, commands held from the last one sent
    np.testing.assert_allclose(ds.states[100, S.X], 0.5 * (s[99, S.X] + s[101, S.X]), rtol=1e-12)
    np.testing.assert_array_equal(ds.controls[100], u[99])


def test_outliers_are_rejected_but_hard_manoeuvres_kept(drive) -> None:
    t, s, u = drive
    clean = from_samples(t, s, u, DT)
    assert clean.transitions == len(t) - 1  # the excitation (braking, steering) flags nothing
    bad = s.copy()
    bad[120, S.YAW_RATE] += 3.0
    bad[200, S.V] -= 2.0
    bad[250, S.X] += 2.0
    bad[260, S.SLIP] = np.nan
    ds = from_samples(t, bad, u, DT)
    invalid = np.flatnonzero(~ds.valid)
    assert set(invalid) == {119, 120, 199, 200, 249, 250, 259, 260}
    valid, n = reject_outliers(bad, np.ones(len(t) - 1, dtype=bool), DatasetConfig(), DT)
    assert n == 3 and np.array_equal(valid, ds.valid)  # the position jump is caught by dead reckoning


def test_window_starts_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    n = 80
    valid = rng.random(n - 1) > 0.1
    ds = Dataset(DT, np.arange(n) * DT, np.zeros((n, STATE_DIM)), np.zeros((n, 2)), valid)
    for horizon in (1, 3, 7):
        expected = [k for k in range(n - horizon) if valid[k:k + horizon].all()]
        assert ds.window_starts(horizon).tolist() == expected
        assert ds.window_starts(horizon, stride=2).tolist() == expected[::2]
    starts = ds.window_starts(3, max_windows=5)
    assert len(starts) == 5 and set(starts) <= set(ds.window_starts(3))
    s0, u, y = ds.windows(np.array([2, 10]), 3)
    assert s0.shape == (2, STATE_DIM) and u.shape == (2, 3, 2) and y.shape == (2, 3, STATE_DIM)
    head, tail = ds.split(0.25)
    assert len(head) == 60 and len(tail) == 20 and len(head.valid) == 59


def test_steering_estimate_equals_the_torch_servo(params) -> None:
    p = params.replace(steer_time_constant_s=0.12)
    cmd = np.concatenate([np.full(20, 0.3), np.full(20, -0.5), 0.2 * np.sin(np.arange(60) * 0.3)])  # incl. saturation
    for substeps in (1, 2):
        est = estimate_steering(cmd, DT, p, substeps=substeps)
        model = DynamicSingleTrack(p, dt_s=DT, substeps=substeps, dtype=torch.float64)
        s = torch.zeros(STATE_DIM, dtype=torch.float64)
        s[S.V] = 3.0
        ref = []
        for c in cmd:
            ref.append(float(s[S.STEER]))
            s = model(s, torch.tensor([c, 0.0], dtype=torch.float64))
        np.testing.assert_allclose(est, ref, atol=1e-12)
    assert np.abs(est).max() <= p.steer_max_rad + 1e-12


def test_odometry_states_invert_state_to_odometry(drive) -> None:
    _, s, _ = drive
    rows = np.array([[o["x_m"], o["y_m"], st[S.YAW], o["vx_body_mps"], o["vy_body_mps"], o["yaw_rate_radps"]]
                     for o, st in ((state_to_odometry(st), st) for st in s[::25])])
    got = odometry_states(rows, s[::25, S.STEER])
    np.testing.assert_allclose(got, s[::25], atol=1e-12)
    reverse = odometry_to_state(0.0, 0.0, 0.3, -1.0, 0.1, 0.2, 0.05)
    np.testing.assert_allclose(odometry_states(np.array([[0, 0, 0.3, -1.0, 0.1, 0.2]]), np.array([0.05]))[0], reverse, atol=1e-12)


def test_from_drive_holds_commands_and_estimates_steering(drive, params) -> None:
    t, s, u = drive
    jitter = np.random.default_rng(1).uniform(-0.002, 0.002, len(t))
    odom = np.stack([s[:, S.X], s[:, S.Y], s[:, S.YAW], s[:, S.V] * np.cos(s[:, S.SLIP]), s[:, S.V] * np.sin(s[:, S.SLIP]),
                     s[:, S.YAW_RATE]], axis=1)
    rec = RecordedDrive(odom_t_s=t + jitter, odom=odom, cmd_t_s=t + 0.004, cmd=u, cmd_speed_mps=s[:, S.V])
    p = params.replace(steer_time_constant_s=0.1)
    ds = from_drive(rec, DT, p, substeps=2)  # the drive was integrated at 100 Hz
    assert not ds.steer_measured and ds.transitions > 0.95 * (len(ds) - 1)
    k = np.arange(5, len(ds) - 5)
    np.testing.assert_array_equal(ds.controls[k], u[k])  # stamped 4 ms late: still the command of its period
    np.testing.assert_allclose(ds.states[k, S.STEER], s[k, S.STEER], atol=1e-9)  # the true servo: same estimate
    np.testing.assert_allclose(ds.states[k, S.V], s[k, S.V], atol=0.02)  # jitter only
    with pytest.raises(MbrlError):
        from_drive(RecordedDrive(t, odom, np.zeros(0), np.zeros((0, 2)), np.zeros(0)), DT, p)
    assert U.STEER_CMD == 0

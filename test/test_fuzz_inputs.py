"""Issue 15, acceptance 3: seeded random fuzzing of the YAML and track loaders and the odometry gate.

Every input either loads or fails with one :class:`MbrlError` line; nothing else may escape (no
traceback). Seeded, so a failure reproduces; bounded to a few seconds so it runs in CI.
"""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest
import yaml

from mbrl_control import MbrlError
from mbrl_control.config import dataclass_from_dict, load_vehicle_params, load_yaml, validate_vehicle_params

BUDGET_S = 3.0  # per fuzz target (the whole file stays well under 20 s)
SEED = 15

ATOMS = ["1e9", "-1e999", ".nan", ".inf", "0", "-1", "4194304", "10000", "true", "null", "~", "'x'", "[]", "{}",
         "[1, 2]", "[a, 1e9]", "0x10", "1_000", "2.5", "-0.0", "1e", "!!binary aGVsbG8=", "&a 1", "*a", "'1e9'",
         "{mppi: 5}", "[[[]]]", "1e308", "123456789012345678901234567890", "\"\\u0000\"", "yes", "0o17"]


def _random_yaml(rng: random.Random, keys: list[str]) -> str:
    lines = []
    for _ in range(rng.randint(0, 8)):
        key = rng.choice(keys + ["mppi", "bogus", "1", "sysid", "cost", "vehicle"])
        indent = "  " * rng.randint(0, 2)
        value = rng.choice(ATOMS) if rng.random() < 0.8 else "".join(rng.choice(":-[]{}#&*!|>'\"%@`, \t") for _ in range(5))
        lines.append(f"{indent}{key}: {value}")
    if rng.random() < 0.1:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randint(1, 60)))
    return "\n".join(lines) + "\n"


def _run_for(budget_s: float, step) -> int:
    deadline = time.perf_counter() + budget_s
    n = 0
    while time.perf_counter() < deadline:
        step(n)
        n += 1
    return n


def test_fuzz_yaml_and_config_loaders(tmp_path):
    from mbrl_control.control.mppi import MPPIConfig
    from mbrl_control.control.pure_pursuit import PurePursuitConfig
    from mbrl_control.sysid.config import FitConfig, OnlineConfig, build_config

    rng = random.Random(SEED)
    vehicle = yaml.safe_load(open(load_vehicle_params.__globals__["default_vehicle_path"]()))["vehicle"]
    targets = [(MPPIConfig, "mppi"), (PurePursuitConfig, "pure_pursuit")]
    keys = sorted({f for cls, _ in targets for f in cls.__dataclass_fields__} | set(vehicle))
    path = tmp_path / "fuzz.yaml"

    def step(n: int) -> None:
        if rng.random() < 0.1:
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))))
        else:
            path.write_text(_random_yaml(rng, keys), encoding="utf-8", errors="surrogatepass")
        try:
            data = load_yaml(path)
        except MbrlError as exc:
            assert "\n" not in str(exc)
            return
        for cls, section in targets:
            try:
                dataclass_from_dict(cls, data.get(section, data), section)
            except MbrlError as exc:
                assert "\n" not in str(exc)
        for cls, section in ((FitConfig, "fit"), (OnlineConfig, "sysid")):
            try:
                build_config(cls, data.get(section, data), section)
            except MbrlError as exc:
                assert "\n" not in str(exc)
        mutated = dict(vehicle)
        for key, value in data.items():
            if key in mutated or rng.random() < 0.3:
                mutated[key] = value
        try:
            params = validate_vehicle_params(mutated, "fuzz")
            assert all(math.isfinite(v) for v in params.as_dict().values())
        except MbrlError as exc:
            assert "\n" not in str(exc)

    assert _run_for(BUDGET_S, step) > 50


def test_fuzz_track_loader(tmp_path):
    from mbrl_control.track import load_track

    rng = random.Random(SEED)
    path = tmp_path / "fuzz_centerline.csv"
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    good = np.stack([30 * np.cos(t), 18 * np.sin(t), np.full(60, 1.2), np.full(60, 1.2)], axis=1)

    def step(n: int) -> None:
        kind = rng.random()
        if kind < 0.15:
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 400))))
        elif kind < 0.3:
            path.write_text("\n".join(",".join(rng.choice(ATOMS + ["1", "2", "", " "]) for _ in range(rng.randint(1, 5)))
                                      for _ in range(rng.randint(0, 12))))
        else:  # a valid loop, perturbed: points moved, swapped, repeated, widths and scales changed
            table = good.copy()
            for _ in range(rng.randint(0, 4)):
                if len(table) == 0:
                    break
                i, j = rng.randrange(len(table)), rng.randrange(len(table))
                op = rng.randrange(6)
                if op == 0:
                    table[i, :2] += [rng.gauss(0, 20), rng.gauss(0, 20)]
                elif op == 1:
                    table[[i, j]] = table[[j, i]]
                elif op == 2:
                    table[i] = table[j]
                elif op == 3:
                    table[:, 2:] *= rng.choice([0.0, -1.0, 1e-9, 1e3])
                elif op == 4:
                    table[:, :2] *= rng.choice([1e-9, 1e6, 1e300, -1.0])
                else:
                    table = table[: rng.randint(0, len(table))]
            path.write_text("\n".join(",".join(repr(float(v)) for v in row) for row in table) + "\n")
        try:
            track = load_track(path)
        except MbrlError as exc:
            assert "\n" not in str(exc)
            return
        assert np.all(np.isfinite(track.centerline.xy_m)) and track.length_m > 0
        assert np.all(track.width_left_m > 0) and np.all(track.width_right_m > 0)

    assert _run_for(BUDGET_S, step) > 50


def test_fuzz_odometry_gate(params):
    ros = pytest.importorskip("rclpy")  # noqa: F841 - the message classes come with the ROS wheels
    from nav_msgs.msg import Odometry

    from mbrl_control.ros import conversions as conv

    rng = random.Random(SEED)
    gate = conv.OdometryGate(params)
    specials = [math.nan, math.inf, -math.inf, 1e300, -1e300, 1e6, 0.0, -0.0, 5e-324, 30.0, 1e5, 1e5 + 1]

    def value() -> float:
        return rng.choice(specials) if rng.random() < 0.3 else rng.gauss(0, 10 ** rng.uniform(-3, 6))

    t_ns = 0

    def step(n: int) -> None:
        nonlocal t_ns
        msg = Odometry()
        p, q, tw = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
        p.x, p.y, p.z = value(), value(), value()
        q.x, q.y, q.z, q.w = value(), value(), value(), value()
        tw.linear.x, tw.linear.y, tw.angular.z = value(), value(), value()
        t_ns += rng.choice([0, 1, 10_000_000, 10_000_000, 1_000_000_000])
        fields = gate.check(msg, t_ns)
        if fields is None:
            assert gate.last_reason
            return
        x, y, yaw, vx, vy, wz = fields
        assert all(math.isfinite(v) for v in fields)
        assert abs(x) <= conv.MAX_ODOM_POSITION_M and abs(y) <= conv.MAX_ODOM_POSITION_M
        assert math.hypot(vx, vy) <= conv.odometry_speed_bound_mps(params)
        u = np.array([value(), value()])
        drive = conv.fill_drive(conv.AckermannDriveStamped(), u, conv.command_speed_mps(vx, u, 0.02, params),
                                conv.s_to_stamp(0.0), "b", limits=params).drive
        assert params.v_min_mps <= drive.speed <= params.v_max_mps
        assert params.steer_min_rad <= drive.steering_angle <= params.steer_max_rad
        assert abs(drive.acceleration) <= params.accel_max_mps2

    assert _run_for(BUDGET_S, step) > 100

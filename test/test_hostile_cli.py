"""Issue 15, case 6: hostile CLI flags, YAML files and tracks end in one line on stderr and exit 2.

Every input here used to end in a traceback, a hang or a silently wrong run (see the issue). The
CLI runs in-process (the same ``main`` as the console script); each case must be refused before
any closed loop starts, so each one is fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from mbrl_control.apps import cli
from mbrl_control.config import load_yaml

REPO = Path(__file__).resolve().parent.parent


def run_cli(capsys, *args: str) -> tuple[int, list[str]]:
    try:
        rc = cli.main(list(args))
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def assert_one_line(capsys, needle: str, *args: str) -> str:
    rc, err = run_cli(capsys, *args)
    assert rc == 2, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    assert needle in err[0], err[0]
    return err[0]


def write_track(path: Path, xy: np.ndarray, width: float = 1.0) -> Path:
    path.write_text("# x_m, y_m, w_tr_right_m, w_tr_left_m\n"
                    + "".join(f"{x:.6f}, {y:.6f}, {width}, {width}\n" for x, y in xy))
    return path


def densify(corners: list[tuple[float, float]], per_edge: int = 12) -> np.ndarray:
    pts = []
    for a, b in zip(corners, corners[1:] + corners[:1]):
        for k in range(per_edge):
            t = k / per_edge
            pts.append((a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t))
    return np.array(pts)


def controller_yaml(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump({"controller_node": {"ros__parameters": params}}))
    return path


PP = ("--controller", "pure_pursuit", "--quiet", "--max-time", "0.5")


def test_bow_tie_track(tmp_path, capsys):
    track = write_track(tmp_path / "bowtie_centerline.csv", densify([(0, 0), (20, 4), (20, 0), (0, 4)]))
    assert_one_line(capsys, "intersects itself", "sim", "--track", str(track), *PP, "--out", str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_figure_eight_track(tmp_path, capsys):
    t = np.linspace(0, 2 * np.pi, 160, endpoint=False)
    track = write_track(tmp_path / "eight_centerline.csv", np.stack([20 * np.sin(t), 10 * np.sin(2 * t)], axis=1))
    assert_one_line(capsys, "intersects itself", "sim", "--track", str(track), *PP, "--out", str(tmp_path / "run"))


def test_binary_track_file(tmp_path, capsys):
    track = tmp_path / "noise_centerline.csv"
    track.write_bytes(np.random.default_rng(15).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_one_line(capsys, "noise_centerline.csv", "sim", "--track", str(track), *PP, "--out", str(tmp_path / "run"))


def test_track_tighter_than_the_car_can_turn(tmp_path, capsys):
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)  # radius 0.4 m, 0.1 m half width: the car needs ~0.74 m
    track = write_track(tmp_path / "tiny_centerline.csv", 0.4 * np.stack([np.cos(t), np.sin(t)], axis=1), width=0.1)
    assert_one_line(capsys, "minimum turning radius", "sim", "--track", str(track), *PP, "--out", str(tmp_path / "r"))


def test_mppi_section_not_a_mapping(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("controller_node:\n  ros__parameters:\n    mppi: 5\n")
    assert_one_line(capsys, "'mppi' must be a mapping", "sim", "--config", str(config), "--quiet", "--max-time", "0.5",
                    "--out", str(tmp_path / "run"))


@pytest.mark.parametrize("flag, value, needle", [("--rate", "nan", "--rate"), ("--rate", "0.001", "--rate"),
                                                 ("--rate", "inf", "--rate"), ("--seed", "-1", "--seed"),
                                                 ("--laps", "0", "--laps"), ("--max-time", "-5", "--max-time")])
def test_bad_numeric_flags(tmp_path, capsys, flag, value, needle):
    assert_one_line(capsys, needle, "sim", *PP[:2], flag, value, "--out", str(tmp_path / "run"))


def test_mppi_buffers_beyond_memory(tmp_path, capsys):
    config = controller_yaml(tmp_path / "c.yaml", {"mppi": {"samples": 4194304, "horizon": 10000}})
    line = assert_one_line(capsys, "memory", "sim", "--config", str(config), "--quiet", "--max-time", "0.5",
                           "--out", str(tmp_path / "run"))
    assert "GiB" in line


def test_negative_pure_pursuit_speed(tmp_path, capsys):
    config = controller_yaml(tmp_path / "c.yaml", {"pure_pursuit": {"set_speed_mps": -3.0}})
    assert_one_line(capsys, "set_speed_mps", "sim", "--config", str(config), *PP, "--out", str(tmp_path / "run"))
    config = controller_yaml(tmp_path / "d.yaml", {"pure_pursuit": {"speed_scale": -0.5}})
    assert_one_line(capsys, "speed_scale", "sim", "--config", str(config), *PP, "--out", str(tmp_path / "run"))


def test_zero_steering_limits(tmp_path, capsys):
    data = yaml.safe_load((REPO / "models" / "f1tenth.yaml").read_text())
    data["vehicle"]["steer_min_rad"] = 0.0
    data["vehicle"]["steer_max_rad"] = 0.0
    vehicle = tmp_path / "car.yaml"
    vehicle.write_text(yaml.safe_dump(data))
    assert_one_line(capsys, "steer_", "sim", "--vehicle", str(vehicle), *PP, "--out", str(tmp_path / "run"))


def test_yaml_exponent_is_a_number(tmp_path, capsys):
    path = tmp_path / "n.yaml"
    path.write_text("a: 1e9\nb: -2E-3\nc: 5e+2\nd: 1.5\ne: '1e9'\nf: 1e\n")
    data = load_yaml(path)
    assert data == {"a": 1e9, "b": -2e-3, "c": 500.0, "d": 1.5, "e": "1e9", "f": "1e"}
    # and in a controller YAML it is the number it reads as (range-checked, not "must be a number, got '1e9'")
    config = controller_yaml(tmp_path / "c.yaml", {})
    config.write_text("controller_node:\n  ros__parameters:\n    pure_pursuit:\n      set_speed_mps: 1e9\n")
    line = assert_one_line(capsys, "set_speed_mps", "sim", "--config", str(config), *PP, "--out", str(tmp_path / "r"))
    assert "must be in [" in line


def test_binary_yaml_file(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_bytes(os.urandom(64) + b"\0" + os.urandom(64))
    assert_one_line(capsys, "c.yaml", "sim", "--config", str(config), *PP, "--out", str(tmp_path / "run"))

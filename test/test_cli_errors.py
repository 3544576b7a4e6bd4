"""Bad input on the command line: exit code 2 and exactly one clear line on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbrl_control.apps.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]


def test_missing_track_file(tmp_path):
    assert_one_line_error(run_cli("sim", "--track", str(tmp_path / "nowhere.csv"), "--controller", "pure_pursuit"), "track file not found")


def test_malformed_track_csv(tmp_path):
    bad = tmp_path / "broken_centerline.csv"
    bad.write_text("# x_m, y_m, w_tr_right_m, w_tr_left_m\n0, 0, 1.1, 1.1\n1; 2; 3\n")
    assert_one_line_error(run_cli("sim", "--track", str(bad), "--controller", "pure_pursuit"), "broken_centerline.csv:3")


@pytest.mark.parametrize("field, value, needle", [("mass_kg", None, "missing vehicle parameter 'mass_kg'"),
                                                  ("friction_coeff", ".nan", "'friction_coeff' is not finite")])
def test_bad_vehicle_yaml(tmp_path, field, value, needle):
    text = (REPO / "models" / "f1tenth.yaml").read_text()
    data = yaml.safe_load(text)
    if value is None:
        del data["vehicle"][field]
        out = yaml.safe_dump(data)
    else:
        out = text.replace(f"{field}: {data['vehicle'][field]}", f"{field}: {value}")
    path = tmp_path / "car.yaml"
    path.write_text(out)
    assert_one_line_error(run_cli("sim", "--vehicle", str(path), "--controller", "pure_pursuit"), needle)


def test_unknown_plant():
    assert_one_line_error(run_cli("sim", "--plant", "hovercraft"), "invalid choice: 'hovercraft'")


def test_unknown_model(tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(run_cli("sim", "--model", "quantum", "--controller", "pure_pursuit", "--out", str(out)),
                          "unknown model 'quantum'")
    assert not out.exists()  # bad input leaves no empty run folder behind


def test_failed_run_keeps_a_folder_that_existed(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    assert_one_line_error(run_cli("sim", "--model", "quantum", "--controller", "pure_pursuit", "--out", str(out)),
                          "unknown model 'quantum'")
    assert out.is_dir()

"""The MuJoCo benchmark function the lead calls: it runs and reports sane, complete rows (no timing assertions)."""

from __future__ import annotations

import math

from mbrl_control.apps.mujoco_bench import bench_plants

FIELDS = {"plant", "track", "sim_s", "wall_s", "cpu_s", "realtime_factor", "realtime_factor_cpu", "physics_step_us",
          "construct_ms", "distance_m", "repeats"}


def test_bench_reports_each_plant(params):
    rows = bench_plants(("mujoco",), track="default", sim_s=2.0, repeats=1, params=params)
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == FIELDS and row["plant"] == "mujoco" and row["track"] == "default"
    assert all(math.isfinite(row[k]) and row[k] > 0 for k in ("wall_s", "realtime_factor", "physics_step_us"))
    assert row["distance_m"] > 1.0  # pure pursuit really drove the car

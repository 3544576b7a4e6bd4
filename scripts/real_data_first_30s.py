#!/usr/bin/env python3
"""Issue 17, acceptance 1: fit on the first 30 s of driving of one DART file, score on the other 11.

For each of the three development files (free driving, throttle-ramp circles, the racetrack lap)
``mbrl-control fit FILE --columns config/telemetry/dart.yaml --vehicle models/dart.yaml --first-s 30``
is run as a user would (a subprocess: the fit time is the command's own ``fit_s`` and its wall time
is printed too), and the model file is scored by ``metric.py`` (the yardstick) on each of the other
11 files; the per-window errors are pooled (``metric.pool``). Prints one markdown table with all
horizons and states, the constant-velocity baseline on the same files and the ratio.

    .venv/bin/python scripts/real_data_first_30s.py [--data ../shared/realdata] [--prior physics|uniform]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FILES = {"free driving": "10_02_28", "throttle-ramp circles": "16_28_34steering_025_ramp",
         "racetrack lap": "60_racetrack_lap_v_060"}
STATES = ("pos", "yaw", "vx", "vy", "w")


def fit(path: Path, out: Path, prior: str) -> tuple[dict, float]:
    """The CLI's report and the command's wall time."""
    cmd = [str(ROOT / ".venv/bin/mbrl-control"), "fit", str(path), "--columns", str(ROOT / "config/telemetry/dart.yaml"),
           "--vehicle", str(ROOT / "models/dart.yaml"), "--first-s", "30", "--prior", prior, "--out", str(out),
           "--quiet"]
    tic = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - tic
    text = done.stdout
    return json.loads(text[:text.rindex("}") + 1]), wall


def rmse(errors: dict) -> dict:
    return {h: np.sqrt(np.mean(e ** 2, axis=0)) for h, e in errors.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "realdata")
    ap.add_argument("--prior", choices=("physics", "uniform"), default="physics")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(a.data))
    import metric

    from mbrl_control.models import load_predictor
    from mbrl_control.sysid.real_fit import constant_velocity

    files = sorted((a.data / "dart").glob("*.csv"))
    recordings = {f: metric.load(str(f)) for f in files}
    print("| fitted on (first 30 s of driving) | fit_s (command s) | horizon | pos m | yaw rad | vx m/s | vy m/s | w rad/s "
          "| const. vel. pos m | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, key in FILES.items():
        path = next(f for f in files if key in f.name)
        with tempfile.TemporaryDirectory() as tmp:
            report, wall = fit(path, Path(tmp) / "m.pt", a.prior)
            model = load_predictor(Path(tmp) / "m.pt")
            others = [f for f in files if f != path]
            fitted = metric.pool([metric.evaluate(recordings[f], model.predict, return_errors=True)[1] for f in others])
        cv = metric.pool([metric.evaluate(recordings[f], constant_velocity, return_errors=True)[1] for f in others])
        ours, base = rmse(fitted), rmse(cv)
        for i, h in enumerate(ours):
            head = f"{label} `{key}` | {report['fit_s']:.2f} s ({wall:.1f} s)" if i == 0 else " | "
            cells = " | ".join(f"{v:.3f}" for v in ours[h])
            print(f"| {head} | {h:g} s | {cells} | {base[h][0]:.3f} | {ours[h][0] / base[h][0]:.2f}x |")
        print(f"|  |  | windows | {len(fitted[1.0])} | | | | | | held at prior: {report['held_at_prior']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Issue 17 acceptance 4: a car whose actuators differ from the nominal, identified online.

    python scripts/miscalibrated_actuators.py --out runs/miscalibrated [--tracks Spielberg Monza]
        [--controllers mppi ilqr] [--laps 2] [--seed 0] [--jobs 2]

On ``--actuation miscalibrated`` (asymmetric steering map with a trim offset, 80 ms steering dead
time, 15 % throttle dead zone) each track and controller runs three ways: told nothing (the nominal
calibration throughout), identifying the calibration online and adopting it (``calibration:
identify``, the default for this plant), and the same with the online model refit
(``--online-sysid``) learning from the applied controls. Prints a Markdown table of the laps, the
violations, when the terms were first adopted and what was identified; run folders stay under --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODES = ("nominal", "identify", "identify+sysid")
NOMINAL_CONFIG = "controller_node:\n  ros__parameters:\n    actuation:\n      calibration: nominal\n"


def run(out: Path, track: str, controller: str, mode: str, laps: int, seed: int, nominal_yaml: Path) -> dict:
    folder = out / f"{track}_{controller}_{mode}_s{seed}"
    if not (folder / "summary.json").exists():
        cmd = ["mbrl-control", "sim", "--track", track, "--controller", controller, "--actuation", "miscalibrated",
               "--laps", str(laps), "--seed", str(seed), "--out", str(folder), "--quiet"]
        if mode == "nominal":
            cmd += ["--config", str(nominal_yaml)]
        if mode == "identify+sysid":
            cmd += ["--online-sysid"]
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    try:
        return json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def describe(summary: dict) -> tuple[str, str]:
    """(first adoption time, the identified terms at the end)."""
    act = summary.get("actuation", {})
    history = act.get("identified_at_s") or []
    if not history:
        return "-", "-"
    t = act["controller_terms"]
    return (f"{history[0][0]:.1f} s",
            f"{1e3 * t['steer_dead_time_s']:.1f} ms, {t['steer_gain_left_rad']:.4f} / {t['steer_gain_right_rad']:.4f} rad, "
            f"{t['steer_offset_rad']:+.4f} rad, {t['throttle_dead_zone']:.4f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/miscalibrated"))
    ap.add_argument("--tracks", nargs="+", default=["Spielberg", "Monza"])
    ap.add_argument("--controllers", nargs="+", default=["mppi", "ilqr"])
    ap.add_argument("--laps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    nominal_yaml = Path(tempfile.mkdtemp()) / "nominal.yaml"
    nominal_yaml.write_text(NOMINAL_CONFIG)
    cases = [(t, c, m) for t in args.tracks for c in args.controllers for m in MODES]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(cases, pool.map(lambda case: run(args.out, *case, args.laps, args.seed, nominal_yaml), cases)))
    print("| track | controller | controller told | laps [s] | change of the last lap vs nominal | violations | "
          "stopped | first adopted | identified: dead time, gain left / right, offset, dead zone |")
    print("|---|---|---|---|---|---|---|---|---|")
    for track in args.tracks:
        for controller in args.controllers:
            base = results[(track, controller, "nominal")].get("lap_times_s") or [None]
            for mode in MODES:
                s = results[(track, controller, mode)]
                laps = s.get("lap_times_s") or []
                change = f"{100 * (laps[-1] - base[-1]) / base[-1]:+.1f} %" if laps and base[-1] and mode != "nominal" else "-"
                first, terms = describe(s)
                print(f"| {track} | {controller} | {mode} | {' / '.join(f'{x:.2f}' for x in laps) or '-'} | {change} "
                      f"| {s.get('track_violations')} | {s.get('collisions_or_stops')} | {first} | {terms} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

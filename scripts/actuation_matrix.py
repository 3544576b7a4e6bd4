#!/usr/bin/env python3
"""Issue 14 acceptance 1: every shared track, MPPI / iLQR / pure pursuit, on the acceleration-commanded
plant and on the speed-following plant (controller told the interface, gains identified online).

    python scripts/actuation_matrix.py --out runs/actuation [--tracks Austin Monza] [--laps 2] [--seed 0]

Prints a Markdown table (best laps, the speed plant's best lap against the acceleration plant's,
violations, stops, identified gains and dead time); every run folder stays under --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TRACKS = ("Austin", "Budapest", "Monza", "Silverstone", "Sochi", "Spielberg")
CONTROLLERS = ("mppi", "ilqr", "pure_pursuit")


def run(out: Path, track: str, controller: str, actuation: str, laps: int, seed: int, extra: list[str]) -> dict:
    folder = out / f"{track}_{controller}_{actuation}_s{seed}"
    if not (folder / "summary.json").exists():
        cmd = ["mbrl-control", "sim", "--track", track, "--controller", controller, "--actuation", actuation,
               "--laps", str(laps), "--seed", str(seed), "--out", str(folder), "--quiet", *extra]
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    try:
        return json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/actuation"))
    ap.add_argument("--tracks", nargs="+", default=list(TRACKS))
    ap.add_argument("--controllers", nargs="+", default=list(CONTROLLERS))
    ap.add_argument("--laps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args, extra = ap.parse_known_args()
    print("| track | controller | accel plant best lap [s] | speed plant best lap [s] | change | laps | violations | stopped | identified gains up/down [1/s], dead time [ms] |")
    print("|---|---|---|---|---|---|---|---|---|")
    for track in args.tracks:
        for controller in args.controllers:
            acc = run(args.out, track, controller, "acceleration", args.laps, args.seed, extra)
            spd = run(args.out, track, controller, "speed", args.laps, args.seed, extra)
            best = lambda s: min(s["lap_times_s"]) if s.get("lap_times_s") else None  # noqa: E731
            a, b = best(acc), best(spd)
            change = f"{100 * (b - a) / a:+.1f} %" if a and b else "-"
            terms = spd.get("actuation", {}).get("controller_terms", {})
            ident = (f"{terms.get('speed_gain_up_per_s', 0):.3f} / {terms.get('speed_gain_down_per_s', 0):.2f}, "
                     f"{1e3 * terms.get('steer_dead_time_s', 0):.1f}") if terms else "-"
            print(f"| {track} | {controller} | {a} | {b} | {change} | {acc.get('laps_completed')}/{spd.get('laps_completed')} "
                  f"| {acc.get('track_violations')}/{spd.get('track_violations')} "
                  f"| {acc.get('collisions_or_stops')}/{spd.get('collisions_or_stops')} | {ident} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Racing on narrowed tracks: every shared track at one half width, seeds, controllers; a markdown table.

Runs ``mbrl-control sim --track T --half-width-m W --controller C --laps L --seed S --quiet`` one
after another (one run at a time: the runs are single-process closed loops), and with ``--full``
the same runs on the full-width tracks for the lap-time cost of narrowing. A run whose
``summary.json`` is already in the output folder is not run again (``--rerun`` to force).

Usage::

    python scripts/narrow_tracks.py                       # all 6 tracks, 0.8 m, seeds 0-2, mppi + ilqr, 3 laps
    python scripts/narrow_tracks.py --seeds 0 --full      # seed 0 only, narrowed and full width
    python scripts/narrow_tracks.py --tracks Austin Monza --controllers ilqr --out /tmp/narrow

Acceptance: every run completes its laps with 0 ``track_violations`` and ``collisions_or_stops``
false; the script exits 1 when a narrowed run does not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACKS = ("Austin", "Budapest", "Monza", "Silverstone", "Sochi", "Spielberg")


def run_folder(out: Path, controller: str, track: str, seed: int, width: float | None) -> Path:
    tag = "full" if width is None else f"w{width:g}"
    return out / f"{controller}_{track}_{tag}_s{seed}"


def run_one(args, controller: str, track: str, seed: int, width: float | None) -> dict:
    folder = run_folder(args.out, controller, track, seed, width)
    summary_file = folder / "summary.json"
    if summary_file.is_file() and not args.rerun:
        return json.loads(summary_file.read_text())
    exe = Path(sys.executable).with_name("mbrl-control")
    cmd = [str(exe) if exe.is_file() else "mbrl-control", "sim", "--track", track, "--controller", controller,
           "--laps", str(args.laps), "--seed", str(seed), "--out", str(folder), "--quiet"]
    if width is not None:
        cmd += ["--half-width-m", f"{width:g}"]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if folder.is_dir():
        (folder / "sim.stderr").write_text(proc.stderr)  # the controllers' warnings, if any
    if not summary_file.is_file():
        print(f"  FAILED to run: {' '.join(cmd)}\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {"laps_completed": 0, "lap_times_s": [], "track_violations": -1, "collisions_or_stops": True}
    summary = json.loads(summary_file.read_text())
    print(f"  {controller:5s} {track:11s} seed {seed} {'full' if width is None else f'{width:g} m':>5s}: "
          f"laps {summary['laps_completed']}, violations {summary['track_violations']}, "
          f"stopped {summary['collisions_or_stops']}, laps {summary['lap_times_s']} ({wall:.0f} s wall)",
          file=sys.stderr, flush=True)
    return summary


def ok(summary: dict, laps: int) -> bool:
    return summary["laps_completed"] >= laps and summary["track_violations"] == 0 and not summary["collisions_or_stops"]


def mean_lap(summary: dict) -> float | None:
    laps = summary.get("lap_times_s") or []
    return statistics.fmean(laps) if laps else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracks", nargs="+", default=list(TRACKS))
    p.add_argument("--controllers", nargs="+", default=["mppi", "ilqr"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--half-width-m", type=float, default=0.8)
    p.add_argument("--laps", type=int, default=3)
    p.add_argument("--full", action="store_true", help="also run the full-width tracks (lap-time cost of narrowing)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "narrow")
    p.add_argument("--rerun", action="store_true", help="run again even where a summary.json exists")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    w = args.half_width_m
    rows, failures = [], 0
    for controller in args.controllers:
        for track in args.tracks:
            for seed in args.seeds:
                narrow = run_one(args, controller, track, seed, w)
                full = run_one(args, controller, track, seed, None) if args.full else None
                failures += not ok(narrow, args.laps)
                rows.append((controller, track, seed, narrow, full))
    print(f"\n{args.laps} laps, half width {w:g} m (`track_violations` = control steps with the car's centre "
          f"outside the bounds)\n")
    print(f"| controller | track | seed | laps | violations | stopped | max \\|lateral\\| [m] | mean lap {w:g} m [s] "
          "| mean lap full [s] | cost |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for controller, track, seed, narrow, full in rows:
        n_lap, f_lap = mean_lap(narrow), (mean_lap(full) if full else None)
        cost = f"{100 * (n_lap / f_lap - 1):+.1f} %" if n_lap and f_lap else "-"
        print(f"| {controller} | {track} | {seed} | {narrow['laps_completed']}/{args.laps} | {narrow['track_violations']} "
              f"| {'yes' if narrow['collisions_or_stops'] else 'no'} | {fmt(narrow.get('lateral_error_m', {}).get('max'))} "
              f"| {fmt(n_lap)} | {fmt(f_lap)} | {cost} |")
    for controller in args.controllers:
        costs = [mean_lap(n) / mean_lap(f) - 1 for c, _, _, n, f in rows
                 if c == controller and f and mean_lap(n) and mean_lap(f)]
        if costs:
            print(f"\n{controller}: narrowing to {w:g} m costs {100 * statistics.fmean(costs):+.1f} % lap time "
                  f"(mean of {len(costs)} runs, {100 * min(costs):+.1f} to {100 * max(costs):+.1f} %)")
    print(f"\n{len(rows) - failures}/{len(rows)} narrowed runs passed (all laps, 0 violations, never stopped)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

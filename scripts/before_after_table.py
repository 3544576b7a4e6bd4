"""Markdown tables of a `scripts/compare_before_after.sh` run folder (docs/benchmarks.md, "Before and after").

Usage: python scripts/before_after_table.py runs/before_after
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _medians(folder: Path, name: str, side: str) -> dict:
    """{row label: [median ms per repetition]} of bench JSON files ``<name>_<side>_<rep>.json``."""
    rows: dict = {}
    for path in sorted(folder.glob(f"{name}_{side}_*.json")):
        for r in json.loads(path.read_text()):
            label = r.get("variant") if r["controller"] == "ilqr" else f"K={r['samples']}"
            rows.setdefault(label, []).append(r["median_ms"])
            if r.get("peer_median_ms"):
                rows.setdefault(f"{label} peer {r['peer']}", []).append(r["peer_median_ms"])
    return rows


def bench_table(folder: Path) -> str:
    names = {"bt": "MPPI bicycle-track T=56", "track": "MPPI Austin K=2048 T=100", "track_res": "... + residual 2x32",
             "ilqr_bt": "bicycle-track T=56", "ilqr_track": "Austin T=100"}
    lines = ["| row | before [ms] | after [ms] | after / before |", "|---|---|---|---|"]
    for name, title in names.items():
        old, new = _medians(folder, name, "old"), _medians(folder, name, "new")
        for label in new:
            if label not in old:
                continue
            o, n = min(old[label]), min(new[label])
            lines.append(f"| {title}, {label} | {', '.join(f'{v:.3f}' for v in old[label])} "
                         f"| {', '.join(f'{v:.3f}' for v in new[label])} | {n / o:.2f} (best of each) |")
    return "\n".join(lines)


def closed_loop_table(folder: Path) -> str:
    runs = ["austin_mppi", "austin_ilqr", "spielberg_pp", "monza_sysid", "spielberg_mujoco"]
    lines = ["| run | laps before [s] | laps after [s] | largest lap change | violations before / after | step p99 before / after [ms] |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        try:
            old = json.loads((folder / f"{run}_old" / "summary.json").read_text())
            new = json.loads((folder / f"{run}_new" / "summary.json").read_text())
        except FileNotFoundError:
            continue
        change = max(abs(n / o - 1.0) for n, o in zip(new["lap_times_s"], old["lap_times_s"]))
        lines.append(f"| {run} | {', '.join(map(str, old['lap_times_s']))} | {', '.join(map(str, new['lap_times_s']))} "
                     f"| {100 * change:.2f} % | {old['track_violations']} / {new['track_violations']} "
                     f"| {old['step_latency_ms']['p99']:.2f} / {new['step_latency_ms']['p99']:.2f} |")
    return "\n".join(lines)


def cold_start(folder: Path) -> str:
    def read(name: str) -> str:
        path = folder / name
        return path.read_text().strip() if path.is_file() else "-"
    return (f"`mbrl-control compile` on empty caches: {read('compile_cold_new.txt')} s (new; the old tree had no such step). "
            f"Demo, time until the node graph spins (first command can go out): empty caches {read('first_command_cold_old.txt')} s "
            f"before (kernels compiled in the controller's warm-up) and {read('first_command_cold_new.txt')} s after (`compile` "
            f"done first, as `make demo` does); warm caches {read('first_command_warm_old.txt')} s before, "
            f"{read('first_command_warm_new.txt')} s after.")


if __name__ == "__main__":
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/before_after")
    print(bench_table(run), "", closed_loop_table(run), "", cold_start(run), sep="\n")

#!/usr/bin/env python3
"""Leave-one-file-out on the DART development set: physics + actuators alone vs with the residual.

For each recording in turn, the physics and actuators are fitted on all the others as
``mbrl-control fit`` does (:func:`~mbrl_control.sysid.real_fit.fit_commanded_car`), then the residual
(:func:`~mbrl_control.sysid.real_residual.fit_residual`, ``--residual-kind``: ``history``, the default,
or ``instantaneous``, what ``fit --residual`` writes); both models are scored on the held-out recording by
``metric.py`` (the yardstick), and the per-window errors of all folds are pooled. The physics model
and an instantaneous residual are scored through their model files (written and read back as
``fit`` / ``load_predictor`` do); a history residual has no model file yet and is scored as fitted.
Model selection inside a fold (the residual's held-out blocks) sees the training files only.
Prints a markdown table (all horizons and states, both models, the relative improvement) and one
row per fold.

    .venv/bin/python scripts/real_data_lofo.py [--data ../shared/realdata] [--jobs 2] [--seed 0]
        [--residual-kind history|instantaneous] [--folds 0 5 11]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STATES = ("pos", "yaw", "vx", "vy", "w")
UNITS = {"pos": "m", "yaw": "rad", "vx": "m/s", "vy": "m/s", "w": "rad/s"}


@dataclass
class FoldResult:
    held_out: str
    physics_errors: dict      # horizon -> (N, 5) metric.errors of the held-out file
    residual_errors: dict
    residual_report: dict
    fit_s: float


def _round_trip(model, path: Path):
    """``model`` written to a model file and read back (what ``fit`` writes, what ``replay`` reads)."""
    from mbrl_control.models import load_predictor

    model.save(path)
    return load_predictor(path)


def run_fold(data: Path, files: list[Path], k: int, seed: int, kind: str = "history") -> FoldResult:
    """Fit on all files but ``files[k]``, score both models on it with metric.py."""
    import dataclasses

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(data))
    import metric

    from mbrl_control.apps.real_data import read_recordings
    from mbrl_control.models.predictor import vehicle_params
    from mbrl_control.sysid.real_fit import RealFitConfig, fit_commanded_car
    from mbrl_control.sysid.real_residual import HISTORY_FIT, ResidualFitConfig, fit_residual

    tic = time.perf_counter()
    tels = read_recordings([f for i, f in enumerate(files) if i != k], ROOT / "config/telemetry/dart.yaml", None)
    physics = fit_commanded_car(tels, vehicle_params(ROOT / "models/dart.yaml"), RealFitConfig(seed=seed)).predictor
    config = dataclasses.replace(HISTORY_FIT, seed=seed) if kind == "history" else ResidualFitConfig(seed=seed)
    model, report = fit_residual(tels, physics, config)
    rec = metric.load(str(files[k]))
    with tempfile.TemporaryDirectory() as tmp:
        physics = _round_trip(physics, Path(tmp) / "physics.pt")
        if kind == "instantaneous" or model.residual is None:
            model = _round_trip(model, Path(tmp) / "residual.pt")
        errs = [metric.evaluate(rec, m.predict, return_errors=True)[1] for m in (physics, model)]
    return FoldResult(files[k].name, errs[0], errs[1], dataclasses.asdict(report), time.perf_counter() - tic)


def table(phys: dict, res: dict) -> str:
    """Markdown table of pooled RMSE, both models, and the relative improvement."""
    lines = ["| horizon | state | physics + actuators | + residual | improvement |", "|---|---|---|---|---|"]
    for h in phys:
        a, b = np.sqrt(np.mean(phys[h] ** 2, axis=0)), np.sqrt(np.mean(res[h] ** 2, axis=0))
        for i, s in enumerate(STATES):
            lines.append(f"| {h:g} s | {s} [{UNITS[s]}] | {a[i]:.4f} | {b[i]:.4f} | {100 * (1 - b[i] / a[i]):+.1f} % |")
    lines.append(f"| | windows | {len(next(iter(phys.values())))} | {len(next(iter(res.values())))} | |")
    return "\n".join(lines)


def fold_table(results: list[FoldResult]) -> str:
    lines = ["| held-out file | windows | physics 1 s pos m | + residual 1 s pos m | residual kept | steps (best) | fold s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        a, b = (float(np.sqrt(np.mean(e[1.0][:, 0] ** 2))) for e in (r.physics_errors, r.residual_errors))
        rep = r.residual_report
        lines.append(f"| {r.held_out[:70]} | {len(r.physics_errors[1.0])} | {a:.4f} | {b:.4f} | {rep['kept']} | "
                     f"{rep['steps']} ({rep['best_step']}) | {r.fit_s:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "realdata")
    ap.add_argument("--jobs", type=int, default=1, help="folds run in parallel (processes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, nargs="*", default=None, help="only these fold indices (default all)")
    ap.add_argument("--residual-kind", choices=("history", "instantaneous"), default="history",
                    help="the residual fitted (mbrl_control.sysid.real_residual); default history")
    a = ap.parse_args(argv)
    files = sorted((a.data / "dart").glob("*.csv"))
    folds = a.folds if a.folds is not None else list(range(len(files)))
    tic = time.perf_counter()
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        results = list(pool.map(run_fold, [a.data] * len(folds), [files] * len(folds), folds, [a.seed] * len(folds),
                                [a.residual_kind] * len(folds)))
    sys.path.insert(0, str(a.data))
    import metric

    phys = metric.pool([r.physics_errors for r in results])
    res = metric.pool([r.residual_errors for r in results])
    print(f"Leave-one-file-out over {len(results)} folds ({len(files)} files), {a.residual_kind} residual, "
          f"pooled RMSE (metric.py); "
          f"{time.perf_counter() - tic:.0f} s wall\n")
    print(table(phys, res))
    print()
    print(fold_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

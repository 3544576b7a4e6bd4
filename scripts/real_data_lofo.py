#!/usr/bin/env python3
"""Leave-one-file-out on the DART development set: physics + actuators alone vs with the residual.

For each recording in turn, ``mbrl-control fit`` is run on all the others twice (without and with
``--residual``); both model files are scored on the held-out recording by ``metric.py`` (the
yardstick), and the per-window errors of all folds are pooled. Prints a markdown table (all
horizons and states, both models, the relative improvement) and one row per fold.

    .venv/bin/python scripts/real_data_lofo.py [--data ../shared/realdata] [--jobs 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
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


def _fit(files: list[Path], out: Path, residual: bool, seed: int) -> dict:
    """Run ``mbrl-control fit`` in this process; returns its JSON report."""
    from mbrl_control.apps.cli import main as cli_main

    argv = ["fit", *map(str, files), "--columns", str(ROOT / "config/telemetry/dart.yaml"), "--vehicle",
            str(ROOT / "models/dart.yaml"), "--seed", str(seed), "--out", str(out), "--quiet"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(argv + (["--residual"] if residual else []))
    if rc != 0:
        raise RuntimeError(f"fit failed ({rc}): {' '.join(argv)}")
    text = buf.getvalue()
    return json.loads(text[:text.rindex("}") + 1])


def run_fold(data: Path, files: list[Path], k: int, seed: int) -> FoldResult:
    """Fit on all files but ``files[k]``, score both models on it with metric.py."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(data))
    import metric

    from mbrl_control.models import load_predictor

    tic = time.perf_counter()
    train = [f for i, f in enumerate(files) if i != k]
    with tempfile.TemporaryDirectory() as tmp:
        _fit(train, Path(tmp) / "physics.pt", False, seed)
        report = _fit(train, Path(tmp) / "residual.pt", True, seed)
        rec = metric.load(str(files[k]))
        errs = [metric.evaluate(rec, load_predictor(Path(tmp) / name).predict, return_errors=True)[1]
                for name in ("physics.pt", "residual.pt")]
    return FoldResult(files[k].name, errs[0], errs[1], report["residual"], time.perf_counter() - tic)


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
    a = ap.parse_args(argv)
    files = sorted((a.data / "dart").glob("*.csv"))
    folds = a.folds if a.folds is not None else list(range(len(files)))
    tic = time.perf_counter()
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        results = list(pool.map(run_fold, [a.data] * len(folds), [files] * len(folds), folds, [a.seed] * len(folds)))
    sys.path.insert(0, str(a.data))
    import metric

    phys = metric.pool([r.physics_errors for r in results])
    res = metric.pool([r.residual_errors for r in results])
    print(f"Leave-one-file-out over {len(results)} folds ({len(files)} files), pooled RMSE (metric.py); "
          f"{time.perf_counter() - tic:.0f} s wall\n")
    print(table(phys, res))
    print()
    print(fold_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

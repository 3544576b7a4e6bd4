"""``fit`` and ``replay`` on CSV telemetry described by a column map (``--columns MAP.yaml``).

* ``mbrl-control fit FILE [MORE ...] --columns MAP.yaml --vehicle VEHICLE.yaml [--first-s N] [--seed S]
  [--residual] --out M.pt``: reads the CSVs (:mod:`mbrl_control.bag.csv_telemetry`), keeps the
  first ``N`` seconds of driving of each, identifies the physics and actuator parameters of the
  commanded single-track model by multi-step prediction error on all of them
  (:mod:`mbrl_control.sysid.real_fit`), with ``--residual`` then trains the residual ensemble by
  multi-step error (:mod:`mbrl_control.sysid.real_residual`), writes the model file (read by
  :func:`mbrl_control.models.load_predictor`) and ``M.pt.json`` with the fit report.
* ``mbrl-control replay FILE --columns MAP.yaml --model M.pt [--json]``: the open-loop scores of
  ``../shared/realdata/metric.py`` (1 s windows every 0.1 s at driving speed; RMSE of position,
  yaw, vx, vy, w at 0.2 / 0.5 / 1 s) for the model and the constant-velocity baseline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from mbrl_control import MbrlError
from mbrl_control.config import atomic_write_json, ensure_writable_dir


def _pooled_scores(tels, predict) -> dict:
    """metric.py's scores of ``predict`` pooled over the windows of all ``tels``."""
    import numpy as np

    from mbrl_control.sysid.real_fit import prediction_errors, summarise_errors

    errs = [prediction_errors(tel, predict) for tel in tels]
    return summarise_errors({h: np.concatenate([e[h] for e in errs]) for h in errs[0]})


def read_recordings(paths, columns, first_s: float | None) -> list:
    """The CSV recordings ``paths`` as telemetry, each cut to its first ``first_s`` seconds of driving."""
    from mbrl_control.bag.csv_telemetry import read_csv_telemetry

    tels = [read_csv_telemetry(path, columns) for path in paths]
    return tels if first_s is None else [tel.first_seconds_of_driving(first_s) for tel in tels]


def fit_main(args) -> int:
    from mbrl_control.models.predictor import vehicle_params
    from mbrl_control.sysid.real_fit import RealFitConfig, constant_velocity, fit_commanded_car
    from mbrl_control.sysid.real_residual import HISTORY_FIT, ResidualFitConfig, fit_residual

    if args.vehicle is None:
        raise MbrlError("--columns needs --vehicle VEHICLE.yaml (the real car's facts, e.g. models/dart.yaml)")
    if args.first_s is not None and not args.first_s > 0:
        raise MbrlError("--first-s must be positive")
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="[fit] %(message)s", stream=sys.stderr)
    initial = vehicle_params(args.vehicle)
    paths = [args.bag, *getattr(args, "more", [])]
    out = args.out or args.bag.with_name(args.bag.stem + ".model.pt")
    ensure_writable_dir(out.parent, "output folder")
    tic = time.perf_counter()
    tels = read_recordings(paths, args.columns, args.first_s)
    prior = getattr(args, "prior", "physics")
    result = fit_commanded_car(tels, initial, RealFitConfig(prior=prior, seed=args.seed), progress=not args.quiet)
    model, fit_s = result.predictor, result.fit_s
    residual = None
    if getattr(args, "residual", False):
        kind = getattr(args, "residual_kind", "history")
        config = dataclasses.replace(HISTORY_FIT if kind == "history" else ResidualFitConfig(), seed=args.seed)
        if getattr(args, "residual_steps", None) is not None:
            config = dataclasses.replace(config, steps=args.residual_steps)
        model, rep = fit_residual(tels, model, config, progress=not args.quiet)
        residual = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in dataclasses.asdict(rep).items()}
        fit_s += rep.train_s
    fitted = _pooled_scores(tels, model.predict)
    baseline = _pooled_scores(tels, constant_velocity)
    report = {"file": str(args.bag), "files": [str(p) for p in paths], "columns": str(args.columns),
              "vehicle": str(args.vehicle), "model_file": str(out), "first_s": args.first_s, "seed": args.seed,
              "dt_s": tels[0].dt, "fit_windows": result.windows, "evaluations": result.iterations,
              "cost_initial": result.initial_cost, "cost_final": result.final_cost,
              "prior": prior, "held_at_prior": result.held_at_prior,
              "physics_fit_s": round(result.fit_s, 3), "fit_s": round(fit_s, 3), "residual": residual,
              "on_fit_data": fitted, "constant_velocity_on_fit_data": baseline, "params": model.params}
    model.info.update(source=[str(p) for p in paths], first_s=args.first_s, seed=args.seed, fit_s=report["fit_s"])
    model.save(out)
    report["total_s"] = round(time.perf_counter() - tic, 3)
    atomic_write_json(out.with_name(out.name + ".json"), report)
    print(json.dumps(report, indent=2))
    one = fitted["1s"]
    print(f"fitted model: {out}; 1 s position RMSE on the fit data {one['pos']:.3f} m "
          f"(constant velocity {baseline['1s']['pos']:.3f} m); fit_s {fit_s:.2f} s", flush=True)
    return 0


def replay_main(args) -> int:
    from mbrl_control.bag.csv_telemetry import read_csv_telemetry
    from mbrl_control.models.predictor import load_predictor
    from mbrl_control.sysid.real_fit import constant_velocity, prediction_errors, summarise_errors

    tel = read_csv_telemetry(args.bag, args.columns)
    if args.model in ("constant_velocity", "cv"):
        predict, spec = constant_velocity, "constant_velocity"
    else:
        if not Path(args.model).is_file():
            raise MbrlError(f"--model with --columns must be a fitted model file or 'constant_velocity', got {args.model}")
        predict, spec = load_predictor(args.model).predict, str(args.model)
    res = summarise_errors(prediction_errors(tel, predict))
    res.update(file=tel.name, model=spec, seconds=tel.raw_seconds, dt=tel.dt, notes=tel.notes)
    if args.json:
        print(json.dumps([res], indent=1))
        return 0
    print(f"{tel.name}: {res['n_windows']} windows; model {spec}")
    for h in ("0.2s", "0.5s", "1s"):
        r = res[h]
        print(f"  {h:>4s}: pos {r['pos']:.3f} m  yaw {r['yaw']:.3f} rad  vx {r['vx']:.3f}  vy {r['vy']:.3f} m/s  "
              f"w {r['w']:.3f} rad/s")
    return 0

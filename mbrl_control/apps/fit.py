"""``mbrl-control fit BAG [--out FILE]``: identify physics parameters and train the residual from a rosbag2.

The bag's odometry and AckermannDrive commands are resampled onto the model grid (the steering
angle, which odometry lacks, is estimated through the servo model; see :mod:`.dataset`). The last
20 % is held out: the fit uses the first 80 % (itself split for early stopping), and the report
gives the 1.0 s open-loop position RMSE on the held-out part of the nominal model and of the fitted
one. Writes the model to FILE and the report to FILE + ``.json`` (``rmse_nominal_m``,
``rmse_fitted_m``, ``fit_s``, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mbrl_control import MbrlError
from mbrl_control.bag import add_bag_arguments, drive_read_config, read_drive
from mbrl_control.config import atomic_write_json, cli_number, ensure_writable_dir, load_vehicle_params, load_yaml
from mbrl_control.models.factory import make_model
from mbrl_control.sysid.config import FitConfig, build_config
from mbrl_control.sysid.dataset import from_drive, with_steering
from mbrl_control.sysid.fit import fit_model
from mbrl_control.sysid.train import evaluation_rmse

HELD_OUT_FRACTION = 0.2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", type=Path,
                   help="rosbag2 directory, .mcap or .db3 file, or ROS 1 .bag, with odometry and drive commands")
    p.add_argument("more", type=Path, nargs="*", metavar="MORE",
                   help="with --columns: more CSV recordings of the same car, fitted together with the first")
    p.add_argument("--out", type=Path, default=None, help="model file to write (default: <bag>.model.pt next to the bag)")
    p.add_argument("--vehicle", type=Path, default=None, help="nominal vehicle YAML (prior; default models/f1tenth.yaml)")
    p.add_argument("--nominal-model", default="kinematic", choices=("kinematic", "dynamic"),
                   help="model the fit is compared with (default: kinematic)")
    p.add_argument("--dt", type=cli_number(1e-3, 1.0), default=0.02, help="model step = control period [s] (default 0.02)")
    p.add_argument("--config", type=Path, default=None, help="YAML with a 'fit' mapping (sysid FitConfig sections)")
    add_bag_arguments(p)
    p.add_argument("--columns", type=Path, default=None,
                   help="column-map YAML: BAG is a CSV recording of a real car (see docs/real_data.md)")
    p.add_argument("--first-s", type=cli_number(positive=True, high=1e6), default=None,
                   help="with --columns: fit only the first this many seconds of driving")
    p.add_argument("--seed", type=cli_number(0, 2**31 - 1, integer=True), default=0, help="with --columns: seed")
    p.add_argument("--prior", choices=("physics", "uniform"), default="physics",
                   help="with --columns: how the vehicle YAML's values hold what the data does not show: per-parameter "
                        "standard deviations weighed against the data, weakly informed directions kept (physics, the "
                        "default), or a small uniform pull (uniform); docs/real_data.md")
    p.add_argument("--residual", action="store_true",
                   help="with --columns: also train the residual ensemble on what the physics leaves (multi-step "
                        "loss; 20 %% of each recording, in interleaved blocks, held out to pick and check it)")
    p.add_argument("--residual-steps", type=cli_number(1, 100000, integer=True), default=None,
                   help="with --residual: Adam steps at most (default 300)")
    p.add_argument("--residual-kind", choices=("history", "instantaneous"), default="history",
                   help="with --residual: what the residual reads: also the means of the past commands and the start "
                        "speed and yaw rate of each prediction (history, the default: better on recordings it has not "
                        "seen, docs/real_data.md), or this instant's state and commands only")
    p.add_argument("--actuation", choices=("acceleration", "speed", "miscalibrated"), default="acceleration",
                   help="the recorded car's driver; speed: also identify its speed-loop gains and steering dead "
                        "time; miscalibrated: its steering map, steering dead time and throttle dead zone (report "
                        "'actuation'; put them in the controller's parameters)")
    p.add_argument("--quiet", action="store_true", help="no progress log on stderr")


def _fit_config(path: Path | None) -> FitConfig:
    if path is None:
        return FitConfig()
    data = load_yaml(path)
    section = data.get("fit", data)
    return build_config(FitConfig, section, f"{path}: fit")


def fallback_dirs() -> list[Path]:
    """Where a fitted model goes when ``--out`` cannot be written (another file system, if possible)."""
    import tempfile

    return [Path(tempfile.gettempdir()) / "mbrl-control", Path.home() / ".cache" / "mbrl-control"]


def _save_model(model, out: Path) -> tuple[Path | None, str | None]:
    """(where the model was saved or None, the error saving it at ``out`` or None): ``out`` first, then
    a fallback folder, so that a full disk does not throw away a finished fit."""
    try:
        return model.save(out), None
    except OSError as exc:
        error = f"cannot write {out}: {exc.strerror or exc}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in fallback_dirs():
        try:
            return model.save(folder / f"{out.stem}-{stamp}{out.suffix or '.pt'}"), error
        except OSError:
            continue
    return None, error


def main(args: argparse.Namespace) -> int:
    if getattr(args, "columns", None) is not None:  # CSV telemetry of a real car
        from mbrl_control.apps.real_data import fit_main

        return fit_main(args)
    if args.more:
        raise MbrlError("several recordings are read only as CSV telemetry (--columns MAP.yaml)")
    if not args.dt > 0:
        raise MbrlError("--dt must be positive")
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="[fit] %(message)s", stream=sys.stderr)
    torch.set_num_threads(1)  # small tensors: intra-op threads only add synchronisation (badly so on a busy CPU)
    config = _fit_config(args.config)
    prior = load_vehicle_params(args.vehicle)
    out = args.out or args.bag.with_name(args.bag.name.split(".")[0] + ".model.pt")
    ensure_writable_dir(out.parent, "output folder")  # before the work; a full disk later: see _save_model
    tic = time.perf_counter()
    drive = read_drive(args.bag, config=drive_read_config(args), params=prior)
    if drive.cmd_topic is None or len(drive.cmd_t_s) == 0:
        raise MbrlError(f"{args.bag}: no drive commands recorded; fitting needs odometry and commands")
    dataset_cfg = dataclasses.replace(config.dataset, max_gap_s=args.max_gap)
    dataset = from_drive(drive, args.dt, prior, dataset_cfg, config.identify.substeps)
    cut = int(round(len(dataset) * (1.0 - HELD_OUT_FRACTION)))
    result = fit_model(dataset.segment(0, cut), prior, config)
    model = result.model
    nominal = make_model(args.nominal_model, prior, args.dt, torch.float64)
    held_nominal = dataset.segment(cut, len(dataset))
    held_fitted = with_steering(dataset, model.params, config.identify.substeps).segment(cut, len(dataset))
    report = {
        "bag": str(args.bag), "model_file": str(out), "dt_s": args.dt, "duration_s": round(dataset.duration_s, 3),
        "fit_duration_s": round(cut * args.dt, 3), "held_out_s": round((len(dataset) - cut) * args.dt, 3),
        "transitions": dataset.transitions, "nominal_model": args.nominal_model,
        "rmse_nominal_m": evaluation_rmse(nominal, held_nominal),
        "rmse_fitted_m": evaluation_rmse(model, held_fitted),
        "fit_s": round(result.fit_s, 3), "fit_cpu_s": round(result.fit_cpu_s, 3), "total_s": 0.0,
        "physics": result.physics, "identified": result.identified.report(), "residual_kept": result.training.kept,
    }
    if args.actuation in ("speed", "miscalibrated"):
        from mbrl_control.sysid.actuator_id import identify_from_drive

        found = identify_from_drive(drive, prior, calibration=args.actuation == "miscalibrated")
        report["actuation"] = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in found.items()}
    model.metrics.update(rmse_nominal_m=report["rmse_nominal_m"], rmse_fitted_m=report["rmse_fitted_m"])
    if math.isfinite(report["rmse_nominal_m"]) and math.isfinite(report["rmse_fitted_m"]):
        report["improvement"] = report["rmse_nominal_m"] / max(report["rmse_fitted_m"], 1e-12)
    else:  # JSON has no NaN: no complete 1 s window of valid data in the held-out part
        print(f"mbrl-control fit: warning: the held-out last 20 % of {args.bag} has no 1 s window of valid data; "
              "no RMSE reported", file=sys.stderr)
        report.update(rmse_nominal_m=None, rmse_fitted_m=None, improvement=None)
    saved, save_error = _save_model(model, out)
    report["model_file"] = str(saved) if saved is not None else None
    report["total_s"] = round(time.perf_counter() - tic, 3)
    json_path = (saved or out).with_name((saved or out).name + ".json")
    try:
        atomic_write_json(json_path, report)
    except OSError as exc:
        save_error = save_error or f"cannot write {json_path}: {exc.strerror or exc}"
        json_path = None
    print(json.dumps(report, indent=2))
    if save_error is not None:  # the fit is done; say where (and whether) its results are kept
        if saved is None:
            raise MbrlError(f"{save_error}; the fitted model could not be saved anywhere (report printed above)")
        if saved != out:
            raise MbrlError(f"{save_error}; the fitted model was saved to the fallback path {saved}")
        raise MbrlError(f"{save_error}; the fitted model is saved at {saved}")
    if report["improvement"] is not None:
        print(f"fitted model: {out} (report {json_path}); 1.0 s open-loop RMSE on the held-out last 20 %: "
              f"nominal {report['rmse_nominal_m']:.4f} m -> fitted {report['rmse_fitted_m']:.4f} m "
              f"({report['improvement']:.1f}x); fit_s {report['fit_s']:.2f} s", flush=True)
    else:
        print(f"fitted model: {out} (report {json_path}); fit_s {report['fit_s']:.2f} s", flush=True)
    return 0

"""``mbrl-control tune``: the flags, the plant and models from them, the search, its outputs."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

from mbrl_control import MbrlError
from mbrl_control.apps.tune.evaluation import EvalSpec, TuneConfig, evaluate
from mbrl_control.apps.tune.report import gain_pct, plot_search, summarize, trial_facts, write_tuned_yaml
from mbrl_control.apps.tune.search import run_search
from mbrl_control.apps.tune.space import DEFAULT_SPACES, Dimension, default_values, parse_space, plain, trial_options
from mbrl_control.config import VehicleParams, atomic_write_text, cli_number, dataclass_from_dict, ensure_writable_dir, load_vehicle_params, load_yaml


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mbrl_control.bag import add_bag_arguments

    p.add_argument("--track", required=True, help="track NAME or centerline CSV to tune on")
    p.add_argument("--controller", default="mppi", help="controller whose parameters are tuned")
    p.add_argument("--config", type=Path, default=None, help="base controller YAML (controller_node: ros__parameters:)")
    p.add_argument("--model", default=None, help="plant: a model FILE from 'fit' (or kinematic | dynamic | semiparametric)")
    p.add_argument("--bag", type=Path, default=None, help="identify the plant model from this bag first (as 'fit')")
    p.add_argument("--plant-vehicle", type=Path, default=None, help="plant: the built-in single-track with this vehicle YAML")
    p.add_argument("--controller-model", default=None, help="the controller's prediction model (default: the plant's)")
    p.add_argument("--vehicle", type=Path, default=None, help="nominal vehicle YAML (default models/f1tenth.yaml)")
    p.add_argument("--space", type=Path, default=None, help="search space YAML (default: built in for the controller)")
    p.add_argument("--trials", type=cli_number(1, 100000, integer=True), default=40, help="closed-loop evaluations, the default config included")
    p.add_argument("--jobs", type=cli_number(0, 4096, integer=True), default=0, help="parallel evaluations (default: all local cores / cluster CPUs)")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="run the evaluations on this Ray cluster ('local': a private one)")
    p.add_argument("--laps", type=cli_number(1, 1000, integer=True), default=1)
    p.add_argument("--rate", type=cli_number(1.0, 1000.0), default=50.0, help="control rate [Hz]")
    p.add_argument("--violation-penalty", type=cli_number(0.0, 1e6), default=0.1, help="objective seconds per control step off the track")
    p.add_argument("--seed", type=cli_number(0, 2**32 - 1, integer=True), default=0)
    p.add_argument("--validate-track", default=None, help="also drive default and tuned configs on this track")
    p.add_argument("--validate-plant-vehicle", type=Path, default=None, help="vehicle YAML of the validation plant")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/tune-<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_bag_arguments(p)


def main(args: argparse.Namespace) -> int:
    from mbrl_control.control.factory import CONTROLLERS, make_controller
    from mbrl_control.apps.sim import controller_options
    from mbrl_control.track import check_turning_radius, resolve_track

    if args.controller not in CONTROLLERS:
        raise MbrlError(f"unknown controller '{args.controller}' (choose from {', '.join(CONTROLLERS)})")
    if sum(x is not None for x in (args.model, args.bag, args.plant_vehicle)) > 1:
        raise MbrlError("give one plant: --model, --bag or --plant-vehicle")
    config = dataclass_from_dict(TuneConfig, {"trials": args.trials, "jobs": args.jobs, "laps": args.laps,
                                              "rate_hz": args.rate, "violation_penalty_s": args.violation_penalty,
                                              "seed": args.seed}, "tune")
    params = load_vehicle_params(args.vehicle)
    dt = 1.0 / config.rate_hz
    track = resolve_track(args.track)
    check_turning_radius(track, params.wheelbase_m, min(-params.steer_min_rad, params.steer_max_rad))
    out = args.out or Path("runs") / time.strftime("tune-%Y%m%d-%H%M%S")
    ensure_writable_dir(out, "output folder")
    plant_model, plant_params, plant_desc = _plant(args, params, dt, out)
    controller_model = _controller_model(args, params, dt, plant_model)
    base_all, _ = controller_options(args.config, args.controller)
    base = dict(base_all.get(args.controller, {}) or {})
    probe = make_controller(args.controller, params, dt, track, copy.deepcopy(controller_model), base)
    dims = _space(args, probe, base)
    defaults = default_values(dims, base, probe)
    spec = EvalSpec(track, args.controller, base, params, plant_model, plant_params, controller_model, config)
    _say(args, f"tuning {len(dims)} parameters of {args.controller} on {track.name} ({plant_desc}), "
               f"{config.trials} evaluations, time limit {spec.time_limit_s:.0f} s each")
    result = run_search(spec, dims, defaults, args.ray, progress=not args.quiet)
    if all(t["state"] != "complete" for t in result.trials):
        print("[tune] warning: no evaluation finished a lap; check the controller and plant with 'mbrl-control sim'",
              file=sys.stderr, flush=True)
    elif result.default_trial["state"] != "complete":
        _say(args, "the default configuration does not finish; gains are reported against the objective only")
    tuned = trial_options(base, result.best["values"])
    summary = summarize(spec, plant_desc, result, dims)
    if args.validate_track:
        summary["validation"] = validate(args, spec, tuned)
    write_tuned_yaml(out / "tuned.yaml", base_all, args.controller, tuned, summary)
    atomic_write_text(out / "trials.json", json.dumps(result.trials, indent=2, default=plain) + "\n")
    atomic_write_text(out / "tune.json", json.dumps(summary, indent=2, default=plain) + "\n")
    plot_search(out / "search.png", result, dims, summary)
    print(json.dumps(summary, indent=2, default=plain))
    print(f"tuned config: {out / 'tuned.yaml'}", flush=True)
    return 0


def _say(args, text: str) -> None:
    if not args.quiet:
        print(f"[tune] {text}", file=sys.stderr, flush=True)


def _plant(args, params: VehicleParams, dt: float, out: Path):
    """(plant model or None, plant vehicle params, description)."""
    import torch

    from mbrl_control.models.factory import make_model

    if args.plant_vehicle is not None:
        return None, load_vehicle_params(args.plant_vehicle), f"single-track plant {args.plant_vehicle}"
    spec = args.model or "dynamic"
    if args.bag is not None:
        spec = str(identify_from_bag(args, params, dt, out / "identified.pt"))
    model = make_model(spec, params, dt, torch.float64)
    return model, getattr(model, "params", params), f"model {spec}"


def _controller_model(args, params: VehicleParams, dt: float, plant_model):
    import torch

    from mbrl_control.models.factory import make_model

    if args.controller_model is not None:
        return make_model(args.controller_model, params, dt, torch.float32)
    if plant_model is not None:
        return copy.deepcopy(plant_model).to(torch.float32)
    return make_model("dynamic", params, dt, torch.float32)


def identify_from_bag(args, params: VehicleParams, dt: float, path: Path) -> Path:
    """Fit a model to the bag (the ``fit`` pipeline, sysid defaults) and save it to ``path``."""
    from mbrl_control.bag import drive_read_config, read_drive
    from mbrl_control.sysid.config import FitConfig
    from mbrl_control.sysid.dataset import from_drive
    from mbrl_control.sysid.fit import fit_model

    _say(args, f"identifying the plant model from {args.bag}")
    drive = read_drive(args.bag, config=drive_read_config(args), params=params)
    fit_config = FitConfig()
    dataset = from_drive(drive, dt, params, fit_config.dataset, fit_config.identify.substeps)
    fitted = fit_model(dataset, params, fit_config)
    fitted.model.save(path)
    return path


def _space(args, probe, base: dict) -> list[Dimension]:
    if args.space is not None:
        data = load_yaml(args.space)
        return parse_space(data.get("space", data), str(args.space))
    if args.controller not in DEFAULT_SPACES:
        raise MbrlError(f"no built-in search space for '{args.controller}': give one with --space")
    dims = parse_space(DEFAULT_SPACES[args.controller], f"built-in space of {args.controller}")
    kept = []
    for dim in dims:
        try:
            default_values([dim], base, probe)
            kept.append(dim)
        except MbrlError:
            continue  # an option this version of the controller does not have
    if not kept:
        raise MbrlError(f"the built-in space of '{args.controller}' matches none of its options: give --space")
    return kept


def validate(args, spec: EvalSpec, tuned: dict) -> dict:
    """Default and tuned configurations on ``--validate-track`` (and plant); lap times and the gain."""
    from mbrl_control.track import resolve_track

    track = resolve_track(args.validate_track)
    plant_params = load_vehicle_params(args.validate_plant_vehicle) if args.validate_plant_vehicle else spec.plant_params
    plant_model = None if args.validate_plant_vehicle else spec.plant_model
    other = dataclasses.replace(spec, track=track, plant_model=plant_model, plant_params=plant_params, base_options={})
    _say(args, f"validating default and tuned configurations on {track.name}")
    default = evaluate(other, spec.base_options)
    best = evaluate(other, tuned)
    return {"track": track.name, "plant": str(args.validate_plant_vehicle or "the tuning plant"),
            "default": trial_facts(default), "tuned": trial_facts(best), "lap_time_gain_pct": gain_pct(default, best, "lap_time_s"),
            "objective_gain_pct": gain_pct(default, best, "objective")}
